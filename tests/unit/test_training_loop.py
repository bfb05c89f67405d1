"""The shared training plumbing (compress/training.py): one distillation loss for both of its forms,
the autocast table, the distributed helpers outside torchrun, one optimizer step, and the three
loops built on it pinned to the numbers they gave before they shared it."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from edgeprune.compress import training as tr
from edgeprune.data.calib import TokenWindows
from tests.tiny import tiny_llama
from tests.unit.sparse_helpers import one_thread  # noqa: F401  (autouse fixture)


def _logits(seed=0, batch=3, seq=9, vocab=50):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(batch, seq, vocab, generator=g), torch.randn(batch, seq, vocab, generator=g)
    return s, t, torch.randint(0, vocab, (batch, seq), generator=g)


def _ids(n=8, seq=16, seed=3):
    return torch.randint(0, 256, (n, seq), generator=torch.Generator().manual_seed(seed))


# -- the distillation loss ------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_kd_loss_is_distill_loss_with_weights_summing_to_one(alpha):
    s, t, labels = _logits()
    kd = tr.kd_loss(s, t, labels, alpha=alpha, temperature=2.0)
    general = tr.distill_loss(s, t, labels, ce_weight=1 - alpha, kd_weight=alpha, temperature=2.0)
    for a, b in zip(kd, general):
        assert torch.equal(a, b)
    ce = F.cross_entropy(s[:, :-1].reshape(-1, 50), labels[:, 1:].reshape(-1))
    assert torch.equal(kd[1], ce)
    if alpha == 0:
        assert torch.equal(kd[0], ce) and float(kd[2]) == 0.0


def test_distill_loss_is_weighted_ce_plus_t2_kl():
    s, t, labels = _logits(1)
    loss, ce, kl = tr.distill_loss(s, t, labels, ce_weight=0.33, kd_weight=0.67, temperature=2.0)
    ref_kl = F.kl_div(F.log_softmax(s[:, :-1] / 2, -1), F.log_softmax(t[:, :-1] / 2, -1), log_target=True,
                      reduction="none").sum(-1).mean()  # fmt: skip
    torch.testing.assert_close(kl, ref_kl)
    torch.testing.assert_close(loss, 0.33 * ce + 0.67 * 4 * ref_kl)
    # without a teacher: the weighted CE (AST's form); kd_loss's form keeps the plain CE whatever alpha
    alone, _, kl0 = tr.distill_loss(s, None, labels, ce_weight=0.3, kd_weight=0.7, temperature=2.0)
    torch.testing.assert_close(alone, 0.3 * ce)
    assert float(kl0) == 0.0
    torch.testing.assert_close(tr.kd_loss(s, None, labels, alpha=0.4, temperature=2.0)[0], ce)


def test_distill_loss_kl_skips_ignored_labels_and_is_the_plain_mean_otherwise():
    s, t, labels = _logits(2)
    log_s, log_t = F.log_softmax(s[:, :-1] / 2, -1), F.log_softmax(t[:, :-1] / 2, -1)
    kl_tok = (log_t.exp() * (log_t - log_s)).sum(-1)
    _, _, kl = tr.distill_loss(s, t, labels, ce_weight=1.0, kd_weight=1.0, temperature=2.0)
    assert torch.equal(kl, kl_tok.mean())  # AST's old form, to the bit
    labels[:, 1:5] = -100  # the first 4 predictions have no target
    _, ce, kl = tr.distill_loss(s, t, labels, ce_weight=1.0, kd_weight=1.0, temperature=2.0)
    torch.testing.assert_close(kl, kl_tok[:, 4:].mean())
    torch.testing.assert_close(ce, F.cross_entropy(s[:, 4:-1].reshape(-1, 50), labels[:, 5:].reshape(-1)))


# -- autocast, distributed helpers, switches ------------------------------------------------------------


def test_one_autocast_table_serves_every_step_config():
    from edgeprune.compress.reconstruct.local import Reconstruct
    from edgeprune.compress.sparse.ast import SparseTrain
    from edgeprune.compress.structured.recovery import TrainConfig
    from edgeprune.errors import EdgepruneError

    assert tr.TRAIN_DTYPES == {"float32": None, "bfloat16": torch.bfloat16}
    assert tr.resolve_autocast("float32") is None and tr.resolve_autocast("bfloat16") is torch.bfloat16
    assert tr.resolve_autocast("auto") in (None, torch.bfloat16)
    for name in tr.TRAIN_DTYPES:
        assert TrainConfig(train_dtype=name).train_dtype == SparseTrain(train_dtype=name).train_dtype == Reconstruct(autocast=name).autocast
    assert Reconstruct(autocast="auto").autocast == "auto"  # reconstruct's one extra choice
    for make in (lambda: TrainConfig(train_dtype="fp8"), lambda: SparseTrain(train_dtype="auto"), lambda: Reconstruct(autocast="fp16")):
        with pytest.raises(EdgepruneError):
            make()
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with tr.autocast(None):
        assert (a @ b).dtype == torch.float32
    with tr.autocast(torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16


def test_distributed_helpers_are_no_ops_in_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    model = torch.nn.Linear(2, 2)
    assert tr.world() == (0, 1) and tr.wrap_ddp(model) is model
    values = torch.tensor([1.5, 2.0], dtype=torch.float64)
    assert tr.mean_over_ranks(values) is values and values.tolist() == [1.5, 2.0]
    with tr.distributed_from_env() as (rank, world_size):
        assert (rank, world_size) == (0, 1)


def test_shuffled_order_is_seeded_permutations_back_to_back():
    order = tr.shuffled_order(5, 12, seed=7)
    assert len(order) == 15  # three whole permutations cover 12 draws
    for block in order.split(5):
        assert sorted(block.tolist()) == list(range(5))
    assert torch.equal(order, tr.shuffled_order(5, 12, seed=7)) and not torch.equal(order, tr.shuffled_order(5, 12, seed=8))


def test_gradient_checkpointing_switch_and_embedding_params():
    model = tiny_llama(num_hidden_layers=1)
    tr.set_gradient_checkpointing(model, True)
    assert model.model.gradient_checkpointing
    tr.set_gradient_checkpointing(model, False)
    assert not model.model.gradient_checkpointing
    emb = {id(p) for p in tr.embedding_params(model)}
    assert emb == {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}


# -- one optimizer step ---------------------------------------------------------------------------------


def _one_step(micro_batch, grad_clip=0.0, before_step=None):
    model = tiny_llama(num_hidden_layers=1).train()
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.1)
    sums = tr.lm_step(model, opt, params, _ids(4), lambda lg, tl, ids: tr.kd_loss(lg, tl, ids, alpha=0.0, temperature=1.0),
                      micro_batch=micro_batch, grad_clip=grad_clip, before_step=before_step)  # fmt: skip
    return model, sums


def test_lm_step_micro_batches_give_the_whole_batch_update():
    whole, s_whole = _one_step(None)
    micro, s_micro = _one_step(1)
    torch.testing.assert_close(s_micro, s_whole, rtol=1e-6, atol=1e-6)
    assert float(s_whole[0]) == float(s_whole[1]) and float(s_whole[2]) == 0.0  # CE only: loss == ce
    for a, b in zip(whole.parameters(), micro.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_lm_step_runs_before_step_on_clipped_gradients():
    norms = []

    def before():  # AST's SR-STE decay sits here: after clipping, before the step
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    model = tiny_llama(num_hidden_layers=1).train()
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.1)
    tr.lm_step(model, opt, params, _ids(2), lambda lg, tl, ids: tr.kd_loss(lg, tl, ids, alpha=0.0, temperature=1.0),
               grad_clip=0.01, before_step=before)  # fmt: skip
    assert norms == [pytest.approx(0.01, rel=1e-4)]


# -- the three loops, pinned to the numbers of their own loops before they shared this one --------------


def _moved(before: dict, model) -> float:
    """Sum of |change| over the weights that are not zero afterwards (pruning's zeros are not training)."""
    sd = model.state_dict()
    return sum(float(((sd[k].double() - v.double()).abs() * (sd[k] != 0)).sum()) for k, v in before.items() if k in sd)


def test_recovery_training_two_steps_match_the_loop_before_the_move():
    from edgeprune.compress.structured.recovery import TrainConfig, train

    model, teacher = tiny_llama(seed=1, num_hidden_layers=2), tiny_llama(seed=2, num_hidden_layers=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(tokens=4 * 16 * 2, batch_size=4, lr=1e-3, kd_alpha=0.5, grad_clip=0.5, warmup=0.0)
    rep = train(model, _ids(), cfg, teacher=teacher, progress=False)
    assert [rep.first_loss, rep.last_loss] == pytest.approx([3.8373472690582275, 4.043239116668701], rel=1e-5)
    assert _moved(before, model) == pytest.approx(137.37812498237514, rel=1e-4)


def test_sparse_training_two_steps_match_the_loop_before_the_move():
    from edgeprune.compress.sparse.ast import SparseTrain, sparse_train

    model = tiny_llama(seed=1, num_hidden_layers=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = SparseTrain(tokens=4 * 16 * 2, batch_size=4, micro_batch=2, mask_every=1, lr=1e-3, decay_cap=1e-2,
                      init="magnitude", train_dtype="float32")  # fmt: skip
    model, rep = sparse_train(model, cfg, TokenWindows(_ids(), "random"), progress=False)
    assert [r["loss"] for r in rep.losses] == pytest.approx([2.42996, 2.62275], abs=2e-5)
    assert [r["kl"] for r in rep.losses] == pytest.approx([0.18066, 0.17962], abs=2e-5)
    assert _moved(before, model) == pytest.approx(38.77237132983282, rel=1e-4)


def test_reconstruction_fit_matches_the_loop_before_the_move():
    from edgeprune.compress.reconstruct.local import Reconstruct, reconstruct
    from edgeprune.compress.sparse.oneshot import NMPrune, nm_prune

    dense = tiny_llama(seed=1, num_hidden_layers=2)
    pruned, _ = nm_prune(copy.deepcopy(dense), NMPrune(method="magnitude"), TokenWindows(_ids(), "random"), progress=False)
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    cfg = Reconstruct(epochs=1, batch_size=4, grad_clip=1.0, autocast="float32")
    model, rep = reconstruct(pruned, cfg, TokenWindows(_ids(), "random"), dense=dense, progress=False)
    assert [r["epoch_loss"][0] for r in rep.per_submodel] == pytest.approx([2.2200969457626343, 5.985347032546997], rel=1e-5)
    assert rep.rel_mse_after == pytest.approx(0.7731739834344842, rel=1e-5)
    assert _moved(before, model) == pytest.approx(18.559512697625905, rel=1e-4)


# -- top-k teacher logits ------------------------------------------------------------------------------


def test_topk_kl_with_every_token_kept_is_the_full_kl_and_a_lower_bound_with_the_head():
    s, t, labels = _logits(vocab=50)
    T = 2.0

    def topk(logits, k, norm=True):
        top = logits.topk(k, dim=-1)
        return tr.TopK(top.values, top.indices, torch.logsumexp(logits / T, dim=-1) if norm else None, T if norm else None)

    full = tr.distill_loss(s, t, labels, ce_weight=0.0, kd_weight=1.0, temperature=T)[2]
    for norm in (True, False):
        every = tr.distill_loss(s, topk(t, 50, norm), labels, ce_weight=0.0, kd_weight=1.0, temperature=T)[2]
        assert torch.allclose(every, full, atol=1e-5)
    # the tail as one bucket: a lower bound of the full KL that tightens with k (merging outcomes lowers a KL)
    by_k = [float(tr.topk_kl(s, topk(t, k), T).mean()) for k in (5, 20, 40)]
    assert by_k[0] <= by_k[1] <= by_k[2] <= float(tr.topk_kl(s, topk(t, 50), T).mean()) + 1e-6
    s.requires_grad_(True)
    loss = tr.distill_loss(s, topk(t, 5), labels, ce_weight=0.5, kd_weight=0.5, temperature=T)[0]
    loss.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="temperature"):
        tr.topk_kl(s, topk(t, 5), 1.0)  # normalised at 2.0


def test_topk_teacher_runs_each_window_once_whatever_the_order():
    torch.manual_seed(0)
    teacher = tiny_llama().eval()
    cached = tr.TopKTeacher(teacher, 4, temperature=2.0)
    ids = _ids(n=6)
    first = cached(input_ids=ids[:4]).logits
    again = cached(input_ids=ids[[5, 1, 4, 0]]).logits  # two new rows, two kept ones
    assert cached.forwards == 6
    with torch.no_grad():
        ref = teacher(input_ids=ids).logits.topk(4, dim=-1)
    assert torch.equal(first.indices.long(), ref.indices[:4]) and torch.allclose(first.values, ref.values[:4])
    assert torch.allclose(again.values, ref.values[[5, 1, 4, 0]], atol=1e-5)
    assert again.values.shape == (4, ids.shape[1], 4) and again.indices.dtype == torch.int32
    with torch.no_grad():
        norm = torch.logsumexp(teacher(input_ids=ids).logits / 2.0, dim=-1)
    assert again.temperature == 2.0 and torch.allclose(again.log_norm, norm[[5, 1, 4, 0]], atol=1e-5)


def test_recovery_with_kept_topk_logits_trains_and_keeps_them_across_calls():
    from edgeprune.compress.structured.recovery import TrainConfig, train
    from edgeprune.errors import EdgepruneError

    torch.manual_seed(0)
    teacher = tiny_llama().eval()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ids = _ids(n=4)
    cfg = TrainConfig(tokens=4 * 16 * 3, batch_size=4, kd_alpha=1.0, kd_topk=8, warmup=0.0, decay=0.0, lr=1e-3)
    cached = tr.TopKTeacher(teacher, cfg.kd_topk, cfg.kd_temperature)
    rep = train(student, ids, cfg, teacher=cached, progress=False)
    assert rep.steps == 3 and cached.forwards == 4  # three steps on the same four windows: one teacher pass each
    assert rep.last_loss < rep.first_loss
    train(student, ids, cfg, teacher=cached, progress=False)
    assert cached.forwards == 4
    with pytest.raises(EdgepruneError, match="kd_topk"):
        TrainConfig(kd_topk=-1)
    assert TrainConfig(train_dtype="auto").train_dtype == "auto"
