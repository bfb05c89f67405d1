"""Recipes: an ordered list of step configs, written in YAML, validated as a whole.

A recipe is checked before any weight is loaded, and every problem is reported at once
(unknown steps or keys, bad values, steps in an order that cannot work).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from edgeprune.config import StepConfig
from edgeprune.steps import config_from_dict, step_for
from edgeprune.errors import EdgepruneError

# Built-in recipes by name. Compression steps appear only in recipes whose steps are registered.
BUILTIN_RECIPES: dict[str, str] = {
    "default": """
description: quantize for the target in its two formats (preferred types), check quality, measure speed
steps:
  - step: evaluate
  - step: export
  - step: evaluate
  - step: profile
  - step: export
    format: alt
  - step: evaluate
  - step: profile
""",
    "q4-only": """
description: 4-bit weights only (GGUF q4_0 / ONNX int4), no pruning
steps:
  - step: evaluate
  - step: export
    quant: 4bit
  - step: evaluate
  - step: profile
""",
    "adapt-25": """
description: Adapt-Pruner removes 25% of the decoder-block parameters, then quantize for the target
steps:
  - step: evaluate
  - step: prune
    target: 0.25
    method: adapt
  - step: evaluate
  - step: export
  - step: evaluate
  - step: profile
""",
    "adapt-25-recover": """
description: Adapt-Pruner removes 25% of the decoder-block parameters, then recovery on a budget of 800,000 tokens (reconstruction of the pruned blocks first, then distillation from the dense model's top-64 logits); calibrates and trains on --calib (default general); figures and cost in bench/results/recovery_budget.md
steps:
  - step: evaluate
  - step: prune
    target: 0.25
    method: adapt
  - step: recover
    tokens: 800000
  - step: evaluate
  - step: export
  - step: evaluate
  - step: profile
""",
    "sparse24-recover": """
description: 2:4 masks chosen by SparseGPT inside local reconstruction, then masked distillation from the dense model on one budget of 400,000 tokens; calibrates and trains on --calib (default general); figures and cost in bench/results/recovery_budget.md
steps:
  - step: evaluate
  - step: recover
    tokens: 400000
    recon_prune: sparsegpt
    recon_lr: 0.004
  - step: evaluate
  - step: export
  - step: evaluate
  - step: profile
""",
    "sparse24-int4": """
description: 2:4 sparsity (Wanda) with int4 group quantization; speeds up only where 2:4 kernels exist
steps:
  - step: evaluate
  - step: sparsify
    pattern: "2:4"
    method: wanda
  - step: evaluate
  - step: export
  - step: evaluate
  - step: profile
""",
    "sparse24-recon-ast": """
description: 2:4 masks chosen by SparseGPT inside local reconstruction, then AST on 204,800 tokens; pass --calib with your domain's text (figures and cost measured by bench/sparse24.py, in bench/results/sparse24_notes.md)
steps:
  - step: evaluate
  - step: reconstruct
    prune: sparsegpt
    epochs: 2
    lr: 0.004
  - step: sparse_train
    init: none
    slorb: false
    tokens: 204800
  - step: evaluate
  - step: export
  - step: evaluate
  - step: profile
""",
}
DEFAULT_RECIPE = "default"


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    steps: tuple[StepConfig, ...]
    given: tuple[frozenset[str], ...] = ()  # per step, the keys its YAML set (the rest are defaults)

    def fit_to_plan(self, plan) -> Recipe:
        """The recipe with what the recipe left to the target taken from ``plan``: a step's width
        ``align`` (MLP widths in multiples of it) becomes the target's ``width_align`` where the step
        has one and its YAML did not set it, so a pruned model's widths suit the target's kernels."""
        steps = []
        for i, cfg in enumerate(self.steps):
            given = self.given[i] if i < len(self.given) else frozenset(cfg.to_dict())
            if hasattr(cfg, "align") and "align" not in given and cfg.align != plan.width_align.value:
                cfg = cfg.replace(align=plan.width_align.value)
            steps.append(cfg)
        return replace(self, steps=tuple(steps))

    def to_yaml(self) -> str:
        return yaml.safe_dump(
            {"description": self.description, "steps": [s.to_dict() for s in self.steps]}, sort_keys=False
        )


def recipe_text(name_or_path: str) -> tuple[str, str]:
    """(name, YAML text) of a built-in recipe or a recipe file."""
    if name_or_path in BUILTIN_RECIPES:
        return name_or_path, BUILTIN_RECIPES[name_or_path]
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.stem, path.read_text()
    close = difflib.get_close_matches(name_or_path, list(BUILTIN_RECIPES), n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise EdgepruneError(
        f"unknown recipe {name_or_path!r}{hint}: use a YAML file or a built-in recipe ({', '.join(BUILTIN_RECIPES)})"
    )


def parse_recipe(name_or_path: str) -> Recipe:
    """Parse and validate a recipe; one EdgepruneError lists every problem found."""
    name, text = recipe_text(name_or_path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EdgepruneError(f"recipe {name} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list) or not data["steps"]:
        raise EdgepruneError(f"recipe {name} needs a non-empty 'steps:' list")
    problems: list[str] = []
    unknown_top = [k for k in data if k not in ("description", "steps")]
    if unknown_top:
        problems.append(f"unknown top-level key(s) {', '.join(map(repr, unknown_top))} (use description, steps)")
    steps: list[StepConfig] = []
    given: list[frozenset[str]] = []
    for i, raw in enumerate(data["steps"], 1):
        try:
            cfg = config_from_dict(raw, where=f"step {i}")
        except EdgepruneError as exc:
            problems.append(f"step {i}: {exc}")
            continue
        problems.extend(f"step {i} ({cfg.STEP}): {p}" for p in cfg.check())
        steps.append(cfg)
        settings = next(iter(raw.values())) if "step" not in raw else raw  # the wrapped form {name: {settings}}
        given.append(frozenset(settings or {}) - {"step"})
    names = [s.STEP for s in steps]
    if "profile" in names and ("export" not in names or names.index("profile") < names.index("export")):
        problems.append("a profile step needs an export step before it (it measures the exported artifact)")
    if "export" in names:
        last_export = len(names) - 1 - names[::-1].index("export")
        late = [n for n in names[last_export + 1 :] if step_for(n).changes_model]
        if late:
            problems.append(f"step(s) {', '.join(late)} come after the last export: their result would never ship")
    if problems:
        raise EdgepruneError(f"recipe {name} has {len(problems)} problem(s): " + " | ".join(problems))
    return Recipe(name=name, description=str(data.get("description", "")), steps=tuple(steps), given=tuple(given))


def registered_recipes() -> list[str]:
    """Built-in recipes whose every step is registered in this installation."""
    out = []
    for name, text in BUILTIN_RECIPES.items():
        steps = yaml.safe_load(text)["steps"]
        try:
            for s in steps:
                step_for(s.get("step"))
        except EdgepruneError:
            continue
        out.append(name)
    return out
