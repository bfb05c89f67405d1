"""Evaluation and calibration text: where the data lives and how files are read into text.

Nothing here imports torch; tokenisation happens where the model's tokenizer is known.
"""

from edgeprune.data.paths import DATA_ENV, data_root, resolve_data_file
from edgeprune.data.text import CORPORA, corpus_path, read_text

__all__ = ["CORPORA", "DATA_ENV", "corpus_path", "data_root", "read_text", "resolve_data_file"]
