"""Strict step configs: unknown keys rejected with did-you-mean, YAML round-trip, registry errors."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from edgeprune.config import STEPS, StepConfig, config_from_dict, register_step, step_entry
from edgeprune.errors import EdgepruneError


@register_step("_demo")
@dataclass(frozen=True)
class Demo(StepConfig):
    """A demo step."""

    target: float = 0.25
    layers: tuple[int, ...] = (0, 1)
    method: str = "adapt"

    def check(self):
        return [] if 0 < self.target < 1 else [f"target must be in (0, 1), got {self.target}"]


def test_unknown_key_names_the_closest():
    with pytest.raises(EdgepruneError, match=r"unknown key 'taget' \(did you mean 'target'\?\) for step _demo"):
        config_from_dict({"step": "_demo", "taget": 0.3})


def test_yaml_round_trip_and_frozen():
    cfg = Demo(target=0.4, layers=(2, 3))
    again = Demo.from_yaml(cfg.to_yaml())
    assert again == cfg and isinstance(again.layers, tuple)
    with pytest.raises(Exception):
        cfg.target = 0.1  # frozen


def test_unknown_step_lists_registered():
    with pytest.raises(EdgepruneError, match=r"unknown step '_dem'.*did you mean '_demo'"):
        step_entry("_dem")


def test_an_invalid_config_cannot_be_built_and_all_problems_are_named():
    with pytest.raises(EdgepruneError, match="invalid _demo step: target must be") as e:
        Demo(target=2.0)
    assert "\n" not in str(e.value)
    with pytest.raises(EdgepruneError, match=r"version 3 is not supported.*; target must be"):
        Demo(target=2.0, version=3)


def test_compression_steps_are_recipe_steps_by_name_and_by_kind():
    cfg = config_from_dict({"step": "prune", "target": 0.3})
    assert type(cfg).__name__ == "StructuredPrune" and cfg.STEP == "prune"
    assert config_from_dict({"step": "structured_prune", "target": 0.3}) == cfg  # the long name works too
    assert config_from_dict({"structured_prune": {"target": 0.3}}) == cfg  # and the wrapped form
    for name in ("sparsify", "quantize", "sparse_train"):
        assert step_entry(name).config.STEP == name


def test_every_registered_step_round_trips():
    import edgeprune.pipeline.steps  # noqa: F401  (registers the build's steps)

    for name, entry in STEPS.items():
        cfg = entry.config()
        assert entry.config.from_dict(cfg.to_dict()) == cfg, name
        assert entry.config.from_yaml(cfg.to_yaml()) == cfg, name
