"""Structured pruning through the verb: every method, targets met, widths legal, configs strict, errors clear."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from edgeprune.compress import StructuredPrune, TrainConfig, compress, config_from_yaml
from edgeprune.steps import STEPS
from edgeprune.compress.config import StrictConfig
from edgeprune.compress.structured.budget import param_counts
from edgeprune.compress.structured.config import METHODS
from edgeprune.errors import EdgepruneError
from edgeprune.models import to_per_layer
from tests.prune_helpers import one_thread, windows  # noqa: F401  (autouse fixture)
from tests.tiny import tiny_llama, tiny_qwen2

CALIB = windows(8, 24)
IDS = CALIB.ids[:2]


def _prune(model, **kw):
    kw.setdefault("align", 16)
    kw.setdefault("calib_windows", 4)
    return compress(model, StructuredPrune(**kw), CALIB, progress=False)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("make", [tiny_llama, tiny_qwen2], ids=["llama", "qwen2-bias"])
def test_every_method_meets_the_target_with_legal_widths(method, make):
    src = make(num_hidden_layers=4)
    before = [p.detach().clone() for p in src.parameters()]
    new, rep = _prune(src, target=0.3, method=method)
    block, total, nbytes = param_counts(new)
    assert block <= 0.7 * rep.block_params_before and rep.block_params_after == block
    assert rep.removed_fraction == pytest.approx(1 - block / rep.block_params_before)
    assert rep.removed_fraction < 0.3 + 0.1  # lands near the target, not far past it
    assert total < rep.total_params_before and nbytes == rep.bytes_after
    cfg = new.config
    assert all(k >= 1 for k in cfg.kv_heads_per_layer())  # layer 0 in particular (llama.cpp head size)
    assert all(f > 0 and f % 16 == 0 for f in cfg.intermediate_per_layer())
    assert cfg.heads_per_layer() == [2 * k for k in cfg.kv_heads_per_layer()]  # whole GQA groups
    with torch.no_grad():
        assert torch.isfinite(new(IDS).logits).all()
    assert all(torch.equal(a, b) for a, b in zip(before, src.parameters()))  # the input model is untouched


def test_adapt_gives_layers_different_widths_and_prunes_unimportant_layers_more():
    src = to_per_layer(tiny_llama(num_hidden_layers=4))
    with torch.no_grad():  # make layer 2 a near no-op: its output ~ its input, cosine ~ 1, least important
        src.model.layers[2].self_attn.o_proj.weight.mul_(0.01)
        src.model.layers[2].mlp.down_proj.weight.mul_(0.01)
    new, rep = _prune(src, target=0.3, method="adapt")
    imp = rep.layer_importance
    assert min(range(4), key=lambda i: imp[i]) == 2
    ff = new.config.intermediate_per_layer()
    assert ff[2] == min(ff) and len(set(ff)) > 1
    assert rep.sparsity[2] == max(rep.sparsity)
    assert len(rep.mini_steps) >= 2 and all(len(s["importance"]) == 4 for s in rep.mini_steps)
    assert rep.mini_steps[-1]["block_params"] == rep.block_params_after


def test_uniform_keeps_first_and_last_layers_and_one_ratio():
    new, rep = _prune(tiny_llama(num_hidden_layers=4), target=0.3, method="taylor-uniform")
    ff, kv = new.config.intermediate_per_layer(), new.config.kv_heads_per_layer()
    assert ff[0] == ff[3] == 128 and kv[0] == kv[3] == 2
    assert ff[1] == ff[2] < 128


def test_magnitude_uniform_needs_no_calibration():
    new, rep = compress(tiny_llama(), StructuredPrune(target=0.2, method="magnitude-uniform", align=16), None, progress=False)
    assert rep.removed_fraction >= 0.2 and rep.layer_importance is None


def test_flap_adds_compensation_biases_that_help():
    src = tiny_llama(num_hidden_layers=4)
    with_b, rep = _prune(src, target=0.3, method="flap")
    without, _ = _prune(src, target=0.3, method="flap", bias_compensation=False)
    assert with_b.config.o_proj_bias and with_b.config.mlp_bias and not without.config.mlp_bias
    assert with_b.config.intermediate_per_layer() == without.config.intermediate_per_layer()
    assert rep.block_params_after <= rep.block_params_target  # the added biases are counted
    ids = CALIB.ids
    with torch.no_grad():
        ref = src(ids).logits
        err_b = (with_b(ids).logits - ref).pow(2).mean()
        err = (without(ids).logits - ref).pow(2).mean()
    assert err_b < err


def test_pruned_model_saves_and_loads(tmp_path):
    from edgeprune.compress.structured.prune import save_pruned
    from edgeprune.models import load
    from tests.tiny import tiny_tokenizer

    new, rep = _prune(tiny_llama(num_hidden_layers=4), target=0.3, method="adapt")
    save_pruned(tmp_path / "out", new, tiny_tokenizer(), rep)
    back, _ = load(str(tmp_path / "out"))
    assert back.config.intermediate_per_layer() == new.config.intermediate_per_layer()
    with torch.no_grad():
        torch.testing.assert_close(back(IDS).logits, new(IDS).logits)
    saved = StructuredPrune.from_yaml((tmp_path / "out" / "prune.yaml").read_text())
    assert saved == StructuredPrune(target=0.3, method="adapt", align=16, calib_windows=4)


def test_stages_with_recovery_training_and_kd():
    train = TrainConfig(tokens=2 * 4 * 24 * 3, batch_size=4, kd_alpha=0.5, lr=1e-3)
    new, rep = _prune(tiny_llama(num_hidden_layers=4), target=0.3, method="adapt", stages=2, train=train)
    assert rep.removed_fraction >= 0.3
    assert [t["stage"] for t in rep.train] == [1, 2]
    assert sum(t["tokens"] for t in rep.train) <= train.tokens and rep.train[1]["steps"] >= rep.train[0]["steps"]
    assert all(t["last_loss"] is not None for t in rep.train)
    assert len({s["stage"] for s in rep.mini_steps}) == 2


# -- configs, registry, errors -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5, "0.3", True])
def test_bad_targets_are_one_line_errors(bad):
    with pytest.raises(EdgepruneError, match="target") as e:
        StructuredPrune(target=bad)
    assert "\n" not in str(e.value)


def test_unknown_keys_versions_and_values_are_rejected_all_at_once():
    with pytest.raises(EdgepruneError, match=r"'targte' \(did you mean 'target'\?\)"):
        StructuredPrune.from_dict({"targte": 0.3})
    with pytest.raises(EdgepruneError, match="version 2"):
        StructuredPrune(version=2)
    with pytest.raises(EdgepruneError) as e:
        StructuredPrune(method="adaptt", align=0)
    assert "did you mean 'adapt'" in str(e.value) and "align" in str(e.value)
    with pytest.raises(EdgepruneError, match="unknown key .tokenz. .did you mean .tokens... for step train"):
        StructuredPrune.from_dict({"train": {"tokenz": 5}})


def test_every_registered_config_round_trips_through_yaml():
    examples = {
        "structured_prune": StructuredPrune(target=0.35, method="flap", criterion="taylor", stages=3,
                                            train=TrainConfig(tokens=1000, gradient_checkpointing=True)),  # fmt: skip
    }
    kinds = {row.config_class().kind: row.config_class() for row in STEPS.values()}
    assert set(kinds) >= set(examples)
    for kind, cls in kinds.items():
        cfg = examples.get(kind, cls())
        assert cls.from_yaml(cfg.to_yaml()) == cfg
        assert config_from_yaml(cfg.to_yaml()) == cfg
        assert cls.from_dict(cfg.to_dict()) == cfg
    t = TrainConfig(tokens=7)
    assert TrainConfig.from_yaml(t.to_yaml()) == t


def test_unregistered_config_lists_the_registered_ones():
    @dataclasses.dataclass(frozen=True)
    class Nope(StrictConfig):
        kind = "nope"
        version: int = 1

    with pytest.raises(EdgepruneError, match=r"no step is registered for Nope: registered steps are .*prune"):
        compress(tiny_llama(), Nope(), CALIB)


def test_unreachable_target_empty_calibration_and_unsupported_architecture():
    with pytest.raises(EdgepruneError, match="unreachable.*align=128"):
        compress(tiny_llama(), StructuredPrune(target=0.9, align=128), CALIB, progress=False)
    with pytest.raises(EdgepruneError, match="calibration set is empty"):
        compress(tiny_llama(), StructuredPrune(target=0.2), None, progress=False)
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=260, n_positions=32))
    with pytest.raises(EdgepruneError, match="gpt2"):
        compress(gpt2, StructuredPrune(target=0.2), CALIB, progress=False)
