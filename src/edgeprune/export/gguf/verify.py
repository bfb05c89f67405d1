"""Read a written GGUF back and check it: metadata, weights, llama.cpp logits, tokenization.

Checks, in order:
1. metadata: GGUFReader finds the architecture keys, per-layer widths and tokenizer keys that were
   meant, and every tensor with the planned shape (and type, for files edgeprune quantized);
2. weights: every tensor is dequantized from the file and compared with the model's weight (the
   quantization error, per type); the dequantized tensors make a "file model" in torch;
3. logits: llama.cpp (llama-cpp-python) runs the file on a few prompts; its next-token logits
   must match the file model within the type's tolerance (this tests the layout: permutation,
   widths, norms, RoPE), and are also compared with the original model (the quantization cost);
4. tokenization: llama.cpp and the Hugging Face tokenizer must give identical ids on sample lines.
llama_cpp is imported here only, when a check runs.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.export.gguf import tables
from edgeprune.export.gguf.layout import unpermute_qk
from edgeprune.export.gguf.spec import GGUFModelSpec
from edgeprune.export.gguf.vocab import KV
from edgeprune.export.gguf.writer import PlannedTensor

# -- pure comparisons -------------------------------------------------------------------------------


@dataclass
class LogitComparison:
    max_abs_diff: float
    max_abs_logit: float  # of the reference, to read the difference against
    rel_diff: float  # max_abs_diff / max_abs_logit
    top1_agreement: float  # share of positions whose arg-max token agrees
    n_positions: int


def compare_logits(reference: list[np.ndarray], got: list[np.ndarray]) -> LogitComparison:
    """Compare per-prompt logit matrices ``(positions, vocab)`` of a reference and a runtime."""
    diffs = [float(np.abs(r - g).max()) for r, g in zip(reference, got)]
    scale = max(float(np.abs(r).max()) for r in reference)
    agree = sum(int((r.argmax(-1) == g.argmax(-1)).sum()) for r, g in zip(reference, got))
    n = sum(len(r) for r in reference)
    worst = max(diffs)
    return LogitComparison(worst, scale, worst / max(scale, 1e-12), agree / n, n)


def _same(a, b) -> bool:
    if isinstance(a, bytes):
        a = a.decode("utf-8", errors="replace")
    if isinstance(b, bytes):
        b = b.decode("utf-8", errors="replace")
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


# -- 1 and 2: read back with GGUFReader -------------------------------------------------------------


def check_metadata(reader, spec: GGUFModelSpec, tensors: list[PlannedTensor], kvs: tuple[KV, ...], *, check_types: bool) -> list[str]:
    """Problems found comparing a GGUFReader with what was meant to be written (empty: none)."""
    from edgeprune.models.files import gguf_field

    problems = []
    arch = gguf_field(reader, "general.architecture")
    if arch != spec.arch:
        problems.append(f"general.architecture is {arch!r}, expected {spec.arch!r}")
    expected = [(k, v) for k, v, _, _ in spec.kvs()] + [(kv.key, kv.value) for kv in kvs]
    for key, value in expected:
        got = gguf_field(reader, key)
        if got is None or not _same(got, value):
            problems.append(f"{key} reads back as {str(got)[:40]}, expected {str(value)[:40]}")
    found = {t.name: t for t in reader.tensors}
    missing = [t.name for t in tensors if t.name not in found]
    extra = sorted(set(found) - {t.name for t in tensors})
    if missing or extra:
        problems.append(f"tensors missing {missing[:3]}, unexpected {extra[:3]}")
    for t in tensors:
        r = found.get(t.name)
        if r is None:
            continue
        shape = tuple(reversed([int(d) for d in r.shape]))  # ggml lists ne0 (the row length) first
        if shape != t.shape:
            problems.append(f"{t.name} has shape {shape}, expected {t.shape}")
        if check_types and r.tensor_type != t.choice.ggml:
            problems.append(f"{t.name} has type {r.tensor_type.name}, expected {t.choice.ggml.name}")
    return problems


def file_weights(reader, tensors: list[PlannedTensor]) -> dict[str, np.ndarray]:
    """HF-layout float32 weights dequantized from the file, keyed by model parameter name."""
    from gguf.quants import dequantize

    found = {t.name: t for t in reader.tensors}
    out = {}
    for t in tensors:
        if t.hf_name is None or t.name not in found:
            continue
        r = found[t.name]
        arr = np.asarray(dequantize(r.data, r.tensor_type), dtype=np.float32).reshape(t.shape)
        out[t.hf_name] = unpermute_qk(arr, t.n_head) if t.n_head else arr
    return out


def weight_errors(model, weights: dict[str, np.ndarray], tensors: list[PlannedTensor]) -> dict[str, float]:
    """Largest relative RMS error between file and model weights, per GGML type in the file."""
    params = dict(model.named_parameters(remove_duplicate=False))
    types = {t.hf_name: t.choice.ggml.name for t in tensors if t.hf_name}
    worst: dict[str, float] = {}
    for name, arr in weights.items():
        ref = params[name].detach().float().cpu().numpy()
        err = float(np.sqrt(np.mean((arr - ref) ** 2)) / max(np.sqrt(np.mean(ref**2)), 1e-12))
        worst[types[name]] = max(worst.get(types[name], 0.0), err)
    return worst


def file_model(model, weights: dict[str, np.ndarray]):
    """A copy of ``model`` holding the weights as stored in the file (the reference for llama.cpp)."""
    import torch

    clone = copy.deepcopy(model).float().eval()
    params = dict(clone.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name, arr in weights.items():
            params[name].copy_(torch.tensor(arr))  # the reader's arrays are read-only maps
    return clone


# -- 3 and 4: llama.cpp ------------------------------------------------------------------------------


def default_threads() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


@contextlib.contextmanager
def llama_model(path: Path, *, n_ctx: int = 512, logits_all: bool = True, vocab_only: bool = False, n_threads: int | None = None):
    """Open a GGUF in llama-cpp-python; a load failure becomes one line with llama.cpp's reason."""
    import llama_cpp
    from llama_cpp import _logger

    errors: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level, text, user_data):  # WARN (2) and ERROR (3) lines say why a load failed
        if level in (2, 3):
            errors.append(text.decode("utf-8", errors="replace").strip())

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        llm = llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, logits_all=logits_all, vocab_only=vocab_only,
            n_threads=n_threads or default_threads(), n_threads_batch=n_threads or default_threads(), verbose=False,
        )  # fmt: skip
    except (ValueError, RuntimeError) as exc:
        reason = next((e for e in reversed(errors) if e and "failed to load model" not in e), str(exc))
        raise EdgepruneError(f"llama.cpp cannot load {Path(path).name}: {reason[:200]}") from None
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
    try:
        yield llm
    finally:
        llm.close()


def llama_logits(llm, ids: list[int]) -> np.ndarray:
    """llama.cpp's logits ``(len(ids), vocab)`` for one sequence, from an empty cache."""
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def torch_logits(model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(torch.tensor([ids]), use_cache=False)
    return out.logits[0].float().numpy()


def compare_tokenization(llm, tokenizer, lines) -> dict:
    """Token ids from llama.cpp vs the HF tokenizer: without specials per line, plus with BOS/EOS."""
    identical, mismatch = 0, None
    for i, line in enumerate(lines):
        hf = tokenizer.encode(line, add_special_tokens=False)
        cpp = llm.tokenize(line.encode("utf-8"), add_bos=False, special=True)
        if list(hf) == list(cpp):
            identical += 1
        elif mismatch is None:
            mismatch = f"line {i} {line[:40]!r}: transformers {list(hf)[:8]} vs llama.cpp {list(cpp)[:8]}"
    with_specials = None
    if lines:
        hf = tokenizer.encode(lines[0])
        cpp = llm.tokenize(lines[0].encode("utf-8"), add_bos=True, special=True)
        with_specials = list(hf) == list(cpp)
        if not with_specials and mismatch is None:
            mismatch = f"with special tokens: transformers {list(hf)[:6]} vs llama.cpp {list(cpp)[:6]}"
    return {"lines": len(lines), "identical": identical, "with_special_tokens": with_specials, "first_mismatch": mismatch}


def sample_lines(tokenizer) -> list[str]:
    lines = list(tables.SAMPLE_LINES)
    specials = [t for t in (tokenizer.bos_token, tokenizer.eos_token) if t]
    if specials:  # special tokens inside text must be recognised by both
        lines.append(f"{specials[0]}Hello there{specials[-1]} again")
    return lines


def verify_prompts(tokenizer, vocab_size: int, n_random: int = 3, length: int = 24) -> list[list[int]]:
    if tokenizer is not None:
        return [list(tokenizer.encode(p)) for p in tables.VERIFY_PROMPTS]
    rng = np.random.default_rng(0)  # fixed ids: llama.cpp runs on ids when there is no vocabulary
    return [rng.integers(0, vocab_size, length).tolist() for _ in range(n_random)]


# -- the whole verification ----------------------------------------------------------------------------


@dataclass
class GGUFVerifyResult:
    passed: bool
    problems: list[str]
    tolerance: dict
    logits_vs_file: dict | None = None  # llama.cpp vs torch with the file's weights: the pass/fail test
    logits_vs_model: dict | None = None  # llama.cpp vs the original torch model: the quantization cost
    weight_rel_rms_error: dict = field(default_factory=dict)  # per GGML type, worst tensor
    tokenization: dict | None = None
    runtime: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        if self.passed:
            lv = self.logits_vs_model or {}
            return f"verified: max |dlogit| {lv.get('max_abs_diff', float('nan')):.4g}, top-1 {lv.get('top1_agreement', float('nan')):.0%}"
        return "; ".join(self.problems[:3])


def verify_gguf(
    path: Path,
    model,
    tokenizer,
    spec: GGUFModelSpec,
    tensors: list[PlannedTensor],
    tokenizer_kvs: tuple[KV, ...],
    qtype: tables.QType,
    *,
    check_types: bool = True,
    n_threads: int | None = None,
) -> GGUFVerifyResult:
    import llama_cpp

    from edgeprune.models.files import open_gguf

    tol = {"rtol": qtype.rtol, "min_top1": qtype.min_top1}
    reader = open_gguf(Path(path))
    problems = check_metadata(reader, spec, tensors, tokenizer_kvs, check_types=check_types)
    if problems:
        return GGUFVerifyResult(False, problems, tol)
    weights = file_weights(reader, tensors)
    errors = weight_errors(model, weights, tensors)
    reference = file_model(model, weights)
    del reader, weights

    prompts = verify_prompts(tokenizer, spec.vocab_size)
    n_ctx = max(64, max(len(p) for p in prompts) + 8)
    threads = n_threads or default_threads()
    with llama_model(path, n_ctx=n_ctx, n_threads=threads) as llm:
        got = [llama_logits(llm, ids) for ids in prompts]
        tok = compare_tokenization(llm, tokenizer, sample_lines(tokenizer)) if tokenizer is not None else None
    vs_file = compare_logits([torch_logits(reference, ids) for ids in prompts], got)
    del reference
    vs_model = compare_logits([torch_logits(model, ids) for ids in prompts], got)

    if vs_file.rel_diff > qtype.rtol or vs_file.top1_agreement < qtype.min_top1:
        problems.append(
            f"llama.cpp logits differ from the file's weights in torch: max |dlogit| {vs_file.max_abs_diff:.4g} "
            f"({vs_file.rel_diff:.2%} of the largest logit, tolerance {qtype.rtol:.2%}), top-1 agreement "
            f"{vs_file.top1_agreement:.0%} (needs {qtype.min_top1:.0%})"
        )
    if tok is not None and (tok["identical"] != tok["lines"] or tok["with_special_tokens"] is False):
        problems.append(f"llama.cpp tokenizes differently from transformers: {tok['first_mismatch']}")
    runtime = {"llama_cpp_python": llama_cpp.__version__, "n_ctx": n_ctx, "n_threads": threads, "kv_cache": "f16 (default)", "n_prompts": len(prompts)}
    return GGUFVerifyResult(not problems, problems, tol, asdict(vs_file), asdict(vs_model), errors, tok, runtime)
