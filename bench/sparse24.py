"""2:4 sparsity bench: one-shot magnitude / Wanda / SparseGPT, AST training, each with int8 and int4.

    python bench/sparse24.py                       # one-shot rows: dense + 3 methods (+ SparseGPT+SLoRB) x none/int8/int4
    nohup python bench/sparse24.py --ast > bench/results/sparse24_ast.log 2>&1 &   # AST training rows (long)
    python bench/sparse24.py --tiny                # the whole pipeline on a tiny random model, in minutes
    # the best recipe: SparseGPT masks chosen inside local reconstruction, then AST, on WikiText-2 *validation* text
    python bench/sparse24.py --ast --ast-init sparsegpt+recon --calib wikitext2-valid --calib-windows 512 \
        --calib-seq-len 256 --ast-train-data wikitext2-valid --ast-train-windows 1042 --ast-no-slorb --ast-tokens 204800
    python bench/sparse24.py --methods sparsegpt+recon --calib wikitext2-valid ...   # its start, without AST (cached)

Rows: ``method`` (``dense``, ``magnitude``, ``wanda``, ``sparsegpt``, ``sparsegpt+slorb``,
``sparsegpt+recon``, ``ast(<init>)[+slorb]``), ``pattern`` (``2:4``; ``dense`` for the reference), ``quant`` (``none``,
``int8``, ``int4``: group-wise GPTQ, symmetric, ``--group`` input columns per float16 scale, the
token embedding int8), ``train_tokens`` (0 when one-shot), ``ppl`` / ``dense_ppl`` / ``ppl_ratio``
(WikiText-2 test, raw, windows of 1024 tokens, the first ``--ppl-windows`` windows), ``acc_avg``
(zero-shot accuracy over ``--zs-tasks``, ``--zs-limit`` docs per task, lm-eval's seed), ``bytes``
(the packed safetensors file on disk, everything included; dense FP32 for the dense row),
``bytes_ratio_fp32`` (FP32 model bytes / ``bytes``: how many times smaller), ``linear_bytes`` /
``linear_ratio_fp32`` (the decoder Linears only: kept values, 2:4 positions, scales, SLoRB),
``wall_s`` / ``cpu_s`` (calibration-data generation + pruning + training + quantization, no
evaluation; CPU seconds of this process, which is what a contended machine does not inflate),
``peak_rss_mb`` (the process that produced the row: one process per method, its rows in order
none, int8, int4, so the value is the peak so far).

Calibration is data-free by default: 32 windows of 512 tokens the dense model samples itself
(seeded, cached), never WikiText-2. AST trains on self-generated windows too. Every method runs in
its own process with ``--threads`` torch threads; results merge into ``bench/results/sparse24.json``
(rows already there are skipped unless ``--fresh``), with ``sparse24.md`` and ``sparse24.png``
(perplexity against bytes) beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import merge_row as _merge_row  # bench/ is on sys.path when these run
from _common import peak_rss_mb  # noqa: F401 (bench/reconstruct.py imports it from here)
from _common import read_json as _read
from _common import with_dense_ratios

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
METHODS = ("dense", "sparsegpt", "wanda", "magnitude", "sparsegpt+slorb")  # the default run; also: sparsegpt+recon
QUANTS = ("none", "int8", "int4")
DEFAULT_GROUP = 64  # rows quantized with another group carry a quant tag (int4/<tag>)
COLUMNS = ("method", "pattern", "quant", "train_tokens", "ppl", "dense_ppl", "ppl_ratio", "acc_avg", "bytes",
           "bytes_ratio_fp32", "linear_ratio_fp32", "prune_s", "wall_s", "cpu_s", "peak_rss_mb")  # fmt: skip


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--quants", default=",".join(QUANTS))
    p.add_argument("--group", type=int, default=DEFAULT_GROUP, help="quantization group (input columns per scale); 576 = 9 x 64")
    p.add_argument("--quant-set", default="", help="WeightQuant settings for the int8/int4 rows, as JSON (e.g. '{\"symmetric\": false}')")
    p.add_argument("--quant-tag", default="", help="with --quant-set: the rows' quant label becomes int4/<tag> (side by side with int4)")
    p.add_argument("--calib", default="self", help="calibration source (self, shakespeare, wikitext2-valid or a file)")
    p.add_argument("--calib-windows", type=int, default=32)
    p.add_argument("--calib-seq-len", type=int, default=512)
    p.add_argument("--ppl-windows", type=int, default=16, help="WikiText-2 test windows of 1024 tokens (the first N)")
    p.add_argument("--zs-tasks", default="all", help="zero-shot tasks (comma-separated or all)")
    p.add_argument("--zs-limit", type=int, default=20, help="docs per zero-shot task (0: skip zero-shot)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    p.add_argument("--ast", action="store_true", help="run the AST training rows instead of the one-shot rows")
    p.add_argument("--ast-init", default="sparsegpt",
                   help="magnitude | wanda | sparsegpt (AST's one-shot init) or <method>+recon: that mask chosen inside "
                        "local reconstruction (bench/reconstruct.py's recipe), then AST from the reconstructed model")
    p.add_argument("--recon-set", default='{"epochs": 2, "lr": 0.004}',
                   help="Reconstruct settings for a +recon init, as JSON (default: bench/reconstruct.py's best row)")
    p.add_argument("--ast-tag", default="", help="suffix of the AST row's method label (variants of one recipe)")
    p.add_argument("--ast-tokens", type=int, default=None, help="AST budget (default: SparseTrain's)")
    p.add_argument("--ast-lr", type=float, default=None)
    p.add_argument("--ast-batch", type=int, default=None)
    p.add_argument("--ast-no-slorb", action="store_true")
    p.add_argument("--ast-train-data", default="self,shakespeare", help="comma-separated sources, mixed")
    p.add_argument("--ast-train-windows", type=int, default=256, help="distinct training windows per source (reused as epochs)")
    p.add_argument("--ast-seq-len", type=int, default=256)
    p.add_argument("--ast-curve", default="0.25,0.5,0.75", help="fractions of training at which to measure a short ppl")
    p.add_argument("--ast-curve-windows", type=int, default=4, help="ppl windows of the learning-curve points")
    p.add_argument("--out", default=str(RESULTS / "sparse24.json"))
    p.add_argument("--fresh", action="store_true", help="recompute rows already in the JSON")
    p.add_argument("--tiny", action="store_true", help="a tiny random model and tiny settings: check the pipeline")
    p.add_argument("--job", default=None, help=argparse.SUPPRESS)  # internal: run one method, print rows
    args = p.parse_args(argv)
    if args.tiny:
        args.out = str(Path(args.out).with_name("sparse24_tiny.json"))
        args.calib, args.calib_windows, args.calib_seq_len, args.ppl_windows = "shakespeare", 8, 64, 4
        args.zs_limit, args.zs_tasks = min(args.zs_limit, 5), "arc_easy,piqa"
    return args


# -- one method (in its own process) -------------------------------------------------------------------


def _tiny_model(tmp: Path) -> str:
    sys.path.insert(0, str(ROOT))
    from tests.tiny import save_tiny, tiny_llama

    path = tmp / "tiny-model"
    if not path.exists():
        save_tiny(tiny_llama(num_hidden_layers=4, hidden_size=64, intermediate_size=256, max_position_embeddings=2048), path)
    return str(path)


class Clock:
    """Wall and CPU seconds of the work (generation, pruning, training, quantization), not evaluation."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    @contextlib.contextmanager
    def work(self):
        w, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall += time.perf_counter() - w
            self.cpu += time.process_time() - c

    def copy(self) -> Clock:
        return copy.copy(self)


def evaluate(model, tok, args, *, windows: int | None = None, zeroshot: bool = True) -> dict:
    from edgeprune.eval import Evaluator, PerplexityConfig, ZeroShotConfig

    seq = 256 if args.tiny else 1024
    ev = Evaluator(model, tokenizer=tok, batch_tokens=2048, progress=False)
    t0 = time.perf_counter()
    n = windows or args.ppl_windows
    ppl = ev.perplexity(PerplexityConfig(seq_len=seq, limit_tokens=n * seq))
    out = {"ppl": ppl.ppl, "ppl_windows": ppl.windows, "ppl_seq_len": seq}
    if zeroshot and args.zs_limit:
        results = ev.zeroshot(ZeroShotConfig(tasks=args.zs_tasks, limit=args.zs_limit))
        out["acc"] = {r.task: round(r.acc, 4) for r in results}
        out["acc_avg"] = sum(r.acc for r in results) / len(results)
    out["eval_s"] = time.perf_counter() - t0
    return out


def pack_bytes(model, tok, nm) -> dict:
    from edgeprune.compress.sparse.packed import save_packed

    with tempfile.TemporaryDirectory() as tmp:
        rep = save_packed(model, Path(tmp) / "a", nm=nm, tokenizer=tok)
    return {"bytes": rep.bytes_file, "bytes_fp32": rep.bytes_fp32, "bytes_ratio_fp32": rep.ratio_file_fp32,
            "linear_bytes": rep.bytes_linear, "linear_ratio_fp32": rep.ratio_linear_fp32,
            "linear_bits_per_weight": rep.bits_per_linear_weight, "bytes_by_part": rep.bytes_by_part}  # fmt: skip


def quantized_rows(base: dict, model, tok, calib, clock: Clock, args, nm, emit) -> None:
    """The int8 / int4 rows of ``model`` (GPTQ on a copy, calibrated on the sparse stream)."""
    from edgeprune.compress import compress
    from edgeprune.compress.quant.weights import WeightQuant

    for q in [q for q in args.quants.split(",") if q != "none"]:
        c = clock.copy()
        qmodel = copy.deepcopy(model)
        step = WeightQuant(**{"bits": int(q[3:]), "group_size": args.group, "method": "gptq", **json.loads(args.quant_set or "{}")})
        with c.work():
            qmodel, rep = compress(qmodel, step, calib, progress=False)
        row = {**base, "quant": _quant_label(q, args), "quant_step": step.to_dict(), "quant_s": rep.wall_s}
        row.update(evaluate(qmodel, tok, args))
        row.update(pack_bytes(qmodel, tok, nm))
        row.update(wall_s=c.wall, cpu_s=c.cpu, peak_rss_mb=peak_rss_mb())
        emit(row)
        del qmodel


def run_job(method: str, args, emit) -> None:
    import torch

    from edgeprune.compress import compress
    from edgeprune.data.calib import calibration_windows
    from edgeprune.compress.sparse.oneshot import NMPrune
    from edgeprune.threads import torch_threads
    from edgeprune.models import load

    with torch_threads(args.threads):
        source = _tiny_model(RESULTS / ".tiny") if args.tiny else args.model
        dense, tok = load(source)
        clock = Clock()
        calib = None
        with clock.work():
            if method != "dense" or "int8" in args.quants or "int4" in args.quants:
                calib = calibration_windows(tok, args.calib, n_windows=args.calib_windows, seq_len=args.calib_seq_len,
                                            seed=0, model=dense, progress=False)  # fmt: skip
        base = {"method": method, "pattern": "dense" if method == "dense" else "2:4", "train_tokens": 0,
                "threads": torch.get_num_threads(), "calibration": calib.describe() if calib else None}  # fmt: skip
        if method == "dense":
            if "none" in args.quants:
                row = {**base, "quant": "none", "wall_s": 0.0, "cpu_s": 0.0}
                row.update(evaluate(dense, tok, args))
                fp32 = sum(p.numel() for p in {id(p): p for p in dense.parameters()}.values()) * 4
                row.update(bytes=fp32, bytes_fp32=fp32, bytes_ratio_fp32=1.0, linear_ratio_fp32=1.0, peak_rss_mb=peak_rss_mb())
                emit(row)
            quantized_rows(base, dense, tok, calib, clock, args, None, emit)
            return
        if method.startswith("ast"):
            return run_ast(dense, tok, calib, clock, base, args, emit)
        prune, extra = method.split("+") if "+" in method else (method, "")
        if extra == "recon":  # masks chosen inside local reconstruction (the AST +recon start, shared through the cache)
            cfg = recon_config(prune, args)
            model, rrep, cost = reconstructed_start(copy.deepcopy(dense), dense, cfg, calib, args)
            clock.cpu += cost["cpu"]  # its cost, also when the cache served it
            clock.wall += cost["wall"]
            base.update(recon_step=cfg.to_dict(), recon=rrep, prune_s=None)
        else:
            step = NMPrune(pattern="2:4", method=prune, slorb_k=16 if extra == "slorb" else 0)
            model = dense
            with clock.work():
                model, rep = compress(model, step, calib, progress=False)
            base.update(step=step.to_dict(), prune_s=rep.wall_s, sparsity=rep.sparsity)
        if "none" in args.quants:
            row = {**base, "quant": "none"}
            row.update(evaluate(model, tok, args))
            row.update(pack_bytes(model, tok, (2, 4)))
            row.update(wall_s=clock.wall, cpu_s=clock.cpu, peak_rss_mb=peak_rss_mb())
            emit(row)
        quantized_rows(base, model, tok, calib, clock, args, (2, 4), emit)


def run_ast(dense, tok, calib, clock: Clock, base: dict, args, emit) -> None:
    """AST from a one-shot start, resumable: the self-generated data is made in cached chunks of 32
    windows, training checkpoints every 5 steps (under the edgeprune cache), and every unit of work
    (a generated chunk, a training step) is logged with its CPU seconds to the progress file, so the
    reported cost of a run that was stopped and resumed counts each unit once."""
    from edgeprune.data.calib import calibration_windows, concat_windows
    from edgeprune.compress.sparse.ast import SparseTrain, sparse_train
    from edgeprune.models.cache import cache_root

    recon_init = args.ast_init.split("+recon")[0] if args.ast_init.endswith("+recon") else None
    kw = {"init": "none" if recon_init else args.ast_init, "slorb": not args.ast_no_slorb}
    if args.ast_tokens:
        kw["tokens"] = args.ast_tokens
    if args.ast_lr:
        kw["lr"] = args.ast_lr
    if args.ast_batch:
        kw["batch_size"] = args.ast_batch
    if args.tiny:
        kw.update(tokens=kw.get("tokens", 4 * 64 * 8), batch_size=4)
    step = SparseTrain(**kw)

    recon_cfg = recon_config(recon_init, args) if recon_init else None
    run_id = json.dumps({"step": step.to_dict(), "recon": recon_cfg.to_dict() if recon_cfg else None, "data": args.ast_train_data, "windows": args.ast_train_windows,
                         "seq": args.ast_seq_len, "calib": [args.calib, args.calib_windows, args.calib_seq_len]}, sort_keys=True)  # fmt: skip
    # a stable id (Python's hash() of a str changes with every process: a resume would never find it)
    run_hash = hashlib.sha256(run_id.encode()).hexdigest()[:12]
    # the first recipe's log kept its old name; later recipes log under their own id (they may run side by side)
    name = "sparse24_ast_progress" if not recon_cfg and not args.ast_tag else f"sparse24_ast_{run_hash}"
    log = RESULTS / (f"{name}.jsonl" if not args.tiny else "sparse24_tiny_ast_progress.jsonl")
    ckpt = cache_root() / "bench" / f"sparse24-ast-{run_hash}.ckpt"
    final = ckpt.with_suffix(".final.pt")  # the trained model: the quantized rows can be redone without training
    if not ckpt.is_file() and not final.is_file():
        log.write_text("")  # a fresh run: a fresh progress file
    ckpt.parent.mkdir(parents=True, exist_ok=True)

    def event(obj):
        with open(log, "a") as fh:
            fh.write(json.dumps({"time": time.strftime("%H:%M:%S"), **obj}) + "\n")

    event({"event": "session", "run": json.loads(run_id), "checkpoint": str(ckpt), "resume": ckpt.is_file()})
    parts = []
    for src in args.ast_train_data.split(","):
        chunks = range(max(1, args.ast_train_windows // 32)) if src == "self" else [None]
        for i in chunks:
            w0, c0 = time.perf_counter(), time.process_time()
            parts.append(calibration_windows(tok, src, n_windows=32 if i is not None else args.ast_train_windows,
                                             seq_len=args.ast_seq_len, seed=1000 + i if i is not None else 1,
                                             model=dense, progress=False))  # fmt: skip
            if i is not None and time.perf_counter() - w0 > 2:  # generated now, not read from the cache
                event({"event": "gen", "chunk": i, "wall": time.perf_counter() - w0, "cpu": time.process_time() - c0})
    train = concat_windows(*parts)
    model = copy.deepcopy(dense)
    recon_rep, recon_cost = None, {"cpu": 0.0, "wall": 0.0}
    if recon_cfg is not None:  # the reconstructed start, cached apart from AST: variants of AST share it
        model, recon_rep, recon_cost = reconstructed_start(model, dense, recon_cfg, calib, args)
        event({"event": "recon", **recon_cost})
    steps = step.tokens // (step.batch_size * args.ast_seq_len)
    marks = {max(1, round(float(f) * steps)) for f in args.ast_curve.split(",") if f}
    paused = Clock()
    last = [time.perf_counter(), time.process_time()]

    def on_log(n, rec):
        now = [time.perf_counter(), time.process_time()]
        event({"event": "step", **rec, "wall": now[0] - last[0] - paused.wall, "cpu": now[1] - last[1] - paused.cpu})
        paused.wall = paused.cpu = 0.0
        if n in marks:  # a short perplexity on the model as it is (masked forward = the finished model's)
            with paused.work():
                model.eval()
                r = evaluate(model, tok, args, windows=args.ast_curve_windows, zeroshot=False)
                model.train()
            event({"event": "curve", "step": n, "tokens": n * step.batch_size * args.ast_seq_len, "ppl": r["ppl"],
                   "windows": args.ast_curve_windows})  # fmt: skip
        last[:] = [time.perf_counter() - paused.wall, time.process_time() - paused.cpu]
        paused.wall = paused.cpu = 0.0

    if final.is_file():
        import torch

        saved = torch.load(final, weights_only=False)
        model, rep = saved["model"], saved["report"]
        event({"event": "reused", "final": str(final)})
    else:
        model, rep = sparse_train(model, step, calib, train_data=train, progress=not args.tiny, on_log=on_log,
                                  checkpoint=ckpt, checkpoint_every=5, teacher=dense if recon_cfg else None)  # fmt: skip
        import torch

        from edgeprune.fileio import atomic_file

        with atomic_file(final, overwrite=True) as tmp:
            torch.save({"model": model, "report": rep}, tmp)
        ckpt.unlink(missing_ok=True)
    # the cost of the recipe, each unit once (a step redone after a stop counts once, its last time)
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    gen = {e["chunk"]: e for e in events if e.get("event") == "gen"}
    done = {e["step"]: e for e in events if e.get("event") == "step"}
    curve = [{k: e[k] for k in ("step", "tokens", "ppl", "windows")} for e in events if e.get("event") == "curve"]
    gen_cpu, gen_wall = sum(e["cpu"] for e in gen.values()), sum(e["wall"] for e in gen.values())
    train_cpu, train_wall = sum(e["cpu"] for e in done.values()), sum(e["wall"] for e in done.values())
    gen_tokens = 32 * args.ast_seq_len * len(gen)
    calib_cpu = gen_cpu / gen_tokens * calib.tokens if gen_tokens and args.calib == "self" else 0.0  # made earlier, cached
    recon_cpu, recon_wall = recon_cost["cpu"], recon_cost["wall"]
    clock.cpu, clock.wall = gen_cpu + train_cpu + calib_cpu + recon_cpu, gen_wall + train_wall + calib_cpu + recon_wall
    method = f"ast({args.ast_init})" + ("+slorb" if step.slorb else "") + (f"/{args.ast_tag}" if args.ast_tag else "")
    base = {**base, "method": method, "train_tokens": rep.tokens, "step": step.to_dict(), "train_data": train.describe(),
            "cost": {"data_gen_cpu_s": gen_cpu, "calib_gen_cpu_s_estimate": calib_cpu, "train_cpu_s": train_cpu,
                     "train_wall_s": train_wall, "note": "train_*: one-shot init + training steps (curve evaluations excluded)"},
            "train_tokens_per_cpu_s": rep.tokens / max(train_cpu, 1e-9), "sessions": sum(e.get("event") == "session" for e in events),
            "losses_first_last": [rep.losses[0], rep.losses[-1]], "mask_updates_last": rep.mask_updates[-3:],
            "init": rep.init, "prune_s": (rep.init or {}).get("wall_s"), "curve": curve, "progress_log": log.name}  # fmt: skip
    if recon_cfg is not None:
        base["cost"].update(recon_cpu_s=recon_cpu, recon_wall_s=recon_wall)
        base.update(recon_step=recon_cfg.to_dict(), recon=recon_rep)
    row = {**base, "quant": "none"}
    row.update(evaluate(model, tok, args))
    row.update(pack_bytes(model, tok, (2, 4)))
    row.update(wall_s=clock.wall, cpu_s=clock.cpu, peak_rss_mb=peak_rss_mb())
    emit(row)
    quantized_rows(base, model, tok, calib, clock, args, (2, 4), emit)


def recon_config(prune: str, args):
    """The Reconstruct step of a ``<prune>+recon`` method: ``--recon-set`` with masks chosen in the loop."""
    from edgeprune.compress.reconstruct.local import Reconstruct

    return Reconstruct(**{**json.loads(args.recon_set or "{}"), "prune": prune, "pattern": "2:4"})


def reconstructed_start(model, dense, cfg, calib, args):
    """``(model, report, cost)``: ``model`` (a copy of ``dense``) pruned inside local reconstruction,
    cached under the edgeprune cache by (settings, calibration); ``cost`` (``cpu``, ``wall`` seconds,
    ``path``) is the reconstruction's own, also when the cache serves it."""
    import torch

    from edgeprune.compress.reconstruct.local import reconstruct
    from edgeprune.fileio import atomic_file
    from edgeprune.models.cache import cache_root

    key = json.dumps({"recon": cfg.to_dict(), "calib": calib.describe(), "model": args.model, "tiny": args.tiny}, sort_keys=True)
    path = cache_root() / "bench" / f"sparse24-recon-{hashlib.sha256(key.encode()).hexdigest()[:12]}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=False)
        return saved["model"], saved["report"], {"cpu": saved["cpu"], "wall": saved["wall"], "path": str(path), "reused": True}
    w0, c0 = time.perf_counter(), time.process_time()
    model, rep = reconstruct(model, cfg, calib, dense=dense, progress=False)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    rep = {k: v for k, v in rep.to_dict().items() if k != "per_submodel"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, overwrite=True) as tmp:
        torch.save({"model": model, "report": rep, "cpu": cpu, "wall": wall}, tmp)
    return model, rep, {"cpu": cpu, "wall": wall, "path": str(path), "reused": False}


# -- driver ---------------------------------------------------------------------------------------------


def _quant_label(q: str, args) -> str:
    """A row's ``quant``: int8 / int4, or int4/<tag> for the settings of ``--quant-set`` (``none`` is never tagged)."""
    return f"{q}/{args.quant_tag}" if args.quant_tag and q != "none" else q


def _key(r: dict) -> tuple:
    return (r["method"], r["quant"], int(r.get("train_tokens") or 0))


def _calib_label(row: dict) -> str:
    c = row["calibration"]
    src = c.get("source", "?")
    parts = ["self-generated" if p.startswith("self") else Path(p.split(" (")[0]).name for p in src.split(" + ")]
    src = " + ".join(dict.fromkeys(parts))  # sources in order, each once (self-generated data comes in chunks)
    return f"{src} {c.get('windows')} x {c.get('seq_len')}"


def merge_row(path: Path, row: dict, args) -> dict:
    doc = _merge_row(path, row, key=_key, build=lambda rows: _document(rows, args))
    try:
        plot(doc, path.with_suffix(".png"))
    except Exception as exc:  # a plot failure must not lose the numbers
        print(f"plot failed: {exc}", file=sys.stderr)
    return doc


def _document(rows: list[dict], args) -> tuple[dict, str]:
    from edgeprune.benchutil import bench_document, markdown_table

    with_dense_ratios(rows, lambda r: r["method"] == "dense" and r["quant"] == "none")
    order = {m: i for i, m in enumerate(METHODS + ("sparsegpt+recon",))}
    rows.sort(key=lambda r: (int(r.get("train_tokens") or 0) > 0, order.get(r["method"], 99), r["method"],
                             QUANTS.index(r["quant"].split("/")[0]), r["quant"]))  # fmt: skip
    settings = {
        "model": "tiny random llama (pipeline check)" if args.tiny else args.model,
        "ppl": f"WikiText-2 test (raw), windows of {256 if args.tiny else 1024} tokens, the first {args.ppl_windows}",
        "zeroshot": f"{args.zs_tasks} tasks, limit {args.zs_limit} docs per task (seed 1234)",
        # rows differ (the one-shot rows: self-generated; the +recon recipe: WikiText-2 validation): each row's own
        "calibration": "per row (`calibration`): " + "; ".join(sorted({_calib_label(r) for r in rows if r.get("calibration")})),
        "training data": "per AST row (`train_data`): " + "; ".join(sorted({_calib_label({"calibration": r["train_data"]})
                                                                          for r in rows if r.get("train_data")})),
        "quantization": f"int8 / int4: GPTQ (act-order, static groups), symmetric, group {DEFAULT_GROUP}, float16 scales; "
        f"token embedding int8 (same group); int4/<tag>: other settings, in the row's `quant_step`",
        "bytes": "bytes: the packed safetensors file; bytes_ratio_fp32 = FP32 model bytes / bytes; linear_ratio_fp32: "
        "decoder Linears only (values, 2:4 positions, scales, SLoRB) vs their FP32 weights",
        "time": "prune_s: the one-shot pruning step alone (wall, 1 thread); wall_s / cpu_s: data generation + pruning + "
        "training + quantization (no evaluation); "
        f"torch threads {args.threads}; the machine is shared, so cpu_s is the comparable figure",
    }  # fmt: skip
    doc = bench_document("sparse24", rows, settings=settings)
    md = [f"# sparse24: {settings['model']}", ""] + [f"- {k}: {v}" for k, v in settings.items()]
    md += ["", markdown_table(rows, COLUMNS), ""]
    return doc, "\n".join(md)


def plot(doc: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    markers = {"none": "o", "int8": "s", "int4": "^"}
    methods = sorted({r["method"] for r in doc["rows"]}, key=lambda m: (METHODS.index(m) if m in METHODS else 99, m))
    dense = next((r for r in doc["rows"] if r["method"] == "dense" and r["quant"] == "none"), None)
    for i, m in enumerate(methods):
        rows = sorted([r for r in doc["rows"] if r["method"] == m and r.get("ppl")], key=lambda r: r["bytes"])
        color = f"C{i}"
        ax.plot([r["bytes"] / 1e6 for r in rows], [r["ppl"] for r in rows], color=color, alpha=0.5, label=m)
        for r in rows:
            ax.scatter(r["bytes"] / 1e6, r["ppl"], color=color, marker=markers[r["quant"].split("/")[0]])
    if dense:
        for f, style in ((1.0, "-"), (1.3, "--"), (1.45, ":")):
            ax.axhline(dense["ppl"] * f, color="gray", linestyle=style, linewidth=0.8)
            ax.text(ax.get_xlim()[0] if f > 1 else dense["bytes"] / 1e6, dense["ppl"] * f, f" {f}x dense", fontsize=7,
                    va="bottom", color="gray")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bytes of the artifact (MB, log; o none, s int8, ^ int4)")
    ax.set_ylabel("WikiText-2 test perplexity (log; first windows of 1024 tokens)")
    ax.set_title(f"2:4 sparsity + quantization: {doc.get('settings', {}).get('model')}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if args.job:
        def emit(row):
            print("ROW " + json.dumps(row, default=str), flush=True)

        run_job(args.job, args, emit)
        return 0
    jobs = ["ast"] if args.ast else args.methods.split(",")
    done = {_key(r) for r in _read(out).get("rows", [])} if not args.fresh else set()
    passthrough = list(argv if argv is not None else sys.argv[1:])
    for job in jobs:
        missing = [q for q in args.quants.split(",") if job == "ast" or (job, _quant_label(q, args), 0) not in done]
        if not missing:
            print(f"skip {job} (already in {out})", flush=True)
            continue
        print(f"run {job} {','.join(missing)} ({time.strftime('%H:%M:%S')})", flush=True)
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, *passthrough, "--quants", ",".join(missing), "--job", job]  # the last --quants wins
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        for line in proc.stdout:
            if not line.startswith("ROW "):
                continue
            row = json.loads(line[4:])
            doc = merge_row(out, row, args)
            r = next(x for x in doc["rows"] if _key(x) == _key(row))
            print(f"  {r['method']} {r['quant']}: ppl {r['ppl']:.3f} (x{r.get('ppl_ratio', float('nan')):.3f}) "
                  f"acc_avg {r.get('acc_avg')} bytes {r['bytes'] / 1e6:.1f} MB (x{r['bytes_ratio_fp32']:.2f}, linears "
                  f"x{r.get('linear_ratio_fp32') or 1:.2f}) work {r['wall_s']:.0f}s wall / {r['cpu_s']:.0f}s cpu "
                  f"[{time.perf_counter() - t0:.0f}s]", flush=True)  # fmt: skip
        if proc.wait() != 0:
            print(f"FAILED {job} (exit {proc.returncode})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
