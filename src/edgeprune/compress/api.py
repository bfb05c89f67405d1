"""``compress(model, step, calib)``: the one verb that applies any registered compression step.

Why it returns ``(model, report)`` instead of changing ``model`` in place (as torchao's
``quantize_`` does): structured pruning changes tensor *shapes* and the per-layer widths in the
config, so the result is a different module tree (a new ``EdgepruneLlamaForCausalLM``). Swapping
every submodule and the config of the caller's object in place would be possible but fragile
(optimisers, hooks and tied weights holding references to the old tensors). So every step returns
the model to use from now on; steps that can work in place (quantization, 2:4 masks) may return
the very object they were given. The input model is never left half-changed: a step that fails
raises before returning, and callers keep using what they had.
"""

from __future__ import annotations

from edgeprune.compress.registry import implementation


def compress(model, step, calib=None, *, train_data=None, progress: bool = True):
    """Apply ``step`` (a registered step config) to ``model`` -> ``(model, report)``.

    ``calib``: calibration token windows (:class:`edgeprune.compress.calib.TokenWindows`) for steps
    that score with data; ``train_data``: token windows for steps that train (default: ``calib``).
    """
    fn = implementation(step)
    return fn(model, step, calib, train_data=train_data, progress=progress)
