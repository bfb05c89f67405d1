"""Adapt-Pruner on the real SmolLM2-135M, kept short: a small one-shot target on a few windows."""

from __future__ import annotations

import math

import pytest
import torch

from edgeprune.compress import StructuredPrune, compress
from edgeprune.data.calib import calibration_windows
from edgeprune.compress.structured.budget import param_counts
from edgeprune.compress.structured.prune import save_pruned
from edgeprune.threads import torch_threads
from edgeprune.models import load, to_per_layer
from tests.unit.eval_helpers import TEST_DATA

SHAKESPEARE = str(TEST_DATA / "calib" / "tiny_shakespeare.txt")  # the first 60 KB of calib/tiny_shakespeare.txt


@pytest.fixture(scope="module")
def pruned(default_model):
    model, tok = default_model
    with torch_threads(2):
        dense = to_per_layer(model)
        calib = calibration_windows(tok, SHAKESPEARE, n_windows=8, seq_len=64, seed=0)
        # delta = amplitude = 0.05: three mini-steps instead of eight, still adaptive per layer
        step = StructuredPrune(target=0.1, method="adapt", calib_windows=4, delta=0.05, amplitude=0.05)
        new, rep = compress(dense, step, calib, progress=False)
    return dense, new, rep, tok


def test_adapt_meets_the_target_with_widths_that_differ_by_layer(pruned):
    dense, new, rep, _ = pruned
    block, total, _ = param_counts(new)
    assert block <= 0.9 * rep.block_params_before and rep.removed_fraction < 0.12
    assert total == rep.total_params_after < rep.total_params_before
    ff = new.config.intermediate_per_layer()
    assert len(set(ff)) > 1 and all(f % 32 == 0 and f > 0 for f in ff)
    assert new.config.kv_heads_per_layer()[0] >= 1
    imp = rep.layer_importance
    assert len(imp) == 30 and all(math.isfinite(x) for x in imp)


def test_pruned_model_saves_loads_and_has_finite_perplexity(pruned, tmp_path):
    _, new, rep, tok = pruned
    save_pruned(tmp_path / "out", new, tok, rep)
    back, tok2 = load(str(tmp_path / "out"))
    ids = torch.tensor([tok2("The capital of France is Paris, and the capital of Italy is Rome.")["input_ids"]])
    with torch_threads(2), torch.no_grad():
        a, b = new(ids, labels=ids), back(ids, labels=ids)
    torch.testing.assert_close(a.logits, b.logits)
    assert math.isfinite(float(a.loss)) and math.exp(float(a.loss)) < 1e4
