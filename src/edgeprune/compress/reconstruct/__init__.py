"""Local reconstruction of pruned blocks against the dense model's activations (arXiv 2510.14444):
``local.py`` (``step: reconstruct``), its pure maths in ``maths.py``."""
