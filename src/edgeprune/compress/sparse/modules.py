"""The modules 2:4 training and the compressed artifact put in place of ``nn.Linear``.

- :class:`MaskedLinear` (training): ``y = (W ⊙ M) x + b`` with a straight-through estimator: the
  gradient of ``W ⊙ M`` is passed to the dense ``W`` unmasked, so pruned weights keep learning and
  the mask can be re-chosen from them (AST, arXiv 2407.20584). Optional SLoRB term.
- :class:`SLoRBLinear` (inference): a sparse ``nn.Linear`` plus the SLoRB correction
  ``L · S · x``, where ``S`` sums the input in groups of ``k`` consecutive features (a fixed
  block-indicator matrix, never materialised) and ``L`` is ``(out, in / k)``.

SLoRB (Sparse Low-Rank Boosting) adds ``1/k`` of the layer's weights. ``merge_slorb`` folds it into
one dense weight ``W + L ⊗ 1_k`` for runtimes without a slot for it (GGUF, ONNX): the merged
weight is dense, so the 2:4 pattern is lost there (storage then is that of a dense model).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_sum(x: torch.Tensor, k: int) -> torch.Tensor:
    """``S x``: the input summed over consecutive groups of ``k`` features."""
    return x.reshape(*x.shape[:-1], x.shape[-1] // k, k).sum(-1)  # (..., in) -> (..., in/k, k) -> (..., in/k)


def slorb_init(residual: torch.Tensor, k: int) -> torch.Tensor:
    """AST's "mean" initialisation: ``L[n, g]`` = mean of ``residual[n, g*k:(g+1)*k]``.

    With ``residual = (1 - M) ⊙ W`` (the pruned weights) this is the paper's initialisation:
    ``L ⊗ 1_k`` is the unweighted least-squares group-constant fit of the residual.
    """
    out_f, in_f = residual.shape
    return residual.reshape(out_f, in_f // k, k).mean(-1)  # (out, in) -> (out, in/k, k) -> (out, in/k)


def slorb_lstsq(residual: torch.Tensor, hessian: torch.Tensor, k: int, damp: float = 0.01) -> torch.Tensor:
    """The Hessian-weighted least-squares ``L``: ``argmin_L tr((R - L S) H (R - L S)^T)``.

    ``L = R H S^T (S H S^T + lambda I)^-1`` with ``H = X X^T`` (``(in, in)``) and ``lambda = damp *
    mean(diag(S H S^T))``: the SLoRB term that best reproduces the residual's *outputs* on the
    calibration inputs. Used after SparseGPT / Wanda, where AST's group mean raises the layer error
    (the kept weights already compensate part of what was pruned).
    """
    out_f, in_f = residual.shape
    h = hessian.double()
    g = in_f // k
    shs = h.reshape(g, k, g, k).sum((1, 3))  # S H S^T: (in, in) -> (in/k, k, in/k, k) -> (in/k, in/k)
    rhs = (residual.double() @ h).reshape(out_f, g, k).sum(-1)  # R H S^T: (out, in) -> (out, in/k, k) -> (out, in/k)
    shs = shs + damp * float(torch.diag(shs).mean()) * torch.eye(g, dtype=shs.dtype)
    return torch.linalg.solve(shs, rhs.T).T.float()  # shs is symmetric: L = rhs shs^-1


def slorb_dense(slorb_l: torch.Tensor, k: int) -> torch.Tensor:
    """``L · S`` as a dense ``(out, in)`` matrix: each ``L[n, g]`` repeated over its ``k`` columns."""
    return slorb_l.repeat_interleave(k, dim=1)


class _STEMask(torch.autograd.Function):
    """Forward ``W ⊙ M``; backward passes the gradient to ``W`` unmasked (straight-through)."""

    @staticmethod
    def forward(ctx, weight, mask):
        return weight * mask

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class MaskedLinear(nn.Module):
    """Training-time 2:4 Linear: dense ``weight`` (the Parameter of the Linear it replaces), boolean
    ``mask`` buffer, straight-through gradients, optional SLoRB ``slorb_L`` of ``(out, in / k)``."""

    def __init__(self, linear: nn.Linear, mask: torch.Tensor, *, slorb_k: int = 0, slorb_l: torch.Tensor | None = None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.register_buffer("mask", mask.to(torch.bool).clone())
        self.slorb_k = slorb_k
        if slorb_k:
            init = slorb_l if slorb_l is not None else torch.zeros(self.out_features, self.in_features // slorb_k)
            self.slorb_L = nn.Parameter(init.to(linear.weight.dtype).clone())
        else:
            self.slorb_L = None

    def forward(self, x):
        y = F.linear(x, _STEMask.apply(self.weight, self.mask.to(self.weight.dtype)), self.bias)
        if self.slorb_L is not None:
            y = y + F.linear(group_sum(x, self.slorb_k), self.slorb_L)
        return y

    def sparse_weight(self) -> torch.Tensor:
        return torch.where(self.mask, self.weight.detach(), torch.zeros((), dtype=self.weight.dtype))

    def to_inference(self) -> nn.Linear:
        """A plain ``nn.Linear`` with ``W ⊙ M`` (or a :class:`SLoRBLinear`), sharing no storage with this."""
        cls = SLoRBLinear if self.slorb_L is not None else nn.Linear
        kw = {"slorb_k": self.slorb_k} if self.slorb_L is not None else {}
        lin = cls(self.in_features, self.out_features, bias=self.bias is not None, device="meta", **kw)
        lin.weight = nn.Parameter(self.sparse_weight().clone())
        if self.bias is not None:
            lin.bias = nn.Parameter(self.bias.detach().clone())
        if self.slorb_L is not None:
            lin.slorb_L = nn.Parameter(self.slorb_L.detach().clone())
        return lin

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, slorb_k={self.slorb_k}"


class SLoRBLinear(nn.Linear):
    """``y = W x + b + L · S x`` with ``S`` summing groups of ``slorb_k`` inputs."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, slorb_k: int = 16, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.slorb_k = slorb_k
        self.slorb_L = nn.Parameter(torch.zeros(out_features, in_features // slorb_k, device=device, dtype=dtype))

    def forward(self, x):
        return super().forward(x) + F.linear(group_sum(x, self.slorb_k), self.slorb_L)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", slorb_k={self.slorb_k}"


def merge_slorb(module: SLoRBLinear) -> nn.Linear:
    """One dense ``nn.Linear`` computing the same function (the 2:4 pattern is lost)."""
    lin = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None, device="meta")
    merged = module.weight.detach() + slorb_dense(module.slorb_L.detach(), module.slorb_k).to(module.weight.dtype)
    lin.weight = nn.Parameter(merged)
    if module.bias is not None:
        lin.bias = nn.Parameter(module.bias.detach().clone())
    return lin


def replace_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, child, new)


def merge_all_slorb(model: nn.Module) -> int:
    """Replace every :class:`SLoRBLinear` by its merged dense Linear; returns how many were merged."""
    found = [(name, mod) for name, mod in model.named_modules() if isinstance(mod, SLoRBLinear)]
    for name, mod in found:
        replace_module(model, name, merge_slorb(mod))
    return len(found)
