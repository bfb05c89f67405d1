"""The structured-pruning step's settings and report: :class:`StructuredPrune` (``step: prune``),
the methods table :data:`METHODS` (which allocation, which score, bias compensation or not) and
:class:`StructuredPruneReport`. What each method does is in its own module: ``adapt.py``
(Adapt-Pruner), ``uniform.py`` (Taylor- and magnitude-uniform), ``flap.py`` (FLAP)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from edgeprune.compress.sequential import CALIB_DTYPES
from edgeprune.compress.config import StrictConfig, check_choice, check_fraction, check_int
from edgeprune.compress.structured.recovery import TrainConfig
from edgeprune.compress.structured.stats import CRITERIA


@dataclass(frozen=True)
class Method:
    allocation: str  # "adaptive" | "uniform" | "global"
    criterion: str  # one of stats.CRITERIA
    bias_compensation: bool


METHODS: dict[str, Method] = {
    "adapt": Method("adaptive", "taylor", False),
    "taylor-uniform": Method("uniform", "taylor", False),
    "magnitude-uniform": Method("uniform", "magnitude", False),
    "flap": Method("global", "fluctuation", True),
}


@dataclass(frozen=True)
class StructuredPrune(StrictConfig):
    """Structured width pruning (see the module docstring). Strict: unknown keys are errors."""

    STEP = "prune"
    kind = "structured_prune"
    NESTED = {"train": TrainConfig}

    target: float = 0.25  # fraction of decoder-block parameters to remove, in (0, 1)
    method: str = "adapt"  # a key of METHODS
    criterion: str | None = None  # override the method's within-layer score (taylor, magnitude, fluctuation)
    align: int = 32  # MLP widths in multiples of this (device profiles set it; 32 suits llama.cpp / ORT kernels)
    stages: int = 1  # prune-then-train stages (Adapt-Accel); 1 = one-shot
    delta: float = 0.02  # Adapt-Pruner's per-mini-step sparsity increment (ratio 1.0 / 50 steps)
    amplitude: float = 0.02  # A: how far layer importance moves a layer's sparsity (released scripts: 0.02)
    max_sparsity: float = 0.99  # per-layer cap, as in the official code
    calib_windows: int = 32  # windows drawn from the pool per mini-step or one-shot pass (official: 512 x 64 tokens; 2 CPU cores)
    micro_batch: int = 4  # windows per forward/backward in calibration
    calib_dtype: str = "bfloat16"  # calibration matmuls under CPU autocast (2-3x faster with bf16 instructions); "float32" to disable
    keep_first: int = 1  # uniform methods: this many first layers stay dense (LLM-Pruner keeps the first ones)
    keep_last: int = 1  # uniform methods: this many last layers stay dense
    bias_compensation: bool | None = None  # FLAP's bias term; None = the method's default
    seed: int = 0
    train: TrainConfig | None = None  # recovery training after each stage (None: no training)
    version: int = 1

    def check(self) -> list[str]:
        p = check_fraction("target", self.target)
        p += check_choice("method", self.method, list(METHODS))
        if self.criterion is not None:
            p += check_choice("criterion", self.criterion, CRITERIA)
        p += check_int("align", self.align, minimum=1) + check_int("stages", self.stages, minimum=1)
        p += check_fraction("delta", self.delta) + check_fraction("amplitude", self.amplitude, low_open=False)
        p += check_fraction("max_sparsity", self.max_sparsity, high_open=True)
        p += check_int("calib_windows", self.calib_windows, minimum=1) + check_int("micro_batch", self.micro_batch, minimum=1)
        p += check_choice("calib_dtype", self.calib_dtype, tuple(CALIB_DTYPES))
        p += check_int("keep_first", self.keep_first, minimum=0) + check_int("keep_last", self.keep_last, minimum=0)
        if self.bias_compensation is not None and not isinstance(self.bias_compensation, bool):
            p.append(f"bias_compensation must be true, false or null, got {self.bias_compensation!r}")
        p += check_int("seed", self.seed, minimum=0)
        if self.train is not None and not isinstance(self.train, TrainConfig):
            p.append(f"train must be a TrainConfig (or a mapping of its settings), got {type(self.train).__name__}")
        return p

    @property
    def resolved(self) -> Method:
        m = METHODS[self.method]
        return Method(
            m.allocation,
            self.criterion or m.criterion,
            m.bias_compensation if self.bias_compensation is None else self.bias_compensation,
        )


# -- report ---------------------------------------------------------------------------------------------


@dataclass
class StructuredPruneReport:
    method: str
    criterion: str
    allocation: str
    target: float
    align: int
    stages: int
    target_counts: str  # what the target counts, in words
    block_params_before: int
    block_params_after: int
    block_params_target: int
    removed_fraction: float  # of block parameters
    total_params_before: int
    total_params_after: int
    bytes_before: int  # parameter bytes at the model's dtype
    bytes_after: int
    dtype: str
    widths_before: dict
    widths_after: dict
    layer_importance: list[float] | None  # -mean cos(in, out) per layer, dense model (None: not measured)
    layer_importance_final: list[float] | None  # the same, last measurement before the last cut
    sparsity: list[float] | None  # adapt: the per-layer channel sparsity reached (last stage)
    mini_steps: list[dict] = field(default_factory=list)
    calibration: dict | None = None
    train: list[dict] = field(default_factory=list)
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0
    notes: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"
