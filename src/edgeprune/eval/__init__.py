"""Evaluation: perplexity and zero-shot accuracy, defined as the field defines them, on every
artifact kind (transformers / per-layer models, GGUF via llama.cpp, ONNX via onnxruntime).

    from edgeprune.eval import Evaluator, PerplexityConfig, ZeroShotConfig
    ev = Evaluator("smollm2-135m")
    ev.perplexity(PerplexityConfig(seq_len=1024)).ppl
    ev.zeroshot(ZeroShotConfig(tasks=("arc_easy",), limit=100))

Modules: ``windows`` and ``scoring`` (pure maths), ``tasks`` (parsers and templates as data),
``backends`` (the protocol and its three implementations), ``onednn`` (float32 Linears through
oneDNN with pre-packed weights while evaluating), ``perplexity``, ``zeroshot``, ``evaluator``.
Names load lazily so ``import edgeprune.eval`` stays cheap.
"""

from __future__ import annotations

from edgeprune._lazy import lazy_attributes

_LAZY = {
    "Evaluator": "edgeprune.eval.evaluator",
    "load_tokenizer": "edgeprune.eval.backends",
    "PerplexityConfig": "edgeprune.eval.perplexity",
    "PerplexityReport": "edgeprune.eval.perplexity",
    "evaluate_perplexity": "edgeprune.eval.perplexity",
    "ZeroShotConfig": "edgeprune.eval.zeroshot",
    "TaskResult": "edgeprune.eval.zeroshot",
    "evaluate_zeroshot": "edgeprune.eval.zeroshot",
    "TASKS": "edgeprune.eval.tasks",
    "Backend": "edgeprune.eval.backends",
    "TorchBackend": "edgeprune.eval.backends",
    "OnnxBackend": "edgeprune.eval.backends",
    "LlamaCppBackend": "edgeprune.eval.backends",
    "HFTokenizer": "edgeprune.eval.backends",
}

__getattr__, __all__ = lazy_attributes(__name__, _LAZY)
