"""Shared helpers for the evaluation tests: the test-data folder, fake backends and tokenizers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Excerpts (the first records) of the data directory's files, in its layout, shipped with the tests
# so every machine runs them on the same bytes: tests/data/README.md says what each holds.
TEST_DATA = Path(__file__).resolve().parents[1] / "data"


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
