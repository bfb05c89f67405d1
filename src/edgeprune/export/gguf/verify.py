"""Read a written GGUF back and check it: metadata, weights, llama.cpp logits, tokenization.

Checks that fail an export:
1. metadata: GGUFReader finds the architecture keys, per-layer widths and tokenizer keys that were
   meant, and every tensor with the planned shape (and type, for files edgeprune quantized);
2. weights: every tensor, dequantized from the file and put back in HF layout, is within its
   type's rounding error of the model's weight (catches encoding and permutation bugs per tensor);
3. layout: llama.cpp runs an F32 rendering of the file (the file itself for F32; the F32 input of
   llama-quantize for K-quants) on a few prompts, with an F32 KV cache, and its next-token logits
   must match torch's to float32 accuracy. The layout (names, permutation, widths, norms, RoPE) is
   the same whatever the type, and in F32 llama.cpp adds no rounding of its own, so this test is
   exact for any model, however sensitive;
4. the file itself runs in llama.cpp with finite logits, and tokenizes sample lines exactly as the
   Hugging Face tokenizer does.
Reported, not failed: the file's logits against torch (the quantization cost, model-dependent: a
badly conditioned model can amplify llama.cpp's 8-bit activation rounding a lot).
llama.cpp runs in a child process (see llamacpp.py); llama_cpp is never imported here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgeprune.export.common import versions
from edgeprune.threads import torch_threads
from edgeprune.export.gguf import tables
from edgeprune.export.gguf.layout import unpermute_qk
from edgeprune.export.gguf.llamacpp import default_threads, run_in_child
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


def file_weights(reader, tensors: list[PlannedTensor]) -> dict[str, tuple[np.ndarray, str]]:
    """HF-layout float32 weights dequantized from the file, with their GGML type in the file,
    keyed by model parameter name."""
    from gguf.quants import dequantize

    found = {t.name: t for t in reader.tensors}
    out = {}
    for t in tensors:
        if t.hf_name is None or t.name not in found:
            continue
        r = found[t.name]
        arr = np.asarray(dequantize(r.data, r.tensor_type), dtype=np.float32).reshape(t.shape)
        out[t.hf_name] = (unpermute_qk(arr, t.n_head) if t.n_head else arr, r.tensor_type.name)
    return out


def weight_errors(model, weights: dict[str, tuple[np.ndarray, str]]) -> dict[str, float]:
    """Largest relative RMS error between file and model weights, per GGML type in the file."""
    params = dict(model.named_parameters(remove_duplicate=False))
    worst: dict[str, float] = {}
    for name, (arr, ggml) in weights.items():
        ref = params[name].detach().float().cpu().numpy()
        err = float(np.sqrt(np.mean((arr - ref) ** 2)) / max(np.sqrt(np.mean(ref**2)), 1e-12))
        worst[ggml] = max(worst.get(ggml, 0.0), err)
    return worst


# -- 3 and 4: llama.cpp ------------------------------------------------------------------------------


def torch_logits(model, prompts: list[list[int]]) -> list[np.ndarray]:
    """Float32 torch logits ``(len(ids), vocab)`` per prompt, all prompts in one batch.

    Prompts are right-padded: under a causal mask no real token attends to the padding after it,
    so the logits of real positions are those of the unpadded prompt. A model held in another
    dtype is run from a float32 copy, since llama.cpp is compared with float32 arithmetic.
    """
    import copy

    import torch

    param = next(model.parameters())
    if param.dtype != torch.float32:
        model = copy.deepcopy(model).float()
        for m in model.modules():
            # .to(bfloat16) also rounded the RoPE frequency buffer; llama.cpp computes it exactly
            if isinstance(getattr(m, "inv_freq", None), torch.Tensor) and hasattr(m, "config"):
                m.inv_freq = type(m)(m.config).inv_freq.to(device=m.inv_freq.device, dtype=torch.float32)
    width = max(len(p) for p in prompts)
    batch = torch.tensor([p + [p[-1]] * (width - len(p)) for p in prompts], device=param.device)
    with torch.no_grad():
        logits = model(batch, use_cache=False).logits.float().cpu().numpy()
    return [logits[i, : len(p)] for i, p in enumerate(prompts)]


def compare_tokenization(tokenizer, lines: list[str], tokens: list[list[int]], tokens_with_specials: list[int] | None) -> dict:
    """llama.cpp's token ids (given) vs the HF tokenizer's: per line without BOS/EOS, then the first
    line with each side adding its special tokens."""
    identical, mismatch = 0, None
    for i, (line, cpp) in enumerate(zip(lines, tokens)):
        hf = tokenizer.encode(line, add_special_tokens=False)
        if list(hf) == list(cpp):
            identical += 1
        elif mismatch is None:
            mismatch = f"line {i} {line[:40]!r}: transformers {list(hf)[:8]} vs llama.cpp {list(cpp)[:8]}"
    with_specials = None
    if lines and tokens_with_specials is not None:
        hf = tokenizer.encode(lines[0])
        with_specials = list(hf) == list(tokens_with_specials)
        if not with_specials and mismatch is None:
            mismatch = f"with special tokens: transformers {list(hf)[:6]} vs llama.cpp {list(tokens_with_specials)[:6]}"
    return {"lines": len(lines), "identical": identical, "with_special_tokens": with_specials, "first_mismatch": mismatch}


def sample_lines(tokenizer, *, prefix_caveat: bool = False) -> list[str]:
    """Lines to compare tokenizations on; ``prefix_caveat`` drops those the SentencePiece space-prefix
    difference concerns (see vocab.TokenizerKVs.caveat)."""
    lines = [ln for ln in tables.SAMPLE_LINES if not (prefix_caveat and ln[:1].isspace())]
    specials = [t for t in (tokenizer.bos_token, tokenizer.eos_token) if t]
    if specials and not prefix_caveat:  # special tokens inside text must be recognised by both
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
    layout: dict | None = None  # llama.cpp on the F32 rendering vs torch: the pass/fail logit test
    logits_vs_model: dict | None = None  # llama.cpp on the file itself vs torch: the quantization cost
    weight_rel_rms_error: dict = field(default_factory=dict)  # per GGML type, worst tensor
    tokenization: dict | None = None
    runtime: dict = field(default_factory=dict)
    tensor_types: dict = field(default_factory=dict)  # GGML type -> tensor count, as read back

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        if self.passed:
            lv = self.logits_vs_model or {}
            return f"verified: max |dlogit| {lv.get('max_abs_diff', float('nan')):.4g}, top-1 {lv.get('top1_agreement', float('nan')):.0%}"
        return "; ".join(self.problems[:3])


def weight_problems(errors: dict[str, float]) -> list[str]:
    out = []
    for ggml, err in sorted(errors.items()):
        bound = tables.WEIGHT_RTOL.get(ggml)
        if bound is not None and err > bound:
            out.append(f"{ggml} weights read back with {err:.3g} relative RMS error (at most {bound:.3g} expected)")
    return out


def verify_gguf(
    path: Path,
    model,
    tokenizer,
    spec: GGUFModelSpec,
    tensors: list[PlannedTensor],
    tokenizer_kvs: tuple[KV, ...],
    *,
    f32_path: Path | None = None,
    prefix_caveat: bool = False,
    check_types: bool = True,
    n_threads: int | None = None,
) -> GGUFVerifyResult:
    """Run checks 1-4 on ``path``; ``f32_path`` is its F32 rendering (None: ``path`` is F32)."""
    from edgeprune.models.files import open_gguf

    tol = {"layout_rtol": tables.LAYOUT_RTOL, "layout_min_top1": tables.LAYOUT_MIN_TOP1}
    reader = open_gguf(Path(path))  # slow for big vocabularies (one numpy view per string): open once
    types = dict(Counter(t.tensor_type.name for t in reader.tensors))
    problems = check_metadata(reader, spec, tensors, tokenizer_kvs, check_types=check_types)
    if problems:
        return GGUFVerifyResult(False, problems, tol, tensor_types=types)
    errors = weight_errors(model, file_weights(reader, tensors))
    del reader
    tol["weight_rtol"] = {t: tables.WEIGHT_RTOL.get(t) for t in errors}
    problems += weight_problems(errors)

    prompts = verify_prompts(tokenizer, spec.vocab_size)
    lines = sample_lines(tokenizer, prefix_caveat=prefix_caveat) if tokenizer is not None else []
    n_ctx = max(64, max(len(p) for p in prompts) + 8)
    threads = n_threads or default_threads()
    files = [Path(path)] if f32_path is None else [Path(f32_path), Path(path)]
    run = run_in_child(files, prompts, lines, n_ctx=n_ctx, n_threads=threads)
    with torch_threads(threads):
        reference = torch_logits(model, prompts)
    layout = compare_logits(reference, run.logits[0])
    actual = compare_logits(reference, run.logits[-1])
    if layout.rel_diff > tables.LAYOUT_RTOL or layout.top1_agreement < tables.LAYOUT_MIN_TOP1:
        problems.append(
            f"llama.cpp does not compute what torch computes{' (F32 rendering)' if f32_path else ''}: max |dlogit| "
            f"{layout.max_abs_diff:.4g} ({layout.rel_diff:.3%} of the largest logit, at most {tables.LAYOUT_RTOL:.3%} "
            f"allowed), top-1 agreement {layout.top1_agreement:.0%}: the layout is wrong"
        )
    if not all(np.isfinite(x).all() for x in run.logits[-1]):
        problems.append("llama.cpp gives non-finite logits for the file")
    tok = compare_tokenization(tokenizer, lines, run.tokens, run.tokens_with_specials) if tokenizer is not None else None
    if tok is not None and (tok["identical"] != tok["lines"] or tok["with_special_tokens"] is False):
        problems.append(f"llama.cpp tokenizes differently from transformers: {tok['first_mismatch']}")
    runtime = {"llama_cpp_python": versions(["llama-cpp-python"])["llama-cpp-python"], "process": "child", "n_ctx": n_ctx, "n_threads": threads,
               "kv_cache": "f32", "torch_threads": threads, "n_prompts": len(prompts),
               "layout_file": "the file" if f32_path is None else "an F32 rendering of the file"}  # fmt: skip
    return GGUFVerifyResult(not problems, problems, tol, asdict(layout), asdict(actual), errors, tok, runtime, types)
