"""Read an exported graph back with onnxruntime and compare its logits with the torch model's.

Each prompt is run as a prefill (past length 0) and then ``decode_steps`` greedy single-token
steps that feed the graph's ``present`` outputs back as ``past`` — the path a generation loop
takes — against the torch model with transformers' DynamicCache on the same token ids.
"""

from __future__ import annotations

import numpy as np

from edgeprune.threads import torch_threads
from edgeprune.export.onnx import names
from edgeprune.export.onnx.report import VerifyResult

FP32_TOLERANCE = 1e-4  # max relative logit difference (see VerifyResult) a float32 graph must meet
PROMPT_LENGTHS = (7, 12, 3)
DECODE_STEPS = 4


def open_session(path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3  # errors only: ORT warns about unused initializers of quantized graphs
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def empty_past(kv_heads: list[int], head_dim: int, batch: int) -> list[np.ndarray]:
    # (batch, kv_heads_i, 0, head_dim) per layer, key then value
    return [np.zeros((batch, kv, 0, head_dim), np.float32) for kv in kv_heads for _ in range(2)]


def run_step(session, ids: np.ndarray, past: list[np.ndarray], past_len: int):
    """One graph call on (batch, seq) ids with no padding; returns (logits, present)."""
    batch, seq = ids.shape
    n_layers = len(past) // 2
    feeds = {
        names.INPUT_IDS: ids.astype(np.int64),
        names.ATTENTION_MASK: np.ones((batch, past_len + seq), np.int64),
        names.POSITION_IDS: np.broadcast_to(np.arange(past_len, past_len + seq, dtype=np.int64), (batch, seq)).copy(),
    }
    feeds.update(zip(names.past_names(n_layers), past))
    out = session.run(None, feeds)
    return out[0], out[1:]


def verify_session(session, torch_model, *, kv_heads, head_dim, vocab_size, quant: str, threads: int) -> VerifyResult:
    with torch_threads(threads):
        return _verify(session, torch_model, kv_heads=kv_heads, head_dim=head_dim, vocab_size=vocab_size, quant=quant, threads=threads)


def _verify(session, torch_model, *, kv_heads, head_dim, vocab_size, quant: str, threads: int) -> VerifyResult:
    import torch
    from transformers import DynamicCache

    rng = np.random.default_rng(0)
    # Token ids from the lower part of the vocabulary, where real tokens (not unused slots) sit.
    high = max(2, min(vocab_size, 32000))
    prefill_rel, decode_rel, max_abs, agree, total, finite = 0.0, 0.0, 0.0, 0, 0, True

    def compare(ort_logits, ref):
        nonlocal max_abs, agree, total, finite
        finite = finite and bool(np.isfinite(ort_logits).all())
        diff = float(np.abs(ort_logits - ref).max())
        max_abs = max(max_abs, diff)
        agree += int((ort_logits.argmax(-1) == ref.argmax(-1)).sum())
        total += ref.shape[0] * ref.shape[1]
        return diff / max(float(np.abs(ref).max()), 1e-12)

    for length in PROMPT_LENGTHS:
        ids = rng.integers(0, high, size=(1, length), dtype=np.int64)
        logits, present = run_step(session, ids, empty_past(kv_heads, head_dim, 1), 0)
        cache = DynamicCache(config=torch_model.config)
        t_ids = torch.from_numpy(ids)
        with torch.no_grad():
            ref = torch_model(input_ids=t_ids, attention_mask=torch.ones_like(t_ids), cache=cache, use_cache=True)
        prefill_rel = max(prefill_rel, compare(logits, ref.logits.float().numpy()))
        past_len = length
        for _ in range(DECODE_STEPS):
            # the torch model's greedy choice drives both, so the two runs see the same tokens
            nxt = ref.logits[:, -1:].argmax(-1)
            logits, present = run_step(session, nxt.numpy(), present, past_len)
            past_len += 1
            with torch.no_grad():
                ref = torch_model(
                    input_ids=nxt,
                    attention_mask=torch.ones(1, past_len, dtype=torch.long),
                    position_ids=torch.tensor([[past_len - 1]]),
                    cache=ref.cache,
                    use_cache=True,
                )
            decode_rel = max(decode_rel, compare(logits, ref.logits.float().numpy()))

    tolerance = FP32_TOLERANCE if quant == "fp32" else None
    passed = finite and (tolerance is None or max(prefill_rel, decode_rel) <= tolerance)
    return VerifyResult(
        prompts=len(PROMPT_LENGTHS),
        prompt_lengths=list(PROMPT_LENGTHS),
        decode_steps=DECODE_STEPS,
        prefill_max_rel_diff=prefill_rel,
        decode_max_rel_diff=decode_rel,
        max_abs_diff=max_abs,
        argmax_agreement=agree / total,
        tolerance=tolerance,
        passed=passed,
        threads=threads,
    )
