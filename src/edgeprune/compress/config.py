"""Compression step configs use the project's one strict config base (:mod:`edgeprune.config`);
``StrictConfig`` is its name here, kept so compress modules read as before."""

from edgeprune.config import StepConfig as StrictConfig
from edgeprune.config import check_choice, check_fraction, check_int

__all__ = ["StrictConfig", "check_choice", "check_fraction", "check_int"]
