"""Register ``edgeprune_llama`` with transformers' Auto classes without importing transformers early.

Importing transformers and torch costs seconds; ``import edgeprune`` must not. So registration is
deferred until transformers is imported by anyone: if it already is, we register at once; if not,
a one-shot import hook (:func:`install`, called by ``edgeprune/__init__``) runs the registration
right after ``transformers`` finishes importing.

The hook lives here, beside the classes it registers, and this module imports nothing from
edgeprune at module level, so ``edgeprune``, ``edgeprune.models`` and compress/ import it plainly
without a cycle (a hook outside models/ that ``edgeprune.models`` imported would have to import
models/ back to register). The imports inside :func:`register` stay deferred on purpose, not to
dodge a cycle: they load transformers and torch, which ``import edgeprune`` must not.
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


def register() -> None:
    """Bind the config and model classes to AutoConfig / AutoModel / AutoModelForCausalLM."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from edgeprune.models.configuration_edgeprune_llama import EdgepruneLlamaConfig
    from edgeprune.models.modeling_edgeprune_llama import EdgepruneLlamaForCausalLM, EdgepruneLlamaModel

    AutoConfig.register(EdgepruneLlamaConfig.model_type, EdgepruneLlamaConfig, exist_ok=True)
    AutoModel.register(EdgepruneLlamaConfig, EdgepruneLlamaModel, exist_ok=True)
    AutoModelForCausalLM.register(EdgepruneLlamaConfig, EdgepruneLlamaForCausalLM, exist_ok=True)
    # save_pretrained copies the two source files and writes `auto_map` into config.json, so plain
    # transformers (trust_remote_code=True) loads a pruned directory without edgeprune installed.
    EdgepruneLlamaConfig.register_for_auto_class()
    EdgepruneLlamaModel.register_for_auto_class("AutoModel")
    EdgepruneLlamaForCausalLM.register_for_auto_class("AutoModelForCausalLM")


def _models_mid_import() -> bool:
    # Our own model files import transformers; while one of them is half-imported, registering
    # would import it circularly. edgeprune.models registers again once the import is done.
    return any(
        name in sys.modules and not hasattr(sys.modules[name], attr) for name, attr in _OWN_MODULES.items()
    )


def register_now() -> None:
    """Register once (later calls do nothing); never raises, so `import transformers` never breaks."""
    global _registered
    if _registered or _models_mid_import():
        return
    _registered = True
    try:
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
    """Register now if transformers is imported, else as soon as it is."""
    if "transformers" in sys.modules:
        register_now()
    elif not any(isinstance(f, _AfterTransformersImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterTransformersImport())
