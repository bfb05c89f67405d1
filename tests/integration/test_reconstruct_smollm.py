"""Local reconstruction on the real SmolLM2-135M, cut to its first 3 decoder layers (seconds, not
minutes): in-loop Wanda 2:4, then every block's output moves towards the dense model's, the masks
stay exact zeros, and the working memory stays a small multiple of one layer's activations."""

from __future__ import annotations

import copy

import torch

from edgeprune.compress.sparse import masks as mk
from edgeprune.data.calib import calibration_windows
from edgeprune.compress.sequential import block_linears
from edgeprune.compress.reconstruct.local import Reconstruct, reconstruct
from edgeprune.threads import torch_threads
from tests.unit.eval_helpers import TEST_DATA

DEPTH = 3
SHAKESPEARE = str(TEST_DATA / "calib" / "tiny_shakespeare.txt")  # the first 60 KB of calib/tiny_shakespeare.txt


def test_wanda_2_4_reconstruction_on_the_first_layers(default_model):
    model, tok = default_model
    dense = copy.deepcopy(model)
    dense.model.layers = dense.model.layers[:DEPTH]  # (the session fixture keeps its 30 layers)
    dense.config.num_hidden_layers = DEPTH
    calib = calibration_windows(tok, SHAKESPEARE, n_windows=8, seq_len=128, seed=0, progress=False)
    pruned = copy.deepcopy(dense)
    cfg = Reconstruct(prune="wanda", epochs=2, batch_size=2)
    with torch_threads(1):  # small blocks: one intra-op thread is fastest on a shared machine
        pruned, rep = reconstruct(pruned, cfg, calib, dense=dense, progress=False)
    assert rep.submodels == DEPTH and rep.steps == DEPTH * 2 * 4
    for r in rep.per_submodel:
        assert r["rel_mse_after"] < r["rel_mse_before"], r
    first = rep.per_submodel[0]
    assert first["rel_mse_after"] < 0.7 * first["rel_mse_before"], first  # the first block has no upstream drift to fight
    for layer in pruned.model.layers:
        for name, lin in block_linears(layer).items():
            # at least half: a few weights are exactly 0 in the checkpoint itself and stay 0 (they look pruned)
            assert mk.satisfies_nm(lin.weight, 2, 4) and int((lin.weight == 0).sum()) >= lin.weight.numel() // 2, name
    # activations: 8 x 128 x 576 float32 = 2.4 MB per stream; far below one model (540 MB)
    assert rep.working_mb < 400, rep.working_mb
    assert torch.isfinite(torch.tensor(rep.rel_mse_after))
