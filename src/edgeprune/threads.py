"""A context manager for torch's intra-op thread count that restores it (no hidden global state)."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the body with ``torch.set_num_threads(n)`` (``None``: leave it); restore afterwards."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
