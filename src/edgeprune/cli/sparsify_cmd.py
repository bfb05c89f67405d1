"""``edgeprune sparsify``: N:M (2:4) sparsity, optional AST and int4/int8 -> a packed artifact (kept values,
positions, scales). Order: output path; step configs; load; pattern and group fit every width;
calibrate (and train); prune; quantize; write ``--out`` atomically and read it back."""

from __future__ import annotations

import json

from edgeprune.cli.options import add_calib, add_config, add_out, add_run_flags, check_text_flags
from edgeprune.cli.sparsify_options import add_quant_flags, add_training_flags


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sparsify", help="2:4 (N:M) sparsity by magnitude/Wanda/SparseGPT, optional AST training and int4/int8 -> a packed artifact",
        description="Prune every decoder Linear to an N:M pattern (default 2:4), optionally recover with AST "
        "(masked training with distillation and SLoRB) and quantize group-wise, then write a compressed "
        "safetensors artifact storing only the kept values. 2:4 speeds up only GPUs with sparse tensor "
        "cores; on CPUs, phones and llama.cpp it saves storage only.",
    )  # fmt: skip
    p.add_argument("--model", default=None, help="built-in name, HF directory, .gguf or a packed artifact (default: smollm2-135m)")
    add_out(p)
    p.add_argument("--pattern", default="2:4", help="N:M (keep N of every M inputs) or 'unstructured' (default 2:4)")
    p.add_argument("--method", default="wanda", help="magnitude | wanda | sparsegpt (default wanda); with --train ast also "
                   "none: the model is already N:M sparse (e.g. from `edgeprune reconstruct --prune sparsegpt`), keep its mask")  # fmt: skip
    p.add_argument("--teacher", default=None, help="the dense model AST distils from (default: the input model before "
                   "pruning); required with --method none")  # fmt: skip
    p.add_argument("--sparsity", type=float, default=0.5, help="fraction removed, for --pattern unstructured only")
    add_calib(p, windows_of="nm_prune")
    add_training_flags(p)
    add_config(p, "sparse_train")
    add_quant_flags(p)
    p.add_argument("--target", default=None, help="device profile to report 2:4 support for (see `edgeprune devices`)")
    p.add_argument("--save-dense", action="store_true", help="also write DIR/dense: a plain Hugging Face checkpoint (SLoRB merged) for GGUF/ONNX export")
    add_run_flags(p, seed=0, seed_help="seed of the calibration draw and training order")
    p.set_defaults(run=run)


def run(args) -> int:
    from edgeprune.cli.step_configs import sparsify_steps
    from edgeprune.cli.step_run import check_out, load_input, running, step_context
    from edgeprune.cli.step_summaries import sparsify_lines, sparsify_summary, where_24_pays

    out, (step, quant_after) = check_out(args), sparsify_steps(args)
    quant = quant_after if quant_after is not None else getattr(step, "quant", None)  # one-shot: nested, one pass
    notes = where_24_pays(args.target)  # an unknown --target fails here, before any loading
    check_text_flags(args, {"--calib-windows": args.calib_windows}, {"--calib-seq-len": args.calib_seq_len,
                     "--train-seq-len": args.train_seq_len}, trains=args.train is not None)  # fmt: skip
    from edgeprune.compress import compress
    from edgeprune.compress.sparse.packed import save_packed
    from edgeprune.compress.sparse.modules import merge_all_slorb
    from edgeprune.compress.sparse.oneshot import check_model
    from edgeprune.fileio import write_text_atomic
    from edgeprune.models import save_model

    with running(args.threads) as (threads, rank, world_size, clock):
        model, tok, source_gguf = load_input(args.model)
        check_model(model, nm=step.nm, quant=quant)  # pattern / group widths: fail before any calibration
        # one context for both steps: the quantization after AST reads the calibration windows AST read
        ctx = step_context(args, tok, dense=load_input(args.teacher, packed=False)[0] if args.teacher else None,
                           calib_n_windows=args.calib_windows, calib_seq_len=args.calib_seq_len, train_data=args.train_data,
                           train_n_windows=args.train_windows, train_seq_len=args.train_seq_len)  # fmt: skip
        reports = {}
        for cfg in [step] + ([quant_after] if quant_after is not None else []):
            model, rep = compress(model, cfg, ctx=ctx)
            ctx.forget_dense()  # AST's teacher: the quantization after it needs none
            reports[cfg.kind] = {k: v for k, v in rep.to_dict().items() if k != "per_layer"}
        summary = sparsify_summary(args, step, quant, reports, threads=threads, world_size=world_size,
                                   wall_s=clock(), notes=notes)  # fmt: skip
        if rank == 0:
            summary["packed"] = save_packed(model, out, nm=step.nm, tokenizer=tok, overwrite=args.overwrite, source_gguf=source_gguf,
                                            extra_files={"report.json": json.dumps(summary, indent=2, default=str) + "\n"}).to_dict()  # fmt: skip
            if args.save_dense:  # SLoRB merged into the weights: a plain checkpoint
                merged = merge_all_slorb(model)
                save_model(out / "dense", model, tok, source_gguf=source_gguf)
                summary["dense_dir"] = str(out / "dense") + (f" ({merged} SLoRB layers merged: dense weights)" if merged else "")
            write_text_atomic(out / "report.json", json.dumps(summary, indent=2, default=str) + "\n")
    if rank == 0:
        print("\n".join(sparsify_lines(summary, out)))
    return 0
