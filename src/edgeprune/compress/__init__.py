"""Compression steps: structured pruning, 2:4 sparsity, local reconstruction, quantization.

Public API (imported lazily, so ``import edgeprune.compress`` does not import torch):

- ``compress(model, step, calib)`` -> ``(model, report)``: the one verb (see ``api.py``), any
  registered step (:mod:`edgeprune.steps`), with a ``StepContext`` for what else it needs;
- the step configs: ``StructuredPrune`` (+ ``TrainConfig``), ``NMPrune``, ``SparseTrain``,
  ``Reconstruct``, ``Recover``, ``WeightQuant``;
- ``TokenWindows`` / ``calibration_windows`` / ``draw_calibration`` / ``draw_training``: text as
  token windows (they live in :mod:`edgeprune.data`; re-exported here for convenience).

Where each method lives (maths files are pure tensor functions; the others orchestrate):

- ``structured/``: width pruning. ``prune.py`` runs the stages; ``adapt.py`` Adapt-Pruner,
  ``uniform.py`` Taylor-/magnitude-uniform (LLM-Pruner), ``flap.py`` FLAP; ``recovery.py``
  recovery training between stages (also ``step: train``); maths: ``importance.py`` (group
  scores), ``allocation.py`` (per-layer widths), ``cut.py`` (coupled rows, cutting); ``stats.py``
  calibration statistics; ``budget.py`` what a target means in parameters.
- ``sparse/``: N:M sparsity. ``oneshot.py`` magnitude / Wanda / SparseGPT, ``ast.py`` AST
  (masked training with distillation and SLoRB); maths: ``masks.py`` (N:M masks, Wanda scores),
  ``sparsegpt.py`` (OBS); ``modules.py`` masked and SLoRB Linears; ``packed.py`` the packed file.
- ``reconstruct/``: local reconstruction (arXiv 2510.14444): ``local.py``, maths in ``maths.py``.
- ``depth/``: depth pruning (whole decoder layers): ``scores.py``, ``remove.py``, ``prune.py``.
- ``recover.py``: recovery on a budget (reconstruction first, then distillation; ``step: recover``).
- ``quant/``: ``weights.py`` RTN / GPTQ group quantization, maths in ``quantize.py``.
- shared: ``training.py`` the one training loop (distributed, autocast, distillation,
  checkpointing), ``sequential.py`` layer-by-layer calibration passes.
"""

from __future__ import annotations

from edgeprune._lazy import lazy_attributes

_LAZY = {
    "compress": "edgeprune.compress.api",
    "StepContext": "edgeprune.steps.context",
    "config_from_dict": "edgeprune.steps.registry",
    "config_from_yaml": "edgeprune.steps.registry",
    "StructuredPrune": "edgeprune.compress.structured.config",
    "StructuredPruneReport": "edgeprune.compress.structured.config",
    "METHODS": "edgeprune.compress.structured.config",
    "NMPrune": "edgeprune.compress.sparse.oneshot",
    "SparseTrain": "edgeprune.compress.sparse.ast",
    "Reconstruct": "edgeprune.compress.reconstruct.local",
    "Recover": "edgeprune.compress.recover",
    "WeightQuant": "edgeprune.compress.quant.weights",
    "TrainConfig": "edgeprune.compress.structured.recovery",
    "TokenWindows": "edgeprune.data.calib",
    "calibration_windows": "edgeprune.data.calib",
    "draw_calibration": "edgeprune.data.calib_policy",
    "draw_training": "edgeprune.data.calib_policy",
}

__getattr__, __all__ = lazy_attributes(__name__, _LAZY)
