"""Which implementation applies which step config: a table from config type to function.

Implementations register with ``@register(ConfigType)``. Built-in steps live in modules listed in
``BUILTIN_STEPS`` and are imported the first time the registry is consulted, so importing
``edgeprune.compress`` stays cheap. An unregistered config gets an error listing what is
registered.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from edgeprune.errors import EdgepruneError

# config kind -> (module defining the config and registering its implementation, config class name)
BUILTIN_STEPS: dict[str, tuple[str, str]] = {
    "structured_prune": ("edgeprune.compress.structured", "StructuredPrune"),
    "nm_prune": ("edgeprune.compress.sparsify", "NMPrune"),
    "weight_quant": ("edgeprune.compress.sparsify", "WeightQuant"),
}

_IMPLEMENTATIONS: dict[type, Callable] = {}


def register(config_type: type) -> Callable[[Callable], Callable]:
    """Decorator: bind ``config_type`` to the decorated ``fn(model, config, calib, **kw) -> (model, report)``."""

    def bind(fn: Callable) -> Callable:
        if config_type in _IMPLEMENTATIONS and _IMPLEMENTATIONS[config_type] is not fn:
            raise ValueError(f"{config_type.__name__} is already registered to {_IMPLEMENTATIONS[config_type]}")
        _IMPLEMENTATIONS[config_type] = fn
        return fn

    return bind


def _load_builtins() -> None:
    for module, _ in BUILTIN_STEPS.values():
        importlib.import_module(module)


def registered() -> dict[str, type]:
    """``kind -> config type`` of every registered step (built-ins included)."""
    _load_builtins()
    return {getattr(t, "kind", t.__name__): t for t in _IMPLEMENTATIONS}


def implementation(config) -> Callable:
    """The function registered for ``type(config)``; EdgepruneError listing the registered ones if none."""
    _load_builtins()
    fn = _IMPLEMENTATIONS.get(type(config))
    if fn is None:
        names = ", ".join(f"{t.__name__} ({getattr(t, 'kind', '?')})" for t in _IMPLEMENTATIONS) or "none"
        raise EdgepruneError(
            f"no compression step is registered for {type(config).__name__}: registered are {names}; "
            "pass one of these configs or register an implementation with edgeprune.compress.register"
        )
    return fn


def bridge_to_recipes(step_name: str, config_type: type, apply: Callable) -> None:
    """Also register ``config_type`` as ``step: <step_name>`` in the build's recipe registry
    (``edgeprune.config``), with ``apply(model, config, *, calib=<source name or None>, tokenizer=...)``.

    Lets ``edgeprune build`` recipes name compression steps; a no-op where that registry is absent.
    """
    try:
        from edgeprune.config import STEPS, register_step
    except ImportError:
        return
    if step_name not in STEPS:
        register_step(step_name, apply=apply)(config_type)


def config_from_dict(data: dict):
    """A step config from its recipe form ``{kind: {settings}}``."""
    if not isinstance(data, dict) or len(data) != 1:
        raise EdgepruneError("a step must be a mapping with exactly one key, the step kind (e.g. structured_prune)")
    (kind, settings), = data.items()
    kinds = registered()
    if kind not in kinds:
        raise EdgepruneError(f"unknown step kind {kind!r}: registered are {', '.join(sorted(kinds))}")
    return kinds[kind].from_dict(settings or {})


def config_from_yaml(text: str):
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EdgepruneError(f"not valid YAML: {str(exc).splitlines()[0]}") from None
    return config_from_dict(data)
