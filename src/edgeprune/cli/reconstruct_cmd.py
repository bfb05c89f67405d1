"""``edgeprune reconstruct``: fit a pruned model's blocks to its dense original's activations
(local reconstruction, arXiv 2510.14444) -> a model directory.

Order of work: check the output path; build and validate the step config; load both models; check
they correspond (depth, hidden size) and that the granularity fits the depth; draw calibration
windows; reconstruct; write ``--out`` atomically. Any EdgepruneError before the write leaves
nothing on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeprune.compress.calib_policy import policy


def add_parser(sub) -> None:
    p = sub.add_parser(
        "reconstruct",
        help="local reconstruction: train each pruned block (masks fixed) to match the dense model's activations",
        description="Cut both models into the same consecutive submodels (k blocks, attention/MLP sub-blocks or "
        "single Linears) and, in order, train the pruned submodel's surviving weights (or a masked LoRA) to "
        "reproduce the dense submodel's outputs. Pruned weights stay exactly zero; removed channels stay "
        "removed. Memory is bounded by one submodel and its calibration activations.",
    )
    p.add_argument("--model", required=True, help="the pruned model: HF directory, packed artifact (edgeprune sparsify) or built-in name")
    p.add_argument("--dense", required=True, help="the dense model it was pruned from (built-in name, HF directory or .gguf)")
    p.add_argument("--out", required=True, help="output directory (must not exist unless --overwrite)")
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
    p.add_argument("--config", default=None, help="a reconstruct YAML file; flags given on the command line override it")
    p.add_argument("--calib", default="shakespeare", help="calibration text: shakespeare, self (dense-model-generated), "
                   "wikitext2-valid or a UTF-8 file (never the WikiText-2 test file)")  # fmt: skip
    calib = policy("reconstruct")
    p.add_argument("--calib-windows", type=int, default=calib.n_windows, help=f"calibration windows (default {calib.n_windows})")
    p.add_argument("--calib-seq-len", type=int, default=calib.seq_len, help=f"calibration window length in tokens (default {calib.seq_len})")
    p.add_argument("--seed", type=int, default=None, help="seed of the calibration draw and the batch order (default 0)")
    p.add_argument("--data-dir", default=None, help="shared data directory (default ../shared/data, $EDGEPRUNE_DATA)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for this run (restored afterwards)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def build_config(args):
    """The Reconstruct step from --config and the flags (flags win). Raises EdgepruneError."""
    from edgeprune.cli.options import config_settings
    from edgeprune.compress.reconstruct import Reconstruct

    flags = {"granularity": args.granularity, "blocks": args.blocks, "inputs": args.inputs, "trainable": args.trainable,
             "lora_rank": args.lora_rank, "loss": args.loss, "lr": args.lr, "epochs": args.epochs, "warmup": args.warmup,
             "batch_size": args.batch_size, "prune": args.prune, "pattern": args.pattern, "autocast": args.autocast,
             "seed": args.seed}  # fmt: skip
    return Reconstruct.from_dict(config_settings(args.config, Reconstruct, flags))


def run(args) -> int:
    from edgeprune.fileio import check_output_dir

    check_output_dir(args.out, overwrite=args.overwrite)  # first: a bad --out must not cost a model load
    out = Path(args.out).expanduser()
    cfg = build_config(args)
    from edgeprune.compress.calib import check_seq_len, check_source, check_window_count

    check_window_count(args.calib_windows, "--calib-windows")
    check_seq_len(args.calib_seq_len, "--calib-seq-len")
    check_source(args.calib)

    import time

    from edgeprune.compress.calib_policy import draw_calibration
    from edgeprune.compress.sequential import decoder_layers
    from edgeprune.compress.packed import is_packed, load_packed
    from edgeprune.compress.reconstruct import check_pair, reconstruct
    from edgeprune.compress.reconstruct_maths import block_windows
    from edgeprune.threads import torch_threads
    from edgeprune.models import load, tokenizer_record
    from edgeprune.fileio import atomic_dir

    progress = not args.quiet
    with torch_threads(args.threads) as threads:
        t0 = time.perf_counter()
        pruned = load_packed(args.model) if is_packed(args.model) else load(args.model)
        dense_loaded = load(args.dense)
        # the tokenizer saved below is the pruned model's, else the dense one's: record the GGUF it came from
        source_gguf = pruned.source_gguf if pruned.tokenizer is not None else dense_loaded.source_gguf
        model, tok, dense, dense_tok = pruned.model, pruned.tokenizer, dense_loaded.model, dense_loaded.tokenizer
        del pruned, dense_loaded  # so that `del dense` below frees the dense model
        check_pair(model, dense)
        if cfg.granularity == "block":
            block_windows(len(decoder_layers(model)), cfg.blocks)
        calib = draw_calibration(cfg, dense_tok, args.calib, model=model, dense=dense, n_windows=args.calib_windows,
                                 seq_len=args.calib_seq_len, data_dir=args.data_dir, progress=progress)  # fmt: skip
        model, rep = reconstruct(model, cfg, calib, dense=dense, progress=progress, release_dense=True)
        del dense
        summary = {"model": str(args.model), "dense": str(args.dense), "threads": threads,
                   "wall_s": round(time.perf_counter() - t0, 1), "reconstruct": rep.to_dict()}  # fmt: skip
        with atomic_dir(out) as tmp:
            model.save_pretrained(str(tmp))
            (tok or dense_tok).save_pretrained(str(tmp))
            tokenizer_record.write(tmp, source_gguf)
            (tmp / "reconstruct_report.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
            (tmp / "reconstruct.yaml").write_text(cfg.to_yaml())
    print(f"reconstructed {rep.submodels} submodels ({cfg.label}, {rep.steps} steps) in {summary['wall_s']}s "
          f"(threads {threads}, peak RSS {rep.peak_rss_mb:.0f} MB, working {rep.working_mb:.0f} MB)")  # fmt: skip
    print(f"relative block-output error vs dense: {rep.rel_mse_before:.4f} -> {rep.rel_mse_after:.4f} (mean over submodels)")
    print(f"wrote {out}")
    return 0
