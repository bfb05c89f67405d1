"""AST pieces: straight-through masks, SR-STE decay, distillation, SLoRB, the loop, DDP with gloo."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from edgeprune.compress.sparse import masks as mk
from edgeprune.data.calib import TokenWindows
from edgeprune.compress.sparse.packed import load_packed, save_packed
from edgeprune.compress.sparse.modules import MaskedLinear, SLoRBLinear, merge_slorb, slorb_init
from edgeprune.compress.sparse.ast import SparseTrain, add_sr_ste_decay_, cosine_lr, decay_lambda, sparse_train
from edgeprune.compress.training import distill_loss
from tests.tiny import tiny_llama
from tests.unit.sparse_helpers import one_thread  # noqa: F401  (autouse fixture)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _windows(n=8, seq=16):
    return TokenWindows(torch.randint(0, 256, (n, seq), generator=_gen()), "random")


def test_straight_through_gradient_reaches_pruned_weights():
    lin = nn.Linear(8, 3, bias=False)
    mask = mk.nm_mask(lin.weight.detach().abs(), 2, 4)
    masked = MaskedLinear(lin, mask)
    x = torch.randn(5, 8, generator=_gen())
    y = masked(x)
    torch.testing.assert_close(y, x @ (lin.weight * mask).T)
    y.sum().backward()
    # d(sum y)/dW = column sums of x for every weight, pruned or not
    torch.testing.assert_close(masked.weight.grad, x.sum(0).expand(3, 8))


def test_sr_ste_decay_touches_only_pruned_weights_and_ramps_linearly():
    w = torch.randn(4, 8, generator=_gen())
    mask = mk.nm_mask(w.abs(), 2, 4)
    g = torch.zeros_like(w)
    add_sr_ste_decay_(g, w, mask, 0.5)
    assert torch.equal(g[mask], torch.zeros(int(mask.sum())))
    torch.testing.assert_close(g[~mask], 0.5 * w[~mask])
    assert decay_lambda(0, 100, cap=1e-4, ramp=0.5) == 0
    assert decay_lambda(25, 100, cap=1e-4, ramp=0.5) == pytest.approx(5e-5)
    assert decay_lambda(80, 100, cap=1e-4, ramp=0.5) == 1e-4


def test_cosine_schedule_warms_up_and_ends_at_the_floor():
    lrs = [cosine_lr(s, 100, peak=1.0, warmup=0.1, min_ratio=0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_distillation_loss_is_ce_plus_t2_kl():
    s = torch.randn(2, 5, 11, generator=_gen(1))
    t = torch.randn(2, 5, 11, generator=_gen(2))
    labels = torch.randint(0, 11, (2, 5), generator=_gen(3))
    same, ce, kl = distill_loss(s, s, labels, ce_weight=0.3, kd_weight=0.7, temperature=2.0)
    assert float(kl) == pytest.approx(0.0, abs=1e-6) and float(same) == pytest.approx(0.3 * float(ce))
    loss, ce, kl = distill_loss(s, t, labels, ce_weight=0.3, kd_weight=0.7, temperature=2.0)
    p_t = torch.softmax(t[:, :-1] / 2, -1)
    ref_kl = (p_t * (p_t.log() - torch.log_softmax(s[:, :-1] / 2, -1))).sum(-1).mean()
    assert float(kl) == pytest.approx(float(ref_kl), rel=1e-5)
    assert float(loss) == pytest.approx(0.3 * float(ce) + 0.7 * 4 * float(ref_kl), rel=1e-5)


def test_slorb_starts_as_the_group_mean_of_the_pruned_weights_and_merges_exactly():
    w = torch.randn(3, 32, generator=_gen())
    mask = mk.nm_mask(w.abs(), 2, 4)
    pruned = torch.where(mask, torch.zeros(()), w)
    L = slorb_init(pruned, 16)
    torch.testing.assert_close(L[1, 1], pruned[1, 16:].mean())
    mod = SLoRBLinear(32, 3, bias=True, slorb_k=16)
    with torch.no_grad():
        mod.weight.copy_(w * mask)
        mod.slorb_L.copy_(L)
    x = torch.randn(4, 32, generator=_gen(7))
    merged = merge_slorb(mod)
    torch.testing.assert_close(mod(x), merged(x), rtol=1e-5, atol=1e-6)
    # y = (W ⊙ M) x + L S x, S summing groups of 16 inputs
    ref = x @ (w * mask).T + mod.bias + x.reshape(4, 2, 16).sum(-1) @ L.T
    torch.testing.assert_close(mod(x), ref, rtol=1e-5, atol=1e-6)


def _cfg(**kw):
    base = dict(tokens=8 * 16 * 3, batch_size=4, micro_batch=2, mask_every=1, lr=1e-3, decay_cap=1e-2, train_dtype="float32")
    return SparseTrain(**{**base, **kw})


@pytest.mark.parametrize("init,slorb", [("magnitude", True), ("wanda", False)])
def test_training_keeps_nm_and_reselects_masks(init, slorb):
    model = tiny_llama(num_hidden_layers=2)
    teacher_before = {k: v.clone() for k, v in model.state_dict().items()}
    model, rep = sparse_train(model, _cfg(init=init, slorb=slorb), _windows(), progress=False)
    assert rep.steps == 6 and rep.tokens == 6 * 4 * 16 and len(rep.losses) == 6
    assert [u["step"] for u in rep.mask_updates] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(r["loss"]) for r in rep.losses)
    kinds = {type(m) for n, m in model.named_modules() if n.endswith("_proj")}
    assert kinds == ({SLoRBLinear} if slorb else {nn.Linear})
    for n, m in model.named_modules():
        if n.endswith("_proj"):
            assert mk.satisfies_nm(m.weight, 2, 4)
    assert rep.slorb_params == (sum(m.slorb_L.numel() for m in model.modules() if isinstance(m, SLoRBLinear)))
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    assert set(teacher_before) <= set(model.state_dict())


def test_trained_slorb_model_packs_and_reloads_exactly(tmp_path):
    model, _ = sparse_train(tiny_llama(num_hidden_layers=2), _cfg(init="magnitude", tokens=4 * 16), _windows(), progress=False)
    ids = torch.randint(0, 256, (1, 10), generator=_gen(9))
    with torch.no_grad():
        ref = model(ids).logits
    rep = save_packed(model, tmp_path / "ast")
    loaded, _ = load_packed(tmp_path / "ast")
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, ref)
    assert rep.bytes_by_part["slorb"] > 0


def test_init_none_trains_an_already_sparse_model_against_the_given_teacher():
    from edgeprune.compress.sparse.oneshot import NMPrune, nm_prune
    from edgeprune.errors import EdgepruneError

    dense = tiny_llama(num_hidden_layers=2)
    with pytest.raises(EdgepruneError, match="not 2:4 sparse"):  # a dense model has no mask to start from
        sparse_train(tiny_llama(num_hidden_layers=2), _cfg(init="none", slorb=False), _windows(), teacher=dense, progress=False)
    pruned, _ = nm_prune(tiny_llama(num_hidden_layers=2), NMPrune(pattern="2:4", method="magnitude"), None, progress=False)
    with pytest.raises(EdgepruneError, match="pass the dense model as teacher"):
        sparse_train(pruned, _cfg(init="none"), _windows(), progress=False)
    start = {n: m.weight.detach().clone() for n, m in pruned.named_modules() if n.endswith("_proj")}
    model, rep = sparse_train(pruned, _cfg(init="none", slorb=False, mask_every=100), _windows(), teacher=dense, progress=False)
    assert rep.init is None and rep.steps == 6
    for n, m in model.named_modules():
        if n.endswith("_proj"):  # the given mask is kept (no re-selection in 6 steps) and the kept weights trained
            assert torch.equal(m.weight != 0, start[n] != 0)
    assert any(not torch.equal(m.weight, start[n]) for n, m in model.named_modules() if n.endswith("_proj"))
    assert rep.losses[0]["kl"] > 0  # distilled from the dense teacher (a copy of itself: KL 0 at the first step)


def test_token_budget_below_one_step_is_an_error():
    from edgeprune.errors import EdgepruneError

    with pytest.raises(EdgepruneError, match="less than one step"):
        sparse_train(tiny_llama(num_hidden_layers=1), _cfg(tokens=10), _windows(), progress=False)


# -- DDP with two gloo processes --------------------------------------------------------------------


def _ddp_worker(rank: int, world: int, store: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        model = tiny_llama(num_hidden_layers=2)
        model, rep = sparse_train(model, _cfg(init="magnitude", tokens=8 * 16 * 2), _windows(), progress=False)
        assert rep.world_size == 2
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_gloo_ranks_end_with_identical_weights(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, start_method="fork")
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and training did something: the weights are N:M sparse
    assert mk.satisfies_nm(a["model.layers.0.mlp.up_proj.weight"], 2, 4)


def test_a_stopped_run_resumes_from_its_checkpoint_to_the_same_weights(tmp_path):
    cfg = _cfg(init="magnitude", tokens=8 * 16 * 3)  # 6 steps
    straight, _ = sparse_train(tiny_llama(num_hidden_layers=2), cfg, _windows(), progress=False)

    class Stop(Exception):
        pass

    def stop_at_5(step, rec):  # after the checkpoint of step 4
        if step == 5:
            raise Stop

    ckpt = tmp_path / "ast.ckpt"
    with pytest.raises(Stop):
        sparse_train(tiny_llama(num_hidden_layers=2), cfg, _windows(), progress=False, on_log=stop_at_5,
                     checkpoint=ckpt, checkpoint_every=2)  # fmt: skip
    assert ckpt.is_file()
    resumed, rep = sparse_train(tiny_llama(num_hidden_layers=2), cfg, _windows(), progress=False, checkpoint=ckpt,
                                checkpoint_every=2)  # fmt: skip
    assert rep.resumed_from == 4 and len(rep.losses) == 6
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    from edgeprune.errors import EdgepruneError

    with pytest.raises(EdgepruneError, match="other sparse_train settings"):
        sparse_train(tiny_llama(num_hidden_layers=2), _cfg(init="magnitude", lr=5e-4), _windows(), progress=False,
                     checkpoint=ckpt)  # fmt: skip
