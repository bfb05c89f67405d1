"""The backend protocol on tiny real models: torch (Llama and per-layer), ONNX-shaped I/O, and the
prefix-cache path checked against a plain full-sequence forward (the reference)."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgeprune.eval.backends import HFTokenizer, OnnxBackend, TorchBackend
from edgeprune.eval.tasks import MCDoc
from edgeprune.eval.zeroshot import score_docs, tokenize_docs
from tests.tiny import tiny_llama, tiny_per_layer, tiny_tokenizer

SEQS = [[5, 9, 200, 17, 3, 44, 8], [70, 71], [1, 2, 3, 4]]
GROUPS = [([5, 9, 200], [[17, 3], [44], [8, 8, 8, 1]]), ([70], [[71, 72], [73]])]


def reference_logprobs(model, seq):
    """log p(seq[i] | seq[:i]) from one unpadded full forward, no cache."""
    with torch.no_grad():
        logits = model(torch.tensor([seq])).logits[0].float()
    return torch.log_softmax(logits, -1)[torch.arange(len(seq) - 1), torch.tensor(seq[1:])].double().numpy()


@pytest.fixture(scope="module", params=["llama", "per_layer"])
def model(request):
    return tiny_llama() if request.param == "llama" else tiny_per_layer()


@pytest.fixture(scope="module")
def tok():
    return HFTokenizer(tiny_tokenizer(), "tiny-bytes")


def test_token_logprobs_match_unpadded_forwards(model, tok):
    backend = TorchBackend(model, tok)
    for seq, lp in zip(SEQS, backend.token_logprobs(SEQS)):  # one right-padded batch
        np.testing.assert_allclose(lp, reference_logprobs(model, seq), atol=1e-5)


def test_branch_logprobs_reuse_the_prefix_cache_exactly(model, tok):
    backend = TorchBackend(model, tok)
    out = backend.branch_logprobs(GROUPS)
    for (prefix, branches), got in zip(GROUPS, out):
        for b, lp in zip(branches, got):
            full = reference_logprobs(model, prefix + b)
            np.testing.assert_allclose(lp, full[len(prefix) - 1 :], atol=1e-5)
    # one-token branches only: no second forward, same numbers
    only_first = backend.branch_logprobs([([5, 9, 200], [[17], [44]])])[0]
    np.testing.assert_allclose([x[0] for x in only_first], [out[0][0][0], out[0][1][0]], atol=1e-6)


class FakeOrtSession:
    """onnxruntime's session interface over a torch model, with edgeprune's ONNX I/O contract:
    input_ids / attention_mask / position_ids and per-layer past_key_values.{i}.key/value in,
    logits and present.{i}.key/value out (kv heads may differ per layer, 0 included)."""

    class Arg:
        def __init__(self, name, shape, type_="tensor(float)"):
            self.name, self.shape, self.type = name, shape, type_

    def __init__(self, model):
        self.model = model
        cfg = model.config
        kv = cfg.kv_heads_per_layer() if hasattr(cfg, "kv_heads_per_layer") else [cfg.num_key_value_heads] * cfg.num_hidden_layers
        d = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.n_layers = len(kv)
        self.inputs = [self.Arg(n, ["batch_size", "sequence_length"], "tensor(int64)") for n in ("input_ids", "attention_mask", "position_ids")]
        for i, h in enumerate(kv):
            self.inputs += [self.Arg(f"past_key_values.{i}.{t}", ["batch_size", h, "past_sequence_length", d]) for t in ("key", "value")]
        self.feeds_seen = []

    def get_inputs(self):
        return self.inputs

    def get_outputs(self):
        names = [f"present.{i}.{t}" for i in range(self.n_layers) for t in ("key", "value")]
        return [self.Arg("logits", ["batch_size", "sequence_length", self.model.config.vocab_size])] + [self.Arg(n, []) for n in names]

    def io_binding(self):
        return FakeIOBinding()

    def run_with_iobinding(self, binding):
        outs = dict(zip([o.name for o in self.get_outputs()], self.run(None, binding.inputs)))
        binding.values = []
        for name, buffer in binding.outputs:
            if buffer is not None:  # bound to the caller's memory: written in place, as onnxruntime does
                buffer[...] = outs[name]
            binding.values.append(FakeOrtValue(outs[name] if buffer is None else buffer))

    def run(self, names, feeds):
        from transformers import DynamicCache

        assert names is None
        self.feeds_seen.append({k: v.shape for k, v in feeds.items()})
        assert all(feeds[k].dtype == np.int64 for k in ("input_ids", "attention_mask", "position_ids"))
        cache = DynamicCache()
        for i in range(self.n_layers):
            cache.update(torch.from_numpy(feeds[f"past_key_values.{i}.key"]), torch.from_numpy(feeds[f"past_key_values.{i}.value"]), i)
        with torch.no_grad():
            out = self.model(input_ids=torch.from_numpy(feeds["input_ids"]), attention_mask=torch.from_numpy(feeds["attention_mask"]),
                             position_ids=torch.from_numpy(feeds["position_ids"]), cache=cache, use_cache=True)  # fmt: skip
        present = [t.numpy() for layer in out.cache.layers for t in (layer.keys, layer.values)]
        return [out.logits.numpy(), *present]


class FakeOrtValue:
    def __init__(self, array):
        self.array = array

    def numpy(self):
        return self.array.copy()


class FakeIOBinding:
    """onnxruntime's IOBinding: CPU inputs; outputs into a caller's buffer (a pointer) or allocated."""

    def __init__(self):
        self.inputs, self.outputs, self.values = {}, [], []

    def bind_cpu_input(self, name, array):
        self.inputs[name] = array

    def bind_output(self, name, device_type="cpu", device_id=0, element_type=None, shape=None, buffer_ptr=None):
        buffer = None
        if buffer_ptr is not None:
            dtype = np.dtype(element_type)
            raw = (ctypes.c_char * (int(np.prod(shape)) * dtype.itemsize)).from_address(buffer_ptr)
            buffer = np.frombuffer(raw, dtype=dtype).reshape(shape)
        self.outputs.append((name, buffer))

    def get_outputs(self):
        return self.values


def test_onnx_backend_speaks_the_exported_graphs_io(tok):
    model = tiny_per_layer()  # layer 1 has 0 KV heads
    session = FakeOrtSession(model)
    onnx = OnnxBackend(session, tok, max_length=256)
    ref = TorchBackend(model, tok)
    for a, b in zip(onnx.token_logprobs(SEQS), ref.token_logprobs(SEQS)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    first_call = session.feeds_seen[0]
    assert first_call["past_key_values.1.key"] == (3, 0, 0, 16) and first_call["past_key_values.0.key"] == (3, 2, 0, 16)
    for ga, gb in zip(onnx.branch_logprobs(GROUPS), ref.branch_logprobs(GROUPS)):
        for a, b in zip(ga, gb):
            np.testing.assert_allclose(a, b, atol=1e-5)
    branch_call = session.feeds_seen[-1]
    # the 3 branches longer than one token (one-token branches need only the prefix's logits)
    assert branch_call["past_key_values.0.key"] == (3, 2, 3, 16)  # prefix cache rows, padded to 3
    assert branch_call["attention_mask"] == (3, 3 + 3)  # past + longest branch tail
    assert onnx.describe()["layers"] == 4


def test_shared_context_scores_equal_separate_requests(tok):
    backend = TorchBackend(tiny_llama(), tok, batch_tokens=64)
    docs = [
        MCDoc((("Q: x?\nA:", " yes"), ("Q: x?\nA:", " no way")), 0, (3, 6)),
        MCDoc((("The cat sat on the mat so it", " slept."), ("The cat sat on the mat so the dog", " slept.")), 1, (29, 33)),
        MCDoc((("Hi", " a"), ("Hi", " b"), ("Hi", " c")), 2, (1, 1, 1)),
    ]
    pairs = tokenize_docs(backend.tokenizer, docs, backend.max_length)
    shared, fed_shared = score_docs(backend, pairs, share=True, progress=False)
    flat, fed_flat = score_docs(backend, pairs, share=False, progress=False)
    np.testing.assert_allclose(np.concatenate(shared), np.concatenate(flat), atol=1e-4)
    assert fed_shared < fed_flat
    # and both equal the reference: sum of the continuation tokens' log-probs over ctx + cont
    model = backend.model
    for doc_pairs, lls in zip(pairs, shared):
        for (c, x), ll in zip(doc_pairs, lls):
            assert ll == pytest.approx(reference_logprobs(model, c + x)[-len(x):].sum(), abs=1e-4)


def test_eval_modules_import_no_heavy_backend():
    code = ("import sys, json, edgeprune.eval.evaluator, edgeprune.cli.eval_cmd, edgeprune.eval;"
            "print(json.dumps([m for m in ('torch', 'transformers', 'onnxruntime', 'llama_cpp') if m in sys.modules]))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_onednn_linears_compute_the_same_and_restore_the_model(model, tok):
    from torch import nn

    from edgeprune.eval.onednn import available, onednn_linears

    if not available():
        pytest.skip("oneDNN is not available in this torch build")
    backend = TorchBackend(model, tok)
    before = backend.token_logprobs(SEQS)
    with backend.eval_session() as n_packed:
        assert n_packed == sum(1 for m in model.modules() if type(m) is nn.Linear)
        inside = backend.token_logprobs(SEQS)
        inside_branches = backend.branch_logprobs(GROUPS)
    for a, b in zip(before, inside):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(inside_branches[0][0], backend.branch_logprobs(GROUPS)[0][0], atol=1e-5)
    assert not any("forward" in vars(m) for m in model.modules())  # every Linear is itself again
    with onednn_linears(model, enabled=False) as n_packed:
        assert n_packed == 0


def test_perplexity_runs_on_the_onnx_backend_like_on_torch(tok, tmp_path):
    # the ORT backend's ``session`` attribute is its InferenceSession: the evaluation loop must not
    # mistake it for a per-evaluation context (a build's evaluate-after-ONNX-export step did)
    from edgeprune.eval.perplexity import PerplexityConfig, evaluate_perplexity

    corpus = tmp_path / "c.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 12)
    model = tiny_per_layer()
    cfg = PerplexityConfig(data=str(corpus), seq_len=64)
    onnx = evaluate_perplexity(OnnxBackend(FakeOrtSession(model), tok, max_length=256), cfg, progress=False)
    ref = evaluate_perplexity(TorchBackend(model, tok), cfg, progress=False)
    assert onnx.windows == ref.windows > 1 and onnx.ppl == pytest.approx(ref.ppl, rel=1e-4)


# -- the runtimes' own scoring paths on tiny real artifacts (issue 21 item 6) ----------------------

LONG = [int(t) for t in np.random.default_rng(3).integers(3, 256, 60)]  # one 60-token window


def log_softmax_pick(logits, seq) -> np.ndarray:
    """The straightforward reference: float64 log-softmax row by row, the next token picked."""
    x = np.asarray(logits, dtype=np.float64)
    lse = x.max(-1) + np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1))
    return x[np.arange(len(seq) - 1), seq[1:]] - lse


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    from edgeprune.export.gguf import export_gguf

    model = tiny_llama()
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    export_gguf(model, None, path, qtype="f32", progress=False)
    return model, path


def test_llama_cpp_batched_scoring_equals_a_token_by_token_reference(tiny_gguf, tok):
    from edgeprune.eval.backends import LlamaCppBackend
    from edgeprune.runtime.runner import new_llama

    model, path = tiny_gguf
    seqs = [LONG, *SEQS]
    backend = LlamaCppBackend(path, tok, n_ctx=64, threads=1)
    try:
        got = backend.token_logprobs(seqs)
        branches = backend.branch_logprobs(GROUPS)
    finally:
        backend.close()
    # Reference: llama-cpp-python's high-level eval in 8-token micro-batches, every logit kept.
    llm = new_llama(model_path=str(path), logits_all=True, n_ctx=64, n_batch=8, n_threads=1, n_threads_batch=1, verbose=False)
    try:
        for seq, lp in zip(seqs, got):
            llm.reset()
            llm.eval(seq[:-1])
            np.testing.assert_allclose(lp, log_softmax_pick(llm.scores[: len(seq) - 1], seq), atol=1e-5)
        for (prefix, bs), res in zip(GROUPS, branches):
            for b, lp in zip(bs, res):
                full = prefix + b
                llm.reset()
                llm.eval(full[:-1])
                np.testing.assert_allclose(lp, log_softmax_pick(llm.scores[: len(full) - 1], full)[len(prefix) - 1 :], atol=1e-5)
    finally:
        llm.close()
    # and the same model in torch (llama.cpp keeps K and V in float16: close, not equal)
    np.testing.assert_allclose(got[0], reference_logprobs(model, LONG), atol=2e-2)


def test_llama_cpp_grows_its_context_for_a_longer_window(tiny_gguf, tok):
    from edgeprune.eval.backends import LlamaCppBackend

    _, path = tiny_gguf
    backend = LlamaCppBackend(path, tok, n_ctx=16, threads=1)
    try:
        small = backend._n_ctx
        seq = (LONG * 10)[:600]  # past the first context (512): a new one, one batch again
        (lp,) = backend.token_logprobs([seq])
        assert backend._n_ctx >= 600 > small and lp.shape == (599,) and np.isfinite(lp).all()
        np.testing.assert_allclose(backend.token_logprobs([LONG])[0][:20], backend.token_logprobs([LONG[:21]])[0], atol=1e-5)
    finally:
        backend.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_io_binding_scoring_equals_a_plain_session_run(tmp_path, tok):
    from edgeprune.eval.backends import OnnxBackend
    from edgeprune.export.onnx import export_onnx

    model = tiny_per_layer()  # per-layer widths, a layer with 0 KV heads included
    report = export_onnx(model, tmp_path / "onnx", exporter="torchscript", threads=1)
    backend = OnnxBackend.from_file(report.path, tok, threads=1)
    seqs = [LONG, *SEQS]
    got = backend.token_logprobs(seqs)  # one right-padded batch through IO binding
    session = backend.session
    for seq, lp in zip(seqs, got):  # reference: one unpadded session.run per sequence
        fed = np.array([seq[:-1]], dtype=np.int64)
        feeds = {"input_ids": fed, "attention_mask": np.ones_like(fed), "position_ids": np.arange(fed.shape[1])[None]}
        for i, (h, d, dt) in enumerate(backend._kv):
            feeds[f"past_key_values.{i}.key"] = feeds[f"past_key_values.{i}.value"] = np.zeros((1, h, 0, d), dt)
        logits = session.run(["logits"], feeds)[0][0]
        np.testing.assert_allclose(lp, log_softmax_pick(logits, seq), atol=1e-5)
        np.testing.assert_allclose(lp, reference_logprobs(model, seq), atol=1e-4)
    # the KV-cache path (prefix once, branches after it) through IO binding too
    for (prefix, bs), res in zip(GROUPS, backend.branch_logprobs(GROUPS)):
        for b, lp in zip(bs, res):
            np.testing.assert_allclose(lp, reference_logprobs(model, prefix + b)[len(prefix) - 1 :], atol=1e-4)
