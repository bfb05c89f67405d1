"""The depth-pruning step's settings (``step: depth``) and its report."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from edgeprune.compress.config import StrictConfig, check_choice, check_fraction, check_int
from edgeprune.errors import EdgepruneError

# angular: ShortGPT's block influence 1 - cos(x_l, x_l+1), one pass, the k lowest go;
# adapt: Adapt-Pruner's layer importance -cos(x_l, x_l+1), re-measured after each single-layer cut
#   (as its mini-steps re-measure), the least important goes, k times;
# consecutive: Gromov et al.'s arccos(cos(x_l, x_l+k)) / pi, the k consecutive layers with the smallest go
SCORES = ("angular", "adapt", "consecutive")
DEFAULT_FRACTION = 0.2  # the figure: >= 20% fewer layers (6 of SmolLM2-135M's 30)


@dataclass(frozen=True)
class Depth(StrictConfig):
    """Remove whole decoder layers scored on calibration text (see edgeprune.compress.depth)."""

    STEP = "depth"
    kind = "depth_prune"

    layers: int | None = None  # how many layers to remove (exclusive with fraction)
    fraction: float | None = None  # ... or this fraction of them, rounded (default 0.2 when neither is given)
    score: str = "angular"  # angular | adapt | consecutive (see SCORES)
    # ShortGPT and Gromov et al. both find the first and last layers the ones a model cannot lose
    protect_first: bool = True
    protect_last: bool = True
    calib_windows: int = 0  # use the first N calibration windows (0: all drawn)
    batch_size: int = 8  # windows per forward chunk
    seed: int = 0
    version: int = 1

    def check(self) -> list[str]:
        p = []
        if self.layers is not None and self.fraction is not None:
            p.append(f"give layers or fraction, not both (got layers {self.layers} and fraction {self.fraction})")
        if self.layers is not None:
            p += check_int("layers", self.layers, minimum=1)
        if self.fraction is not None:
            p += check_fraction("fraction", self.fraction)
        p += check_choice("score", self.score, SCORES)
        for name in ("protect_first", "protect_last"):
            if not isinstance(getattr(self, name), bool):
                p.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        p += check_int("calib_windows", self.calib_windows, minimum=0) + check_int("batch_size", self.batch_size, minimum=1)
        p += check_int("seed", self.seed, minimum=0)
        return p

    def n_remove(self, n_layers: int) -> int:
        """How many of ``n_layers`` layers go; EdgepruneError when that leaves none (or none to remove)."""
        n = self.layers if self.layers is not None else round(n_layers * (self.fraction or DEFAULT_FRACTION))
        free = n_layers - int(self.protect_first) - int(self.protect_last)
        if n < 1:
            raise EdgepruneError(f"fraction {self.fraction} of {n_layers} layers removes none: raise it or pass layers")
        if n >= n_layers or n > free:
            raise EdgepruneError(
                f"cannot remove {n} of {n_layers} decoder layers ({max(free, 0)} removable with protect_first "
                f"{self.protect_first}, protect_last {self.protect_last}): remove fewer layers"
            )
        return n


@dataclass
class DepthReport:
    step: str
    config: dict
    layers_before: int = 0
    layers_after: int = 0
    removed: list[int] = field(default_factory=list)  # indices in the input model
    kept: list[int] = field(default_factory=list)  # indices in the original (first dense) model
    scores: list[float] = field(default_factory=list)  # the first measurement, per input layer
    # score: adapt: the importance re-measured before each cut (the cut layer's index in the model of that moment)
    rounds: list[dict] = field(default_factory=list)
    calibration: dict | None = None
    params_before: int = 0
    params_after: int = 0
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
