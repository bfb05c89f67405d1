"""Recovery-training throughput on CPU (issue 18 item 4): tokens per CPU-second of distillation
steps, float32 vs bf16 autocast, the teacher live vs its top-k logits kept per window.

The student is the seeded stand-in for a pruned SmolLM2-135M the export benches use
(``_common.pruned_model``), the teacher the dense model; both see the same windows of the
``general`` text (never an evaluation text). Each row runs ``recovery.train`` for ``--steps``
optimizer steps after one untimed warm-up step and reports tokens per CPU-second (``time.process_time``
of this process: all its threads, so a busy machine inflates it less than wall time) and per wall
second. A top-k row is timed on windows whose teacher answer is already kept (the second and later
visits, which is where recovery training spends its steps: every stage of an Adapt-Pruner run
draws from the same windows); what filling the cache costs is a column of its own.

    .venv/bin/python bench/recovery_speed.py --steps 6
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from _common import RESULTS, add_pruned_args, document, pruned_from_args, pruned_settings, write_results

COLUMNS = ("method", "train_dtype", "kd_topk", "tokens", "cpu_s", "tokens_per_cpu_s", "wall_s", "tokens_per_s",
           "speedup_cpu", "cache_fill_cpu_s", "kl_topk_vs_full")  # fmt: skip


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6, help="timed optimizer steps per row")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--topk", type=int, default=64)
    p.add_argument("--calib", default="general")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: CPU-seconds per token are cleanest on one thread; restored after)")
    add_pruned_args(p)
    a = p.parse_args(argv)
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(a.threads)
    try:
        return _run(a)
    finally:
        torch.set_num_threads(saved_threads)


def _run(a) -> int:
    import torch

    from edgeprune.compress.structured.recovery import TrainConfig, train
    from edgeprune.compress.training import TopK, TopKTeacher, autocast, resolve_autocast, topk_kl
    from edgeprune.data.calib import calibration_windows
    from edgeprune.models import load


    dense = load("smollm2-135m")
    tok, teacher = dense.tokenizer, dense.model.eval()
    n = (a.steps + 1) * a.batch_size
    ids = calibration_windows(tok, a.calib, n_windows=n, seq_len=a.seq_len).ids  # (n, seq_len)
    base = TrainConfig(tokens=(a.steps + 1) * a.batch_size * a.seq_len, batch_size=a.batch_size, kd_alpha=0.5,
                       warmup=0.0, decay=0.0)  # fmt: skip
    student0 = pruned_from_args(teacher, a)
    settings = pruned_settings(student0, teacher, a)

    def timed(cfg, kd_teacher):
        import copy

        student = copy.deepcopy(student0)
        # one untimed step first: allocator and oneDNN warm-up
        train(student, ids[: a.batch_size], cfg, tokens=a.batch_size * a.seq_len, teacher=kd_teacher, progress=False)
        c0, w0 = time.process_time(), time.perf_counter()
        rep = train(student, ids, cfg, tokens=a.steps * a.batch_size * a.seq_len, teacher=kd_teacher, progress=False)
        return rep.tokens, time.process_time() - c0, time.perf_counter() - w0

    rows = []
    for dtype in ("float32", "auto"):
        for k in (0, a.topk):
            cfg = dataclasses.replace(base, train_dtype=dtype, kd_topk=k)
            kd_teacher, fill = teacher, None
            if k:
                kd_teacher = TopKTeacher(teacher, k, cfg.kd_temperature)
                c0 = time.process_time()
                with autocast(resolve_autocast(dtype)):
                    for chunk in ids.split(a.batch_size):
                        kd_teacher(input_ids=chunk)  # every window's top-k, once
                fill = time.process_time() - c0
            tokens, cpu, wall = timed(cfg, kd_teacher)
            name = {"float32": "float32", "auto": f"auto ({resolve_autocast('auto')})"}[dtype]
            rows.append({"method": "recovery (KD, alpha 0.5)", "train_dtype": name, "kd_topk": k or "live, full",
                         "tokens": tokens, "cpu_s": round(cpu, 2), "tokens_per_cpu_s": round(tokens / cpu, 1),
                         "wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall, 1),
                         "cache_fill_cpu_s": None if fill is None else round(fill, 2)})  # fmt: skip
            print(rows[-1], flush=True)
    for r in rows:
        r["speedup_cpu"] = round(r["tokens_per_cpu_s"] / rows[0]["tokens_per_cpu_s"], 2)
    # how far the top-k KL is from the full one, for this student on one batch
    with torch.no_grad():
        s_logits = student0(input_ids=ids[: a.batch_size]).logits
        t_logits = teacher(input_ids=ids[: a.batch_size]).logits
        T = base.kd_temperature
        norm = torch.logsumexp(t_logits / T, dim=-1)
        full = topk_kl(s_logits, TopK(*t_logits.topk(t_logits.shape[-1], dim=-1), norm, T), T).mean()
        part = topk_kl(s_logits, TopK(*t_logits.topk(a.topk, dim=-1), norm, T), T).mean()
    for r in rows:
        if r["kd_topk"] != "live, full":
            r["kl_topk_vs_full"] = round(float(part / full), 3)
    doc = document("recovery_speed", rows, settings={**vars(a), **settings}, threads=torch.get_num_threads())
    notes = [f"Student: {settings}. Teacher: the dense SmolLM2-135M (weights dequantized from the packaged Q4_1 GGUF). "
             f"Windows: {n} x {a.seq_len} tokens of `{a.calib}`; batch {a.batch_size}; torch threads "
             f"{torch.get_num_threads()}.",
             "tokens_per_cpu_s: tokens / process CPU seconds of the timed steps; speedup_cpu: vs the first row "
             "(float32, live teacher: today's default). Top-k rows are timed on windows whose teacher answer is "
             "kept (the cache filled first, its cost in cache_fill_cpu_s).",
             "kl_topk_vs_full: the top-k KL (the k tokens at their true probabilities, the rest of the vocabulary one "
             "bucket: a lower bound) / the full KL, for this student on one batch."]  # fmt: skip
    write_results(doc, RESULTS / "recovery_speed.json", RESULTS / "recovery_speed.md", COLUMNS, notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
