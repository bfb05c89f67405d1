"""The same chat app on onnxruntime, with an ONNX export folder.

The folder written by ``edgeprune export onnx`` holds ``model.onnx`` (one graph for prefill and
decode, KV cache as inputs/outputs) and the tokenizer, whose chat template formats the
conversation (transformers' ``apply_chat_template``). Generation is edgeprune's small loop on
plain onnxruntime (``edgeprune.runtime.ort_generate``: greedy or seeded sampling, the cache
carried from step to step); it also runs the per-layer-width graphs onnxruntime-genai rejects.
Each turn re-reads the whole conversation (prefill), which is cheap at this model size.

    edgeprune export onnx --model smollm2-135m --quant int8 --out dist/smollm2-onnx-int8
    python examples/chat_onnx.py dist/smollm2-onnx-int8                       # interactive
    python examples/chat_onnx.py dist/smollm2-onnx-int8 --prompt "What is ONNX?" --max-tokens 64
"""

from __future__ import annotations

import argparse
import os
import sys

# A ChatML template (SmolLM2's format) for tokenizers saved without one.
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")  # fmt: skip


def load(folder: str, *, threads: int | None):
    from transformers import AutoTokenizer

    from edgeprune.runtime.ort_generate import OrtDecoder

    tokenizer = AutoTokenizer.from_pretrained(folder)
    template = "the tokenizer's chat template"
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML
        template = "ChatML (the tokenizer carries no chat template)"
    return OrtDecoder(folder, threads=threads), tokenizer, template


def reply(decoder, tokenizer, messages: list[dict], *, max_tokens: int, temperature: float) -> tuple[str, float]:
    """One assistant turn: (text, decode tokens/s)."""
    from edgeprune.runtime.ort_generate import generate

    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):  # newer transformers return a BatchEncoding
        ids = ids["input_ids"]
    eos = [t for t in {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")} if isinstance(t, int) and t >= 0]
    out = generate(decoder, [list(ids)], max_new_tokens=max_tokens, do_sample=temperature > 0, temperature=max(temperature, 1e-6),
                   seed=0, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id or 0)  # fmt: skip
    text = tokenizer.decode(out.tokens[0], skip_special_tokens=True)
    return text.strip(), out.decode_tps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="chat with an exported ONNX model (onnxruntime)")
    p.add_argument("model", help="the folder written by `edgeprune export onnx`")
    p.add_argument("--prompt", default=None, help="answer this one message and exit (no interactive loop)")
    p.add_argument("--system", default="You are a helpful assistant.", help="system message ('' for none)")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if not os.path.isfile(os.path.join(args.model, "model.onnx")):
        print(f"chat_onnx: no model.onnx in {args.model}: export one with `edgeprune export onnx`", file=sys.stderr)
        return 2

    decoder, tokenizer, template = load(args.model, threads=args.threads)
    print(f"[{args.model}: {decoder.n_layers} layers, {template}]", file=sys.stderr)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    turns = [args.prompt] if args.prompt is not None else None
    while True:
        if turns is not None:
            if not turns:
                break
            line = turns.pop(0)
        else:
            try:
                line = input("you> ").strip()
            except EOFError:
                break
            if not line:
                break
        messages.append({"role": "user", "content": line})
        answer, tps = reply(decoder, tokenizer, messages, max_tokens=args.max_tokens, temperature=args.temperature)
        print(answer if turns is not None else f"bot> {answer}")
        print(f"[{tps:.1f} tokens/s]", file=sys.stderr)
        messages.append({"role": "assistant", "content": answer})
    return 0


if __name__ == "__main__":
    sys.exit(main())
