"""Greedy text generation with a transformers-style model (torch eager)."""

from __future__ import annotations


def generate_text(model, tokenizer, prompt: str, *, max_new_tokens: int = 32, chat: bool = False) -> tuple[str, int]:
    """Return (prompt + continuation, number of new tokens). Greedy, with the KV cache."""
    import torch

    if chat and getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
    else:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        )
    new = out[0, ids.shape[1]:]
    return tokenizer.decode(out[0], skip_special_tokens=True), int(new.numel())
