"""edgeprune: take a language model from a checkpoint to a small, fast artifact on an edge device.

``import edgeprune`` is deliberately light: torch, transformers, onnxruntime and llama.cpp load
only when a sub-package that needs them is used. The per-layer-width model type
(``edgeprune_llama``) is registered with transformers' Auto classes as soon as transformers is
imported (now, if it already is), so ``AutoModelForCausalLM.from_pretrained`` works on pruned
directories in any process that imported edgeprune.
"""

from __future__ import annotations

import importlib

from edgeprune.errors import EdgepruneError
from edgeprune import _autoregister

__version__ = "0.1.0"
__all__ = ["EdgepruneError", "__version__", "build", "models", "eval", "compress", "export", "runtime", "devices"]

_SUBPACKAGES = {"models", "eval", "compress", "export", "runtime", "devices", "cli", "describe", "pipeline"}

_autoregister.install()


def build(target: str = "host", **kwargs):
    """Build deployable artifacts for ``target`` and return the report dict (``edgeprune build``).

    Keyword arguments are those of :func:`edgeprune.pipeline.runner.build` (model, recipe, out,
    calib, eval_data, resume, max_memory_bytes, min_decode_tps).
    """
    from edgeprune.pipeline.runner import build as _build

    return _build(target, **kwargs)


def __getattr__(name: str):
    # Lazy sub-packages keep `import edgeprune` cheap (no torch import until needed).
    if name in _SUBPACKAGES:
        return importlib.import_module(f"edgeprune.{name}")
    raise AttributeError(f"module 'edgeprune' has no attribute {name!r}")
