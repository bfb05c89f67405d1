"""Cutting KV groups and MLP channels equals zeroing their contribution in the original model."""

from __future__ import annotations

import pytest
import torch

from edgeprune.compress.structured.cut import LayerKeep, coupled_rows, cut_widths, group_rows, random_keep
from edgeprune.errors import EdgepruneError
from edgeprune.models import to_per_layer
from tests.tiny import tiny_llama, tiny_qwen2

IDS = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(3))


def test_group_rows_and_gqa_coupling():
    assert group_rows((0, 2), 3).tolist() == [0, 1, 2, 6, 7, 8]
    qo, kv = coupled_rows((1,), n_rep=2, head_dim=2)
    assert qo.tolist() == [4, 5, 6, 7] and kv.tolist() == [2, 3]


@pytest.mark.parametrize("make", [tiny_llama, tiny_qwen2], ids=["llama", "qwen2-bias"])
def test_cut_equals_zeroed_contribution(make):
    src = to_per_layer(make())
    keep = {0: LayerKeep((1,), tuple(range(0, 128, 2))), 2: LayerKeep((), tuple(range(32)))}
    cut = cut_widths(src, keep)
    assert cut.config.heads_per_layer() == [2, 4, 0]
    assert cut.config.kv_heads_per_layer() == [1, 2, 0]
    assert cut.config.intermediate_per_layer() == [64, 128, 32]
    ref = to_per_layer(make())  # zero what the cut removes, in the full-width model
    with torch.no_grad():
        a0 = ref.model.layers[0]
        a0.self_attn.o_proj.weight[:, :32] = 0  # KV group 0 owns query heads 0-1 = o columns 0..31
        a0.mlp.down_proj.weight[:, 1::2] = 0
        a2 = ref.model.layers[2]
        a2.self_attn.o_proj.weight.zero_()
        if a2.self_attn.o_proj.bias is not None:
            a2.self_attn.o_proj.bias.zero_()
        a2.mlp.down_proj.weight[:, 32:] = 0
        torch.testing.assert_close(cut(IDS).logits, ref(IDS).logits, atol=1e-5, rtol=1e-5)
        assert (cut(IDS).logits - src(IDS).logits).abs().max() > 1e-3  # the cut did change the model


def test_random_keep_is_seeded_aligned_and_keeps_layer0_attention():
    cfg = to_per_layer(tiny_llama()).config
    a = random_keep(cfg, attn_keep=0.3, mlp_keep=0.5, align=32, seed=1)
    assert a == random_keep(cfg, attn_keep=0.3, mlp_keep=0.5, align=32, seed=1)
    assert all(len(k.mlp_channels) % 32 == 0 for k in a.values())
    assert len(a[0].kv_groups) >= 1


def test_cut_rejects_bad_indices():
    with pytest.raises(EdgepruneError, match="out of range"):
        cut_widths(tiny_llama(), {0: LayerKeep((5,), (0,))})
