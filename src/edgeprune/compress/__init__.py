"""Compression steps (structured pruning, reconstruction, 2:4 sparsity, quantization): issues 6-8.

Public API (imported lazily, so ``import edgeprune.compress`` does not import torch):

- ``compress(model, step, calib)`` -> ``(model, report)``: the one verb (see ``api.py``), any
  registered step (:mod:`edgeprune.steps`), with a ``StepContext`` for what else it needs;
- ``StructuredPrune`` + ``TrainConfig``: structured pruning (Adapt-Pruner and its baselines);
- ``TokenWindows`` / ``calibration_windows``: calibration and training token windows from a source;
- ``draw_calibration`` / ``draw_training``: the windows a step draws (as its CLI and a build do).

Files: pure maths in ``importance.py`` (group scores) and ``allocation.py`` (per-layer widths),
the coupling model and cutting in ``cut.py``, calibration statistics in ``stats.py``, the
training loop in ``train.py``, orchestration in ``structured.py``; sources read into windows in
``calib.py``, what each step draws in ``calib_policy.py``, layer-by-layer calibration passes in
``sequential.py``.
"""

from __future__ import annotations

from edgeprune._lazy import lazy_attributes

_LAZY = {
    "compress": "edgeprune.compress.api",
    "StepContext": "edgeprune.steps.context",
    "config_from_dict": "edgeprune.steps.registry",
    "config_from_yaml": "edgeprune.steps.registry",
    "StructuredPrune": "edgeprune.compress.structured",
    "StructuredPruneReport": "edgeprune.compress.structured",
    "METHODS": "edgeprune.compress.structured",
    "TrainConfig": "edgeprune.compress.train",
    "TokenWindows": "edgeprune.data.calib",
    "calibration_windows": "edgeprune.data.calib",
    "draw_calibration": "edgeprune.data.calib_policy",
    "draw_training": "edgeprune.data.calib_policy",
}

__getattr__, __all__ = lazy_attributes(__name__, _LAZY)
