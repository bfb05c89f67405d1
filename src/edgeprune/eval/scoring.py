"""Pure functions behind zero-shot scoring: lm-eval's tokenisation of a request, sharing a
context across choices, and the ``acc`` / ``acc_norm`` decisions. No torch, no model.

Definitions follow lm-evaluation-harness 0.4:
- a request is ``(context, continuation)``; trailing whitespace of the context moves to the front
  of the continuation, the context is encoded alone, ``context + continuation`` is encoded whole,
  and the continuation's tokens are the whole encoding minus the first ``len(context tokens)``
  (so a merge across the boundary is charged to the continuation); an empty context becomes the
  prefix token (BOS, else EOS);
- the model is fed ``context tokens + continuation tokens`` and the choice's score is the summed
  log-probability of the continuation tokens;
- ``acc``: the argmax of the scores is the gold index; ``acc_norm``: the argmax of score divided by
  ``len(choice)``, the choice string's length in characters (lm-eval's "byte-length" normalisation
  is ``len()`` of the Python string; identical to bytes for ASCII choices). Ties go to the first
  choice, as ``numpy.argmax`` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence


def encode_pair(
    encode: Callable[[str], list[int]], context: str, continuation: str, *, prefix_token: int | None = None
) -> tuple[list[int], list[int]]:
    """``(context_ids, continuation_ids)`` exactly as lm-eval's ``_encode_pair`` cuts them."""
    if context == "":
        if prefix_token is None:
            raise ValueError("an empty context needs a prefix token (the tokenizer has no BOS or EOS)")
        return [prefix_token], encode(continuation)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = encode(context + continuation)
    ctx = encode(context)
    return ctx, whole[len(ctx):]


def truncate_left(ctx: list[int], cont: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Keep at most ``max_length + 1`` tokens (the model is fed all but the last), cutting the
    context from the left as lm-eval does; the continuation is never cut."""
    excess = len(ctx) + len(cont) - (max_length + 1)
    if excess <= 0:
        return ctx, cont
    if excess >= len(ctx):
        raise ValueError(f"a continuation of {len(cont)} tokens does not fit a context of {max_length}")
    return ctx[excess:], cont


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of all sequences."""
    if not seqs:
        return 0
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in seqs[1:]):
            return i
    return n


def share_context(pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> tuple[list[int], list[list[int]]]:
    """Split a doc's ``(context, continuation)`` token pairs into one shared prefix + branches.

    The prefix is the longest common prefix of the fed sequences, but never longer than the
    shortest context, so every continuation token lies in its branch (WinoGrande's contexts differ
    only after the blank; the other tasks share the whole context). At least one token stays in
    the prefix: the first branch token is predicted from the prefix's last position.
    """
    fed = [list(c) + list(x) for c, x in pairs]
    cap = min(len(c) for c, _ in pairs)
    n = max(1, min(common_prefix_len(fed), cap))
    return fed[0][:n], [f[n:] for f in fed]


def argmax_first(values: Sequence[float]) -> int:
    """Index of the largest value; the first one on ties (``numpy.argmax`` semantics)."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def choice_decisions(loglikelihoods: Sequence[float], gold: int, norm_lengths: Sequence[int]) -> dict[str, float]:
    """``acc`` and ``acc_norm`` (each 0.0 or 1.0) for one doc."""
    if len(loglikelihoods) != len(norm_lengths):
        raise ValueError("one normalisation length per choice")
    acc = float(argmax_first(loglikelihoods) == gold)
    normed = [ll / float(n) if n else -math.inf for ll, n in zip(loglikelihoods, norm_lengths)]
    return {"acc": acc, "acc_norm": float(argmax_first(normed) == gold)}


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample std with n-1, over sqrt(n)), as lm-eval reports."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)
