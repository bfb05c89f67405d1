"""``Evaluator(model_or_artifact)``: one front for perplexity and zero-shot on every artifact kind.

What it accepts, and which backend it builds:

- ``None``, a built-in name, a Hugging Face directory or hub id -> :func:`edgeprune.models.load`,
  then the torch backend;
- a loaded model (``LoadedModel``) or a transformers model + ``tokenizer=`` (the per-layer
  ``edgeprune_llama`` is one) -> torch;
- an artifact of a registered export format (``edgeprune.export.registry``) -> that format's
  runtime: a ``.gguf`` file -> llama.cpp (``backend="torch"`` dequantizes it through ``load``
  instead), a ``.onnx`` file or a directory holding ``model.onnx`` -> onnxruntime; a format's
  runtime named with a built-in name (``backend="llama.cpp"``) evaluates the shipped file itself;
- an object that already speaks the backend protocol -> used as is.

Tokenizer: ``tokenizer=`` may be a tokenizer object or a model source to take it from. Without
one, a model brings its own; an ONNX export uses the tokenizer saved beside it; a GGUF uses the
Hugging Face tokenizer transformers builds from the GGUF's metadata -- the same one the torch
backend uses for that GGUF, so comparing a GGUF with its source model compares weights and
kernels, not tokenisations. ``tokenizer="llama.cpp"`` uses llama.cpp's own tokenizer instead
(on WikiText-2 with SmolLM2 the two differ in a few places around non-ASCII characters).
"""

from __future__ import annotations

from pathlib import Path

from edgeprune.errors import EdgepruneError
from edgeprune.export import registry
from edgeprune.eval.backends import HFTokenizer, TorchBackend, as_tokenizer, tokenizer_name
from edgeprune.eval.perplexity import PerplexityConfig, PerplexityReport, evaluate_perplexity
from edgeprune.eval.zeroshot import TaskResult, ZeroShotConfig, evaluate_zeroshot
from edgeprune.threads import torch_threads

DEFAULT_BATCH_TOKENS = 4096  # rows x longest row per forward: 4 windows of 1024; ~0.8 GB of logits


class Evaluator:
    """Evaluate one model or artifact; see the module docstring for what it accepts."""

    def __init__(self, model_or_artifact=None, *, tokenizer=None, backend: str | None = None, dtype: str = "float32",
                 batch_tokens: int = DEFAULT_BATCH_TOKENS, threads: int | None = None, progress: bool = True):  # fmt: skip
        if backend is not None and backend not in registry.runtimes():
            raise EdgepruneError(f"unknown backend {backend!r}: use one of {', '.join(registry.runtimes())}")
        if batch_tokens < 1:
            raise EdgepruneError(f"batch_tokens must be >= 1, got {batch_tokens}")
        self.threads = threads
        self.progress = progress
        with torch_threads(threads):
            self.backend, self.source = _make_backend(model_or_artifact, tokenizer, backend, dtype, batch_tokens, threads)

    def perplexity(self, config: PerplexityConfig | None = None) -> PerplexityReport:
        with torch_threads(self.threads):
            return evaluate_perplexity(self.backend, config or PerplexityConfig(), progress=self.progress)

    def zeroshot(self, config: ZeroShotConfig | None = None) -> list[TaskResult]:
        with torch_threads(self.threads):
            return evaluate_zeroshot(self.backend, config or ZeroShotConfig(), progress=self.progress)

    def describe(self) -> dict:
        return {"model": self.source, **self.backend.describe()}

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()


def _is_backend(obj) -> bool:
    return all(hasattr(obj, a) for a in ("token_logprobs", "branch_logprobs", "tokenizer", "max_length"))


def _make_backend(obj, tokenizer, backend, dtype, batch_tokens, threads):
    if _is_backend(obj):
        return obj, getattr(obj, "name", type(obj).__name__)
    if hasattr(obj, "model") and hasattr(obj, "tokenizer") and hasattr(obj, "source"):  # a LoadedModel
        tok = as_tokenizer(tokenizer) if tokenizer is not None else HFTokenizer(obj.tokenizer, tokenizer_name(obj.source, obj.tokenizer))
        return _torch(obj.model, tok, backend, batch_tokens), obj.source
    if obj is not None and not isinstance(obj, (str, Path)):  # a transformers model
        if tokenizer is None:
            raise EdgepruneError("a model object needs tokenizer=: pass its tokenizer or the model source to load it from")
        return _torch(obj, as_tokenizer(tokenizer), backend, batch_tokens), getattr(obj.config, "_name_or_path", "") or type(obj).__name__

    from edgeprune.models import builtin

    source = builtin.DEFAULT_MODEL if obj is None else str(obj)
    path = Path(source).expanduser()
    fmt = registry.format_for_runtime(backend) if backend is not None else None
    if fmt is not None:  # a format's runtime asked for: that format's artifact, or a clear error
        if builtin.is_builtin(source):
            path = builtin.builtin_path(source)  # the shipped file itself
        main = fmt.find(path)
        if main is None:
            raise EdgepruneError(f"the {backend} backend needs {fmt.artifact}, got {source}: export one with `edgeprune export {fmt.name}`")
    elif backend is None and (found := registry.find_artifact(path)) is not None:
        fmt, main = found
    if fmt is not None:
        ev = fmt.evaluate(main, tokenizer, threads=threads, batch_tokens=batch_tokens)
        return ev, source if main == path else str(main)

    from edgeprune.models import load

    loaded = load(source, dtype=dtype)
    tok = as_tokenizer(tokenizer) if tokenizer is not None else HFTokenizer(loaded.tokenizer, tokenizer_name(loaded.source, loaded.tokenizer))
    return _torch(loaded.model, tok, backend, batch_tokens), loaded.source


def _torch(model, tok, backend, batch_tokens):
    if backend not in (None, "torch"):
        raise EdgepruneError(f"a transformers model runs on the torch backend, not {backend}: export it first")
    return TorchBackend(model, tok, batch_tokens=batch_tokens)
