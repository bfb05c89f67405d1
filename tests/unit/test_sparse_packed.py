"""The compressed artifact: 2:4 position codes, exact round-trip of logits, bytes, corrupt files."""

from __future__ import annotations

import pytest
import torch

from edgeprune.compress.sparse import masks as mk
from edgeprune.data.calib import TokenWindows
from edgeprune.compress.sparse.packed import (WEIGHTS_FILE, decode_24, encode_24, load_packed, pack_bits, save_packed,
                                       unpack_bits)  # fmt: skip
from edgeprune.compress.quant.weights import WeightQuant, weight_quant
from edgeprune.compress.sparse.oneshot import NMPrune, nm_prune
from edgeprune.errors import EdgepruneError
from tests.tiny import tiny_llama, tiny_tokenizer
from tests.unit.sparse_helpers import one_thread  # noqa: F401  (autouse fixture)


def _calib(n=4, seq=16):
    return TokenWindows(torch.randint(0, 256, (n, seq), generator=torch.Generator().manual_seed(0)), "random")


def _ids():
    return torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(5))


def test_24_positions_round_trip_at_two_thirds_of_a_bit():
    keep = mk.nm_mask(torch.randn(7, 20, generator=torch.Generator().manual_seed(0)).abs(), 2, 4)
    meta = encode_24(keep)
    assert meta.numel() == -(-7 * 5 // 3)  # three groups of 4 per byte
    assert torch.equal(decode_24(meta, 7, 20), keep)
    with pytest.raises(ValueError):
        decode_24(torch.full_like(meta, 250), 7, 20)


def test_bitmask_round_trips():
    keep = mk.nm_mask(torch.randn(3, 24, generator=torch.Generator().manual_seed(1)).abs(), 4, 8)
    assert torch.equal(unpack_bits(pack_bits(keep), (3, 24)), keep)


@pytest.mark.parametrize(
    "quant",
    [None, WeightQuant(bits=4, group_size=32, method="gptq"), WeightQuant(bits=8, group_size=16, symmetric=False, method="rtn"),
     WeightQuant(bits=4, group_size=64, symmetric=False, method="rtn", embedding="keep")],
)  # fmt: skip
def test_packed_round_trip_reproduces_logits_exactly(tmp_path, quant):
    model = tiny_llama()
    model, _ = nm_prune(model, NMPrune(method="wanda", quant=quant, calib_dtype="float32"), _calib(), progress=False)
    with torch.no_grad():
        ref = model(_ids()).logits
    rep = save_packed(model, tmp_path / "out", nm=(2, 4), tokenizer=tiny_tokenizer())
    loaded, tok = load_packed(tmp_path / "out")
    with torch.no_grad():
        got = loaded(_ids()).logits
    assert torch.equal(ref, got)
    assert tok is not None and rep.kinds == {"nm": 21}
    for name, mod in loaded.named_modules():
        if name.endswith("_proj"):
            assert mk.satisfies_nm(mod.weight, 2, 4)
    if quant is not None and quant.bits == 4 and quant.symmetric:
        # 2 bits of values + 0.67 bit of positions + 16/32 bit of scales per dense weight
        assert abs(rep.bits_per_linear_weight - (2 + 2 / 3 + 0.5)) < 0.01
        assert rep.ratio_linear_fp32 > 10


def test_dense_quantized_and_unstructured_models_pack_too(tmp_path):
    model = tiny_llama()
    model, _ = weight_quant(model, WeightQuant(bits=8, group_size=32, method="rtn"), None, progress=False)
    with torch.no_grad():
        ref = model(_ids()).logits
    rep = save_packed(model, tmp_path / "q8", nm=None)
    assert rep.kinds == {"dense": 21}
    loaded, _ = load_packed(tmp_path / "q8")
    with torch.no_grad():
        assert torch.equal(loaded(_ids()).logits, ref)


def test_packing_a_layer_that_is_not_nm_sparse_is_an_error(tmp_path):
    with pytest.raises(EdgepruneError, match="is not 2:4 sparse"):
        save_packed(tiny_llama(), tmp_path / "dense", nm=(2, 4))
    assert not (tmp_path / "dense").exists()


def test_weights_changed_after_quantization_are_refused(tmp_path):
    model, _ = nm_prune(tiny_llama(), NMPrune(method="magnitude", quant=WeightQuant(group_size=32, method="rtn")), None, progress=False)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.mul_(1.5)
    with pytest.raises(EdgepruneError, match="changed after it was quantized"):
        save_packed(model, tmp_path / "x")


@pytest.fixture
def packed_dir(tmp_path):
    model, _ = nm_prune(tiny_llama(), NMPrune(method="magnitude", quant=WeightQuant(group_size=32, method="rtn")), None, progress=False)
    save_packed(model, tmp_path / "p")
    return tmp_path / "p"


@pytest.mark.parametrize("damage", ["flip", "truncate", "header", "empty"])
def test_corrupt_file_is_one_line_error(packed_dir, damage):
    f = packed_dir / WEIGHTS_FILE
    data = bytearray(f.read_bytes())
    if damage == "flip":
        data[-100] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "header":
        data[8:20] = b"not json {{{"
    else:
        data = bytearray()
    f.write_bytes(bytes(data))
    with pytest.raises(EdgepruneError, match="corrupt compressed file") as exc:
        load_packed(packed_dir)
    assert "\n" not in str(exc.value)


def test_existing_output_is_not_replaced_without_overwrite(packed_dir):
    model, _ = nm_prune(tiny_llama(), NMPrune(method="magnitude"), None, progress=False)
    with pytest.raises(EdgepruneError, match="already exists"):
        save_packed(model, packed_dir)
    save_packed(model, packed_dir, overwrite=True)


def test_one_shot_slorb_packs_and_reloads_exactly(tmp_path):
    from edgeprune.compress.sparse.modules import SLoRBLinear

    model, _ = nm_prune(tiny_llama(), NMPrune(method="sparsegpt", slorb_k=16, quant=WeightQuant(group_size=32),
                                              calib_dtype="float32"), _calib(), progress=False)  # fmt: skip
    assert isinstance(model.model.layers[0].mlp.up_proj, SLoRBLinear)
    with torch.no_grad():
        ref = model(_ids()).logits
    rep = save_packed(model, tmp_path / "s")
    loaded, _ = load_packed(tmp_path / "s")
    with torch.no_grad():
        assert torch.equal(loaded(_ids()).logits, ref)
    assert rep.bytes_by_part["slorb"] > 0


def test_4_8_pattern_uses_a_bitmask_and_reloads_exactly(tmp_path):
    model, _ = nm_prune(tiny_llama(), NMPrune(pattern="4:8", method="magnitude", quant=WeightQuant(bits=8, group_size=32, method="rtn")),
                        None, progress=False)  # fmt: skip
    with torch.no_grad():
        ref = model(_ids()).logits
    rep = save_packed(model, tmp_path / "p48", nm=(4, 8))
    loaded, _ = load_packed(tmp_path / "p48")
    with torch.no_grad():
        assert torch.equal(loaded(_ids()).logits, ref)
    n_weights = sum(m.weight.numel() for n, m in model.named_modules() if n.endswith("_proj"))
    assert rep.bytes_by_part["positions"] == n_weights // 8  # one bit per dense weight
