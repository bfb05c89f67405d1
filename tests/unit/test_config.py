"""Strict step configs and the one step table: unknown keys rejected with did-you-mean, YAML
round-trip, registry errors, and a new step added as one config + one apply + one row."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from edgeprune.config import StepConfig
from edgeprune.errors import EdgepruneError
from edgeprune.steps import STEPS, Step, StepContext, apply, config_from_dict, register, step_for, unregister


@dataclass(frozen=True)
class Demo(StepConfig):
    """A demo step."""

    STEP = "_demo"
    target: float = 0.25
    layers: tuple[int, ...] = (0, 1)
    method: str = "adapt"

    def check(self):
        return [] if 0 < self.target < 1 else [f"target must be in (0, 1), got {self.target}"]


def demo_apply(model, cfg: Demo, ctx: StepContext):
    return [x * cfg.target for x in model], {"scaled": len(model), "calib": ctx.calib}


@pytest.fixture
def demo():
    row = register(Step("_demo", Demo, demo_apply))
    yield row
    unregister("_demo")
    assert "_demo" not in STEPS


def test_unknown_key_names_the_closest(demo):
    with pytest.raises(EdgepruneError, match=r"unknown key 'taget' \(did you mean 'target'\?\) for step _demo"):
        config_from_dict({"step": "_demo", "taget": 0.3})


def test_yaml_round_trip_and_frozen():
    cfg = Demo(target=0.4, layers=(2, 3))
    again = Demo.from_yaml(cfg.to_yaml())
    assert again == cfg and isinstance(again.layers, tuple)
    with pytest.raises(Exception):
        cfg.target = 0.1  # frozen


def test_unknown_step_lists_registered(demo):
    with pytest.raises(EdgepruneError, match=r"unknown step '_dem'.*did you mean '_demo'"):
        step_for("_dem")


def test_an_invalid_config_cannot_be_built_and_all_problems_are_named():
    with pytest.raises(EdgepruneError, match="invalid _demo step: target must be") as e:
        Demo(target=2.0)
    assert "\n" not in str(e.value)
    with pytest.raises(EdgepruneError, match=r"version 3 is not supported.*; target must be"):
        Demo(target=2.0, version=3)


def test_a_new_step_is_one_row_and_runs_through_the_one_call(demo):
    cfg = config_from_dict({"step": "_demo", "target": 0.5})
    model, report = apply([2.0, 4.0], cfg, StepContext(calib="shakespeare"))
    assert model == [1.0, 2.0] and report == {"scaled": 2, "calib": "shakespeare"}
    with pytest.raises(ValueError, match="already registered"):
        register(Step("_demo", Demo, lambda model, cfg, ctx: (model, {})))


def test_a_config_without_a_row_is_refused_by_name():
    @dataclass(frozen=True)
    class Unregistered(StepConfig):
        STEP = "_nowhere"

    with pytest.raises(EdgepruneError, match="no step is registered for Unregistered"):
        apply(None, Unregistered(), StepContext())


def test_compression_steps_are_recipe_steps_by_name_and_by_kind():
    cfg = config_from_dict({"step": "prune", "target": 0.3})
    assert type(cfg).__name__ == "StructuredPrune" and cfg.STEP == "prune"
    assert config_from_dict({"step": "structured_prune", "target": 0.3}) == cfg  # the long name works too
    assert config_from_dict({"structured_prune": {"target": 0.3}}) == cfg  # and the wrapped form


def test_every_builtin_row_names_its_own_config_and_round_trips():
    for name, row in STEPS.items():
        cls = row.config_class()
        assert vars(cls).get("STEP") == name, f"{cls.__name__} must declare STEP = {name!r} (its recipe name)"
        assert callable(row.apply_fn()) and row.doc, name
        cfg = cls()
        assert step_for(cfg) is row
        assert cls.from_dict(cfg.to_dict()) == cfg, name
        assert cls.from_yaml(cfg.to_yaml()) == cfg, name


def test_importing_the_step_table_loads_no_step_code():
    import subprocess
    import sys

    code = ("import sys, edgeprune.steps, edgeprune.pipeline.recipes; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('edgeprune.compress')))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
