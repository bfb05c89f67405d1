"""``edgeprune recover``: spend a token or CPU-second budget recovering a pruned model — local
reconstruction against the dense original first, then distillation from it -> a model directory.
Order of work: the output path; the step config; both models, checked to correspond; draw the text;
recover; write ``--out`` atomically with the report (its curve included). Any EdgepruneError before
the write leaves nothing on disk."""

from __future__ import annotations

import json

from edgeprune.cli.options import add_calib, add_config, add_out, add_run_flags, check_text_flags


def add_parser(sub) -> None:
    p = sub.add_parser(
        "recover", help="recovery on a budget: reconstruction of the pruned blocks first, then distillation from the dense model",
        description="Given --tokens (or --cpu-seconds), reconstruction takes --recon-share of the budget (at most "
        "recon_max_tokens) to fit each pruned block to the dense block's activations, then distillation from the "
        "dense model's top-k logits (bf16 where the CPU has it) spends the rest. Exact zeros stay zero (a 2:4 model "
        "stays 2:4). The report holds held-out perplexity before, after reconstruction and along distillation.",
    )  # fmt: skip
    p.add_argument("--model", required=True, help="the pruned model: HF directory or built-in name (dense with --recon-prune)")
    p.add_argument("--dense", required=True, help="the dense model it was pruned from (built-in name, HF directory or .gguf)")
    add_out(p)
    p.add_argument("--tokens", type=int, default=None, help="the budget in tokens, reconstruction + distillation (default 400000)")
    p.add_argument("--cpu-seconds", type=float, default=None, help="a budget in CPU-seconds of this process instead (--tokens still caps it)")
    p.add_argument("--recon-share", type=float, default=None, help="at most this fraction of the budget to reconstruction (default 0.25; 0: distillation only)")
    p.add_argument("--recon-prune", default=None, help="choose N:M masks inside reconstruction: magnitude | wanda | sparsegpt (the model comes in dense)")
    p.add_argument("--lr", type=float, default=None, help="distillation peak learning rate (default 1e-4)")
    p.add_argument("--batch-size", type=int, default=None, help="distillation sequences per optimizer step (default 4)")
    add_config(p, "recover")
    add_calib(p, writer="dense-model", windows_of="recover")
    add_run_flags(p, seed=None, seed_help="seed of the text draws and the batch order (default 0)")
    p.set_defaults(run=run)


def run(args) -> int:
    from edgeprune.cli.step_configs import recover_config
    from edgeprune.cli.step_run import check_out, load_input, running, step_context
    from edgeprune.cli.step_summaries import recover_lines

    out, cfg = check_out(args), recover_config(args)
    check_text_flags(args, {"--calib-windows": args.calib_windows}, {"--calib-seq-len": args.calib_seq_len})
    from edgeprune.compress import compress
    from edgeprune.compress.reconstruct.local import check_pair
    from edgeprune.models import save_model

    with running(args.threads, distributed=False) as (threads, _, _, clock):
        (model, tok, gguf), (dense, dense_tok, dense_gguf) = load_input(args.model, packed=False), load_input(args.dense, packed=False)
        tok, source_gguf = (tok, gguf) if tok is not None else (dense_tok, dense_gguf)
        check_pair(model, dense)
        ctx = step_context(args, dense_tok, dense=dense, calib_n_windows=args.calib_windows, calib_seq_len=args.calib_seq_len,
                           train_seq_len=args.calib_seq_len)  # fmt: skip
        model, rep = compress(model, cfg, ctx=ctx)
        summary = {"model": str(args.model), "dense": str(args.dense), "threads": threads, "wall_s": round(clock(), 1),
                   "recover": rep.to_dict()}  # fmt: skip
        save_model(out, model, tok, source_gguf=source_gguf, files={
            "recover_report.json": json.dumps(summary, indent=2, default=str) + "\n", "recover.yaml": cfg.to_yaml()})  # fmt: skip
    print("\n".join(recover_lines(rep, out, wall_s=summary["wall_s"], threads=threads)))
    return 0
