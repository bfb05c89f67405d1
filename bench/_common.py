"""What the benches under ``bench/`` share, so each bench file holds only what it measures.

- The result files: :func:`header` (``{bench, command, machine, versions}``), :class:`Results`
  (the JSON document plus its markdown table, both rewritten atomically after every row, with
  ``"complete": false`` until the end), :class:`Checks` (the PASS/FAIL lines of an issue's
  figures), and for benches whose rows come from several processes :func:`locked` /
  :func:`read_json` / :func:`merge_row` (a read-modify-write of the JSON under a file lock).
- The models: :func:`add_pruned_args` / :func:`pruned_model` / :func:`pruned_settings` (the
  seeded random per-layer-width stand-in for a pruned SmolLM2-135M that the export benches run),
  :func:`tiny_model_dir` (a tiny random Llama saved to disk, for ``--tiny`` pipeline checks).
- The text: :func:`ppl` (WikiText-2 test perplexity of any ``edgeprune.eval`` backend on the first
  N windows — the same token ids whichever engine is scored), :func:`valid_prompts`.

Import it from a bench as ``from _common import ...`` (``bench/`` is the script's folder, so it is
on ``sys.path``). Nothing here imports torch at module level.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from edgeprune.memory import peak_rss_mb  # noqa: F401 (the benches import it from here)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DATA = ROOT.parent / "shared" / "data" / "wikitext-2-raw"


# -- result files ----------------------------------------------------------------------------------


def header(bench: str, command: str | None = None) -> dict:
    """The head every bench JSON starts with: ``{bench, command, machine, versions}``."""
    from edgeprune.benchutil import command_line, versions
    from edgeprune.devices.host import machine_info

    return {"bench": bench, "command": command or command_line(), "machine": machine_info(), "versions": versions()}


def document(bench: str, rows: list[dict], **extra) -> dict:
    """:func:`header`, then ``extra`` (settings, figures, ...), then the rows."""
    return {**header(bench), **extra, "rows": rows}


def markdown(doc: dict, columns: Sequence[str], *, title: str | None = None, notes: Iterable[str] = (),
             preface: Iterable[str] = ()) -> str:  # fmt: skip
    """The markdown beside a bench JSON: title, machine and command, ``preface`` lines (e.g. the
    settings as ``- key: value``), the table, then ``notes`` lines."""
    from edgeprune.benchutil import markdown_table

    m = doc.get("machine", {})
    pre = "".join(f"{line}\n" for line in preface)
    text = (f"{title or '# ' + doc['bench']}\n\n{m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
            f"{m.get('memory_gb', '?')} GB; `{doc['command']}`\n\n{pre + chr(10) if pre else ''}"
            f"{markdown_table(doc['rows'], columns)}\n")  # fmt: skip
    notes = list(notes)
    return text + ("\n" + "\n".join(notes) + "\n" if notes else "")


def write_results(doc: dict, json_path: str | Path, md_path: str | Path | None, columns: Sequence[str], *,
                  title: str | None = None, notes: Iterable[str] = ()) -> str:  # fmt: skip
    """Write the JSON and (unless ``md_path`` is None) the markdown, each atomically; return the markdown."""
    from edgeprune.benchutil import write_json_atomic
    from edgeprune.fileio import write_text_atomic

    md = markdown(doc, columns, title=title, notes=notes)
    write_json_atomic(json_path, doc)
    if md_path is not None:
        write_text_atomic(md_path, md)
    return md


class Results:
    """A bench's result files, rewritten after every row so an interrupted run keeps what it measured.

        res = Results("onnx_roundtrip", out, columns=COLUMNS, title="# ...", settings={...})
        res.add({...})                # after each row: "complete": false
        print(res.finish(checks))     # the figures, "complete": true; returns the markdown
    """

    def __init__(self, bench: str, json_path: str | Path, *, columns: Sequence[str], md_path: str | Path | None = None,
                 title: str | None = None, rows: list[dict] | None = None, order: Callable[[dict], tuple] | None = None,
                 **extra):  # fmt: skip
        self.bench, self.columns, self.title, self.extra, self.order = bench, tuple(columns), title, extra, order
        self.json_path = Path(json_path)
        self.md_path = Path(md_path) if md_path else self.json_path.with_suffix(".md")
        self.rows: list[dict] = list(rows or [])

    def add(self, row: dict, *, key: Callable[[dict], tuple] | None = None) -> None:
        """Append ``row`` (or, with ``key``, replace the row with the same key in place) and rewrite the files."""
        at = next((i for i, r in enumerate(self.rows) if key(r) == key(row)), None) if key else None
        if at is None:
            self.rows.append(row)
        else:
            self.rows[at] = row
        self.save(complete=False)

    def save(self, *, complete: bool, checks: Checks | None = None) -> str:
        if self.order is not None:
            self.rows.sort(key=self.order)
        figures = checks.to_dict() if checks is not None else None
        doc = document(self.bench, self.rows, **self.extra, **({"figures": figures} if figures else {}), complete=complete)
        notes = ["## Figures", "", *(f"- {line}" for line in checks.lines)] if checks is not None else ()
        return write_results(doc, self.json_path, self.md_path, self.columns, title=self.title, notes=notes)

    def finish(self, checks: Checks | None = None) -> str:
        return self.save(complete=True, checks=checks)


class Checks:
    """The figures an issue asks for, as ``PASS``/``FAIL``/``info`` lines and a ``{figure: bool}`` map."""

    def __init__(self):
        self.checks: dict[str, bool] = {}
        self.lines: list[str] = []
        self.extra: dict = {}

    def check(self, key: str, ok: bool, detail: str = "") -> bool:
        self.checks[key] = bool(ok)
        self.lines.append(f"{'PASS' if ok else 'FAIL'}  {key}" + (f": {detail}" if detail else ""))
        return bool(ok)

    def info(self, line: str) -> None:
        self.lines.append(f"info  {line}")

    def to_dict(self) -> dict:
        return {"checks": self.checks, **self.extra, "lines": self.lines}


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive lock on ``path``'s ``.lock`` sibling, for read-modify-write of a shared JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def with_dense_ratios(rows: list[dict], is_dense: Callable[[dict], bool]) -> list[dict]:
    """Set ``dense_ppl`` / ``ppl_ratio`` of every row with a ``ppl`` from the first row ``is_dense`` picks."""
    dense = next((r for r in rows if is_dense(r)), None)
    for r in rows:
        if dense is not None and r.get("ppl") is not None:
            r["dense_ppl"] = dense["ppl"]
            r["ppl_ratio"] = r["ppl"] / dense["ppl"]
    return rows


def merge_row(path: Path, row: dict, *, key: Callable[[dict], tuple], build: Callable[[list[dict]], tuple[dict, str]]) -> dict:
    """Under :func:`locked`: replace the row of ``path`` whose ``key`` equals ``row``'s (or add it),
    let ``build(rows)`` return ``(document, markdown)``, and write both atomically. Returns the document."""
    from edgeprune.benchutil import write_json_atomic
    from edgeprune.fileio import write_text_atomic

    with locked(path):
        rows = [r for r in read_json(path).get("rows", []) if key(r) != key(row)] + [row]
        doc, md = build(rows)
        write_json_atomic(path, doc)
        write_text_atomic(path.with_suffix(".md"), md)
    return doc


# -- models ----------------------------------------------------------------------------------------


def tiny_model_dir(folder: Path, **overrides) -> str:
    """A tiny random Llama (tests/tiny.py) saved under ``folder`` once; its path."""
    sys.path.insert(0, str(ROOT))
    from tests.tiny import save_tiny, tiny_llama

    path = Path(folder) / "tiny-model"
    if not path.exists():
        save_tiny(tiny_llama(**overrides), path)
    return str(path)


def add_pruned_args(parser) -> None:
    """The options of :func:`pruned_model` (defaults: the stand-in of the export benches)."""
    parser.add_argument("--attn-keep", type=float, default=0.67, help="mean share of KV groups the pruned model keeps")
    parser.add_argument("--mlp-keep", type=float, default=0.6, help="mean share of MLP channels the pruned model keeps")
    parser.add_argument("--protect", type=int, default=4, help="keep the first and last N layers whole")
    parser.add_argument("--seed", type=int, default=0)


def pruned_model(dense, *, attn_keep: float = 0.67, mlp_keep: float = 0.6, protect: int = 4, seed: int = 0):
    """A per-layer-width ``edgeprune_llama`` cut from ``dense`` at random: whole KV groups and MLP
    channels per layer (``compress.cut.random_keep``, seeded; MLP widths multiples of 32), the first
    and last ``protect`` layers kept whole. A stand-in for an importance-pruned model in export
    benches: cutting the outer layers too leaves perplexity ~1e5, whose numbers say little."""
    from edgeprune.compress.structured.cut import cut_widths, random_keep
    from edgeprune.models import to_per_layer

    n_layers = dense.config.num_hidden_layers
    keep = random_keep(to_per_layer(dense).config, attn_keep=attn_keep, mlp_keep=mlp_keep, seed=seed)
    return cut_widths(dense, {i: k for i, k in keep.items() if protect <= i < n_layers - protect})


def pruned_from_args(dense, args):
    return pruned_model(dense, attn_keep=args.attn_keep, mlp_keep=args.mlp_keep, protect=args.protect, seed=args.seed)


def pruned_settings(pruned, dense, args) -> dict:
    """How the pruned stand-in was made and what it kept, for a bench's ``settings``."""
    pc = pruned.config
    return {"method": "random whole KV groups and MLP channels per layer (compress.cut.random_keep)",
            "attn_keep": args.attn_keep, "mlp_keep": args.mlp_keep, "seed": args.seed,
            "layers_kept_whole": f"first and last {args.protect}",
            "heads": pc.heads_per_layer(), "kv_heads": pc.kv_heads_per_layer(), "mlp": pc.intermediate_per_layer(),
            "params": sum(p.numel() for p in pruned.parameters()),
            "dense_params": sum(p.numel() for p in dense.parameters())}  # fmt: skip


# -- text ------------------------------------------------------------------------------------------


def ppl(backend, *, windows: int, seq_len: int):
    """WikiText-2 test perplexity of an ``edgeprune.eval`` backend on the first ``windows``
    non-overlapping ``seq_len``-token windows (the test file read as one text, no BOS: the
    convention of edgeprune.eval and llama.cpp's perplexity). A ``PerplexityReport``."""
    from edgeprune.eval import PerplexityConfig, evaluate_perplexity

    if not callable(getattr(backend, "session", contextlib.nullcontext)):
        backend = _NoSessionHook(backend)
    return evaluate_perplexity(backend, PerplexityConfig(seq_len=seq_len, limit_tokens=windows * seq_len), progress=False)


class _NoSessionHook:
    """edgeprune.eval's OnnxBackend keeps its onnxruntime session in ``.session``, which hides the
    ``session()`` context hook that evaluate_perplexity calls (TypeError: 'InferenceSession' object
    is not callable). The hook is a no-op for that backend, so this view hides the attribute."""

    def __init__(self, backend):
        self._backend = backend

    def __getattr__(self, name: str):
        if name == "session":
            raise AttributeError(name)
        return getattr(self._backend, name)


def ppl_setting(windows: int, seq_len: int, engines: str) -> str:
    return (f"WikiText-2 test (wiki.test.raw read as one text, no BOS), first {windows} non-overlapping windows of "
            f"{seq_len} tokens, each scored alone; the same token ids for {engines} (transformers tokenizer)")  # fmt: skip


def valid_prompts(tok, n: int, length: int) -> list[list[int]]:
    """The first ``n`` long lines (> 400 characters) of WikiText-2 *valid* (not the test windows), ``length`` tokens each."""
    lines = [ln for ln in (DATA / "wiki.valid.raw").read_text(encoding="utf-8").splitlines() if len(ln) > 400]
    return [tok.encode(ln, add_special_tokens=False)[:length] for ln in lines[:n]]


def wikitext_test_lines(n: int) -> list[str]:
    """The first ``n`` non-blank lines of WikiText-2 test."""
    return [ln for ln in (DATA / "wiki.test.raw").read_text(encoding="utf-8").splitlines() if ln.strip()][:n]


def wikitext_test_ids(tok, n: int) -> list[int]:
    """The first ``n`` token ids of WikiText-2 test tokenised as :func:`ppl` does (one text, no BOS):
    the first perplexity window, handy as a real-text prompt for speed runs."""
    text = (DATA / "wiki.test.raw").read_text(encoding="utf-8")
    return list(tok(text, add_special_tokens=False, verbose=False)["input_ids"][:n])
