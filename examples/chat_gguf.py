"""A small chat app that embeds an exported GGUF through llama-cpp-python.

It needs only llama-cpp-python (no edgeprune, no torch): the model's chat template travels in
the GGUF (``tokenizer.chat_template``, written by ``edgeprune export gguf`` from the tokenizer),
and llama-cpp-python applies it in ``create_chat_completion``. A GGUF without a template falls
back to ChatML (what SmolLM2 uses), and says so.

    edgeprune export gguf --model smollm2-135m --type q8_0 --out dist/smollm2-q8_0.gguf   # or a pruned model dir
    python examples/chat_gguf.py dist/smollm2-q8_0.gguf                       # interactive; empty line or Ctrl-D quits
    python examples/chat_gguf.py dist/smollm2-q8_0.gguf --prompt "What is a GGUF file?" --max-tokens 64
"""

from __future__ import annotations

import argparse
import os
import sys


def open_gguf(**kwargs):
    """llama_cpp.Llama(**kwargs). Where llama.cpp was built with AMX, its repacked (AMX) weight
    buffers are turned off: on some Xeon hosts they segfault on the first decode. Llama() has no
    argument for that, so its default-parameters function is swapped for the call only."""
    import llama_cpp
    import llama_cpp.llama as llama_module

    if "AMX_INT8 = 1" not in llama_cpp.llama_print_system_info().decode(errors="replace"):
        return llama_cpp.Llama(**kwargs)
    low, default = llama_module.llama_cpp, llama_module.llama_cpp.llama_model_default_params

    def without_repacking():
        params = default()
        params.use_extra_bufts = False
        return params

    low.llama_model_default_params = without_repacking
    try:
        return llama_cpp.Llama(**kwargs)
    finally:
        low.llama_model_default_params = default


def load(path: str, *, n_ctx: int, threads: int | None):
    llm = open_gguf(model_path=path, n_ctx=n_ctx, n_threads=threads or os.cpu_count(), verbose=False)
    if "tokenizer.chat_template" in llm.metadata:
        template = "the GGUF's own chat template"
    else:
        llm.chat_format = "chatml"  # create_chat_completion looks the handler up by this name
        template = "ChatML (the GGUF carries no chat template)"
    return llm, template


def reply(llm, messages: list[dict], *, max_tokens: int, temperature: float, stream_to=None) -> str:
    """One assistant turn for ``messages``; streamed to ``stream_to`` (a file) as it is generated."""
    chunks = llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=temperature,
                                        top_k=1 if temperature == 0 else 40, stream=True, seed=0)  # fmt: skip
    text = []
    for chunk in chunks:
        piece = chunk["choices"][0]["delta"].get("content") or ""
        text.append(piece)
        if stream_to is not None:
            stream_to.write(piece)
            stream_to.flush()
    if stream_to is not None:
        stream_to.write("\n")
    return "".join(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="chat with an exported GGUF (llama-cpp-python)")
    p.add_argument("model", help="path to the .gguf file")
    p.add_argument("--prompt", default=None, help="answer this one message and exit (no interactive loop)")
    p.add_argument("--system", default="You are a helpful assistant.", help="system message ('' for none)")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--ctx", type=int, default=2048, help="context window in tokens")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if not os.path.isfile(args.model):
        print(f"chat_gguf: no such file {args.model}: export one with `edgeprune export gguf`", file=sys.stderr)
        return 2

    llm, template = load(args.model, n_ctx=args.ctx, threads=args.threads)
    print(f"[{os.path.basename(args.model)}: {llm.n_vocab()} tokens vocabulary, {template}]", file=sys.stderr)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    if args.prompt is not None:
        messages.append({"role": "user", "content": args.prompt})
        reply(llm, messages, max_tokens=args.max_tokens, temperature=args.temperature, stream_to=sys.stdout)
        return 0
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            break
        if not line:
            break
        messages.append({"role": "user", "content": line})
        sys.stdout.write("bot> ")
        answer = reply(llm, messages, max_tokens=args.max_tokens, temperature=args.temperature, stream_to=sys.stdout)
        messages.append({"role": "assistant", "content": answer})
    return 0


if __name__ == "__main__":
    sys.exit(main())
