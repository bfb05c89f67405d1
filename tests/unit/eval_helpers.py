"""Shared helpers for the evaluation tests: the data directory, fake backends and tokenizers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


def shared_data() -> Path:
    """``../shared/data`` beside the checkout, or ``$EDGEPRUNE_DATA``; skips the test when absent."""
    env = os.environ.get("EDGEPRUNE_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not root.is_dir():
        pytest.skip(f"shared evaluation data not found at {root} (set EDGEPRUNE_DATA)")
    return root


class CharTokenizer:
    """One token per character (its code point), so token counts are string lengths."""

    name = "chars"
    prefix_token = 0

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]


class ConstantBackend:
    """Every token gets log-probability ``per_token``: log-likelihoods are hand-computable."""

    name = "constant"
    dtype = "none"
    max_length = 64
    batch_tokens = 100

    def __init__(self, per_token: float = -1.0):
        self.per_token = per_token
        self.tokenizer = CharTokenizer()
        self.calls = []

    def token_logprobs(self, seqs):
        self.calls.append([len(s) for s in seqs])
        return [np.full(max(0, len(s) - 1), self.per_token) for s in seqs]

    def branch_logprobs(self, groups):
        return [[np.full(len(b), self.per_token) for b in branches] for _, branches in groups]

    def describe(self):
        return {"backend": self.name}
