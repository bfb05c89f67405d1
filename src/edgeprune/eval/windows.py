"""Pure arithmetic for perplexity windows and for packing sequences into batches (no torch).

Perplexity windows are non-overlapping and cut from ONE token stream (the whole corpus tokenised
once). Each window is scored on its own: its first token has no context and is not predicted, so a
window of L tokens contributes L - 1 predicted tokens. The last, partial window (the
``n_tokens % seq_len`` tokens left over) is dropped by default, as in the GPTQ / SparseGPT / Wanda
evaluations the pruning literature reports, so every window sees the same context length;
``keep_partial=True`` scores it as a shorter window instead (only if it predicts at least one token).
"""

from __future__ import annotations

from collections.abc import Sequence


def window_spans(n_tokens: int, seq_len: int, *, keep_partial: bool = False) -> list[tuple[int, int]]:
    """``[start, end)`` token spans of the non-overlapping windows over ``n_tokens`` tokens."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2 (a window predicts seq_len - 1 tokens), got {seq_len}")
    if n_tokens < 0:
        raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
    full = n_tokens // seq_len
    spans = [(i * seq_len, (i + 1) * seq_len) for i in range(full)]
    rest = n_tokens - full * seq_len
    if keep_partial and rest >= 2:
        spans.append((full * seq_len, n_tokens))
    return spans


def predicted_tokens(spans: Sequence[tuple[int, int]]) -> int:
    """Tokens whose log-likelihood is scored: ``end - start - 1`` per window."""
    return sum(max(0, end - start - 1) for start, end in spans)


def plan_batches(lengths: Sequence[int], max_tokens: int, *, max_rows: int = 64) -> list[list[int]]:
    """Group item indices into batches, longest first, so ``rows * longest <= max_tokens``.

    Sorting by length keeps padding small (what lm-evaluation-harness does too); a single item
    longer than the budget still gets a batch of its own. Returns indices into ``lengths``.
    """
    if max_tokens < 1 or max_rows < 1:
        raise ValueError("max_tokens and max_rows must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        longest_if = max(longest, lengths[i], 1)
        if current and (longest_if * (len(current) + 1) > max_tokens or len(current) >= max_rows):
            batches.append(current)
            current, longest_if = [], max(lengths[i], 1)
        current.append(i)
        longest = longest_if
    if current:
        batches.append(current)
    return batches


def length_buckets(lengths: Sequence[int], *, max_pad_ratio: float = 1.25, min_rows: int = 4) -> list[list[int]]:
    """Split items into padded batches whose padded size stays within ``max_pad_ratio`` of the
    real tokens (rows of very different lengths otherwise pay for the longest row).

    Longest first; a bucket takes the next item while ``rows x longest <= max_pad_ratio x real``,
    or while it has fewer than ``min_rows`` rows (tiny forwards cost more in overhead than padding).
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    buckets: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:
        n = max(lengths[i], 0)
        if current:
            longest = max(lengths[current[0]], 1)
            if len(current) >= min_rows and (len(current) + 1) * longest > max_pad_ratio * (real + n):
                buckets.append(current)
                current, real = [], 0
        current.append(i)
        real += n
    if current:
        buckets.append(current)
    return buckets
