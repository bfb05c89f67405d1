"""Run a model's ``nn.Linear`` layers through oneDNN with pre-packed float32 weights, temporarily.

Why: PyTorch sends float32 ``F.linear`` on CPU to MKL's sgemm, which on AMD CPUs does not take its
AVX-512 path; oneDNN picks kernels by instruction set, not vendor. With the weights reordered once
into oneDNN's blocked layout, a float32 Linear of SmolLM2's shapes runs ~2x faster on the 2-core
AMD EPYC (Zen 5) this project is measured on, with the same float32 arithmetic (only the summation
order differs: outputs agree to ~1e-6 relative). This is the weight pre-packing that
``torch.compile``'s CPU "freezing" does, without compiling.

The swap is scoped: :func:`onednn_linears` packs on entry and restores every module on exit, so a
model handed to an Evaluator is unchanged afterwards, and weights edited between two evaluations
are packed afresh.
"""

from __future__ import annotations

import contextlib
import functools


def available() -> bool:
    import torch

    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _packed_forward(packed, bias, x):
    import torch

    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


@contextlib.contextmanager
def onednn_linears(model, *, enabled: bool = True):
    """Within the block, every float32 CPU ``nn.Linear`` of ``model`` computes through oneDNN."""
    import torch
    from torch import nn

    patched = []
    if enabled and available():
        with torch.no_grad():
            for module in model.modules():
                # Exact type only (subclasses may change forward); skip modules whose forward is
                # already replaced on the instance (accelerate hooks, another patch).
                if type(module) is not nn.Linear or "forward" in vars(module):
                    continue
                w = module.weight
                if w.dtype != torch.float32 or w.device.type != "cpu" or w.numel() == 0:
                    continue
                packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), None)
                bias = module.bias.detach() if module.bias is not None else None
                module.forward = functools.partial(_packed_forward, packed, bias)
                patched.append(module)
    try:
        yield len(patched)
    finally:
        for module in patched:
            del module.forward  # back to nn.Linear.forward
