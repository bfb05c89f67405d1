"""``edgeprune sparsify``: N:M (2:4) sparsity, optional AST training and int4/int8 quantization ->
a compressed artifact (only the kept values, their positions and the scales).

Order of work: check the output path; build and validate every step config; load the model; check
that the pattern and the quantization group divide every layer width; draw calibration (and
training) windows; prune (one-shot, or AST training from a one-shot start); quantize; write
``--out`` atomically and read it back. Any EdgepruneError before the write leaves nothing on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeprune.compress.calib_policy import policy

QUANTS = {"none": None, "int4": 4, "int8": 8}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sparsify",
        help="2:4 (N:M) sparsity by magnitude/Wanda/SparseGPT, optional AST training and int4/int8 -> a packed artifact",
        description="Prune every decoder Linear to an N:M pattern (default 2:4), optionally recover with AST "
        "(masked training with distillation and SLoRB) and quantize group-wise, then write a compressed "
        "safetensors artifact storing only the kept values. 2:4 speeds up only GPUs with sparse tensor "
        "cores; on CPUs, phones and llama.cpp it saves storage only.",
    )
    p.add_argument("--model", default=None, help="built-in name, HF directory, .gguf or a packed artifact (default: smollm2-135m)")
    p.add_argument("--out", required=True, help="output directory (must not exist unless --overwrite)")
    p.add_argument("--pattern", default="2:4", help="N:M (keep N of every M inputs) or 'unstructured' (default 2:4)")
    p.add_argument("--method", default="wanda", help="magnitude | wanda | sparsegpt (default wanda); with --train ast also "
                   "none: the model is already N:M sparse (e.g. from `edgeprune reconstruct --prune sparsegpt`), keep its mask")  # fmt: skip
    p.add_argument("--teacher", default=None, help="the dense model AST distils from (default: the input model before "
                   "pruning); required with --method none")  # fmt: skip
    p.add_argument("--sparsity", type=float, default=0.5, help="fraction removed, for --pattern unstructured only")
    p.add_argument("--calib", default="shakespeare", help="calibration text: shakespeare, self (model-generated), "
                   "wikitext2-valid or a UTF-8 file (never the WikiText-2 test file)")  # fmt: skip
    calib, train = policy("nm_prune"), policy("sparse_train").training
    p.add_argument("--calib-windows", type=int, default=calib.n_windows, help=f"calibration windows (default {calib.n_windows})")
    p.add_argument("--calib-seq-len", type=int, default=calib.seq_len, help=f"calibration window length in tokens (default {calib.seq_len})")
    p.add_argument("--train", default=None, choices=["ast"], help="recover with AST sparse training")
    p.add_argument("--tokens", type=int, default=None, help="AST token budget (default 300000)")
    p.add_argument("--train-data", default="self", help="AST training text (same choices as --calib, comma-separated to mix; default self)")
    p.add_argument("--train-seq-len", type=int, default=train.seq_len, help=f"AST window length in tokens (default {train.seq_len})")
    p.add_argument("--train-windows", type=int, default=None,
                   help=f"distinct AST windows per source (default: one epoch, at most {train.max_windows} in all)")  # fmt: skip
    p.add_argument("--lr", type=float, default=None, help="AST peak learning rate (default 2e-4)")
    p.add_argument("--batch-size", type=int, default=None, help="AST sequences per optimizer step, all ranks (default 8)")
    p.add_argument("--no-slorb", action="store_true", help="AST without the SLoRB low-rank boost")
    p.add_argument("--config", default=None, help="a sparse_train YAML file; flags given on the command line override it")
    p.add_argument("--quant", default="none", choices=list(QUANTS), help="weight quantization (default none)")
    p.add_argument("--group", type=int, default=64, help="quantization group size in input columns: 32, 64 or 128 (default 64)")
    p.add_argument("--asym", action="store_true", help="asymmetric quantization (default symmetric)")
    p.add_argument("--quant-method", default="gptq", choices=["gptq", "rtn"], help="error-compensating GPTQ or round-to-nearest")
    p.add_argument("--embedding", default="int8", choices=["int8", "keep"], help="with --quant: store the token embedding as int8 (default) or keep it float")
    p.add_argument("--target", default=None, help="device profile to report 2:4 support for (see `edgeprune devices`)")
    p.add_argument("--save-dense", action="store_true", help="also write DIR/dense: a plain Hugging Face checkpoint (SLoRB merged) for GGUF/ONNX export")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration draw and training order")
    p.add_argument("--data-dir", default=None, help="shared data directory (default ../shared/data, $EDGEPRUNE_DATA)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for this run (restored afterwards)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def build_steps(args):
    """``(prune_or_train_step, quant_step)`` from the flags; EdgepruneError on any bad value."""
    from edgeprune.compress.sparse_train import SparseTrain
    from edgeprune.compress.sparsify import NMPrune, WeightQuant
    from edgeprune.errors import EdgepruneError

    quant = None
    if QUANTS[args.quant] is not None:
        quant = WeightQuant(bits=QUANTS[args.quant], group_size=args.group, symmetric=not args.asym,
                            method=args.quant_method, embedding=args.embedding)  # fmt: skip
    if args.train is None and args.config is None:
        for flag in ("tokens", "lr", "batch_size", "teacher"):
            if getattr(args, flag) is not None:
                raise EdgepruneError(f"--{flag.replace('_', '-')} is a training setting: add --train ast")
        if args.method == "none":
            raise EdgepruneError("--method none (keep the model's own N:M mask) is for AST training: add --train ast")
        return NMPrune(pattern=args.pattern, method=args.method, sparsity=args.sparsity, quant=quant), None
    data: dict = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise EdgepruneError(f"no such config file {path}: pass a sparse_train YAML file")
        data = SparseTrain.from_yaml(path.read_text()).to_dict()
    flags = {"pattern": args.pattern, "init": args.method, "tokens": args.tokens, "lr": args.lr,
             "batch_size": args.batch_size, "seed": args.seed}  # fmt: skip
    data.update({k: v for k, v in flags.items() if v is not None})
    if args.no_slorb:
        data["slorb"] = False
    step = SparseTrain.from_dict(data)
    if step.init == "none" and args.teacher is None and step.kd_weight > 0:
        raise EdgepruneError("--method none trains an already pruned model: pass its dense original as --teacher")
    return step, quant


def where_24_pays(target: str | None) -> list[str]:
    """Lines for the output: the target's 2:4 note, and which known devices have 2:4 kernels."""
    from edgeprune.devices.profiles import device_names, get_device

    lines = []
    if target is not None:
        dev = get_device(target)
        lines.append(f"{dev.name}: {dev.sparse_24_note}")
    with_kernels = [n for n in device_names() if n != "host" and get_device(n).sparse_24]
    lines.append(f"2:4 speeds up only GPUs with sparse tensor cores ({', '.join(with_kernels)}); "
                 "on CPUs, phones and llama.cpp, 2:4 saves storage only")  # fmt: skip
    return lines


def run(args) -> int:
    from edgeprune.fileio import check_output_dir

    check_output_dir(args.out, overwrite=args.overwrite)  # first: a bad --out must not cost a model load
    out = Path(args.out).expanduser()
    step, quant_after = build_steps(args)  # one-shot: the quant step is nested in the prune step (one pass)
    quant = quant_after if quant_after is not None else getattr(step, "quant", None)
    notes = where_24_pays(args.target)  # an unknown --target fails here, before any loading
    from edgeprune.compress.calib import check_seq_len, check_source, check_window_count

    check_window_count(args.calib_windows, "--calib-windows")
    check_seq_len(args.calib_seq_len, "--calib-seq-len")
    check_seq_len(args.train_seq_len, "--train-seq-len")
    check_source(args.calib)
    if args.train:
        for src in args.train_data.split(","):
            check_source(src)

    import time

    from edgeprune.compress import compress
    from edgeprune.compress.calib_policy import draw_calibration, draw_training, reads_calibration, training_tokens
    from edgeprune.compress.packed import is_packed, load_packed, save_packed
    from edgeprune.compress.sparse_modules import merge_all_slorb
    from edgeprune.compress.sparse_train import SparseTrain
    from edgeprune.compress.sparsify import check_model
    from edgeprune.compress.structured import peak_rss_mb
    from edgeprune.threads import torch_threads
    from edgeprune.compress.train import distributed_from_env
    from edgeprune.fileio import write_text_atomic
    from edgeprune.models import load, tokenizer_record
    from edgeprune.fileio import atomic_dir

    progress = not args.quiet
    nm = step.nm
    with torch_threads(args.threads) as threads, distributed_from_env() as (rank, world_size):
        t_start = time.perf_counter()
        if args.model and is_packed(args.model):  # a packed artifact (e.g. to quantize a sparse model later)
            loaded = load_packed(args.model)
        else:
            loaded = load(args.model)
        model, tok, source_gguf = loaded.model, loaded.tokenizer, loaded.source_gguf
        del loaded  # the names above hold the model
        check_model(model, nm=nm, quant=quant)  # pattern / group widths: fail before any calibration
        teacher = None
        if getattr(args, "teacher", None):
            teacher, _ = load(args.teacher)
        calib = None
        if reads_calibration(step) or (quant_after is not None and reads_calibration(quant_after)):
            calib = draw_calibration(step, tok, args.calib, model=model, dense=teacher, seed=args.seed, n_windows=args.calib_windows,
                                     seq_len=args.calib_seq_len, data_dir=args.data_dir, progress=progress)  # fmt: skip
        train_data = None
        if training_tokens(step) is not None:  # `self` text by the teacher: --teacher, else the input model itself
            train_data = draw_training(step, tok, args.train_data.split(","), model=model, dense=teacher, seed=args.seed,
                                       n_windows=args.train_windows, seq_len=args.train_seq_len, data_dir=args.data_dir,
                                       progress=progress)  # fmt: skip
        reports = {}
        if teacher is not None:  # compress() has no teacher: call the step's implementation
            from edgeprune.compress.sparse_train import sparse_train

            model, rep = sparse_train(model, step, calib, train_data=train_data, teacher=teacher, progress=progress)
            del teacher
        else:
            model, rep = compress(model, step, calib, train_data=train_data, progress=progress)
        reports[step.kind] = rep.to_dict()
        if quant_after is not None:
            model, qrep = compress(model, quant_after, calib, progress=progress)
            reports[quant.kind] = qrep.to_dict()
        for r in reports.values():
            r.pop("per_layer", None)
        wall = time.perf_counter() - t_start
        summary = {
            "model": str(args.model or "smollm2-135m"), "pattern": step.pattern,
            "method": step.method if not isinstance(step, SparseTrain) else f"ast (init {step.init})",
            "quant": quant.spec.name if quant is not None else "none", "threads": threads, "world_size": world_size,
            "wall_s": round(wall, 1), "peak_rss_mb": round(peak_rss_mb()), "where_2_4_pays": notes,
            "steps": reports,
        }  # fmt: skip
        if rank == 0:
            pack = save_packed(model, out, nm=nm, tokenizer=tok, overwrite=args.overwrite, source_gguf=source_gguf,
                               extra_files={"report.json": json.dumps(summary, indent=2, default=str) + "\n"})  # fmt: skip
            summary["packed"] = pack.to_dict()
            if args.save_dense:
                merged = merge_all_slorb(model)
                with atomic_dir(out / "dense") as tmp:
                    model.save_pretrained(str(tmp))
                    tok.save_pretrained(str(tmp))
                    tokenizer_record.write(tmp, source_gguf)
                summary["dense_dir"] = str(out / "dense") + (f" ({merged} SLoRB layers merged: dense weights)" if merged else "")
            write_text_atomic(out / "report.json", json.dumps(summary, indent=2, default=str) + "\n")
    if rank == 0:
        p = summary["packed"]
        print(f"{summary['method']} {summary['pattern']} + {summary['quant']} in {summary['wall_s']}s "
              f"(threads {threads}, peak RSS {summary['peak_rss_mb']} MB)")  # fmt: skip
        print(f"wrote {out}: file {p['bytes_file'] / 1e6:.2f} MB ({p['ratio_file_fp32']:.2f}x smaller than FP32 "
              f"{p['bytes_fp32'] / 1e6:.1f} MB); decoder Linears {p['bytes_linear'] / 1e6:.2f} MB "
              f"({p['ratio_linear_fp32']:.2f}x vs FP32, {p['bits_per_linear_weight']:.3f} bits/weight incl. positions and scales)")  # fmt: skip
        for line in notes:
            print(line)
    return 0
