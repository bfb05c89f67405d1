"""Perplexity over non-overlapping windows of one tokenised corpus.

The corpus file is read as ONE text (WikiText-2: the raw test file, blank lines and headings
included) and tokenised ONCE without special tokens (no BOS: SmolLM2 and GPT-2-style models are
trained on raw streams). The token stream is cut into windows of ``seq_len`` (see
:mod:`edgeprune.eval.windows` for the last partial window); each window is scored on its own and
perplexity is ``exp(sum of NLL / number of predicted tokens)``: the token-weighted mean.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edgeprune.data.text import CORPORA, corpus_path, read_text
from edgeprune.errors import EdgepruneError
from edgeprune.eval.windows import plan_batches, predicted_tokens, window_spans


@dataclass(frozen=True)
class PerplexityConfig:
    """What to measure. ``data``: a corpus name (``wikitext2``) or a text file path."""

    data: str = "wikitext2"
    seq_len: int = 1024
    limit_tokens: int | None = None  # use only the first N tokens of the corpus (quick runs)
    keep_partial: bool = False  # False: drop the last partial window (GPTQ/SparseGPT/Wanda convention)
    data_dir: str | None = None  # where named corpora live (default: ../shared/data, $EDGEPRUNE_DATA)

    def check_data(self) -> Path:
        """The corpus file, read once to prove it is usable (before any model is loaded)."""
        path = corpus_path(self.data, self.data_dir)
        read_text(path)
        return path

    def __post_init__(self):
        if not isinstance(self.seq_len, int) or self.seq_len < 2:
            raise EdgepruneError(f"seq_len must be an integer >= 2, got {self.seq_len!r}")
        if self.limit_tokens is not None and (not isinstance(self.limit_tokens, int) or self.limit_tokens < 2):
            raise EdgepruneError(f"limit_tokens must be an integer >= 2, got {self.limit_tokens!r}")


@dataclass
class PerplexityReport:
    task: str
    ppl: float
    nll: float  # mean negative log-likelihood per predicted token (nats)
    seq_len: int
    windows: int
    tokens: int  # predicted (scored) tokens: windows x (seq_len - 1) when all windows are full
    corpus_tokens: int  # tokens of the whole corpus
    dropped_tokens: int  # tokens in no window (the partial window, and past limit_tokens)
    last_window: str  # "dropped" | "kept" | "none" (no remainder)
    limit_tokens: int | None
    tokenizer: str
    dtype: str
    backend: str
    data: str
    data_sha256: str
    tokenize_s: float
    wall_s: float  # scoring time
    tokens_per_s: float
    cpu_s: float | None = None  # process CPU time while scoring (all threads): robust to a busy machine
    threads: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_perplexity(backend, config: PerplexityConfig, *, progress: bool = True) -> PerplexityReport:
    """Perplexity of ``backend`` on ``config.data`` (see the module docstring for the definition)."""
    path = corpus_path(config.data, config.data_dir)
    text = read_text(path)
    max_len = backend.max_length
    if max_len is not None and config.seq_len > max_len:
        raise EdgepruneError(
            f"a window of {config.seq_len} tokens is longer than the model's context ({max_len}): "
            f"pass --seq-len {max_len} or less"
        )
    t0 = time.perf_counter()
    ids = backend.tokenizer.encode(text)
    tokenize_s = time.perf_counter() - t0
    used = ids[: config.limit_tokens] if config.limit_tokens else ids
    spans = window_spans(len(used), config.seq_len, keep_partial=config.keep_partial)
    if not spans:
        raise EdgepruneError(
            f"{path.name} gives {len(used)} tokens, fewer than one window of {config.seq_len}: "
            f"lower --seq-len or raise --limit-tokens"
        )
    covered = spans[-1][1]
    remainder = len(used) - len(used) // config.seq_len * config.seq_len
    n_pred = predicted_tokens(spans)

    batches = plan_batches([e - s for s, e in spans], backend.batch_tokens)
    nll_sum, counted = 0.0, 0
    t0, c0 = time.perf_counter(), time.process_time()
    bar = _bar(n_pred, f"ppl {config.seq_len}", progress)
    with backend_session(backend):
        for batch in batches:
            lps = backend.token_logprobs([used[spans[i][0] : spans[i][1]] for i in batch])
            for lp in lps:
                nll_sum -= float(lp.sum())
                counted += len(lp)
            bar.update(sum(len(lp) for lp in lps))
    bar.close()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert counted == n_pred, (counted, n_pred)

    nll = nll_sum / counted
    name = str(config.data) if str(config.data) in CORPORA else Path(path).stem
    return PerplexityReport(
        task=name, ppl=math.exp(nll), nll=nll, seq_len=config.seq_len, windows=len(spans), tokens=counted,
        corpus_tokens=len(ids), dropped_tokens=len(ids) - covered,
        last_window="none" if remainder == 0 else ("kept" if covered == len(used) else "dropped"),
        limit_tokens=config.limit_tokens, tokenizer=backend.tokenizer.name, dtype=backend.dtype, backend=backend.name,
        data=str(path), data_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(), tokenize_s=tokenize_s,
        wall_s=wall, tokens_per_s=counted / wall if wall > 0 else math.inf, cpu_s=cpu, threads=getattr(backend, "threads", None),
    )  # fmt: skip


def backend_session(backend):
    """The backend's per-evaluation context (e.g. packed weights), or nothing for simple backends."""
    # not named ``session``: the onnxruntime backend's ``session`` is its InferenceSession
    session = getattr(backend, "eval_session", None)
    return session() if session is not None else contextlib.nullcontext()


def _bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="tok", unit_scale=True, disable=not enabled, leave=False, dynamic_ncols=True)
