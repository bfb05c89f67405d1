"""The compression view of the one step registry in :mod:`edgeprune.config`: which function applies
which config (``@register(ConfigType)``), configs by kind, and the bridge that gives a step an
in-build apply (calibration from a source name, tokenizer)."""

from __future__ import annotations

from collections.abc import Callable

from edgeprune.config import (
    STEPS,
    config_from_dict,
    config_from_yaml,
    implementation,
    implementations,
    register,
    register_step,
    set_apply,
)

__all__ = ["register", "implementation", "registered", "bridge_to_recipes", "config_from_dict", "config_from_yaml"]


def registered() -> dict[str, type]:
    """``kind -> config type`` of every step with an implementation (built-ins included)."""
    return {t.kind or t.STEP or t.__name__: t for t in implementations()}


def bridge_to_recipes(step_name: str, config_type: type, apply: Callable) -> None:
    """Register ``config_type`` as ``step: <step_name>`` in build recipes, applied in a build with
    ``apply(model, config, *, calib=<source name or None>, tokenizer=..., progress=...)``."""
    if step_name not in STEPS:
        register_step(step_name)(config_type)
    set_apply(step_name, apply)
