"""2:4 on the real SmolLM2-135M: Wanda on a few calibration windows, int4 packing, exact reload, bytes."""

from __future__ import annotations

import copy

import pytest
import torch

from edgeprune.compress.sparse import masks as mk
from edgeprune.data.calib import calibration_windows
from edgeprune.compress.sparse.packed import load_packed, save_packed
from edgeprune.compress.quant.weights import WeightQuant
from edgeprune.compress.sparse.oneshot import NMPrune, nm_prune
from edgeprune.threads import torch_threads
from tests.unit.eval_helpers import TEST_DATA

SHAKESPEARE = str(TEST_DATA / "calib" / "tiny_shakespeare.txt")  # the first 60 KB of calib/tiny_shakespeare.txt


@pytest.fixture(scope="module")
def wanda_int4(default_model, tmp_path_factory):
    model, tok = default_model
    calib = calibration_windows(tok, SHAKESPEARE, n_windows=4, seq_len=128, seed=0, progress=False)
    sparse = copy.deepcopy(model)
    step = NMPrune(method="wanda", quant=WeightQuant(bits=4, group_size=64, method="rtn"), batch_size=4)
    with torch_threads(1):  # the calibration and RTN loops are many small ops
        sparse, report = nm_prune(sparse, step, calib, progress=False)
        out = tmp_path_factory.mktemp("sparse") / "wanda24-int4"
        pack = save_packed(sparse, out, nm=(2, 4), tokenizer=tok)
    return sparse, report, pack, out


def test_every_decoder_linear_is_2_4_and_half_is_gone(wanda_int4):
    sparse, report, _, _ = wanda_int4
    assert report.linears == 30 * 7
    assert abs(report.sparsity - 0.5) < 1e-4
    assert all(mk.satisfies_nm(sparse.model.layers[i].mlp.down_proj.weight, 2, 4) for i in (0, 15, 29))


def test_int4_artifact_is_over_10x_smaller_for_the_linears_and_reloads_exactly(wanda_int4):
    sparse, _, pack, out = wanda_int4
    # 2 bits of values + 2/3 bit of 2:4 positions + 16/64 bit of float16 scales per dense weight
    assert pack.ratio_linear_fp32 >= 10.0, pack
    assert pack.bits_per_linear_weight < 3.0
    assert pack.ratio_file_fp32 > 6.0  # the int8 embedding (28M of the 135M parameters) dominates the rest
    loaded, tok = load_packed(out)
    ids = tok("The capital of France is Paris, and", return_tensors="pt")["input_ids"]
    with torch.no_grad(), torch_threads(1):
        assert torch.equal(loaded(ids).logits, sparse(ids).logits)
