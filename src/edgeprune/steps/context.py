"""What a step is given besides the model and its config: ``apply(model, cfg, ctx)``'s ``ctx``.

A :class:`StepContext` holds where the step's text comes from (calibration and training sources,
or windows already drawn), the dense original (the teacher, the reconstruction target, the writer
of ``self`` text), the device, progress and logging, and, inside a build, the stage's directory and
what earlier stages produced. Steps ask it for windows; it draws them by the one calibration
policy (:mod:`edgeprune.data.calib_policy`), so a step run from the Python API, from its CLI verb
or inside a build draws the same windows from the same source with the same settings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.errors import EdgepruneError


def _is_windows(value) -> bool:
    return hasattr(value, "ids") and hasattr(value, "source")  # data.calib.TokenWindows, without importing torch


@dataclass
class StepContext:
    """The context of one step. Every field has a default: ``StepContext()`` is a valid context for
    steps that read no text (magnitude pruning, round-to-nearest quantization)."""

    tokenizer: Any = None  # needed to draw text from a source
    # calibration text: a source name ("self": text the model writes, "shakespeare", "wikitext2-valid",
    # a file), or windows already drawn (data.calib.TokenWindows); None: none (a step that needs
    # text says so)
    calib: str | Any | None = None
    # training text: source name(s) (several mix), or windows; None: the calibration source (its own
    # windows, drawn apart), or the calibration windows themselves when those were given
    train_data: str | Sequence[str] | Any | None = None
    # the dense original: a model or a zero-argument loader (called at most once, when a step needs it)
    dense: Any = None
    release_dense: bool = False  # the step may free the dense model as it goes (the caller gives it up)
    seed: int | None = None  # overrides the config's seed for draws (a CLI's --seed)
    calib_n_windows: int | None = None  # override the policy's calibration draw (CLI flags)
    calib_seq_len: int | None = None
    train_n_windows: int | None = None  # per training source
    train_seq_len: int | None = None
    data_dir: str | None = None
    device: str | None = None  # None: where the model is
    progress: bool = True
    log: Callable[[str], None] = field(default=lambda msg: None, repr=False)
    # inside a build (pipeline.runner)
    build_dir: Path | None = None  # the stage's directory, the only place a step writes
    target: str = "host"
    artifacts: list[dict] = field(default_factory=list)  # earlier stages' exports, oldest first
    source_gguf: str | None = None  # the GGUF the tokenizer came from (GGUF export copies its keys)
    eval_data: str = "wikitext2"
    remote: str | None = None
    remote_options: dict = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # files the step wrote, relative to build_dir
    _dense: Any = field(default=None, init=False, repr=False)
    _drawn: dict = field(default_factory=dict, init=False, repr=False)

    # -- the dense original ---------------------------------------------------------------------
    def dense_model(self):
        """The dense original (loaded on first call when ``dense`` is a loader); None when not given."""
        if self._dense is None and self.dense is not None:
            is_model = hasattr(self.dense, "parameters") or not callable(self.dense)  # nn.Modules are callable too
            self._dense = self.dense if is_model else self.dense()
        return self._dense

    def require_dense(self, what: str):
        dense = self.dense_model()
        if dense is None:
            raise EdgepruneError(f"{what} needs the dense original model: pass StepContext(dense=<model or loader>)")
        return dense

    def forget_dense(self) -> None:
        """Drop the dense original (a caller whose next steps do not need it frees its memory)."""
        self.dense = self._dense = None

    # -- text ------------------------------------------------------------------------------------
    def calibration(self, cfg, model):
        """The calibration windows step ``cfg`` reads (None when it reads none)."""
        from edgeprune.data.calib_policy import draw_calibration, policy, reads_calibration

        if _is_windows(self.calib) or self.calib is None:
            return self.calib
        if not reads_calibration(cfg):
            return None
        p = policy(cfg.kind)
        dense = self._writer_dense(cfg, self.calib)
        # windows drawn once per context: a quantization after AST in one CLI run reads the windows
        # AST read (same source, sizes and seed), `self` text included, whoever wrote it
        key = ("calib", self.calib, self.calib_n_windows or p.n_windows, self.calib_seq_len or p.seq_len,
               self._seed(cfg) + p.seed_offset)  # fmt: skip
        if key not in self._drawn:
            self._drawn[key] = draw_calibration(
                cfg, self._tokenizer(), self.calib, model=model, dense=dense, seed=self.seed,
                n_windows=self.calib_n_windows, seq_len=self.calib_seq_len, data_dir=self.data_dir,
                progress=self.progress,
            )  # fmt: skip
        return self._drawn[key]

    def training(self, cfg, model):
        """The training windows step ``cfg`` trains on (None when it trains on nothing)."""
        from edgeprune.data.calib_policy import draw_training, training_tokens

        if _is_windows(self.train_data):
            return self.train_data
        if self.train_data is None and _is_windows(self.calib):
            return self.calib  # windows given for calibration serve training too
        sources = self.train_data if self.train_data is not None else self.calib
        if training_tokens(cfg) is None or sources is None:
            return None
        names = tuple(sources.split(",")) if isinstance(sources, str) else tuple(sources or ())
        key = ("train", names, self.train_n_windows, self.train_seq_len, self._seed(cfg), cfg.kind)
        if key not in self._drawn:
            dense = self._writer_dense(cfg, "self" if "self" in names else names[0])
            self._drawn[key] = draw_training(
                cfg, self._tokenizer(), list(names), model=model, dense=dense, seed=self.seed,
                n_windows=self.train_n_windows, seq_len=self.train_seq_len, data_dir=self.data_dir,
                progress=self.progress,
            )  # fmt: skip
        return self._drawn[key]

    def _seed(self, cfg) -> int:
        return self.seed if self.seed is not None else getattr(cfg, "seed", 0)

    def _tokenizer(self):
        if self.tokenizer is None:
            raise EdgepruneError("drawing calibration text needs the model's tokenizer: pass StepContext(tokenizer=...)")
        return self.tokenizer

    def _writer_dense(self, cfg, source):
        """The dense model when it writes this step's ``self`` text (loaded only then)."""
        from edgeprune.data.calib_policy import policy

        if source != "self" or policy(cfg.kind).self_text_by != "dense":
            return None
        return self.dense_model()
