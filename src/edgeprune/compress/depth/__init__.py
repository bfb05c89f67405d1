"""Depth pruning: remove whole decoder layers (ShortGPT's block influence, Gromov et al.'s angular
distance over n consecutive layers, or Adapt-Pruner's layer importance re-measured after each cut).
``scores.py`` (pure maths), ``remove.py`` (cutting layers out of a model), ``config.py``
(``step: depth``) and ``prune.py`` (the step: walk the model, score, remove)."""
