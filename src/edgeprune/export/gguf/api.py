"""``export_gguf``: a torch Llama-family model (uniform or per-layer widths) to a verified GGUF file.

Orchestration only: the layout rules are in layout.py, names and keys in tables.py, tokenizers in
vocab.py, the read-back in verify.py. Order of work: validate everything that can be validated
without writing (output path, type, widths, tokenizer), write to a temporary file beside the
output, verify that file, then rename it into place and write the report beside it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

from edgeprune.errors import EdgepruneError
from edgeprune.export.common import ExportConfig, unknown_choice, versions
from edgeprune.export.gguf import tables, vocab
from edgeprune.export.gguf.spec import GGUFModelSpec, model_spec
from edgeprune.fileio import atomic_file, check_writable, scratch_file, write_text_atomic


@dataclass(frozen=True)
class GGUFExportConfig(ExportConfig):
    """The GGUF export settings a build recipe carries (strict: unknown keys are errors)."""

    qtype: str = "f16"
    llama_quantize: str | None = None  # path of llama.cpp's llama-quantize, for K-quants
    imatrix: str | None = None  # an importance matrix file (imatrix.py) the quantizer weights its rounding by

    FORMAT: ClassVar[str] = "GGUF"
    LOWERCASE: ClassVar[tuple[str, ...]] = ("qtype",)

    def check(self) -> list[str]:
        from edgeprune.export.gguf.imatrix import type_problems

        problems = unknown_choice("GGUF type", self.qtype, list(tables.QTYPES))
        if self.imatrix is not None and not problems:
            problems += type_problems(self.qtype)
        return problems + super().check()

    def quantizer_route(self) -> bool:
        """Whether llama.cpp's quantizer makes the file: K-quants always; the 4/5-bit legacy types
        when an imatrix is given (gguf-py rounds to nearest and cannot weight by one)."""
        return tables.QTYPES[self.qtype].route == "llama-quantize" or self.imatrix is not None


@dataclass
class GGUFExportReport:
    path: str
    bytes: int
    arch: str
    family: str
    qtype: str
    n_layers: int
    heads: list[int]
    kv_heads: list[int]
    mlp: list[int]  # MLP widths as written (zero-MLP layers show ZERO_MLP_CHANNELS)
    zero_mlp_layers: list[int]
    tied_embeddings: bool
    tokenizer: str
    n_tensors: int
    tensor_types: dict[str, int]
    fallbacks: list[dict]
    route: str
    verify: dict | None
    notes: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    # the importance matrix the quantizer used: file, datasets, tokens, chunks, chunk_size, entries; None: none
    imatrix: dict | None = None

    @property
    def verified(self) -> bool:
        return bool(self.verify and self.verify.get("passed"))

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @property
    def report_path(self) -> Path:
        return report_path(Path(self.path))


def report_path(out: Path) -> Path:
    """``model.gguf`` -> ``model.report.json``, beside the file."""
    path = out.with_suffix(".report.json")
    return path if path != out else out.with_name(out.name + ".report.json")


def _general_kvs(model, source_fields: list[vocab.KV]) -> tuple[vocab.KV, ...]:
    from gguf import GGUFValueType

    kvs = tuple(kv for kv in source_fields if kv.key in tables.COPIED_GENERAL_KEYS)
    if kvs:
        return kvs
    name = Path(str(getattr(model.config, "_name_or_path", "") or "edgeprune-model")).name or "edgeprune-model"
    return (vocab.KV("general.name", name, GGUFValueType.STRING),)


def _tokenizer_kvs(tokenizer, source_gguf: Path | None, source_fields: list[vocab.KV], spec: GGUFModelSpec) -> vocab.TokenizerKVs:
    if source_gguf is not None:
        tok = vocab.from_fields(source_fields, source_gguf)
    elif tokenizer is not None:
        tok = vocab.from_hf(tokenizer, spec.vocab_size, spec.arch)
    else:
        return vocab.no_vocab()
    if tok.n_tokens is not None and tok.n_tokens != spec.vocab_size:
        raise EdgepruneError(
            f"the tokenizer has {tok.n_tokens} tokens but the model's embedding has {spec.vocab_size} rows: "
            "llama.cpp needs them equal; pass the tokenizer that belongs to this model"
        )
    return tok


def _file_type_counts(path: Path) -> dict[str, int]:
    from edgeprune.models.files import open_gguf

    return dict(Counter(t.tensor_type.name for t in open_gguf(path).tensors))


def _notes(spec: GGUFModelSpec, qtype: tables.QType, *, imatrix: bool = False) -> list[str]:
    notes = []
    if spec.plan.zero_mlp_layers:
        notes.append(
            f"layers {list(spec.plan.zero_mlp_layers)} keep attention but have no MLP; llama.cpp's deci graph drops "
            f"such a layer's attention output, so each was given a {tables.ZERO_MLP_CHANNELS}-channel MLP with zero "
            "weights (output exactly 0, outputs unchanged)"
        )
    if imatrix and qtype.route == "gguf-py":
        notes.append(
            f"made by llama.cpp's quantizer, not gguf-py, to use the importance matrix: its tensor types follow "
            f"llama-quantize's {qtype.name} mix"
        )
    elif qtype.route == "gguf-py" and qtype.ggml is not None and qtype.ggml.name not in ("F32", "F16", "BF16", "Q8_0"):
        notes.append(
            "the output matrix (output.weight, or token_embd when tied) is Q8_0, as llama-quantize does when its "
            "Q6_K choice does not fit the row length; gguf-py cannot write Q6_K"
        )
    return notes


def _matched_imatrix(path: str | None, model, spec: GGUFModelSpec):
    """The imatrix at ``path`` checked against the matrices the file will hold (names, column
    counts), before anything is written; None without one."""
    if path is None:
        return None
    from edgeprune.export.gguf import writer
    from edgeprune.export.gguf.imatrix import check_imatrix, read_imatrix

    im = read_imatrix(path)
    planned = writer.plan_tensors(model, spec, tables.QTYPES["f32"])  # names and shapes only: nothing is loaded
    check_imatrix(im, {t.name: t.shape[-1] for t in planned if len(t.shape) == 2}, path)
    return im


def preflight(out_path, *, qtype: str, overwrite: bool, verify: bool = True, llama_quantize=None, imatrix=None,
              option: str = "overwrite=True"):  # fmt: skip
    """Checks that need no model: type, output path, K-quant binary, imatrix file (read, not yet
    matched to the model). Returns (config, output, the quantizer's command when llama.cpp's
    quantizer makes the file, else None).

    The CLI runs this before loading the model, so a typo fails in milliseconds, not seconds.
    """
    from edgeprune.export.gguf import kquant
    from edgeprune.export.gguf.imatrix import read_imatrix

    cfg = GGUFExportConfig(qtype=qtype, verify=verify, llama_quantize=str(llama_quantize) if llama_quantize else None,
                           imatrix=str(imatrix) if imatrix is not None else None)  # fmt: skip
    out = check_writable(out_path, overwrite=overwrite, option=option)
    quantizer = kquant.quantizer_command(cfg.llama_quantize) if cfg.quantizer_route() else None
    if cfg.imatrix is not None:
        read_imatrix(cfg.imatrix)
        kquant.check_imatrix_support(quantizer)
    return cfg, out, quantizer


def export_gguf(
    model,
    tokenizer,
    out_path: str | Path,
    *,
    qtype: str = "f16",
    source_gguf: str | Path | None = None,
    verify: bool = True,
    overwrite: bool = False,
    llama_quantize: str | Path | None = None,
    imatrix: str | Path | None = None,
    progress: bool | None = None,
) -> GGUFExportReport:
    """Write ``model`` (transformers Llama/Mistral/Qwen2 or edgeprune_llama) as a GGUF file.

    ``tokenizer``: the Hugging Face tokenizer (None: a vocabulary-less file that runs on token ids).
    ``source_gguf``: a GGUF the model came from; its ``tokenizer.*`` keys are copied verbatim. Pass
    ``LoadedModel.source_gguf``: the file itself for a built-in or ``.gguf``, or the ``tokenizer.gguf``
    record that a model directory written by edgeprune carries.
    ``qtype``: f32, f16, bf16, q8_0, q5_1, q5_0, q4_1, q4_0 (pure Python), or a K-quant such as
    q4_k_m (llama.cpp's quantizer through llama-cpp-python; ``llama_quantize``: the path of a
    llama-quantize binary to use instead).
    ``imatrix``: an importance matrix file (llama.cpp's GGUF imatrix: ``imatrix.write_imatrix`` or
    llama-imatrix) computed with this model; the quantizer weights each column's rounding error by
    it. For K-quants and q4_0/q4_1/q5_0/q5_1, which llama.cpp's quantizer then makes (gguf-py cannot
    use one); other types refuse it. The report's ``imatrix`` says which text and how many tokens.
    With ``verify`` the file is read back and run in llama.cpp before it is renamed into place; a
    failed check raises EdgepruneError and leaves nothing behind. Returns the export report, which
    is also written beside the file as ``<name>.report.json``.
    """
    from edgeprune.export.gguf import kquant, writer
    from edgeprune.export.gguf.llamacpp import default_threads
    from edgeprune.export.gguf.verify import verify_gguf

    cfg, out, quantizer = preflight(out_path, qtype=qtype, overwrite=overwrite, verify=verify, llama_quantize=llama_quantize,
                                    imatrix=imatrix)  # fmt: skip
    qt = tables.QTYPES[cfg.qtype]
    source = Path(source_gguf) if source_gguf is not None else None
    if source is not None and not source.is_file():
        raise EdgepruneError(f"source GGUF {source} does not exist: pass the .gguf file the model was loaded from")
    spec = model_spec(model)
    im = _matched_imatrix(cfg.imatrix, model, spec)
    # one read of the source file: GGUFReader takes seconds on a 50k-token vocabulary
    source_fields = vocab.gguf_fields(source, ("tokenizer.", "general.")) if source is not None else []
    tok = _tokenizer_kvs(tokenizer, source, source_fields, spec)
    general = _general_kvs(model, source_fields)
    threads = default_threads()
    timings: dict[str, float] = {}
    f32 = tables.QTYPES["f32"]
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_file(out, overwrite=overwrite))
        t0 = time.perf_counter()
        # The F32 rendering: llama-quantize's input for K-quants, and the exact layout test of the
        # read-back (verify.py, check 3) for every type but F32 itself.
        needs_f32 = quantizer is not None or (cfg.verify and qt.name != "f32")
        full = stack.enter_context(scratch_file(out.parent, f"{out.name}.f32")) if needs_f32 else None
        if full is not None:
            f32_written = writer.write_gguf(full, model, spec, f32, tok.kvs, general, progress=progress)
        if quantizer is None:
            written = writer.write_gguf(tmp, model, spec, qt, tok.kvs, general, progress=progress)
            fallbacks, route = written.fallbacks(), "gguf-py"
        else:
            written = f32_written
            t1 = time.perf_counter()
            fallbacks, _ = kquant.run_llama_quantize(quantizer, full, tmp, cfg.qtype, threads,
                                                     imatrix=Path(cfg.imatrix) if cfg.imatrix else None)  # fmt: skip
            timings["quantize_s"] = time.perf_counter() - t1
            route = f"llama-quantize ({cfg.llama_quantize or 'llama_model_quantize via llama-cpp-python'})"
        timings["write_s"] = time.perf_counter() - t0 - timings.get("quantize_s", 0.0)
        result = None
        if cfg.verify:
            t1 = time.perf_counter()
            result = verify_gguf(
                tmp, model, tokenizer, spec, written.tensors, tok.kvs, f32_path=full,
                prefix_caveat=tok.prefix_caveat, check_types=quantizer is None, n_threads=threads,
            )  # fmt: skip
            timings["verify_s"] = time.perf_counter() - t1
            if not result.passed:
                raise EdgepruneError(f"GGUF verification failed, nothing written: {result.summary()}")
        report = GGUFExportReport(
            path=str(out),
            bytes=tmp.stat().st_size,
            arch=spec.arch,
            family=spec.family,
            qtype=cfg.qtype,
            n_layers=spec.n_layers,
            heads=list(spec.heads),
            kv_heads=list(spec.kv_heads),
            mlp=list(spec.ff),
            zero_mlp_layers=list(spec.plan.zero_mlp_layers),
            tied_embeddings=spec.tied,
            tokenizer=tok.source,
            n_tensors=len(written.tensors),
            tensor_types=result.tensor_types if result else (written.type_counts() if quantizer is None else _file_type_counts(tmp)),
            fallbacks=fallbacks,
            route=route,
            verify=result.to_dict() if result is not None else None,
            notes=_notes(spec, qt, imatrix=im is not None) + ([f"tokenization differs from transformers on {tok.caveat}"] if tok.caveat else []),
            timings=timings,
            versions=versions(("edgeprune", "gguf", "torch", "transformers") + (("llama-cpp-python",) if result is not None else ())),
            imatrix={"file": str(cfg.imatrix), **im.describe()} if im is not None else None,
        )
    write_text_atomic(report_path(out), report.to_json())
    return report
