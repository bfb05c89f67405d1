"""``edgeprune eval``: perplexity (``--ppl``) and zero-shot accuracy (``--tasks``) of a model or artifact."""

from __future__ import annotations


def add_parser(sub) -> None:
    from edgeprune.export.registry import runtimes

    p = sub.add_parser("eval", help="perplexity and zero-shot accuracy of a model, GGUF or ONNX file")
    p.add_argument("--model", default=None, help="model source, .gguf or .onnx (default: the embedded smollm2-135m)")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer source for GGUF/ONNX artifacts (a model dir, .gguf or built-in name; 'llama.cpp' for a GGUF's own)")
    p.add_argument("--backend", default=None, choices=runtimes(), help="default: from the file kind")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="torch weights dtype")
    p.add_argument("--ppl", action="store_true", help="measure perplexity")
    p.add_argument("--data", default="wikitext2", help="perplexity corpus: a name (wikitext2) or a UTF-8 text file")
    p.add_argument("--seq-len", type=int, default=1024, help="perplexity window length in tokens")
    p.add_argument("--limit-tokens", type=int, default=None, help="use only the first N corpus tokens (quick runs)")
    p.add_argument("--keep-partial", action="store_true", help="score the last partial window too (default: drop it)")
    p.add_argument("--tasks", default=None, help="comma-separated zero-shot tasks, or 'all'")
    p.add_argument("--limit", type=int, default=None, help="docs per task: a seeded random subset")
    p.add_argument("--seed", type=int, default=1234, help="seed of the --limit subset")
    p.add_argument("--source", default="local", choices=["local", "hub"], help="task data: local files or the HF hub")
    p.add_argument("--data-dir", default=None, help="the shared data directory (default: ../shared/data or $EDGEPRUNE_DATA)")
    p.add_argument("--batch-tokens", type=int, default=4096, help="tokens per forward batch (rows x longest)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's / all cores)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args) -> int:
    from edgeprune.benchutil import write_json_atomic
    from edgeprune.errors import EdgepruneError
    from edgeprune.eval import Evaluator, PerplexityConfig, ZeroShotConfig
    from edgeprune.fileio import check_writable

    if args.json:  # replaced if it exists and its folders are created, as write_json_atomic does
        check_writable(args.json, overwrite=True, parents=True)
    if not args.ppl and not args.tasks:
        raise EdgepruneError("nothing to evaluate: pass --ppl and/or --tasks (e.g. --tasks arc_easy,piqa)")
    # Validate every option before loading the model (seconds) so a typo fails at once.
    ppl_cfg = PerplexityConfig(data=args.data, seq_len=args.seq_len, limit_tokens=args.limit_tokens,
                               keep_partial=args.keep_partial, data_dir=args.data_dir) if args.ppl else None  # fmt: skip
    zs_cfg = ZeroShotConfig(tasks=args.tasks, limit=args.limit, seed=args.seed, source=args.source,
                            data_dir=args.data_dir) if args.tasks else None  # fmt: skip
    if ppl_cfg is not None:
        ppl_cfg.check_data()
    if zs_cfg is not None and zs_cfg.source == "local":
        zs_cfg.check_data()

    ev = Evaluator(args.model, tokenizer=args.tokenizer, backend=args.backend, dtype=args.dtype,
                   batch_tokens=args.batch_tokens, threads=args.threads, progress=not args.quiet)  # fmt: skip
    info = ev.describe()
    print(f"model {info['model']} | backend {info['backend']} | dtype {info['dtype']} | tokenizer {info['tokenizer']}")
    out = {"model": info, "perplexity": None, "zeroshot": []}
    if ppl_cfg is not None:
        r = ev.perplexity(ppl_cfg)
        out["perplexity"] = r.to_dict()
        print(f"{r.task} ppl {r.ppl:.4f} | seq_len {r.seq_len} | {r.windows} windows, {r.tokens} tokens scored "
              f"(last window {r.last_window}, {r.dropped_tokens} tokens unused) | {r.wall_s:.1f}s, {r.tokens_per_s:.0f} tokens/s")  # fmt: skip
    if zs_cfg is not None:
        for t in ev.zeroshot(zs_cfg):
            out["zeroshot"].append(t.to_dict())
            norm = f" | acc_norm {t.acc_norm:.4f} ± {t.acc_norm_stderr:.4f}" if t.acc_norm is not None else ""
            print(f"{t.task:<14} acc {t.acc:.4f} ± {t.acc_stderr:.4f}{norm} | n {t.n}/{t.n_total} | "
                  f"{t.wall_s:.1f}s, {t.tokens_per_s:.0f} tokens/s")  # fmt: skip
    if args.json:
        write_json_atomic(args.json, out)
        print(f"wrote {args.json}")
    ev.close()
    return 0
