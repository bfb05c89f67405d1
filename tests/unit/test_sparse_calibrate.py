"""Layer-sequential calibration: inputs caught at layer 0, the pruned stream feeds the next layer."""

from __future__ import annotations

import torch

from edgeprune.compress.sparse import masks as mk
from edgeprune.compress.sequential import capture_block_inputs, sequential
from tests.tiny import tiny_llama, tiny_per_layer
from tests.unit.sparse_helpers import one_thread  # noqa: F401  (autouse fixture)


def _ids(n=4, seq=12):
    return torch.randint(0, 256, (n, seq), generator=torch.Generator().manual_seed(0))


def test_capture_stops_at_the_first_layer():
    model = tiny_llama()
    calls = []
    model.lm_head.register_forward_hook(lambda *a: calls.append(1))
    caught = capture_block_inputs(model, _ids(), batch_size=3)
    assert calls == [] and [h.shape for h in caught.hidden] == [(3, 12, 64), (1, 12, 64)]
    assert caught.tokens == 48


def test_each_layer_is_calibrated_on_the_pruned_outputs_of_the_layers_before():
    model = tiny_llama()
    seen = {}

    def prune_half(i, layer, linears, stats):
        seen[i] = stats["self_attn.q_proj"].sq_sum.clone()
        # q/k/v share one statistics object, gate/up another; o and down have their own
        assert stats["self_attn.q_proj"] is stats["self_attn.v_proj"] is stats["self_attn.k_proj"]
        assert stats["mlp.gate_proj"] is stats["mlp.up_proj"] and stats["mlp.down_proj"] is not stats["mlp.up_proj"]
        for lin in linears.values():
            lin.weight.data *= mk.nm_mask(lin.weight.abs(), 2, 4)
        return {"layer": i}

    ids = _ids()
    reports = sequential(model, ids, prune_half, hessian=False, batch_size=2, progress=False)
    assert [r["layer"] for r in reports] == [0, 1, 2]
    # what layer i's q_proj sees in the fully pruned model = what it saw during calibration
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
    for i, layer in enumerate(model.model.layers):
        x = layer.input_layernorm(hidden[i]).reshape(-1, 64).double()  # (batch, seq, hidden) -> (tokens, hidden)
        torch.testing.assert_close(seen[i], (x * x).sum(0), rtol=1e-5, atol=1e-6)


def test_hessian_is_x_transpose_x_and_layers_without_parts_are_skipped():
    model = tiny_per_layer()  # layer 1 has no attention, layer 2 no MLP
    got = {}

    def record(i, layer, linears, stats):
        got[i] = sorted(linears)
        first = stats[sorted(linears)[0]]
        assert first.xtx is not None and torch.allclose(torch.diag(first.xtx).double(), first.sq_sum, rtol=1e-4)

    sequential(model, _ids(), record, hessian=True, batch_size=4, progress=False)
    assert got[1] == ["mlp.down_proj", "mlp.gate_proj", "mlp.up_proj"]
    assert got[2] == ["self_attn.k_proj", "self_attn.o_proj", "self_attn.q_proj", "self_attn.v_proj"]
