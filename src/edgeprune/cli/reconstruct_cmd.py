"""``edgeprune reconstruct``: fit a pruned model's blocks to its dense original's activations (local
reconstruction, arXiv 2510.14444) -> a model directory. Order of work: the output path; the step config;
both models, checked to correspond (depth, hidden size, granularity); calibrate; reconstruct; write
``--out`` atomically. Any EdgepruneError before the write leaves nothing on disk."""

from __future__ import annotations

import json

from edgeprune.cli.options import add_calib, add_config, add_out, add_run_flags, check_text_flags


def add_parser(sub) -> None:
    p = sub.add_parser(
        "reconstruct", help="local reconstruction: train each pruned block (masks fixed) to match the dense model's activations",
        description="Cut both models into the same consecutive submodels (k blocks, attention/MLP sub-blocks or "
        "single Linears) and, in order, train the pruned submodel's surviving weights (or a masked LoRA) to "
        "reproduce the dense submodel's outputs. Pruned weights stay exactly zero; removed channels stay "
        "removed. Memory is bounded by one submodel and its calibration activations.",
    )  # fmt: skip
    p.add_argument("--model", required=True, help="the pruned model: HF directory, packed artifact (edgeprune sparsify) or built-in name")
    p.add_argument("--dense", required=True, help="the dense model it was pruned from (built-in name, HF directory or .gguf)")
    add_out(p)
    p.add_argument("--granularity", default=None, help="block | attn_mlp | linear (default block)")
    p.add_argument("--blocks", type=int, default=None, help="decoder layers per submodel with --granularity block (must divide the depth; default 1)")
    p.add_argument("--inputs", default=None, help="dense | pruned | pruned_true: what feeds each submodel and what it matches "
                   "(default pruned_true: the pruned stream in, the dense model's true activations as targets)")  # fmt: skip
    p.add_argument("--trainable", default=None, help="all (surviving weights + norms) | lora (masked LoRA, merged; default all)")
    p.add_argument("--lora-rank", type=int, default=None, help="masked LoRA rank (default 16)")
    p.add_argument("--loss", default=None, help="mse | cosine (default mse)")
    p.add_argument("--lr", type=float, default=None, help="peak AdamW learning rate (linear warmup and decay)")
    p.add_argument("--epochs", type=int, default=None, help="passes over the calibration windows per submodel")
    p.add_argument("--warmup", type=float, default=None, help="warmup fraction of each submodel's steps (default 0.1)")
    p.add_argument("--batch-size", type=int, default=None, help="windows per optimizer step")
    p.add_argument("--prune", default=None, help="choose the masks in the loop from the pruned stream: magnitude | wanda | sparsegpt "
                   "(the model then comes in dense; default: keep the model's zeros)")  # fmt: skip
    p.add_argument("--pattern", default=None, help="in-loop pattern: N:M or unstructured (default 2:4)")
    p.add_argument("--autocast", default=None, help="auto | float32 | bfloat16 autocast of the block passes (default auto: bfloat16 where the CPU has bf16 instructions)")
    add_config(p, "reconstruct")
    add_calib(p, writer="dense-model", windows_of="reconstruct")
    add_run_flags(p, seed=None, seed_help="seed of the calibration draw and the batch order (default 0)")
    p.set_defaults(run=run)


def run(args) -> int:
    from edgeprune.cli.step_configs import reconstruct_config
    from edgeprune.cli.step_run import check_out, load_input, running, step_context
    from edgeprune.cli.step_summaries import reconstruct_lines

    out, cfg = check_out(args), reconstruct_config(args)
    check_text_flags(args, {"--calib-windows": args.calib_windows}, {"--calib-seq-len": args.calib_seq_len})
    from edgeprune.compress import compress
    from edgeprune.compress.reconstruct.local import check_pair
    from edgeprune.compress.reconstruct.maths import block_windows
    from edgeprune.compress.sequential import decoder_layers
    from edgeprune.models import save_model

    with running(args.threads, distributed=False) as (threads, _, _, clock):
        (model, tok, gguf), (dense, dense_tok, dense_gguf) = load_input(args.model), load_input(args.dense, packed=False)
        # the tokenizer saved below is the pruned model's, else the dense one's: record the GGUF it came from
        tok, source_gguf = (tok, gguf) if tok is not None else (dense_tok, dense_gguf)
        check_pair(model, dense)
        if cfg.granularity == "block":
            block_windows(len(decoder_layers(model)), cfg.blocks)
        model, rep = compress(model, cfg, ctx=step_context(args, dense_tok, dense=dense, release_dense=True,
                              calib_n_windows=args.calib_windows, calib_seq_len=args.calib_seq_len))  # fmt: skip
        del dense  # what is left of it: the step freed the dense layers as it went
        summary = {"model": str(args.model), "dense": str(args.dense), "threads": threads,
                   "wall_s": round(clock(), 1), "reconstruct": rep.to_dict()}  # fmt: skip
        save_model(out, model, tok, source_gguf=source_gguf, files={
            "reconstruct_report.json": json.dumps(summary, indent=2, default=str) + "\n", "reconstruct.yaml": cfg.to_yaml()})  # fmt: skip
    print("\n".join(reconstruct_lines(rep, cfg, out, wall_s=summary["wall_s"], threads=threads)))
    return 0
