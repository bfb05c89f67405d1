"""Register ``edgeprune_llama`` with transformers' Auto classes without importing transformers early.

Importing transformers and torch costs seconds; ``import edgeprune`` must not. So registration is
deferred until transformers is imported by anyone: if it already is, we register at once; if not,
a one-shot import hook runs the registration right after ``transformers`` finishes importing.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings

_registered = False


_OWN_MODULES = {
    "edgeprune.models.configuration_edgeprune_llama": "EdgepruneLlamaConfig",
    "edgeprune.models.modeling_edgeprune_llama": "EdgepruneLlamaForCausalLM",
}


def _models_mid_import() -> bool:
    # Our own model files import transformers; while one of them is half-imported, registering
    # would import it circularly. edgeprune.models registers again once the import is done.
    return any(
        name in sys.modules and not hasattr(sys.modules[name], attr) for name, attr in _OWN_MODULES.items()
    )


def register_now() -> None:
    global _registered
    if _registered or _models_mid_import():
        return
    _registered = True
    try:
        from edgeprune.models.registration import register

        register()
    except Exception as exc:  # never break `import transformers` for the user
        warnings.warn(f"edgeprune: could not register edgeprune_llama with transformers: {exc}")


class _AfterTransformersImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != "transformers":
            return None
        # One-shot: take ourselves out, then let the normal finders locate transformers.
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            register_now()

        spec.loader.exec_module = exec_then_register
        return spec


def install() -> None:
    if "transformers" in sys.modules:
        register_now()
    elif not any(isinstance(f, _AfterTransformersImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterTransformersImport())
