"""Evaluation and calibration text: where the data lives and how files are read into text.

Nothing imported here loads torch. ``calib.py`` (token windows from a source) and
``calib_policy.py`` (how many windows of what length each step draws) own calibration and
training text; compression steps receive the windows (through :class:`edgeprune.steps.StepContext`).
"""

from edgeprune.data.paths import DATA_ENV, data_root, resolve_data_file
from edgeprune.data.text import CORPORA, corpus_path, read_text

__all__ = ["CORPORA", "DATA_ENV", "corpus_path", "data_root", "read_text", "resolve_data_file"]
