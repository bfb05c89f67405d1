"""``genai_config.json``: what onnxruntime-genai needs to run a graph it did not build.

Its model builder only handles uniform architectures, but its runtime (0.18) reads each layer's
KV-head count from the graph's ``past_key_values.{i}.key`` input shapes, so a graph with per-layer
widths plus this hand-written config is enough (checked with 0.18: the same greedy tokens as
``edgeprune.runtime.ort_generate`` on uniform and per-layer-KV graphs). An attention-free layer's
0-head KV pair is not understood by it: it feeds such inputs the scalar head count. The scalar
head counts are the largest layer's. The tokenizer files must sit in the same folder.
"""

from __future__ import annotations

from edgeprune.export.onnx import names


def supported(config) -> bool:
    """Whether onnxruntime-genai can run the graph: checked with 0.18 on uniform and per-layer KV
    heads (same greedy tokens as edgeprune's loop); a layer with 0 KV heads makes it fail."""
    return min(config.kv_heads_per_layer()) > 0


def genai_config(config, *, generation_config=None) -> dict:
    """The config dict for an edgeprune-exported decoder of ``config`` (an EdgepruneLlamaConfig)."""
    gen = generation_config
    eos = getattr(gen, "eos_token_id", None) if gen is not None else None
    eos = config.eos_token_id if eos is None else eos
    bos = config.bos_token_id
    pad = config.pad_token_id if config.pad_token_id is not None else (eos[0] if isinstance(eos, list) else eos)
    heads, kv = config.heads_per_layer(), config.kv_heads_per_layer()
    return {
        "model": {
            "bos_token_id": bos,
            "context_length": int(config.max_position_embeddings),
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": names.MODEL_FILE,
                "head_size": int(config.head_dim),
                "hidden_size": int(config.hidden_size),
                "inputs": {
                    "input_ids": names.INPUT_IDS,
                    "attention_mask": names.ATTENTION_MASK,
                    "position_ids": names.POSITION_IDS,
                    "past_key_names": names.PAST_KEY.replace("{}", "%d"),
                    "past_value_names": names.PAST_VALUE.replace("{}", "%d"),
                },
                "outputs": {
                    "logits": names.LOGITS,
                    "present_key_names": names.PRESENT_KEY.replace("{}", "%d"),
                    "present_value_names": names.PRESENT_VALUE.replace("{}", "%d"),
                },
                "num_attention_heads": max(heads),
                "num_hidden_layers": int(config.num_hidden_layers),
                "num_key_value_heads": max(kv),
            },
            "eos_token_id": eos,
            "pad_token_id": pad,
            "type": config.source_model_type or "llama",
            "vocab_size": int(config.vocab_size),
        },
        "search": {
            "do_sample": False,
            "max_length": int(config.max_position_embeddings),
            "min_length": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": False,  # the graph concatenates; it has no in-place cache
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }
