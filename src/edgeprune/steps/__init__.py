"""The step protocol: one registry of steps and one signature, ``apply(model, cfg, ctx) -> (model, report)``.

- :class:`StepContext` (``context.py``): what a step is given besides the model and its config;
- :data:`STEPS` / :func:`register` / :func:`step_for` / :func:`apply` (``registry.py``): the one table.

Torch-free at import: recipes are parsed and checked before anything heavy loads.
"""

from edgeprune.steps.context import StepContext
from edgeprune.steps.registry import STEPS, Step, apply, config_from_dict, config_from_yaml, register, step_for, unregister

__all__ = ["STEPS", "Step", "StepContext", "apply", "config_from_dict", "config_from_yaml", "register", "step_for", "unregister"]
