"""Which architectures edgeprune loads, and what it can do with each. Data, not branches."""

from __future__ import annotations

from edgeprune.errors import EdgepruneError

# transformers model_type -> family notes. `per_layer`: can be converted into edgeprune_llama
# (the per-layer-width model that structured pruning produces).
SUPPORTED_MODEL_TYPES: dict[str, dict] = {
    "llama": {"family": "Llama (SmolLM2, Llama-2/3, TinyLlama)", "per_layer": True},
    "mistral": {"family": "Mistral", "per_layer": True},
    "qwen2": {"family": "Qwen2 (q/k/v biases)", "per_layer": True},
    "gemma3_text": {"family": "Gemma-3 (text)", "per_layer": False},
    "gemma3": {"family": "Gemma-3", "per_layer": False},
    "edgeprune_llama": {"family": "edgeprune per-layer-width Llama", "per_layer": True},
}

# GGUF `general.architecture` values transformers can dequantize, mapped to model_type.
GGUF_ARCHITECTURES: dict[str, str] = {
    "llama": "llama",
    "mistral": "mistral",
    "qwen2": "qwen2",
    "gemma3": "gemma3_text",
}


def supported_list() -> str:
    return ", ".join(SUPPORTED_MODEL_TYPES)


def check_model_type(model_type: str | None, where: str) -> None:
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise EdgepruneError(
            f"unsupported architecture {model_type!r} in {where}: edgeprune supports {supported_list()}; "
            "convert the model to one of these families or open an issue for a new one"
        )


def check_gguf_architecture(arch: str | None, where: str) -> None:
    if arch not in GGUF_ARCHITECTURES:
        raise EdgepruneError(
            f"unsupported GGUF architecture {arch!r} in {where}: edgeprune loads GGUF files of "
            f"{', '.join(GGUF_ARCHITECTURES)}; use the model's Hugging Face directory instead"
        )
