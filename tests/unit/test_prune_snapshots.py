"""Adapt-Pruner snapshots: one run to the largest target hands out the models of the smaller ones,
identical to separate runs (same mini-steps, same calibration draws, same shortened last step)."""

from __future__ import annotations

import pytest
import torch

from edgeprune.compress import StructuredPrune
from edgeprune.compress.structured.prune import structured_prune
from edgeprune.errors import EdgepruneError
from tests.prune_helpers import one_thread, windows  # noqa: F401  (autouse fixture)
from tests.tiny import tiny_llama

CALIB = windows(8, 24)


def _cfg(target, **kw):
    return StructuredPrune(target=target, method="adapt", align=16, calib_windows=4, **kw)


@pytest.mark.parametrize("calib_dtype", ["float32", "bfloat16"])
def test_snapshots_equal_separate_runs(calib_dtype):
    src = tiny_llama(num_hidden_layers=4)
    got = {}
    final, rep = structured_prune(src, _cfg(0.4, calib_dtype=calib_dtype), CALIB, progress=False, snapshots=(0.15, 0.25),
                                  on_snapshot=lambda x, m, r: got.setdefault(x, (m, r)))  # fmt: skip
    assert sorted(got) == [0.15, 0.25] and rep.removed_fraction >= 0.4
    ids = CALIB.ids[:2]
    for x, (snap, snap_rep) in got.items():
        alone, alone_rep = structured_prune(src, _cfg(x, calib_dtype=calib_dtype), CALIB, progress=False)
        assert snap.config.intermediate_per_layer() == alone.config.intermediate_per_layer()
        assert snap.config.kv_heads_per_layer() == alone.config.kv_heads_per_layer()
        assert snap_rep.block_params_after == alone_rep.block_params_after <= alone_rep.block_params_target
        assert snap_rep.target == x and snap_rep.mini_steps == alone_rep.mini_steps
        assert snap_rep.sparsity == alone_rep.sparsity
        with torch.no_grad():
            torch.testing.assert_close(snap(ids).logits, alone(ids).logits)
    assert got[0.15][1].block_params_after > got[0.25][1].block_params_after > rep.block_params_after


def test_snapshots_only_for_one_shot_adapt():
    with pytest.raises(EdgepruneError, match="snapshots need"):
        structured_prune(tiny_llama(), StructuredPrune(target=0.3, method="taylor-uniform", align=16), CALIB,
                         progress=False, snapshots=(0.1,), on_snapshot=print)  # fmt: skip
    with pytest.raises(EdgepruneError, match="snapshot targets"):
        structured_prune(tiny_llama(), _cfg(0.3), CALIB, progress=False, snapshots=(0.5,), on_snapshot=print)
