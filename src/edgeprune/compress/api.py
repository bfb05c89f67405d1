"""``compress(model, step, calib)``: the one Python verb that applies any registered step.

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

from edgeprune.steps import StepContext, apply


def compress(model, step, calib=None, *, train_data=None, dense=None, tokenizer=None, progress: bool = True,
             ctx: StepContext | None = None):  # fmt: skip
    """Apply ``step`` (a registered step config) to ``model`` -> ``(model, report)``.

    ``calib``: calibration token windows (:class:`edgeprune.data.calib.TokenWindows`), or a source
    name to draw them from by the step's policy (needs ``tokenizer``); ``train_data``: windows or
    source(s) for steps that train (default: ``calib``); ``dense``: the dense original (a model or
    a loader) that reconstruction fits to and AST distils from. ``ctx``: a whole
    :class:`~edgeprune.steps.StepContext` instead of those arguments.
    """
    if ctx is None:
        ctx = StepContext(tokenizer=tokenizer, calib=calib, train_data=train_data, dense=dense, progress=progress)
    return apply(model, step, ctx)
