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
from edgeprune.models.registration import install as _install_registration
from edgeprune._version import __version__
__all__ = ["EdgepruneError", "__version__", "build", "models", "eval", "compress", "export", "runtime", "devices"]

_SUBPACKAGES = {"models", "eval", "compress", "export", "runtime", "devices", "cli", "describe", "pipeline"}

_install_registration()  # light: the hook imports transformers only once someone else does


def build(target: str = "host", *, model: str | None = None, recipe: str | None = None, out: str | None = None,
          calib: str | None = None, eval_data: str | None = None, resume: bool = False,
          max_memory_bytes: int | None = None, min_decode_tps: float | None = None, remote: str | None = None,
          remote_options: dict | None = None, max_ppl_ratio: float | None = None, max_bytes: int | None = None,
          search=None) -> dict:  # fmt: skip
    """Build deployable artifacts for ``target`` and return the report (what ``edgeprune build`` does).

    ``max_ppl_ratio`` / ``max_bytes``: a budgeted build, shipping the fastest candidate that meets
    them (``search``: its :class:`~edgeprune.pipeline.search.SearchConfig`). See
    :func:`edgeprune.pipeline.runner.build` for the parameters.
    """
    from edgeprune.pipeline.runner import build as _build

    return _build(target, model=model, recipe=recipe, out=out, calib=calib, eval_data=eval_data, resume=resume,
                  max_memory_bytes=max_memory_bytes, min_decode_tps=min_decode_tps, remote=remote,
                  remote_options=remote_options, max_ppl_ratio=max_ppl_ratio, max_bytes=max_bytes,
                  search=search)  # fmt: skip


def __getattr__(name: str):
    # Lazy sub-packages keep `import edgeprune` cheap (no torch import until needed).
    if name in _SUBPACKAGES:
        return importlib.import_module(f"edgeprune.{name}")
    raise AttributeError(f"module 'edgeprune' has no attribute {name!r}")
