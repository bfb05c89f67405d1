"""Zero-shot multiple choice, scored as lm-evaluation-harness 0.4 scores it.

For each doc: every choice is a ``(context, continuation)`` request (tasks.py), tokenised the
lm-eval way (scoring.encode_pair), scored by the summed log-probability of its continuation
tokens; ``acc`` and ``acc_norm`` follow scoring.choice_decisions. A doc's choices share their
context: with ``share_context`` (default) the common token prefix runs once and its KV cache serves
every choice (same numbers as scoring each choice on its own, fewer tokens through the model).
``limit`` evaluates a random subset of the docs, fixed by ``seed``, in file order.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.eval.perplexity import backend_session
from edgeprune.eval.scoring import choice_decisions, encode_pair, mean_stderr, share_context, truncate_left
from edgeprune.eval.tasks import SOURCES, TASKS, MCDoc, get_task, load_docs, parse_task_list
from edgeprune.eval.windows import plan_batches

DEFAULT_SEED = 1234  # lm-eval's default seed


@dataclass(frozen=True)
class ZeroShotConfig:
    tasks: tuple[str, ...] = tuple(TASKS)
    limit: int | None = None  # docs per task (a seeded random subset); None = all
    seed: int = DEFAULT_SEED
    source: str = "local"  # "local" files under the data directory, or "hub" (online only)
    data_dir: str | None = None
    share_context: bool = True  # run each doc's shared context once and reuse its KV cache

    def __post_init__(self):
        object.__setattr__(self, "tasks", parse_task_list(self.tasks))
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise EdgepruneError(f"limit must be an integer >= 1, got {self.limit!r}")
        if self.source not in SOURCES:
            raise EdgepruneError(f"unknown data source {self.source!r}: use one of {', '.join(SOURCES)}")

    def check_data(self) -> None:
        """Parse every task's files once (under a second for all seven) before a model is loaded."""
        for name in self.tasks:
            load_docs(name, source=self.source, data_dir=self.data_dir)


@dataclass
class TaskResult:
    task: str
    n: int
    acc: float
    acc_stderr: float
    acc_norm: float | None  # None where lm-eval does not report it (boolq, winogrande)
    acc_norm_stderr: float | None
    n_total: int  # docs in the split
    limit: int | None
    seed: int
    source: str
    tokens: int  # tokens fed through the model
    wall_s: float
    tokens_per_s: float
    cpu_s: float  # process CPU time (all threads)
    tokenizer: str
    dtype: str
    backend: str
    predictions: list[int] = field(default_factory=list, repr=False)  # argmax choice per doc (acc)

    def to_dict(self, *, with_predictions: bool = False) -> dict:
        d = asdict(self)
        if not with_predictions:
            d.pop("predictions")
        return d


def subset_indices(n: int, limit: int | None, seed: int) -> list[int]:
    """Indices of the docs to evaluate: all, or ``limit`` drawn with ``seed``, in file order."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), limit))


def tokenize_docs(tokenizer, docs: list[MCDoc], max_length: int | None) -> list[list[tuple[list[int], list[int]]]]:
    """Token pairs per doc and choice. Encodes each distinct string once, in batches."""
    needed: set[str] = set()
    for doc in docs:
        for ctx, cont in doc.requests:
            stripped = ctx.rstrip()
            needed.update((stripped, stripped + ctx[len(stripped):] + cont))
    texts = sorted(needed)
    cache = dict(zip(texts, tokenizer.encode_batch(texts)))
    prefix = tokenizer.prefix_token
    out = []
    for doc in docs:
        pairs = []
        for ctx, cont in doc.requests:
            c, x = encode_pair(lambda s: cache[s] if s in cache else tokenizer.encode(s), ctx, cont, prefix_token=prefix)
            if max_length is not None:
                c, x = truncate_left(c, x, max_length)
            pairs.append((c, x))
        out.append(pairs)
    return out


def score_docs(backend, pairs_per_doc, *, share: bool = True, progress: bool = True, desc: str = "") -> tuple[list[list[float]], int]:
    """Summed continuation log-likelihood per doc and choice, and the number of tokens fed."""
    lls: list[list[float]] = [[] for _ in pairs_per_doc]
    fed = 0
    bar = _bar(len(pairs_per_doc), desc, progress)
    if share:
        groups = [share_context(pairs) for pairs in pairs_per_doc]
        sizes = [len(p) + sum(len(b) for b in bs) for p, bs in groups]  # the prefix once, then every branch
        for batch in plan_batches(sizes, backend.batch_tokens):
            for i, branch_lps in zip(batch, backend.branch_logprobs([groups[i] for i in batch])):
                # Each continuation is the tail of its branch (share_context keeps it there).
                lls[i] = [float(lp[len(lp) - len(x):].sum()) for lp, (_, x) in zip(branch_lps, pairs_per_doc[i])]
                p, bs = groups[i]
                fed += len(p) + sum(max(0, len(b) - 1) for b in bs)
            bar.update(len(batch))
    else:
        flat = [(d, list(c) + list(x), len(x)) for d, pairs in enumerate(pairs_per_doc) for c, x in pairs]
        scores = [0.0] * len(flat)
        for batch in plan_batches([len(seq) for _, seq, _ in flat], backend.batch_tokens):
            for i, lp in zip(batch, backend.token_logprobs([flat[i][1] for i in batch])):
                scores[i] = float(lp[len(lp) - flat[i][2]:].sum())
                fed += len(flat[i][1]) - 1
            bar.update(len(batch) / max(1, len(flat)) * len(pairs_per_doc))
        for (d, _, _), score in zip(flat, scores):
            lls[d].append(score)
    bar.close()
    return lls, fed


def evaluate_task(backend, name: str, config: ZeroShotConfig, *, progress: bool = True) -> TaskResult:
    spec = get_task(name)
    docs = load_docs(name, source=config.source, data_dir=config.data_dir)
    idx = subset_indices(len(docs), config.limit, config.seed)
    chosen = [docs[i] for i in idx]
    t0, c0 = time.perf_counter(), time.process_time()
    pairs = tokenize_docs(backend.tokenizer, chosen, backend.max_length)
    lls, fed = score_docs(backend, pairs, share=config.share_context, progress=progress, desc=name)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    decisions = [choice_decisions(ll, doc.gold, doc.norm_lengths) for ll, doc in zip(lls, chosen)]
    acc, acc_se = mean_stderr([d["acc"] for d in decisions])
    acc_norm = acc_norm_se = None
    if "acc_norm" in spec.metrics:
        acc_norm, acc_norm_se = mean_stderr([d["acc_norm"] for d in decisions])
    return TaskResult(
        task=name, n=len(chosen), acc=acc, acc_stderr=acc_se, acc_norm=acc_norm, acc_norm_stderr=acc_norm_se,
        n_total=len(docs), limit=config.limit, seed=config.seed, source=config.source, tokens=fed, wall_s=wall,
        tokens_per_s=fed / wall if wall > 0 else math.inf, cpu_s=cpu, tokenizer=backend.tokenizer.name, dtype=backend.dtype,
        backend=backend.name, predictions=[int(np.argmax(ll)) for ll in lls],
    )  # fmt: skip


def evaluate_zeroshot(backend, config: ZeroShotConfig, *, progress: bool = True) -> list[TaskResult]:
    with backend_session(backend):
        return [evaluate_task(backend, name, config, progress=progress) for name in config.tasks]


def _bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="doc", disable=not enabled, leave=False, dynamic_ncols=True)
