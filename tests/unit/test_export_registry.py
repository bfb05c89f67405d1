"""One export registry: every layer's format vocabulary is the registry's, and the registry's quant
names are the exporters' own (issue 17)."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgeprune.describe import describe, resolve_artifact
from edgeprune.devices.cost import BYTES_PER_WEIGHT, ArtifactCost
from edgeprune.devices.profiles import device_names, get_device
from edgeprune.errors import EdgepruneError
from edgeprune.eval import Evaluator
from edgeprune.export import registry
from edgeprune.pipeline.plan import make_plan
from edgeprune.pipeline.recipes import parse_recipe
from edgeprune.pipeline.runner import prepare
from edgeprune.pipeline.stages import run_stage
from edgeprune.pipeline.build_steps import Export
from edgeprune.runtime.profile import resolve_runtime, runtime_names
from tests.unit.eval_helpers import ConstantBackend

COST = ArtifactCost(name="m", n_layers=30, params=135_000_000, weight_bytes=98_000_000,
                    kv_bytes_per_position=23040, linear_flops_per_token=212_000_000,
                    attn_flops_per_position=69120, quant="q4_1")  # fmt: skip


def test_quant_names_are_the_exporters_own():
    from edgeprune.export.gguf.api import GGUFExportConfig
    from edgeprune.export.gguf.tables import QTYPES
    from edgeprune.export.onnx.api import QUANTS, OnnxExportConfig

    assert registry.get_format("gguf").quants() == tuple(QTYPES)
    assert registry.get_format("onnx").quants() == QUANTS
    for q in QTYPES:
        assert GGUFExportConfig(qtype=q).check() == []
    for q in QUANTS:
        assert OnnxExportConfig(quant=q).check() == []


def test_every_row_is_complete_and_plannable():
    for fmt in registry.FORMATS.values():
        quants = fmt.quants()
        assert set(fmt.bit_widths) == set(registry.BIT_WIDTHS) and set(fmt.bit_widths.values()) <= set(quants)
        assert fmt.default_quant in quants
        assert [q for q in quants if q not in BYTES_PER_WEIGHT] == []  # the plan can size every type
        for hook in registry.HOOKS:  # its artifact module has every function the row names
            module, _, name = getattr(fmt, hook).target.partition(":")
            assert callable(getattr(importlib.import_module(module), name)), (fmt.name, hook)
        assert callable(importlib.import_module(fmt.cli).add_parser)
    for profile in map(get_device, device_names()):  # device profiles name registered formats and real types
        assert set(profile.preferred_formats) <= set(registry.FORMATS), profile.name
        assert set(profile.preferred_quant) <= set(registry.all_quants()), profile.name


def test_unknown_format_is_one_line_with_a_suggestion():
    with pytest.raises(EdgepruneError, match=r"^unknown export format 'ggfu' \(did you mean 'gguf'\?\): use one of gguf, onnx$"):
        registry.get_format("ggfu")
    with pytest.raises(EdgepruneError, match=r"unknown export format 'onx' \(did you mean 'onnx'\?\): use one of auto, alt, gguf, onnx"):
        Export(format="onx")


def _recipe(tmp_path, quant):
    path = tmp_path / "k.yaml"
    path.write_text(f"steps:\n  - step: export\n    format: gguf\n    quant: {quant}\n  - step: evaluate\n")
    return str(path)


def test_a_k_quant_validates_and_plans_with_no_binary(tmp_path, monkeypatch):
    recipe = parse_recipe(_recipe(tmp_path, "q4_k_m"))  # the build accepts what the GGUF exporter makes
    assert recipe.steps[0].quant == "q4_k_m"
    monkeypatch.setenv("PATH", str(tmp_path))  # no llama-quantize anywhere: llama-cpp-python quantizes
    _, plan, _ = prepare("raspberry-pi-5-8gb", model=None, recipe=_recipe(tmp_path, "q4_k_m"), out=tmp_path / "o")
    assert plan.quant.value == "q4_k_m" and plan.format.value == "gguf" and "llama-quantize" not in plan.quant.why
    assert plan.predicted["memory_bytes"] < make_plan(get_device("raspberry-pi-5-8gb"), COST, quant="q8_0").predicted["memory_bytes"]


def test_a_type_whose_binary_is_missing_fails_the_plan_in_one_line(tmp_path, monkeypatch):
    # a format may still name an outside program for a type (the row's `needs`): the plan checks PATH
    gguf = registry.FORMATS["gguf"]
    monkeypatch.setitem(registry.FORMATS, "gguf", dataclasses.replace(gguf, needs=lambda q: "quantize-tool" if q == "q5_k_m" else None))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EdgepruneError) as exc:
        prepare("raspberry-pi-5-8gb", model=None, recipe=_recipe(tmp_path, "q5_k_m"), out=tmp_path / "o")
    msg = str(exc.value)
    assert "\n" not in msg
    assert "gguf type q5_k_m is made by quantize-tool, which is not on PATH" in msg and "(f32, f16, bf16, q8_0" in msg


# -- a third format, registered for one test, reaches every layer ----------------------------------


class _FakeBackend(ConstantBackend):
    name = "fake-rt"


def _fake_export(model, tokenizer, out_dir: Path, quant: str, *, verify: bool, source_gguf):
    (out_dir / f"m-{quant}.fake").write_text(json.dumps({"quant": quant}))
    return registry.Exported(artifact=f"m-{quant}.fake", bytes=12, report={"verify": {"passed": verify}})


FAKE = registry.ExportFormat(
    name="fake", title="FAKE", artifact="a .fake file", runtime="fake-rt", extra_runtimes=(), folder=False,
    bit_widths={"4bit": "int4", "8bit": "int8", "float": "fp32"}, default_quant="int4", gpu_note="",
    cli="", quants=lambda: ("int4", "int8", "fp32"), needs=lambda q: None,
    export=_fake_export, find=lambda p: p if p.suffix == ".fake" else None,
    describe=lambda p: {"architecture": "fake", "params": 1, "dtype": "int4", "file_bytes": p.stat().st_size},
    evaluate=lambda p, tok, *, threads, batch_tokens: _FakeBackend(),
)  # fmt: skip


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setitem(registry.FORMATS, "fake", FAKE)
    path = tmp_path / "m.fake"
    path.write_text("{}")
    return path


def test_a_registered_format_reaches_recipes_and_plans(fake):
    with pytest.raises(EdgepruneError, match=r"use one of auto, alt, gguf, onnx, fake"):
        Export(format="fak")
    with pytest.raises(EdgepruneError, match=r"export quant 'q4_0' is not one of int4, int8, fp32, 4bit, 8bit, float"):
        Export(format="fake", quant="q4_0")
    plan = make_plan(get_device("raspberry-pi-5-8gb"), COST, format="fake", quant="8bit")
    assert (plan.format.value, plan.runtime.value, plan.quant.value) == ("fake", "fake-rt", "int8")
    alt = dataclasses.replace(get_device("raspberry-pi-5-8gb"), preferred_formats=("fake",))
    assert make_plan(alt, COST).quant.value == "int4"  # the row's default when the target lists none of its types


def test_a_registered_format_reaches_the_build_stage_describe_profile_and_eval(fake, tmp_path):
    ctx = SimpleNamespace(target="raspberry-pi-5-8gb", source_gguf=None, calib=None, dense_model=None, log=print,
                          artifacts=[], eval_data="wikitext2", remote=None, remote_options={},
                          model=lambda: SimpleNamespace(model=None, tokenizer=None))  # fmt: skip
    (tmp_path / "stage").mkdir()
    figures, outputs = run_stage(ctx, Export(format="fake", quant="float"), tmp_path / "stage")
    assert outputs == {"artifact": "m-fp32.fake"} and figures["format"] == "fake" and figures["bytes"] == 12
    assert figures["verify"] == {"passed": True}
    assert resolve_artifact(fake) == ("fake", fake)
    assert describe(fake)["kind"] == "fake"
    assert "fake-rt" in runtime_names() and resolve_runtime(str(fake), None) == ("fake-rt", str(fake))
    ev = Evaluator(str(fake), progress=False)
    assert ev.describe()["backend"] == "fake-rt"
    with pytest.raises(EdgepruneError, match=r"the fake-rt backend needs a \.fake file, got x\.gguf: export one with `edgeprune export fake`"):
        Evaluator("x.gguf", backend="fake-rt")
