"""Group-wise int4/int8 quantizers: zeros kept, error within half a step, exact packing."""

from __future__ import annotations

import pytest
import torch

from edgeprune.compress.sparse import masks as mk
from edgeprune.compress.quant.quantize import (QuantSpec, check_group, dequantize, group_params, pack_int4, rtn_quantize,
                                         unpack_int4)  # fmt: skip
from edgeprune.errors import EdgepruneError
from tests.unit.sparse_helpers import one_thread  # noqa: F401  (autouse fixture)


def _w(shape=(8, 64), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.05


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("group", [16, 32, 64])
def test_rtn_round_trip_is_within_half_a_step_and_keeps_zeros(bits, sym, group):
    w = _w()
    keep = mk.nm_mask(w.abs(), 2, 4)
    w = w * keep
    spec = QuantSpec(bits, group, sym)
    q = rtn_quantize(w, spec, keep)
    deq = q.dequantize()
    assert torch.equal(deq[~keep], torch.zeros(int((~keep).sum())))
    step = q.scale.repeat_interleave(group, dim=1)  # (out, in/g) -> (out, in)
    # symmetric: half a step; asymmetric: the integer zero point shifts the grid, so the group's
    # extreme value may be clipped by up to one step (as in GPTQ's asymmetric quantizer)
    assert ((deq - w).abs() <= step * (0.5 if sym else 1.0) + 1e-7).all()
    assert int(q.codes.min()) >= spec.qmin and int(q.codes.max()) <= spec.qmax
    assert torch.equal(q.scale, q.scale.half().float())  # scales are float16 values


def test_asymmetric_zero_is_exact_and_range_includes_zero():
    w = torch.tensor([[0.1, 0.2, 0.3, 0.4]])  # all positive: the range still reaches 0
    scale, zero = group_params(w, QuantSpec(4, 4, False))
    assert int(zero[0, 0]) == 0
    codes = torch.full((1, 4), int(zero[0, 0]), dtype=torch.int32)
    assert torch.equal(dequantize(codes, scale, zero, 4), torch.zeros(1, 4))


def test_all_zero_group_gets_a_unit_scale():
    q = rtn_quantize(torch.zeros(2, 8), QuantSpec(4, 8, True))
    assert torch.equal(q.dequantize(), torch.zeros(2, 8)) and torch.equal(q.scale, torch.ones(2, 1))


def test_int8_is_more_accurate_than_int4():
    w = _w()
    e4 = (rtn_quantize(w, QuantSpec(4, 32)).dequantize() - w).pow(2).sum()
    e8 = (rtn_quantize(w, QuantSpec(8, 32)).dequantize() - w).pow(2).sum()
    assert e8 < e4 / 100


def test_group_that_does_not_divide_the_width_is_an_error():
    with pytest.raises(EdgepruneError, match="group size 128 does not divide the input width 576.*--group 32 or 64"):
        check_group(576, 128, "q_proj")
    with pytest.raises(EdgepruneError):
        QuantSpec(bits=3)


def test_int4_packing_round_trips():
    v = torch.randint(0, 16, (5, 7), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    packed = pack_int4(v)
    assert packed.shape == (5, 4) and packed.dtype == torch.uint8
    assert torch.equal(unpack_int4(packed, 7), v)
    assert int(pack_int4(torch.tensor([1, 2], dtype=torch.uint8))[0]) == 0x21  # even element in the low nibble
