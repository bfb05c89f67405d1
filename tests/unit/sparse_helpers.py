"""Shared fixtures of the sparsity / quantization tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls: one intra-op thread is 10x faster than two on a busy machine (restored after)."""
    from edgeprune.threads import torch_threads

    with torch_threads(1):
        yield
