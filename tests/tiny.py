"""Tiny real models for tests: real architectures, fixed seeds, built in memory in milliseconds."""

from __future__ import annotations

import torch

VOCAB = 260  # 256 byte tokens + 4 specials, matching tiny_tokenizer()


def tiny_llama_config(**overrides):
    from transformers import LlamaConfig

    kw = dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=256, eos_token_id=257, pad_token_id=258,
    )  # fmt: skip
    kw.update(overrides)
    return LlamaConfig(**kw)


def _init_(model, seed: int):
    # Random (not the default tiny-std) weights so layers actually change the residual stream.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (0.15 if p.ndim > 1 else 0.05))
    return model.eval()


def tiny_llama(seed: int = 0, **overrides):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return _init_(LlamaForCausalLM(tiny_llama_config(**overrides)), seed)


def tiny_qwen2(seed: int = 0, **overrides):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    kw = dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=256, eos_token_id=257, pad_token_id=258,
    )  # fmt: skip
    kw.update(overrides)
    return _init_(Qwen2ForCausalLM(Qwen2Config(**kw)), seed)


def tiny_mistral(seed: int = 0):
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, sliding_window=None,
        bos_token_id=256, eos_token_id=257, pad_token_id=258,
    )  # fmt: skip
    return _init_(MistralForCausalLM(cfg), seed)


def tiny_per_layer(seed: int = 0, heads=(4, 0, 2, 4), kv=(2, 0, 1, 2), ff=(128, 64, 0, 96)):
    """A per-layer-width model: layer 1 has no attention, layer 2 no MLP."""
    from edgeprune.models import EdgepruneLlamaConfig, EdgepruneLlamaForCausalLM

    cfg = EdgepruneLlamaConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=len(heads), num_attention_heads=list(heads),
        num_key_value_heads=list(kv), intermediate_size=list(ff), head_dim=16, max_position_embeddings=256,
        rms_norm_eps=1e-5, bos_token_id=256, eos_token_id=257, pad_token_id=258, source_model_type="llama",
    )  # fmt: skip
    torch.manual_seed(seed)
    return _init_(EdgepruneLlamaForCausalLM(cfg), seed)


def tiny_tokenizer():
    """A byte-level BPE tokenizer with no merges: 256 byte tokens + <s> </s> <pad> <unk>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for tok in ("<s>", "</s>", "<pad>", "<unk>"):
        vocab[tok] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def save_tiny(model, path):
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path
