"""Choosing the next token from logits (pure numpy): greedy, or temperature / top-k / top-p sampling.

Follows transformers' order of logits processors (temperature, then top-k, then top-p), so a seeded
run is reproducible here but is not expected to draw the same tokens as torch's sampler (different
random streams).
"""

from __future__ import annotations

import numpy as np


def next_tokens(
    logits: np.ndarray,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """(batch, vocab) logits -> (batch,) int64 token ids."""
    logits = np.asarray(logits, dtype=np.float32)
    if not do_sample:
        return logits.argmax(-1).astype(np.int64)
    if rng is None:
        raise ValueError("sampling needs a random generator (pass seed=...)")
    scores = logits / max(float(temperature), 1e-6)
    if top_k and top_k < scores.shape[-1]:
        # keep the k largest per row: everything below the k-th value is removed
        kth = np.partition(scores, -top_k, axis=-1)[:, -top_k][:, None]
        scores = np.where(scores < kth, -np.inf, scores)
    probs = _softmax(scores)
    if top_p < 1.0:
        probs = _top_p(probs, top_p)
    # inverse-CDF draw per row: one uniform number each, so a seed fixes the whole run
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random((probs.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((cdf < u).sum(-1), probs.shape[-1] - 1).astype(np.int64)


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def _top_p(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose mass reaches ``top_p`` (always >= 1 token)."""
    order = np.argsort(-probs, axis=-1)
    sorted_p = np.take_along_axis(probs, order, axis=-1)
    # a token stays if the mass *before* it is below top_p
    keep_sorted = (np.cumsum(sorted_p, axis=-1) - sorted_p) < top_p
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    kept = np.where(keep, probs, 0.0)
    return kept / kept.sum(-1, keepdims=True)
