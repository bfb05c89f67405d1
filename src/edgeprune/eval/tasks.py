"""The seven zero-shot tasks as data: where each file lives, how it is parsed into the records
lm-evaluation-harness 0.4 sees (the Hugging Face dataset's fields), and the prompt template.

Every task turns a record into an :class:`MCDoc`: one ``(context, continuation)`` request per
choice, the gold index, and the lengths ``acc_norm`` divides by. The continuation is always the
target delimiter ``" "`` followed by the choice (lm-eval's default delimiter). Templates, copied in
meaning from lm-eval's task YAML files:

- arc_easy / arc_challenge: ``"Question: {question}\\nAnswer:"``, choices = the answer texts;
- piqa: ``"Question: {goal}\\nAnswer:"``, choices = ``[sol1, sol2]``;
- hellaswag: ``"{query}"`` with ``query = preprocess(activity_label + ": " + ctx_a + " " +
  ctx_b.capitalize())``, choices = preprocessed endings;
- boolq: ``"{passage}\\nQuestion: {question}?\\nAnswer:"``, choices = ``["no", "yes"]``, acc only;
- winogrande: partial scoring, acc only: context = the sentence up to the blank with the option
  substituted, continuation = the rest of the sentence after the blank (stripped);
- openbookqa: ``"{question_stem}"``, choices = the answer texts.

Local files (``<data>/zeroshot``, formats in shared/data/PROVENANCE.md) are the default; the Hugging
Face hub datasets are used only when asked (``source="hub"``) and reachable. Differences between the
local copies and the hub copies that lm-eval reads are documented on each parser.
"""

from __future__ import annotations

import csv
import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgeprune.data.paths import resolve_data_file
from edgeprune.errors import EdgepruneError

DELIMITER = " "  # lm-eval's target_delimiter for every task here


@dataclass(frozen=True)
class MCDoc:
    """One multiple-choice item, ready to score."""

    requests: tuple[tuple[str, str], ...]  # (context, continuation) per choice
    gold: int
    norm_lengths: tuple[int, ...]  # len(choice string) per choice: the acc_norm divisor


@dataclass(frozen=True)
class TaskSpec:
    name: str
    files: tuple[str, ...]  # relative to the data directory
    read_local: Callable[[list[Path]], list[dict]]
    hub: tuple[str, str | None, str]  # (dataset path, config name, split) lm-eval uses
    from_hub: Callable[[dict], dict]
    to_doc: Callable[[dict], MCDoc]
    metrics: tuple[str, ...]
    template: str


# -- prompt templates (data) ---------------------------------------------------------------------

TEMPLATES = {
    "arc": "Question: {question}\nAnswer:",
    "piqa": "Question: {goal}\nAnswer:",
    "hellaswag": "{query}",
    "boolq": "{passage}\nQuestion: {question}?\nAnswer:",
    "winogrande": "{sentence}",  # partial scoring: see winogrande_doc
    "openbookqa": "{question_stem}",
}
BOOLQ_CHOICES = ("no", "yes")


def _mc(context: str, choices: list[str], gold: int) -> MCDoc:
    if not 0 <= gold < len(choices):
        raise ValueError(f"gold index {gold} outside {len(choices)} choices")
    return MCDoc(
        requests=tuple((context, DELIMITER + c) for c in choices),
        gold=gold,
        norm_lengths=tuple(len(c) for c in choices),
    )


def arc_doc(r: dict) -> MCDoc:
    labels = list(r["choices"]["label"])
    return _mc(TEMPLATES["arc"].format(question=r["question"]), list(r["choices"]["text"]), labels.index(r["answerKey"]))


def piqa_doc(r: dict) -> MCDoc:
    return _mc(TEMPLATES["piqa"].format(goal=r["goal"]), [r["sol1"], r["sol2"]], int(r["label"]))


def hellaswag_doc(r: dict) -> MCDoc:
    return _mc(TEMPLATES["hellaswag"].format(query=r["query"]), list(r["choices"]), int(r["label"]))


def boolq_doc(r: dict) -> MCDoc:
    ctx = TEMPLATES["boolq"].format(passage=r["passage"], question=r["question"])
    return _mc(ctx, list(BOOLQ_CHOICES), int(r["label"]))


def winogrande_doc(r: dict) -> MCDoc:
    sentence = r["sentence"]
    blank = sentence.index("_")
    contexts = [sentence[:blank] + option for option in (r["option1"], r["option2"])]
    target = sentence[blank + 1:].strip()
    return MCDoc(
        requests=tuple((c, DELIMITER + target) for c in contexts),
        gold={"1": 0, "2": 1}[str(r["answer"])],
        norm_lengths=tuple(len(c) for c in contexts),  # lm-eval's "choices" are the contexts; unused
    )


def openbookqa_doc(r: dict) -> MCDoc:
    labels = list(r["choices"]["label"])
    ctx = TEMPLATES["openbookqa"].format(question_stem=r["question_stem"])
    return _mc(ctx, list(r["choices"]["text"]), labels.index(r["answerKey"].lstrip()))


# -- HellaSwag preprocessing (lm-eval's utils.preprocess) -----------------------------------------


def hellaswag_preprocess(text: str) -> str:
    text = text.strip()
    # WikiHow artefacts: " [title]" ends a sentence, other [markers] go; then single spaces.
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


# -- local file readers ---------------------------------------------------------------------------


def _bad(path: Path, where: str, what: str) -> EdgepruneError:
    return EdgepruneError(f"malformed {path} ({where}): {what}; restore the file from shared/data")


def _jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise _bad(path, f"line {n}", f"not JSON ({exc.msg})") from None
    if not rows:
        raise _bad(path, "whole file", "no records")
    return rows


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_arc(paths: list[Path]) -> list[dict]:
    """AI2 ARC jsonl: ``{"question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}``.
    Labels may be digits ("1".."4"); they are kept as strings and matched to answerKey as lm-eval does."""
    (path,) = paths
    out = []
    for n, r in enumerate(_jsonl(path), 1):
        try:
            q = r["question"]
            rec = {
                "question": q["stem"],
                "choices": {"text": [c["text"] for c in q["choices"]], "label": [str(c["label"]) for c in q["choices"]]},
                "answerKey": str(r["answerKey"]),
            }
        except (KeyError, TypeError):
            raise _bad(path, f"record {n}", "expected question.stem, question.choices[].text/label and answerKey") from None
        if rec["answerKey"] not in rec["choices"]["label"]:
            raise _bad(path, f"record {n}", f"answerKey {rec['answerKey']!r} is not a choice label")
        out.append(rec)
    return out


def read_piqa(paths: list[Path]) -> list[dict]:
    """PIQA jsonl (goal, sol1, sol2) + a labels file with one 0/1 per line (0 = sol1)."""
    data, labels_path = paths
    rows, labels = _jsonl(data), _lines(labels_path)
    if len(rows) != len(labels):
        raise _bad(labels_path, "whole file", f"{len(labels)} labels for {len(rows)} records")
    out = []
    for n, (r, lab) in enumerate(zip(rows, labels), 1):
        if lab not in ("0", "1"):
            raise _bad(labels_path, f"line {n}", f"label {lab!r} is not 0 or 1")
        try:
            out.append({"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": int(lab)})
        except KeyError:
            raise _bad(data, f"record {n}", "expected goal, sol1 and sol2") from None
    return out


def read_hellaswag(paths: list[Path]) -> list[dict]:
    """llama.cpp's HellaSwag text: 6 lines per task (``activity_label: ctx``, gold 0-3, 4 endings).

    The file's author already removed the WikiHow [markers], collapsed double spaces and trimmed;
    lm-eval's preprocessing is applied again (idempotent on such text). One difference from lm-eval
    on the hub copy cannot be undone: lm-eval capitalises ``ctx_b`` (the part of the context after
    ``ctx_a``) and the file keeps it as written, e.g. "... on a roof. he" where lm-eval has
    "... on a roof. He". Scores on this file are therefore close to, not identical with, lm-eval's.
    """
    (path,) = paths
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6 or not lines:
        raise _bad(path, "whole file", f"{len(lines)} lines is not a multiple of 6 (ctx, gold, 4 endings)")
    out = []
    for i in range(0, len(lines), 6):
        ctx, gold, *endings = lines[i:i + 6]
        if gold.strip() not in ("0", "1", "2", "3"):
            raise _bad(path, f"line {i + 2}", f"gold {gold!r} is not 0-3")
        out.append({
            "query": hellaswag_preprocess(ctx),
            "choices": [hellaswag_preprocess(e) for e in endings],
            "label": int(gold),
        })  # fmt: skip
    return out


def _boolq_label(value, path: Path, n: int) -> int:
    # The OpenCompass copy stores "true"/"false" strings; SuperGLUE has 0/1, google/boolq booleans.
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "0", "1"):
        return int(value.strip().lower() in ("true", "1"))
    raise _bad(path, f"record {n}", f"label {value!r} is not true/false")


def read_boolq(paths: list[Path]) -> list[dict]:
    """SuperGLUE BoolQ jsonl (question, passage, label); labels may be strings "true"/"false"."""
    (path,) = paths
    out = []
    for n, r in enumerate(_jsonl(path), 1):
        try:
            out.append({"passage": r["passage"], "question": r["question"], "label": _boolq_label(r["label"], path, n)})
        except KeyError:
            raise _bad(path, f"record {n}", "expected passage, question and label") from None
    return out


_WINO_INSTRUCTION = re.compile(
    r"Please choose the correct answer to fill in the blank to complete the given sentence: (?P<sentence>.*)"
    r"\n\nOption1: (?P<option1>.*) Option2: (?P<option2>.*) Answer format: option1/option2",
    re.S,
)


def read_winogrande(paths: list[Path]) -> list[dict]:
    """LLM-Adapters JSON whose ``instruction`` embeds the sentence and both options, plus the
    official labels file (1/2 per line). Recovers WinoGrande's ``sentence/option1/option2/answer``."""
    data, labels_path = paths
    try:
        rows = json.loads(data.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise _bad(data, f"line {exc.lineno}", f"not JSON ({exc.msg})") from None
    labels = _lines(labels_path)
    if not isinstance(rows, list) or len(rows) != len(labels):
        raise _bad(labels_path, "whole file", f"{len(labels)} labels for {len(rows) if isinstance(rows, list) else 0} records")
    out = []
    for n, (r, lab) in enumerate(zip(rows, labels), 1):
        m = _WINO_INSTRUCTION.fullmatch(r.get("instruction", "")) if isinstance(r, dict) else None
        if m is None:
            raise _bad(data, f"record {n}", "instruction does not follow the LLM-Adapters WinoGrande template")
        if m["sentence"].count("_") != 1:
            raise _bad(data, f"record {n}", "the sentence must contain exactly one blank '_'")
        if lab not in ("1", "2"):
            raise _bad(labels_path, f"line {n}", f"label {lab!r} is not 1 or 2")
        out.append({"sentence": m["sentence"], "option1": m["option1"], "option2": m["option2"], "answer": lab})
    return out


_OBQA_CHOICE = re.compile(r"\(([A-Z])\) ")


def read_openbookqa(paths: list[Path]) -> list[dict]:
    """The official ``Main/test.tsv``: ID, Question Stem, Choices as ``(A) … (B) … (C) … (D) …``,
    Complete Question, Answer Key. lm-eval scores ``question_stem`` only."""
    (path,) = paths
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows or [c.strip() for c in rows[0][:3]] != ["ID", "Question Stem", "Choices"]:
        raise _bad(path, "line 1", "expected the header ID, Question Stem, Choices, Complete Question, Answer Key")
    out = []
    for n, row in enumerate(rows[1:], 2):
        if not any(c.strip() for c in row):
            continue
        if len(row) < 5:
            raise _bad(path, f"line {n}", f"{len(row)} tab-separated fields, expected 5")
        parts = _OBQA_CHOICE.split(row[2])
        labels, texts = parts[1::2], [t.strip() for t in parts[2::2]]
        if parts[0].strip() or not labels or labels != [chr(ord("A") + i) for i in range(len(labels))]:
            raise _bad(path, f"line {n}", "choices must read '(A) ... (B) ...'")
        key = row[4].strip()
        if key not in labels:
            raise _bad(path, f"line {n}", f"answer key {key!r} is not one of {''.join(labels)}")
        out.append({"question_stem": row[1], "choices": {"text": texts, "label": labels}, "answerKey": key})
    return out


# -- hub records -> the same shapes (only when online) --------------------------------------------


def _same(r: dict) -> dict:
    return dict(r)


def _hellaswag_from_hub(r: dict) -> dict:
    ctx = r["ctx_a"] + " " + r["ctx_b"].capitalize()
    return {
        "query": hellaswag_preprocess(r["activity_label"] + ": " + ctx),
        "choices": [hellaswag_preprocess(e) for e in r["endings"]],
        "label": int(r["label"]),
    }


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec("arc_easy", ("zeroshot/arc_easy/test.jsonl",), read_arc, ("allenai/ai2_arc", "ARC-Easy", "test"),
                 _same, arc_doc, ("acc", "acc_norm"), TEMPLATES["arc"]),
        TaskSpec("arc_challenge", ("zeroshot/arc_challenge/test.jsonl",), read_arc,
                 ("allenai/ai2_arc", "ARC-Challenge", "test"), _same, arc_doc, ("acc", "acc_norm"), TEMPLATES["arc"]),
        TaskSpec("piqa", ("zeroshot/piqa/valid.jsonl", "zeroshot/piqa/valid-labels.lst"), read_piqa,
                 ("ybisk/piqa", None, "validation"), _same, piqa_doc, ("acc", "acc_norm"), TEMPLATES["piqa"]),
        TaskSpec("hellaswag", ("zeroshot/hellaswag/val.llamacpp.txt",), read_hellaswag,
                 ("Rowan/hellaswag", None, "validation"), _hellaswag_from_hub, hellaswag_doc, ("acc", "acc_norm"),
                 TEMPLATES["hellaswag"]),
        TaskSpec("boolq", ("zeroshot/boolq/val.jsonl",), read_boolq, ("aps/super_glue", "boolq", "validation"),
                 _same, boolq_doc, ("acc",), TEMPLATES["boolq"]),
        TaskSpec("winogrande", ("zeroshot/winogrande/dev.llm_adapters.json", "zeroshot/winogrande/dev-labels.lst"),
                 read_winogrande, ("allenai/winogrande", "winogrande_xl", "validation"), _same, winogrande_doc, ("acc",),
                 TEMPLATES["winogrande"]),
        TaskSpec("openbookqa", ("zeroshot/openbookqa/test.tsv",), read_openbookqa, ("allenai/openbookqa", "main", "test"),
                 _same, openbookqa_doc, ("acc", "acc_norm"), TEMPLATES["openbookqa"]),
    ]
}  # fmt: skip

SOURCES = ("local", "hub")


def get_task(name: str) -> TaskSpec:
    if name in TASKS:
        return TASKS[name]
    low = name.lower()
    close = difflib.get_close_matches(low, list(TASKS), n=2, cutoff=0.6) or [t for t in TASKS if low and low in t][:3]
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise EdgepruneError(f"unknown task {name!r}{hint}: choose from {', '.join(TASKS)}")


def parse_task_list(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"arc_easy,piqa"`` or a list -> validated names (``all`` means every task)."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if names == ["all"]:
        return tuple(TASKS)
    if not names:
        raise EdgepruneError(f"no task named: pass --tasks with one or more of {', '.join(TASKS)} (or all)")
    for n in names:
        get_task(n)
    return tuple(dict.fromkeys(names))


def load_records(name: str, *, source: str = "local", data_dir: str | Path | None = None) -> list[dict]:
    """The task's records in lm-eval's field layout, from the local files or the hub."""
    spec = get_task(name)
    if source == "local":
        paths = [resolve_data_file(f, data_dir) for f in spec.files]
        try:
            return spec.read_local(paths)
        except UnicodeDecodeError:
            raise EdgepruneError(f"a data file of {name} is not UTF-8 text: restore it from shared/data") from None
    if source == "hub":
        return [spec.from_hub(r) for r in _hub_rows(spec)]
    raise EdgepruneError(f"unknown data source {source!r}: use one of {', '.join(SOURCES)}")


def _load_dataset(path: str, config: str | None, split: str):
    from datasets import load_dataset  # seconds to import: only when the hub is asked for

    return load_dataset(path, config, split=split)


def _hub_rows(spec: TaskSpec):
    path, config, split = spec.hub
    try:
        return _load_dataset(path, config, split)
    except Exception as exc:  # offline, gated, renamed: all end the same way for the user
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise EdgepruneError(
            f"cannot load {path}{'/' + config if config else ''} from the Hugging Face hub ({first}): "
            f"use the local files (source='local')"
        ) from None


def load_docs(name: str, *, source: str = "local", data_dir: str | Path | None = None) -> list[MCDoc]:
    spec = get_task(name)
    records = load_records(name, source=source, data_dir=data_dir)
    docs = []
    for n, r in enumerate(records, 1):
        try:
            docs.append(spec.to_doc(r))
        except (KeyError, ValueError, TypeError) as exc:
            raise EdgepruneError(f"malformed {name} record {n}: {exc}; restore the data file") from None
    return docs
