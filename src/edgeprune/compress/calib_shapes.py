"""How much calibration text each compression step draws by default: (windows, tokens per window).

One table for the step CLIs and for builds (``pipeline.stages``), so a step run inside a build sees
the same amount of text as the same step run on its own. Torch-free: the CLIs read it while building
their parsers. Measured on SmolLM2-135M: reconstruction is the step that gains most from more text
(Wanda 2:4 + reconstruction 1.90x -> 1.73x dense ppl going from 128 to 512 windows of 256 tokens;
bench/results/reconstruct.md); pruning's importance scores settle at far less.
"""

from __future__ import annotations

CALIB_SHAPES: dict[str, tuple[int, int]] = {
    "structured_prune": (64, 128),  # Adapt-Pruner's pool; each mini-step draws 32 of these windows
    "nm_prune": (32, 512),  # Wanda / SparseGPT statistics (SparseGPT's paper: 128 x 2048 for 7B+ models)
    "sparse_train": (32, 512),  # the one-shot start of AST (its training text is drawn separately)
    "reconstruct": (64, 512),  # every submodel is fitted on these windows, so more text overfits less
}
DEFAULT_SHAPE = (64, 128)  # any other registered step


def calib_shape(kind: str) -> tuple[int, int]:
    """(windows, tokens per window) that the step of ``kind`` draws by default."""
    return CALIB_SHAPES.get(kind, DEFAULT_SHAPE)


AST_TRAIN_SEQ_LEN = 256  # AST's training windows (the CLI's --train-seq-len default)
AST_TRAIN_WINDOWS_CAP = 512  # distinct windows at most; a larger budget reuses them as epochs


def ast_train_windows(tokens: int, seq_len: int = AST_TRAIN_SEQ_LEN) -> int:
    """How many distinct training windows AST draws for a budget of ``tokens``: one epoch, capped."""
    return min(AST_TRAIN_WINDOWS_CAP, max(1, -(-tokens // seq_len)))
