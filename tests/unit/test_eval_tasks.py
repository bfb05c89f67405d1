"""Each task parser on the first records of the real files (the excerpts in tests/data), the prompts
they produce, and bad files."""

from __future__ import annotations

import json
import shutil

import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.eval.tasks import TASKS, get_task, hellaswag_preprocess, load_docs, load_records
from tests.unit.eval_helpers import TEST_DATA


@pytest.fixture(scope="module")
def data():
    return TEST_DATA


def test_arc_easy_first_record(data):
    docs = load_docs("arc_easy", data_dir=data)
    assert len(docs) == 100  # the excerpt: the first 100 of 2,376
    d = docs[0]
    ctx = "Question: Which statement best explains why photosynthesis is the foundation of most food webs?\nAnswer:"
    assert d.requests[0] == (ctx, " Sunlight is the source of energy for nearly all ecosystems.")
    assert [c for _, c in d.requests][3] == " The producers in all ecosystems are plants."
    assert d.gold == 0 and d.norm_lengths == (59, 54, 50, 43)


def test_arc_digit_labels_are_matched_like_letters(data):
    recs = load_records("arc_challenge", data_dir=data)
    assert len(recs) == 50  # the excerpt: the first 50 of 1,172
    assert recs[0]["answerKey"] == "C" and load_docs("arc_challenge", data_dir=data)[0].gold == 2
    digit = [i for i, r in enumerate(recs) if r["choices"]["label"][0] == "1"]
    assert digit == [44]  # PROVENANCE.md: 22 ARC-c items use "1".."4"; record 45 is the first
    r = recs[44]
    assert r["choices"]["label"] == ["1", "2", "3", "4"] and r["answerKey"] == "2"
    assert get_task("arc_challenge").to_doc(r).gold == int(r["answerKey"]) - 1 == 1
    easy = load_records("arc_easy", data_dir=data)
    assert sum(1 for r in easy if r["choices"]["label"][0] == "1") == 6  # 97 in the whole file
    # choice counts other than 4 (the whole file also has one item with an E choice, record 501)
    (odd,) = [i for i, r in enumerate(easy) if len(r["choices"]["label"]) != 4]
    assert odd == 93 and easy[odd]["choices"]["label"] == ["A", "B", "C"]
    three = load_docs("arc_easy", data_dir=data)[odd]
    assert len(three.requests) == 3 and len(three.norm_lengths) == 3 and three.gold == 1  # answer B


def test_piqa_first_record(data):
    docs = load_docs("piqa", data_dir=data)
    assert len(docs) == 40  # the excerpt: the first 40 of 1,838
    d = docs[0]
    assert d.requests[0][0] == "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"
    assert d.requests[0][1].startswith(" Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper")
    assert d.gold == 0 and len(d.requests) == 2


def test_hellaswag_first_record(data):
    docs = load_docs("hellaswag", data_dir=data)
    assert len(docs) == 40  # the excerpt: the first 40 of 10,042 tasks
    d = docs[0]
    assert d.requests[0] == ("Roof shingle removal: A man is sitting on a roof. he", " is using wrap to wrap a pair of skis.")
    assert d.requests[3][1] == " starts pulling up roofing on a roof."
    assert d.gold == 3
    assert docs[1].requests[0][0].startswith("Clean and jerk: A lady walks to a barbell.") and docs[1].gold == 3


def test_hellaswag_preprocess_is_lm_evals():
    assert hellaswag_preprocess(" Wash [title] Rinse  well [step] now ") == "Wash. Rinse well now"


def test_boolq_first_record_with_string_labels(data):
    docs = load_docs("boolq", data_dir=data)
    assert len(docs) == 40  # the excerpt: the first 40 of 3,270
    d = docs[0]
    ctx, cont = d.requests[0]
    assert ctx.startswith("Ethanol fuel -- All biomass goes through")
    assert ctx.endswith("\nQuestion: does ethanol take more energy make that produces?\nAnswer:")
    assert [c for _, c in d.requests] == [" no", " yes"]
    assert d.gold == 0  # "false"
    assert sum(doc.gold for doc in docs) == 31  # 31 of the excerpt's 40 are "true" (2,033 of 3,270 overall)


def test_winogrande_first_record_partial_scoring(data):
    docs = load_docs("winogrande", data_dir=data)
    assert len(docs) == 40  # the excerpt: the first 40 of 1,267
    d = docs[0]
    assert d.requests == (
        ("Sarah was a much better surgeon than Maria so Sarah", " always got the easier cases."),
        ("Sarah was a much better surgeon than Maria so Maria", " always got the easier cases."),
    )
    assert d.gold == 1
    assert get_task("winogrande").metrics == ("acc",)


def test_openbookqa_first_record_from_the_tsv(data):
    docs = load_docs("openbookqa", data_dir=data)
    assert len(docs) == 40  # the excerpt: the first 40 of 500
    d = docs[0]
    assert d.requests[0][0].startswith("A person wants to start saving money") and d.requests[0][0].endswith("save money is to")
    assert [c for _, c in d.requests] == [" make more phone calls", " quit eating lunch out",
                                          " buy less with monopoly money", " have lunch with friends"]  # fmt: skip
    assert d.gold == 1  # answer B


def test_every_task_has_its_metrics():
    assert {n: t.metrics for n, t in TASKS.items()} == {
        "arc_easy": ("acc", "acc_norm"), "arc_challenge": ("acc", "acc_norm"), "piqa": ("acc", "acc_norm"),
        "hellaswag": ("acc", "acc_norm"), "boolq": ("acc",), "winogrande": ("acc",), "openbookqa": ("acc", "acc_norm"),
    }  # fmt: skip


# -- bad files ------------------------------------------------------------------------------------


def _copy_tree(data, tmp_path, task):
    for rel in TASKS[task].files:
        dst = tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data / rel, dst)
        dst.chmod(0o644)
    return tmp_path


def test_unknown_task_names_the_closest():
    with pytest.raises(EdgepruneError, match=r"unknown task 'hellaswg' \(did you mean 'hellaswag'\?\): choose from arc_easy"):
        get_task("hellaswg")


def test_missing_file_names_the_path_and_the_fix(tmp_path):
    (tmp_path / "zeroshot").mkdir()
    with pytest.raises(EdgepruneError, match=r"missing data file .*arc_easy/test.jsonl"):
        load_docs("arc_easy", data_dir=tmp_path)


@pytest.mark.parametrize(
    "task, rel, content, message",
    [
        ("arc_easy", "zeroshot/arc_easy/test.jsonl", '{"id": 1}\n', r"\(record 1\): expected question.stem"),
        ("arc_easy", "zeroshot/arc_easy/test.jsonl", '{"a": 1}\n{oops\n', r"\(line 2\): not JSON"),
        ("piqa", "zeroshot/piqa/valid-labels.lst", "0\n1\n", r"2 labels for 40 records"),
        ("boolq", "zeroshot/boolq/val.jsonl", '{"question": "q", "passage": "p", "label": "maybe"}\n', r"label 'maybe'"),
        ("hellaswag", "zeroshot/hellaswag/val.llamacpp.txt", "ctx\n3\na\nb\nc\n", r"not a multiple of 6"),
        ("hellaswag", "zeroshot/hellaswag/val.llamacpp.txt", "ctx\n7\na\nb\nc\nd\n", r"gold '7'"),
        ("winogrande", "zeroshot/winogrande/dev.llm_adapters.json", '[{"instruction": "Fill in: _"}]', r"labels for 1"),
        ("openbookqa", "zeroshot/openbookqa/test.tsv", "ID\tQuestion Stem\tChoices\tComplete Question\tAnswer Key\n"
         "1\tq\tA) x B) y\tq\tA\n", r"choices must read"),
        ("openbookqa", "zeroshot/openbookqa/test.tsv", "id,stem\n", r"expected the header"),
    ],
)  # fmt: skip
def test_malformed_files_give_one_line_errors(data, tmp_path, task, rel, content, message):
    root = _copy_tree(data, tmp_path, task)
    (root / rel).write_text(content, encoding="utf-8")
    with pytest.raises(EdgepruneError, match=message) as info:
        load_docs(task, data_dir=root)
    assert "\n" not in str(info.value) and "malformed" in str(info.value)


def test_winogrande_instruction_that_does_not_parse(data, tmp_path):
    root = _copy_tree(data, tmp_path, "winogrande")
    (root / "zeroshot/winogrande/dev-labels.lst").write_text("1\n")
    (root / "zeroshot/winogrande/dev.llm_adapters.json").write_text(json.dumps([{"instruction": "Fill in: _"}]))
    with pytest.raises(EdgepruneError, match="LLM-Adapters WinoGrande template"):
        load_docs("winogrande", data_dir=root)


def test_hub_source_fails_cleanly_offline(monkeypatch):
    from edgeprune.eval import tasks

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hugging Face Hub\nmore lines")

    monkeypatch.setattr(tasks, "_load_dataset", offline)
    with pytest.raises(EdgepruneError, match=r"cannot load allenai/ai2_arc/ARC-Easy from the Hugging Face hub \(Couldn't reach"):
        load_docs("arc_easy", source="hub")


def test_hub_records_map_to_the_same_docs(monkeypatch):
    from edgeprune.eval import tasks

    rows = [{"activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
             "endings": ["is using wrap.", "starts pulling up roofing [title] on a roof."], "label": "1"}]  # fmt: skip
    monkeypatch.setattr(tasks, "_load_dataset", lambda *a, **k: rows)
    (d,) = load_docs("hellaswag", source="hub")
    # lm-eval capitalises ctx_b; the local llama.cpp file does not (see read_hellaswag)
    assert d.requests[0][0] == "Roof shingle removal: A man is sitting on a roof. He"
    assert d.requests[1][1] == " starts pulling up roofing. on a roof." and d.gold == 1
