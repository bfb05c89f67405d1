"""Shared bits of the structured-pruning tests (tests/unit/test_prune_*.py)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and the CI box is shared); restore the count after."""
    from edgeprune.threads import torch_threads

    with torch_threads(1):
        yield


def windows(n: int = 8, seq_len: int = 24, seed: int = 0, vocab: int = 256):
    from edgeprune.data.calib import TokenWindows

    ids = torch.randint(0, vocab, (n, seq_len), generator=torch.Generator().manual_seed(seed))
    return TokenWindows(ids, f"random bytes (seed {seed})")
