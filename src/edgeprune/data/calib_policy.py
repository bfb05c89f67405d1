"""What text a compression step draws: how many calibration windows of how many tokens, with which
seed, which model writes ``self`` text, and how its training windows are drawn apart.

One table, read by the step CLIs (their flag defaults and their draws) and by builds
(:mod:`edgeprune.pipeline.stages`), so a step run inside a build draws the very windows the same
step draws from its CLI with the CLI's defaults and the same source. The source itself (a name for
:func:`edgeprune.data.calib.calibration_windows`) is the caller's: a CLI's ``--calib`` /
``--train-data``, a build's ``--calib``; None everywhere means the default source
(:func:`edgeprune.data.general.default_source`: ``general`` where the data directory has it, else ``self``).

- Calibration windows: ``policy.n_windows`` x ``policy.seq_len`` tokens, seed ``step seed + 0``.
- Training windows: one epoch of the step's token budget at ``training.seq_len``, at most
  ``training.max_windows`` distinct ones (a larger budget reuses them as epochs), seed
  ``step seed + 1``: from the same source they are other windows than the calibration ones.
- The step seed is the config's ``seed``; a step config without one (NMPrune, WeightQuant) draws
  with seed 0 unless its caller passes one (``sparsify --seed``).
- ``self`` text is written by the model being compressed, or by the dense original where the step
  fits to one (reconstruction's ``--dense``, AST's teacher, a build's input model): text the dense
  model writes is what the compressed model should learn to reproduce.

Measured on SmolLM2-135M: reconstruction is the step that gains most from more text (Wanda 2:4 +
reconstruction 1.90x -> 1.73x dense ppl going from 128 to 512 windows of 256 tokens;
bench/results/reconstruct.md); pruning's importance scores settle at far less.

Torch-free at import: the CLIs read the table while building their parsers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class TrainingDraw:
    """Training windows of a step: one epoch of its token budget, capped, seeded apart."""

    seq_len: int
    max_windows: int  # distinct windows at most; a larger budget reuses them as epochs
    seed_offset: int = 1  # calibration windows are drawn at offset 0 from the same source

    def n_windows(self, tokens: int, *, seq_len: int | None = None, sources: int = 1) -> int:
        """Distinct windows per source for a budget of ``tokens`` split over ``sources`` sources."""
        one_epoch = -(-tokens // (seq_len or self.seq_len))
        return max(1, min(self.max_windows, one_epoch) // sources)


@dataclass(frozen=True)
class CalibPolicy:
    """What one kind of step draws (see the module docstring)."""

    n_windows: int
    seq_len: int
    self_text_by: str = "model"  # "model": the model being compressed | "dense": its dense original
    training: TrainingDraw | None = None  # None: the step trains on nothing
    seed_offset: int = 0

    def writer(self, model, dense=None):
        """The model that writes ``self`` text for this step."""
        return dense if self.self_text_by == "dense" and dense is not None else model


DEFAULT = CalibPolicy(64, 128)  # any step without a row below
RECOVERY_TRAINING = TrainingDraw(seq_len=128, max_windows=4096)  # Adapt-Pruner's recovery / the train step
ONE_SHOT = CalibPolicy(32, 512)  # Wanda / SparseGPT / GPTQ statistics (SparseGPT's paper: 128 x 2048 for 7B+ models)

POLICIES: dict[str, CalibPolicy] = {
    "structured_prune": CalibPolicy(64, 128, training=RECOVERY_TRAINING),  # Adapt-Pruner's pool; each mini-step samples calib_windows of it
    "nm_prune": ONE_SHOT,
    "weight_quant": ONE_SHOT,  # as `sparsify --quant` calibrates GPTQ
    # AST: its one-shot start as nm_prune's; 256-token training windows, at most 512 distinct
    "sparse_train": replace(ONE_SHOT, self_text_by="dense", training=TrainingDraw(seq_len=256, max_windows=512)),
    "reconstruct": CalibPolicy(64, 512, self_text_by="dense"),  # every submodel is fitted on these: more text overfits less
    "train": replace(DEFAULT, self_text_by="dense", training=RECOVERY_TRAINING),  # draws training windows only
    # budgeted recovery: reconstruction reads the first of 512 windows (as many as its share of the budget buys),
    # distillation its own windows; both 256 tokens long, so one TopK cache and one curve cover both
    "recover": CalibPolicy(512, 256, self_text_by="dense", training=TrainingDraw(seq_len=256, max_windows=4096)),
}


def policy(kind: str) -> CalibPolicy:
    """What the step of ``kind`` (``cfg.kind``) draws."""
    return POLICIES.get(kind, DEFAULT)


def reads_calibration(cfg) -> bool:
    """Whether the step ``cfg`` reads calibration windows at all: magnitude scores, round-to-nearest
    quantization, an already sparse AST start and recovery training on its own read none."""
    quant = getattr(cfg, "quant", None)
    if quant is not None and reads_calibration(quant):  # GPTQ nested in a one-shot pass
        return True
    kind = cfg.kind
    if kind == "nm_prune":
        return cfg.method != "magnitude" or cfg.slorb_k > 0
    if kind == "weight_quant":
        return cfg.method == "gptq"
    if kind == "sparse_train":
        return cfg.init not in ("magnitude", "none")
    if kind == "recover":
        return cfg.recon_share > 0  # reconstruction's windows; distillation alone reads training windows only
    return kind != "train"


def training_tokens(cfg) -> int | None:
    """The token budget ``cfg`` trains on (None: it does not train)."""
    if policy(cfg.kind).training is None:
        return None
    budget = getattr(cfg, "budget_tokens", None)  # a step that splits one budget over several phases (recover)
    if budget is not None:
        return budget
    train = getattr(cfg, "train", cfg)  # StructuredPrune nests its TrainConfig
    return None if train is None else train.tokens


def _seed(cfg, seed: int | None) -> int:
    return seed if seed is not None else getattr(cfg, "seed", 0)


def draw_calibration(cfg, tokenizer, source: str | None, *, model, dense=None, seed: int | None = None,
                     n_windows: int | None = None, seq_len: int | None = None, data_dir=None, progress: bool = True):  # fmt: skip
    """The calibration windows step ``cfg`` draws from ``source`` (None: the default source); ``n_windows`` /
    ``seq_len`` override the policy's (CLI flags), ``seed`` the config's."""
    from edgeprune.data.calib import calibration_windows

    p = policy(cfg.kind)
    return calibration_windows(tokenizer, source, n_windows=n_windows or p.n_windows, seq_len=seq_len or p.seq_len,
                               seed=_seed(cfg, seed) + p.seed_offset, model=p.writer(model, dense), data_dir=data_dir,
                               progress=progress)  # fmt: skip


def draw_training(cfg, tokenizer, sources: str | Sequence[str] | None, *, model, dense=None, seed: int | None = None,
                  n_windows: int | None = None, seq_len: int | None = None, data_dir=None, progress: bool = True):  # fmt: skip
    """The training windows step ``cfg`` draws for its budget from ``sources`` (one name, several
    to mix, None: the default source), concatenated; ``n_windows`` (per source) / ``seq_len`` override the policy's."""
    from edgeprune.data.calib import calibration_windows, concat_windows

    p = policy(cfg.kind)
    tokens = training_tokens(cfg)
    if tokens is None:
        raise ValueError(f"the {cfg.kind} step trains on nothing: it draws no training windows")
    names = [sources] if isinstance(sources, str) else list(sources or [None])  # None: calibration_windows' default
    seq_len = seq_len or p.training.seq_len
    n = n_windows or p.training.n_windows(tokens, seq_len=seq_len, sources=len(names))
    seed = _seed(cfg, seed) + p.training.seed_offset
    parts = [calibration_windows(tokenizer, src, n_windows=n, seq_len=seq_len, seed=seed, model=p.writer(model, dense),
                                 data_dir=data_dir, progress=progress) for src in names]  # fmt: skip
    return parts[0] if len(parts) == 1 else concat_windows(*parts)
