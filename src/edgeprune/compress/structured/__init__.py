"""Structured width pruning: Adapt-Pruner (``adapt.py``), Taylor-/magnitude-uniform (``uniform.py``),
FLAP (``flap.py``), run in stages with recovery training by ``prune.py`` (``step: prune``)."""
