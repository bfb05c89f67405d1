"""Backends: the one thing perplexity and zero-shot need from a model, for every artifact kind.

The protocol is two batched calls on token ids (no text):

- ``token_logprobs(seqs)`` -> for each sequence ``s`` an array of ``log p(s[i] | s[:i])`` for
  ``i = 1 .. len(s) - 1`` (the first token has no context and is not scored);
- ``branch_logprobs(groups)`` -> for each ``(prefix, branches)`` group and each branch ``b`` an array
  of ``log p(b[j] | prefix + b[:j])`` for ``j = 0 .. len(b) - 1``. The prefix is run once and its KV
  cache reused for every branch: the shared context of a multiple-choice question.

Each call is ONE batch; callers (perplexity.py, zeroshot.py) plan the batches and show progress.
Log-probabilities are float64 numpy arrays, computed from float32 logits with a log-sum-exp.

Backends: :class:`TorchBackend` (any transformers causal LM, the per-layer ``edgeprune_llama``
included), :class:`OnnxBackend` (an edgeprune ONNX decoder through onnxruntime) and
:class:`LlamaCppBackend` (a GGUF file through llama-cpp-python). onnxruntime and llama_cpp are
imported inside their backends only.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.eval.windows import length_buckets

Group = tuple[Sequence[int], Sequence[Sequence[int]]]


# -- tokenizers ------------------------------------------------------------------------------------


class Tokenizer(Protocol):
    name: str

    def encode(self, text: str) -> list[int]: ...  # no special tokens added

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    @property
    def prefix_token(self) -> int | None: ...  # BOS, else EOS: lm-eval's token for an empty context


class HFTokenizer:
    """A transformers tokenizer, used without special tokens (as lm-eval and the ppl literature do)."""

    def __init__(self, tokenizer, name: str | None = None):
        self.hf = tokenizer
        self.name = name or f"{Path(str(getattr(tokenizer, 'name_or_path', '') or 'tokenizer')).name} ({len(tokenizer)} tokens)"

    def encode(self, text: str) -> list[int]:
        # verbose=False: a whole corpus is longer than model_max_length on purpose (it is windowed).
        return list(self.hf(text, add_special_tokens=False, verbose=False)["input_ids"])

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        return [list(ids) for ids in self.hf(list(texts), add_special_tokens=False, verbose=False)["input_ids"]]

    @property
    def prefix_token(self) -> int | None:
        bos = getattr(self.hf, "bos_token_id", None)
        return bos if bos is not None else getattr(self.hf, "eos_token_id", None)


class LlamaCppTokenizer:
    """llama.cpp's own tokenizer of a GGUF (``tokenizer="llama.cpp"``)."""

    def __init__(self, llm, name: str):
        self.llm = llm
        self.name = name

    def encode(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    @property
    def prefix_token(self) -> int | None:
        bos = self.llm.token_bos()
        return bos if bos >= 0 else self.llm.token_eos()


def tokenizer_name(source: str, tok) -> str:
    return f"{source} ({type(tok).__name__}, {len(tok)} tokens)"


def as_tokenizer(spec):
    """A tokenizer object, or a model source to load one from -> a protocol tokenizer."""
    if spec == "llama.cpp":
        raise EdgepruneError("tokenizer='llama.cpp' works only with a .gguf model on the llama.cpp backend")
    if hasattr(spec, "encode_batch") and hasattr(spec, "name"):
        return spec
    if not isinstance(spec, (str, Path)):
        return HFTokenizer(spec)
    hf = load_tokenizer(str(spec))
    return HFTokenizer(hf, tokenizer_name(str(spec), hf))


def load_tokenizer(source: str):
    """Only the tokenizer of a model source: a built-in name, a directory, a .gguf file or a hub id."""
    from transformers import AutoTokenizer

    from edgeprune.models import builtin

    path = builtin.builtin_path(source) if builtin.is_builtin(source) else Path(source).expanduser()
    try:
        if path.suffix == ".gguf" and path.is_file():
            return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        return AutoTokenizer.from_pretrained(str(path) if path.exists() else source)
    except (OSError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise EdgepruneError(f"cannot load a tokenizer from {source!r} ({first}): pass a model directory, .gguf or built-in name") from None


# -- the protocol ----------------------------------------------------------------------------------


@runtime_checkable
class Backend(Protocol):
    name: str  # "torch" | "onnxruntime" | "llama.cpp"
    tokenizer: Tokenizer
    max_length: int | None  # the model's context window in tokens (None: unknown)
    dtype: str
    batch_tokens: int  # the token budget of one batch (rows x longest row)

    def token_logprobs(self, seqs: Sequence[Sequence[int]]) -> list[np.ndarray]: ...

    def branch_logprobs(self, groups: Sequence[Group]) -> list[list[np.ndarray]]: ...

    def describe(self) -> dict: ...


_LSE_ROWS = 128  # rows per log-sum-exp chunk: 128 x 49152 floats = 25 MB, stays in the L3 cache


def _target_logprobs(logits, targets) -> np.ndarray:
    """``log_softmax(logits)[i, targets[i]]`` as float64; logits (n, vocab), a torch tensor of any
    float dtype or a numpy array (used in place, not copied)."""
    import torch

    logits = torch.as_tensor(logits)
    tgt = torch.as_tensor(list(targets), dtype=torch.long)
    out = torch.empty(len(tgt), dtype=torch.float64)
    # In row chunks: the max/subtract/exp passes of log-sum-exp then run in cache, not in RAM.
    for start in range(0, len(tgt), _LSE_ROWS):
        rows = logits[start : start + _LSE_ROWS].float()
        picked = rows.gather(-1, tgt[start : start + _LSE_ROWS, None])[:, 0]
        out[start : start + _LSE_ROWS] = picked - torch.logsumexp(rows, dim=-1)
    return out.numpy()


def _pad(rows: Sequence[Sequence[int]], width: int):
    import torch

    out = torch.zeros(len(rows), width, dtype=torch.long)  # pad id 0: padded positions are masked/ignored
    for i, r in enumerate(rows):
        if len(r):
            out[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
    return out


class _PrefixCacheBackend:
    """Both protocol calls written once on top of a batched forward with an explicit KV cache.

    Subclasses provide ``_forward(ids, mask, pos, past, last, cache) -> (logits, present)``:
    ``ids``/``pos`` (batch, seq), ``mask`` (batch, past + seq) with 1 for real tokens, ``past`` None
    or a cache from an earlier call, ``last`` None (return logits for every position, (batch, seq,
    vocab)) or a per-row position (return (batch, vocab) at that position), ``cache`` whether to
    return the KV cache (the logits may be a view that the next call overwrites: use them first);
    and ``_select(past, rows)``, a NEW cache holding those rows of ``past`` in
    the given order (repeats allowed), ``past`` itself left unchanged.

    Sequences are right-padded. Padding after the real tokens never changes them (attention is
    causal); in the branch step the padded prefix positions are masked out of the cache.
    """

    name = "?"
    dtype = "float32"
    batch_tokens = 4096
    max_length: int | None = None

    def token_logprobs(self, seqs: Sequence[Sequence[int]]) -> list[np.ndarray]:
        import torch

        fed = [list(s[:-1]) for s in seqs]  # the last token is only a target
        width = max(len(f) for f in fed)
        if width == 0:
            return [np.zeros(0) for _ in seqs]
        lens = torch.as_tensor([len(f) for f in fed])
        ids = _pad(fed, width)  # (batch, seq)
        mask = (torch.arange(width)[None, :] < lens[:, None]).long()  # (batch, seq)
        pos = torch.arange(width)[None, :].expand(len(fed), width)
        logits, _ = self._forward(ids, mask, pos, None, None, False)  # (batch, seq, vocab)
        return [_target_logprobs(logits[b, : len(f)], s[1:]) for b, (f, s) in enumerate(zip(fed, seqs))]

    def branch_logprobs(self, groups: Sequence[Group]) -> list[list[np.ndarray]]:
        import torch

        prefixes = [list(p) for p, _ in groups]
        if any(len(p) == 0 for p in prefixes):
            raise ValueError("every prefix needs at least one token")
        plen = torch.as_tensor([len(p) for p in prefixes])
        width = int(plen.max())
        ids = _pad(prefixes, width)  # (groups, prefix)
        mask = (torch.arange(width)[None, :] < plen[:, None]).long()  # (groups, prefix)
        pos = torch.arange(width)[None, :].expand(len(prefixes), width)
        rows = [(g, list(b)) for g, (_, branches) in enumerate(groups) for b in branches]
        tails = [b[:-1] for _, b in rows]  # fed after the prefix; each branch's last token is a target only
        twidth = max((len(t) for t in tails), default=0)
        # One-token branches (BoolQ's " no"/" yes") need only the prefix's last logits: no cache.
        last_logits, past = self._forward(ids, mask, pos, None, plen - 1, twidth > 0)  # (groups, vocab)
        first = torch.log_softmax(last_logits.float(), dim=-1)  # predicts each branch's first token

        rest: dict[int, np.ndarray] = {}
        if twidth > 0:
            # Branches of one question differ in length (HellaSwag endings: 10 to 60 tokens): run
            # them in buckets of similar length, each with its rows of the prefix cache.
            for bucket in length_buckets([len(t) for t in tails]):
                bucket = [r for r in bucket if len(tails[r]) > 0]
                if not bucket:
                    continue
                bwidth = max(len(tails[r]) for r in bucket)
                sel = torch.as_tensor([rows[r][0] for r in bucket])
                tlen = torch.as_tensor([len(tails[r]) for r in bucket])
                tmask = (torch.arange(bwidth)[None, :] < tlen[:, None]).long()
                mask2 = torch.cat([mask[sel], tmask], dim=1)  # (bucket, prefix + tail)
                pos2 = plen[sel][:, None] + torch.arange(bwidth)[None, :]  # (bucket, tail)
                cache = self._select(past, sel)  # a new cache: the prefix cache serves every bucket
                logits, _ = self._forward(_pad([tails[r] for r in bucket], bwidth), mask2, pos2, cache, None, False)
                for k, r in enumerate(bucket):
                    b = rows[r][1]
                    rest[r] = _target_logprobs(logits[k, : len(b) - 1], b[1:])

        out: list[list[np.ndarray]] = [[] for _ in groups]
        for r, (g, b) in enumerate(rows):
            if not b:
                out[g].append(np.zeros(0))
                continue
            head = first[g, b[0]].double().numpy().reshape(1)
            out[g].append(np.concatenate([head, rest.get(r, np.zeros(0))]))
        return out

    def eval_session(self):
        """A context held around a whole evaluation (setup worth doing once, undone after)."""
        return contextlib.nullcontext()

    def describe(self) -> dict:
        return {"backend": self.name, "dtype": self.dtype, "tokenizer": self.tokenizer.name, "max_length": self.max_length}


# -- torch (transformers, edgeprune_llama) --------------------------------------------------------


class TorchBackend(_PrefixCacheBackend):
    """A transformers causal LM in eager PyTorch on CPU, under ``torch.inference_mode()``."""

    name = "torch"

    def __init__(self, model, tokenizer: Tokenizer, *, batch_tokens: int = 4096, onednn: bool = True):
        import torch

        from edgeprune.eval import onednn as _onednn

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_tokens = batch_tokens
        self.dtype = str(next(model.parameters()).dtype).replace("torch.", "")
        self.max_length = getattr(model.config, "max_position_embeddings", None)
        self.threads = torch.get_num_threads()
        self.onednn = onednn and _onednn.available()

    def eval_session(self):
        """float32 Linears through oneDNN with pre-packed weights for the evaluation (see onednn.py)."""
        from edgeprune.eval.onednn import onednn_linears

        return onednn_linears(self.model, enabled=self.onednn)

    def _forward(self, ids, mask, pos, past, last, cache):
        import torch

        kwargs: dict[str, Any] = {"input_ids": ids, "position_ids": pos, "use_cache": cache or past is not None}
        # With right padding and no cache a causal mask is all that is needed: leaving the padding
        # mask out keeps SDPA on its fast is_causal path.
        if past is not None:
            kwargs["cache"] = past
            kwargs["attention_mask"] = mask
        if last is not None:
            # Only the rows' last positions are needed: skip the lm_head everywhere else.
            keep, inverse = torch.unique(last, return_inverse=True)
            kwargs["logits_to_keep"] = keep
        with torch.inference_mode():
            out = self.model(**kwargs)
        logits = out.logits
        if last is not None:
            logits = logits[torch.arange(len(last)), inverse]  # (batch, vocab)
        return logits, out.cache

    def _select(self, past, rows):
        # A new cache object over new tensors (the forward appends to it; `past` must stay as is).
        # Per layer, not DynamicCache.batch_select_indices: that works in place and skips layers
        # with no elements, and a per-layer model's attention-free layers hold (batch, 0, seq, d).
        new = copy.copy(past)
        new.layers = []
        for layer in past.layers:
            layer = copy.copy(layer)
            if getattr(layer, "is_initialized", True):
                layer.keys, layer.values = layer.keys[rows], layer.values[rows]
            new.layers.append(layer)
        return new

    def describe(self) -> dict:
        d = super().describe()
        d.update(model_type=getattr(self.model.config, "model_type", "?"), threads=self.threads,
                 linear_kernels="onednn-prepacked" if self.onednn else "aten")  # fmt: skip
        return d


# -- onnxruntime ----------------------------------------------------------------------------------


_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class OnnxBackend(_PrefixCacheBackend):
    """An ONNX decoder with explicit KV inputs, as edgeprune exports it.

    Inputs ``input_ids``, ``attention_mask``, ``position_ids`` (int64) and, per layer ``i``,
    ``past_key_values.{i}.key/value`` of shape (batch, kv_heads_i, past, head_dim) (past = 0 for a
    fresh sequence); outputs ``logits`` and ``present.{i}.key/value``.

    A batch is one ``run_with_iobinding``: the inputs are read where they are, the logits are
    written into a buffer kept across calls (``session.run`` would copy every output into new
    arrays, ~200 MB of logits per 1024-token window), and the KV cache is fetched only when a
    branch step needs it.
    """

    name = "onnxruntime"

    def __init__(self, session, tokenizer: Tokenizer, *, max_length: int | None = None, batch_tokens: int = 4096):
        self.session = session
        self.tokenizer = tokenizer
        self.batch_tokens = batch_tokens
        self.max_length = max_length
        inputs = {i.name: i for i in session.get_inputs()}
        self._input_names = set(inputs)
        for required in ("input_ids", "attention_mask"):
            if required not in inputs:
                raise EdgepruneError(f"the ONNX graph has no {required!r} input: export it with edgeprune export --format onnx")
        self._kv: list[tuple[int, int, Any]] = []  # (kv_heads, head_dim, numpy dtype) per layer
        i = 0
        while f"past_key_values.{i}.key" in inputs:
            arg = inputs[f"past_key_values.{i}.key"]
            heads, head_dim = arg.shape[1], arg.shape[3]
            if not isinstance(heads, int) or not isinstance(head_dim, int):
                raise EdgepruneError(f"the ONNX input past_key_values.{i}.key has symbolic heads/head_dim {arg.shape}: re-export with fixed sizes")
            self._kv.append((heads, head_dim, _ORT_DTYPES.get(arg.type, np.float32)))
            i += 1
        outputs = {o.name: o for o in session.get_outputs()}
        if "logits" not in outputs:
            raise EdgepruneError("the ONNX graph has no 'logits' output: export it with edgeprune export --format onnx")
        vocab = outputs["logits"].shape[-1]
        if not isinstance(vocab, int):
            raise EdgepruneError(f"the ONNX output logits has a symbolic vocabulary size {outputs['logits'].shape}: re-export with fixed sizes")
        self._logits = (vocab, _ORT_DTYPES.get(outputs["logits"].type, np.float32))
        self._buffer: np.ndarray | None = None  # the logits of the last forward (see _logits_buffer)
        self.dtype = np.dtype(self._kv[0][2]).name if self._kv else "float32"

    @classmethod
    def from_file(cls, path: str | Path, tokenizer: Tokenizer, *, threads: int | None = None, batch_tokens: int = 4096):
        import onnxruntime as ort

        path = Path(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        try:
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise EdgepruneError(f"onnxruntime cannot open {path}: {first}; re-export the model") from None
        backend = cls(session, tokenizer, max_length=_onnx_context_length(path), batch_tokens=batch_tokens)
        backend.threads = opts.intra_op_num_threads
        return backend

    def _forward(self, ids, mask, pos, past, last, cache):
        import torch

        batch, seq = ids.shape
        if past is None:
            past = [(np.zeros((batch, h, 0, d), dt), np.zeros((batch, h, 0, d), dt)) for h, d, dt in self._kv]
        feeds = {"input_ids": ids.numpy().astype(np.int64), "attention_mask": mask.numpy().astype(np.int64)}
        if "position_ids" in self._input_names:
            feeds["position_ids"] = pos.numpy().astype(np.int64)
        for i, (k, v) in enumerate(past):
            feeds[f"past_key_values.{i}.key"] = k
            feeds[f"past_key_values.{i}.value"] = v
        # IO binding: onnxruntime reads the inputs and writes the logits in place (session.run copies
        # every output into a new array), and the KV cache comes back only when it is asked for.
        feeds = {name: np.ascontiguousarray(value) for name, value in feeds.items()}  # alive until the run ends
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        logits = self._logits_buffer(batch, seq)  # (batch, seq, vocab)
        binding.bind_output("logits", "cpu", 0, logits.dtype, logits.shape, logits.ctypes.data)
        presents = [f"present.{i}.{t}" for i in range(len(self._kv)) for t in ("key", "value")] if cache else []
        for name in presents:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        present = None
        if cache:
            got = [value.numpy() for value in binding.get_outputs()[1:]]  # in binding order, after the logits
            present = list(zip(got[0::2], got[1::2]))
        out = torch.from_numpy(logits)
        if last is not None:
            out = out[torch.arange(batch), last]  # (batch, vocab)
        return out, present

    def _logits_buffer(self, batch: int, seq: int) -> np.ndarray:
        """A (batch, seq, vocab) view of one buffer kept across calls, grown to the largest batch:
        onnxruntime writes into memory already mapped, and the previous call's logits are dead."""
        vocab, dt = self._logits
        need = batch * seq * vocab
        if self._buffer is None or self._buffer.size < need:
            self._buffer = np.empty(need, dt)
        return self._buffer[:need].reshape(batch, seq, vocab)

    def close(self) -> None:
        self._buffer = None

    def _select(self, past, rows):
        idx = rows.numpy()
        return [(k[idx], v[idx]) for k, v in past]

    def describe(self) -> dict:
        d = super().describe()
        d.update(layers=len(self._kv), threads=getattr(self, "threads", None))
        return d


def _onnx_context_length(path: Path) -> int | None:
    """The context window recorded beside an ONNX file (genai_config.json or config.json), if any."""
    folder = path.parent
    try:
        genai = folder / "genai_config.json"
        if genai.is_file():
            return int(json.loads(genai.read_text())["model"]["context_length"])
        cfg = folder / "config.json"
        if cfg.is_file():
            return int(json.loads(cfg.read_text())["max_position_embeddings"])
    except (KeyError, ValueError, TypeError, json.JSONDecodeError):
        pass
    return None


def onnx_backend(path: Path, tokenizer, *, threads: int | None, batch_tokens: int) -> OnnxBackend:
    """The ONNX row's ``evaluate`` (``edgeprune.export.registry``): onnxruntime over ``path``.
    Default tokenizer: the one saved beside the graph."""
    from edgeprune.export.onnx.names import MODEL_FILE

    if not path.is_file():
        raise EdgepruneError(f"no ONNX model at {path}: pass a .onnx file or a directory holding {MODEL_FILE}")
    if tokenizer is None:
        if not any((path.parent / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            raise EdgepruneError(f"no tokenizer beside {path}: pass tokenizer= (--tokenizer) naming the source model")
        tokenizer = str(path.parent)
    return OnnxBackend.from_file(path, as_tokenizer(tokenizer), threads=threads, batch_tokens=batch_tokens)


# -- llama.cpp ------------------------------------------------------------------------------------


class LlamaCppBackend:
    """A GGUF file through llama-cpp-python's low-level API, one sequence per ``llama_decode``.

    A sequence is ONE ``llama_decode`` call (``n_batch`` is the whole context), which llama.cpp runs
    as micro-batches of :data:`_UBATCH` tokens, and its logits are read where llama.cpp wrote them,
    as one (n, vocab) numpy view of ``llama_get_logits``: no copy into llama-cpp-python's ``scores``
    buffer and out again, and only the rows that are scored are asked for (all of a window's, the
    last one of a multiple-choice prefix). The log-softmax runs over that view in row chunks
    (:func:`_target_logprobs`). The context is (re)created with the smallest ``n_ctx`` that fits
    what is asked. Branches drop llama.cpp's KV cache back to the end of the prefix instead of
    re-running it.

    Flash attention stays off (llama-cpp-python's default) so that scores do not move: on this
    host it scores SmolLM2-135M q8_0 ~1.3x faster but changes its WikiText-2 perplexity by 2.5e-4
    relative (4 x 1024 tokens).
    """

    name = "llama.cpp"

    def __init__(self, path: str | Path, tokenizer: Tokenizer | str | None = None, *, n_ctx: int = 2048,
                 threads: int | None = None, batch_tokens: int = 4096):  # fmt: skip
        import atexit

        import llama_cpp  # noqa: F401  (fail early, with the import error, if it is missing)

        self.path = Path(path)
        self.threads = threads or os.cpu_count() or 1
        self.batch_tokens = batch_tokens
        self._n_ctx = 0
        self._llm = None
        self._batch: _TokenBatch | None = None
        self._ensure(n_ctx)
        self.max_length = int(self._llm._model.n_ctx_train())
        self.dtype = f"gguf:{_gguf_file_type(self._llm)}"
        if tokenizer is None or tokenizer == "llama.cpp":
            tokenizer = LlamaCppTokenizer(self._llm, name=f"llama.cpp ({self.path.name}, {self._llm.n_vocab()} tokens)")
        self.tokenizer = tokenizer
        # Free llama.cpp's context before interpreter teardown (its finaliser fails late in shutdown).
        atexit.register(self.close)

    def close(self) -> None:
        if self._batch is not None:
            self._batch.free()
            self._batch = None
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    def _ensure(self, n_tokens: int) -> None:
        if self._llm is not None and n_tokens <= self._n_ctx:
            return
        from edgeprune.runtime.runner import new_llama

        n_ctx = max(n_tokens, 512)
        self.close()
        try:
            llm = new_llama(model_path=str(self.path), logits_all=False, n_ctx=n_ctx, n_batch=n_ctx,
                            n_ubatch=min(n_ctx, _UBATCH), n_threads=self.threads, n_threads_batch=self.threads,
                            verbose=False)  # fmt: skip
        except (ValueError, RuntimeError) as exc:
            raise EdgepruneError(f"llama.cpp cannot load {self.path}: {str(exc)[:160]}; re-export the GGUF") from None
        self._llm, self._n_ctx, self._n_vocab = llm, n_ctx, llm.n_vocab()
        self._batch = _TokenBatch(n_ctx)
        if hasattr(self, "tokenizer") and isinstance(self.tokenizer, LlamaCppTokenizer):
            self.tokenizer.llm = llm

    def _logits(self, tokens: Sequence[int], start: int, *, last_only: bool = False) -> np.ndarray:
        """Decode ``tokens`` after the first ``start`` cached ones in one ``llama_decode``; the logits
        of every token (n, vocab), or of the last one only (1, vocab). A view of llama.cpp's output
        buffer: valid until the next decode."""
        import llama_cpp

        ctx = self._llm.ctx
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx), 0, start, -1)  # the cache past `start` goes
        first = len(tokens) - 1 if last_only else 0  # the first token whose logits are returned
        self._batch.fill(tokens, start, first)
        code = llama_cpp.llama_decode(ctx, self._batch.raw)
        if code != 0:
            raise EdgepruneError(f"llama_decode failed (code {code}) on {len(tokens)} tokens after {start} in {self.path.name}")
        rows = len(tokens) - first
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx), shape=(rows, self._n_vocab))  # (rows, vocab)

    def token_logprobs(self, seqs: Sequence[Sequence[int]]) -> list[np.ndarray]:
        self._ensure(max(len(s) for s in seqs))
        out = []
        for s in seqs:
            if len(s) < 2:
                out.append(np.zeros(0))
                continue
            out.append(_target_logprobs(self._logits(s[:-1], 0), s[1:]))  # the last token is only a target
        return out

    def branch_logprobs(self, groups: Sequence[Group]) -> list[list[np.ndarray]]:
        import torch

        self._ensure(max(len(p) + max((len(b) for b in bs), default=0) for p, bs in groups))
        out = []
        for prefix, branches in groups:
            if len(prefix) == 0:
                raise ValueError("every prefix needs at least one token")
            first = torch.log_softmax(torch.from_numpy(self._logits(prefix, 0, last_only=True)[0]), dim=-1)  # a new tensor
            res = []
            for b in branches:
                if not b:
                    res.append(np.zeros(0))
                    continue
                head = np.array([float(first[b[0]])])
                rest = _target_logprobs(self._logits(b[:-1], len(prefix)), b[1:]) if len(b) > 1 else np.zeros(0)
                res.append(np.concatenate([head, rest]))
            out.append(res)
        return out

    def eval_session(self):
        return contextlib.nullcontext()

    def describe(self) -> dict:
        return {"backend": self.name, "dtype": self.dtype, "tokenizer": self.tokenizer.name,
                "max_length": self.max_length, "threads": self.threads, "path": str(self.path)}  # fmt: skip


# Tokens per llama.cpp graph evaluation (n_ubatch). Without flash attention a micro-batch attends
# over every KV cell filled so far (in steps of 256), masked or not: 256-token micro-batches skip
# most of the masked half of a window's causal attention that one 1024-token batch computes. On
# this project's 2-core host (SmolLM2-135M q8_0, 1024-token windows): 256 -> ~435 tok/s, 512 ->
# ~405, 1024 -> ~350, 128 -> ~425, the same scores bit for bit. Each micro-batch is one more pass
# through the graph's thread barriers, which costs more when other jobs share the cores.
_UBATCH = 256


class _TokenBatch:
    """One ``llama_batch`` of up to ``capacity`` tokens of sequence 0, filled through numpy views
    of its arrays (no per-token Python loop per call)."""

    def __init__(self, capacity: int):
        import llama_cpp

        self.raw = llama_cpp.llama_batch_init(capacity, 0, 1)
        self.token = np.ctypeslib.as_array(self.raw.token, shape=(capacity,))
        self.pos = np.ctypeslib.as_array(self.raw.pos, shape=(capacity,))
        self.logits = np.ctypeslib.as_array(self.raw.logits, shape=(capacity,))  # int8 flags: return this token's logits
        np.ctypeslib.as_array(self.raw.n_seq_id, shape=(capacity,))[:] = 1
        for i in range(capacity):  # once: every token belongs to sequence 0
            self.raw.seq_id[i][0] = 0

    def fill(self, tokens: Sequence[int], start: int, first_logits: int) -> None:
        """``tokens`` at positions ``start``, ``start + 1``, ...; logits from index ``first_logits`` on."""
        n = len(tokens)
        self.token[:n] = tokens
        self.pos[:n] = np.arange(start, start + n)
        self.logits[:n] = 0
        self.logits[first_logits:n] = 1
        self.raw.n_tokens = n

    def free(self) -> None:
        import llama_cpp

        llama_cpp.llama_batch_free(self.raw)


_GGUF_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
                    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}  # fmt: skip


def _gguf_file_type(llm) -> str:
    ft = (getattr(llm, "metadata", None) or {}).get("general.file_type")
    try:
        return _GGUF_FILE_TYPES.get(int(ft), f"type{ft}")
    except (TypeError, ValueError):
        return "unknown"


def gguf_backend(path: Path, tokenizer, *, threads: int | None, batch_tokens: int) -> LlamaCppBackend:
    """The GGUF row's ``evaluate`` (``edgeprune.export.registry``): llama.cpp over ``path``. Default
    tokenizer: the Hugging Face one transformers builds from the GGUF's metadata (what the torch
    backend uses for it); ``"llama.cpp"``: llama.cpp's own."""
    if not path.is_file():
        raise EdgepruneError(f"no such GGUF file {path}: pass an existing .gguf file")
    tok = "llama.cpp" if tokenizer == "llama.cpp" else as_tokenizer(tokenizer if tokenizer is not None else str(path))
    return LlamaCppBackend(path, tok, threads=threads, batch_tokens=batch_tokens)
