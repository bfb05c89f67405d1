"""Per-layer allocation as pure functions: importance normalisation, sparsity updates, widths, budgets."""

from __future__ import annotations

import pytest
import torch

from edgeprune.compress.structured import allocation as alloc
from edgeprune.compress.structured.budget import param_counts
from edgeprune.models import to_per_layer
from tests.prune_helpers import one_thread  # noqa: F401  (autouse fixture)
from tests.tiny import tiny_llama, tiny_per_layer, tiny_qwen2


def test_normalize_importance_zero_mean_range_minus1_1():
    got = alloc.normalize_importance([1.0, 2.0, 3.0])
    assert got.tolist() == [-1.0, 0.0, 1.0]
    got = alloc.normalize_importance([0.0, 0.0, 4.0])  # mean 4/3: peaks at +1
    assert float(got.max()) == pytest.approx(1.0) and abs(float(got.sum())) < 1e-12
    assert float(got.min()) == pytest.approx(-0.5)
    assert alloc.normalize_importance([5.0, 5.0]).tolist() == [0.0, 0.0]


def test_update_sparsity_rule_and_clip():
    s = alloc.update_sparsity([0.0, 0.0, 0.5, 0.98], [1.0, -1.0, 0.0, -1.0], delta=0.02, amplitude=0.02)
    assert s.tolist() == pytest.approx([0.0, 0.04, 0.52, 0.99])
    s = alloc.update_sparsity([0.0], [1.0], delta=0.02, amplitude=0.05)
    assert s.tolist() == [0.0]  # clipped at 0: sparsity never goes negative


def test_keep_after_sparsity_whole_units_rounded_up():
    # 3 KV heads of 64 channels: none goes at 2%, one at 34%, two at 67%, never all three
    assert alloc.keep_after_sparsity(192, 192, 0.02, unit=64, minimum=64) == 192
    assert alloc.keep_after_sparsity(192, 192, 0.34, unit=64, minimum=64) == 128
    assert alloc.keep_after_sparsity(192, 192, 0.67, unit=64, minimum=64) == 64
    assert alloc.keep_after_sparsity(192, 192, 0.99, unit=64, minimum=64) == 64
    # MLP 1536 in multiples of 32: floor(1536 * 0.96) = 1474 -> 1504
    assert alloc.keep_after_sparsity(1536, 1536, 0.02, unit=32) == 1536
    assert alloc.keep_after_sparsity(1536, 1536, 0.04, unit=32) == 1504
    assert alloc.keep_after_sparsity(1536, 1400, 0.04, unit=32) == 1400  # never regrows
    assert alloc.keep_after_sparsity(100, 100, 0.5) == 50  # unit 1: the official n = cur - floor(init (1 - s))


def test_widths_at_sparsity_aligned_and_floored():
    kv, ff = alloc.widths_at_sparsity([3, 3], [1536, 1536], [3, 3], [1536, 1536], [0.5, 0.99], head_dim=64, align=32)
    assert kv == [2, 1] and ff == [768, 32]
    assert all(f % 32 == 0 for f in ff)


@pytest.mark.parametrize("make", [lambda: to_per_layer(tiny_llama()), lambda: to_per_layer(tiny_qwen2()), tiny_per_layer],
                         ids=["llama", "qwen2-bias", "per-layer"])  # fmt: skip
def test_block_params_formula_matches_the_modules(make):
    m = make()
    shape = alloc.BlockShape.from_config(m.config)
    block, _, _ = param_counts(m)
    assert shape.block_params(m.config.kv_heads_per_layer(), m.config.intermediate_per_layer()) == block


def test_solve_uniform_meets_target_and_keeps_frozen_layers():
    shape = alloc.BlockShape(hidden=64, head_dim=16, n_rep=(2,) * 4)
    kv, ff = [2] * 4, [128] * 4
    p0 = shape.block_params(kv, ff)
    target = int(p0 * 0.7)
    r, kv2, ff2 = alloc.solve_uniform(shape, kv, ff, target, align=16, frozen=(0, 3))
    assert shape.block_params(kv2, ff2) <= target
    assert kv2[0] == kv2[3] == 2 and ff2[0] == ff2[3] == 128
    assert kv2[1] == kv2[2] and ff2[1] == ff2[2]  # one ratio for the pruned layers
    # a slightly smaller ratio would miss the target: r is the smallest
    kv3, ff3 = alloc.uniform_widths(kv, ff, r - 0.01, head_dim=16, align=16, frozen=(0, 3))
    assert shape.block_params(kv3, ff3) > target
    with pytest.raises(ValueError):
        alloc.solve_uniform(shape, kv, ff, 10, align=16, frozen=(0, 3))


def test_global_threshold_keeps_the_highest_scores_everywhere():
    shape = alloc.BlockShape(hidden=8, head_dim=2, n_rep=(1, 1))
    attn = [torch.tensor([5.0, -1.0]), torch.tensor([4.0, 3.0])]
    mlp = [torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([-3.0, -2.0, 6.0, 7.0])]
    kv, ff = [2, 2], [4, 4]
    # budget: drop one KV group (4*2*8 = 64 params) and ~3 channels (24 params each)
    target = shape.block_params(kv, ff) - 64 - 3 * 24
    kv2, ff2 = alloc.global_threshold_widths(shape, attn, mlp, kv, ff, target, align=1)
    assert shape.block_params(kv2, ff2) <= target
    assert kv2 == [1, 2]  # the -1.0 group goes first
    # threshold 0: layer 0 keeps 1, 2, 3; layer 1 keeps 6, 7 (the lowest t that meets the budget)
    assert ff2 == [3, 2]


def test_smallest_fraction_and_keep_top():
    assert alloc.smallest_fraction(lambda f: 100 - int(50 * f), 80) == pytest.approx(0.4, abs=1e-6)
    assert alloc.smallest_fraction(lambda f: 100, 80) == 1.0
    assert alloc.keep_top(torch.tensor([0.1, 0.9, 0.5, 0.9]), 2) == (1, 3)
    assert alloc.keep_top(torch.tensor([1.0, 1.0, 1.0]), 2) == (0, 1)  # ties keep the lower index
    with pytest.raises(ValueError):
        alloc.keep_top(torch.tensor([1.0]), 2)
