"""The backend protocol on tiny real models: torch (Llama and per-layer), ONNX-shaped I/O, and the
prefix-cache path checked against a plain full-sequence forward (the reference)."""

from __future__ import annotations

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
        names = ["logits"] + [f"present.{i}.{t}" for i in range(self.n_layers) for t in ("key", "value")]
        return [self.Arg(n, []) for n in names]

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
