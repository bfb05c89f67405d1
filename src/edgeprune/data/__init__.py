"""Evaluation and calibration text: where the data lives and how files are read into text.

Nothing imported here loads torch. ``calib.py`` (token windows from a source; ``windows.py`` their
type), ``general.py`` (the
``general`` source and a user's folders of documents: mixing, the held-out slice, the default
source), ``documents.py`` (file readers) and ``calib_policy.py`` (how many windows of what length
each step draws) own calibration and training text; compression steps receive the windows (through :class:`edgeprune.steps.StepContext`).
"""

from edgeprune.data.general import default_source, general_heldout_text
from edgeprune.data.paths import DATA_ENV, data_root, resolve_data_file
from edgeprune.data.text import CORPORA, corpus_path, read_text

__all__ = ["CORPORA", "DATA_ENV", "corpus_path", "data_root", "default_source", "general_heldout_text", "read_text",
           "resolve_data_file"]
