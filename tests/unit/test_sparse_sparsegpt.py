"""SparseGPT (OBS pruning with weight update) and GPTQ on small random layers."""

from __future__ import annotations

import pytest
import torch

from edgeprune.compress.sparse import masks as mk
from edgeprune.compress.quant.quantize import QuantSpec, hessian_error, rtn_quantize
from edgeprune.compress.sparse.sparsegpt import gptq_quantize, sparsegpt_prune
from tests.unit.sparse_helpers import one_thread  # noqa: F401  (autouse fixture)


def _layer(out_f=32, in_f=64, tokens=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g)
    # correlated inputs with uneven feature scales, like real activations
    mix = torch.randn(in_f, in_f, generator=g) * 0.3 + torch.eye(in_f)
    x = (torch.randn(tokens, in_f, generator=g) @ mix) * (0.2 + 3 * torch.rand(in_f, generator=g))
    return w, x, x.T @ x  # (out, in), (tokens, in), (in, in)


def test_sparsegpt_beats_magnitude_and_wanda_on_reconstruction_error():
    w, x, h = _layer()
    res = sparsegpt_prune(w, h, nm=(2, 4))
    mag = w * mk.nm_mask(mk.magnitude_scores(w), 2, 4)
    wanda = w * mk.nm_mask(mk.wanda_scores(w, x.norm(dim=0)), 2, 4)
    e_sgpt, e_mag, e_wanda = (hessian_error(w, a, h) for a in (res.weight, mag, wanda))
    assert e_sgpt < e_wanda < e_mag
    assert mk.satisfies_nm(res.weight, 2, 4) and (res.keep.reshape(32, -1, 4).sum(-1) == 2).all()
    assert torch.equal(res.weight[~res.keep], torch.zeros(int((~res.keep).sum())))


def test_sparsegpt_with_identity_hessian_is_magnitude_pruning():
    w, _, _ = _layer()
    res = sparsegpt_prune(w, torch.eye(64), nm=(2, 4))
    assert torch.equal(res.keep, mk.nm_mask(w.abs(), 2, 4))
    assert torch.allclose(res.weight, w * res.keep)


def test_sparsegpt_unstructured_prunes_the_fraction_and_handles_dead_inputs():
    w, x, h = _layer()
    h[:, 3] = 0
    h[3, :] = 0  # input 3 never fires
    res = sparsegpt_prune(w, h, nm=None, sparsity=0.5, blocksize=16)
    assert abs(float((~res.keep).float().mean()) - 0.5) < 1e-6
    assert (res.weight[:, 3] == 0).all()


@pytest.mark.parametrize("bits,sym,group", [(4, True, 32), (4, False, 16), (8, True, 64), (8, False, 32)])
def test_gptq_error_is_at_most_rtn_error_and_keeps_zeros(bits, sym, group):
    w, _, h = _layer()
    keep = mk.nm_mask(w.abs(), 2, 4)
    w = w * keep
    spec = QuantSpec(bits, group, sym)
    rtn = rtn_quantize(w, spec, keep).dequantize()
    res = gptq_quantize(w, h, spec, keep=keep)
    assert hessian_error(w, res.weight, h) <= hessian_error(w, rtn, h)
    assert torch.equal(res.weight[~keep], torch.zeros(int((~keep).sum())))
    assert torch.equal(res.quantized.dequantize(), res.weight)  # the codes reproduce the weights exactly
    assert int(res.quantized.codes.min()) >= spec.qmin and int(res.quantized.codes.max()) <= spec.qmax


def test_slorb_least_squares_lowers_the_error_where_the_group_mean_does_not():
    from edgeprune.compress.sparse.modules import slorb_dense, slorb_init, slorb_lstsq

    w, _, h = _layer()
    res = sparsegpt_prune(w, h, nm=(2, 4))
    resid = w - res.weight
    base = hessian_error(w, res.weight, h)
    fitted = hessian_error(w, res.weight + slorb_dense(slorb_lstsq(resid, h, 16), 16), h)
    assert fitted < base
    mean = hessian_error(w, res.weight + slorb_dense(slorb_init(resid, 16), 16), h)
    assert fitted < mean


@pytest.mark.parametrize("sym", [True, False])
def test_gptq_act_order_keeps_the_layout_zeros_and_beats_rtn(sym):
    w, _, h = _layer(out_f=48, in_f=64, seed=2)
    keep = mk.nm_mask(w.abs(), 2, 4)
    w = w * keep
    spec = QuantSpec(4, 16, sym)
    res = gptq_quantize(w, h, spec, keep=keep, act_order=True)
    rtn = rtn_quantize(w, spec, keep)
    # static groups: the grids are RTN's, fixed before the loop; the codes still reproduce the weights
    assert torch.equal(res.quantized.scale, rtn.scale) and torch.equal(res.quantized.zero, rtn.zero)
    assert torch.equal(res.quantized.dequantize(), res.weight)
    assert torch.equal(res.weight[~keep], torch.zeros(int((~keep).sum()))) and torch.equal(res.keep, keep)
    assert hessian_error(w, res.weight, h) < hessian_error(w, rtn.dequantize(), h)
    # with an identity Hessian there is nothing to compensate: act-order GPTQ is RTN
    ident = gptq_quantize(w, torch.eye(64), spec, keep=keep, act_order=True, damp=1e-6)
    torch.testing.assert_close(ident.weight, rtn.dequantize())
