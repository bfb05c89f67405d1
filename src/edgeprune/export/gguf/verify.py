"""Read a written GGUF back and check it: metadata, weights, llama.cpp logits, tokenization.

Checks, in order:
1. metadata: GGUFReader finds the architecture keys, per-layer widths and tokenizer keys that were
   meant, and every tensor with the planned shape (and type, for files edgeprune quantized);
2. weights: every tensor is dequantized from the file and compared with the model's weight (the
   quantization error, per type); the dequantized tensors make a "file model" in torch;
3. logits: llama.cpp (llama-cpp-python, in a child process) runs the file on a few prompts; its next-token logits
   must match the file model within the type's tolerance (this tests the layout: permutation,
   widths, norms, RoPE), and are also compared with the original model (the quantization cost);
4. tokenization: llama.cpp and the Hugging Face tokenizer must give identical ids on sample lines.
llama_cpp is never imported in this process (see llamacpp.py).
"""

from __future__ import annotations

import contextlib
import copy
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgeprune.errors import EdgepruneError
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


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


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


@contextlib.contextmanager
def torch_threads(n: int):
    """Run torch with ``n`` intra-op threads, restoring the caller's setting afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_logits(model, prompts: list[list[int]]) -> list[np.ndarray]:
    """Torch logits ``(len(ids), vocab)`` per prompt, all prompts in one batch.

    Prompts are right-padded: under a causal mask no real token attends to the padding after it,
    so the logits of real positions are those of the unpadded prompt.
    """
    import torch

    width = max(len(p) for p in prompts)
    batch = torch.tensor([p + [p[-1]] * (width - len(p)) for p in prompts])
    with torch.no_grad():
        logits = model(batch, use_cache=False).logits.float().numpy()
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
    logits_vs_file: dict | None = None  # llama.cpp vs torch with the file's weights: the pass/fail test
    logits_vs_model: dict | None = None  # llama.cpp vs the original torch model: the quantization cost
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


def verify_gguf(
    path: Path,
    model,
    tokenizer,
    spec: GGUFModelSpec,
    tensors: list[PlannedTensor],
    tokenizer_kvs: tuple[KV, ...],
    qtype: tables.QType,
    *,
    prefix_caveat: bool = False,
    check_types: bool = True,
    n_threads: int | None = None,
) -> GGUFVerifyResult:
    from edgeprune.models.files import open_gguf

    tol = {"rtol": qtype.rtol, "min_top1": qtype.min_top1}
    reader = open_gguf(Path(path))  # slow for big vocabularies (one numpy view per string): open once
    types = dict(Counter(t.tensor_type.name for t in reader.tensors))
    problems = check_metadata(reader, spec, tensors, tokenizer_kvs, check_types=check_types)
    if problems:
        return GGUFVerifyResult(False, problems, tol, tensor_types=types)
    weights = file_weights(reader, tensors)
    errors = weight_errors(model, weights, tensors)
    reference = file_model(model, weights)
    del reader, weights

    prompts = verify_prompts(tokenizer, spec.vocab_size)
    lines = sample_lines(tokenizer, prefix_caveat=prefix_caveat) if tokenizer is not None else []
    n_ctx = max(64, max(len(p) for p in prompts) + 8)
    threads = n_threads or default_threads()
    run = run_in_child(Path(path), prompts, lines, n_ctx=n_ctx, n_threads=threads)
    got = run.logits
    tok = compare_tokenization(tokenizer, lines, run.tokens, run.tokens_with_specials) if tokenizer is not None else None
    with torch_threads(threads):
        vs_file = compare_logits(torch_logits(reference, prompts), got)
        del reference
        vs_model = compare_logits(torch_logits(model, prompts), got)

    if vs_file.rel_diff > qtype.rtol or vs_file.top1_agreement < qtype.min_top1:
        problems.append(
            f"llama.cpp logits differ from the file's weights in torch: max |dlogit| {vs_file.max_abs_diff:.4g} "
            f"({vs_file.rel_diff:.2%} of the largest logit, tolerance {qtype.rtol:.2%}), top-1 agreement "
            f"{vs_file.top1_agreement:.0%} (needs {qtype.min_top1:.0%})"
        )
    if tok is not None and (tok["identical"] != tok["lines"] or tok["with_special_tokens"] is False):
        problems.append(f"llama.cpp tokenizes differently from transformers: {tok['first_mismatch']}")
    runtime = {"llama_cpp_python": _version("llama-cpp-python"), "process": "child", "n_ctx": n_ctx, "n_threads": threads, "kv_cache": "f16 (llama.cpp default)", "torch_threads": threads, "n_prompts": len(prompts)}
    return GGUFVerifyResult(not problems, problems, tol, asdict(vs_file), asdict(vs_model), errors, tok, runtime, types)
