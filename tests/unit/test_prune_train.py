"""Recovery training: the pure schedule / loss maths, the loop, and the loop under DDP on 2 gloo processes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from edgeprune.compress.structured.recovery import TrainConfig, stage_token_split, train, wsd_lr
from edgeprune.compress.training import kd_loss
from edgeprune.errors import EdgepruneError
from edgeprune.models import to_per_layer
from tests.prune_helpers import one_thread, windows  # noqa: F401  (autouse fixture)
from tests.tiny import tiny_llama


def test_wsd_schedule_warmup_stable_decay():
    lrs = [wsd_lr(s, 100, peak=1.0, warmup=0.05, decay=0.1, min_ratio=0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.2) and lrs[4] == pytest.approx(1.0)  # 5 warmup steps
    assert all(lr == 1.0 for lr in lrs[5:90])
    assert lrs[-1] == pytest.approx(0.1) and lrs[90] < 1.0 and lrs == sorted(lrs[:5]) + lrs[5:]
    assert all(a >= b for a, b in zip(lrs[90:], lrs[91:]))


def test_kd_loss_is_ce_at_alpha0_and_kl_scaled_by_t_squared():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
    labels = torch.randint(0, 7, (2, 5), generator=g)
    ce = F.cross_entropy(s[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1))
    loss, ce_logged, _ = kd_loss(s, t, labels, alpha=0.0, temperature=2.0)
    torch.testing.assert_close(loss, ce)
    _, _, kl_same = kd_loss(s, s, labels, alpha=1.0, temperature=2.0)
    assert abs(float(kl_same)) < 1e-6
    loss1, _, kl = kd_loss(s, t, labels, alpha=1.0, temperature=2.0)
    ref = F.kl_div(F.log_softmax(s[:, :-1] / 2, -1), F.log_softmax(t[:, :-1] / 2, -1), log_target=True,
                   reduction="none").sum(-1).mean()  # fmt: skip
    torch.testing.assert_close(kl, ref)
    torch.testing.assert_close(loss1, 4 * ref)
    half, _, _ = kd_loss(s, t, labels, alpha=0.5, temperature=2.0)
    torch.testing.assert_close(half, 0.5 * ce + 0.5 * 4 * ref)


def test_stage_token_split_linear_and_constant():
    assert stage_token_split(100, 4, "linear") == [10, 20, 30, 40]
    assert stage_token_split(10, 3, "constant") == [3, 3, 4]
    assert sum(stage_token_split(12345, 7)) == 12345


def test_train_lowers_the_loss_and_checks_its_budget():
    model = to_per_layer(tiny_llama())
    data = windows(4, 16).ids
    rep = train(model, data, TrainConfig(tokens=4 * 16 * 12, batch_size=4, lr=3e-3, warmup=0.0, decay=0.0), progress=False)
    assert rep.steps == 12 and rep.tokens == 4 * 16 * 12
    assert rep.last_loss < rep.first_loss
    with pytest.raises(EdgepruneError, match="less than one step"):
        train(model, data, TrainConfig(tokens=10), progress=False)
    with pytest.raises(EdgepruneError, match="teacher"):
        train(model, data, TrainConfig(tokens=4 * 16, kd_alpha=0.5), progress=False)


def test_gradient_checkpointing_gives_the_same_update():
    data = windows(4, 16).ids
    a, b = to_per_layer(tiny_llama()), to_per_layer(tiny_llama())
    cfg = dict(tokens=4 * 16 * 2, batch_size=4, lr=1e-3)
    train(a, data, TrainConfig(**cfg), progress=False)
    train(b, data, TrainConfig(**cfg, gradient_checkpointing=True), progress=False)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-5, rtol=1e-4)
    assert not b.model.gradient_checkpointing


# -- DDP on two CPU processes ----------------------------------------------------------------------


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str):
    import torch.distributed as dist

    from edgeprune.threads import torch_threads

    with torch_threads(1):
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
        try:
            model, teacher = to_per_layer(tiny_llama(seed=1)), to_per_layer(tiny_llama(seed=2))
            data = windows(16, 16, seed=3).ids
            cfg = TrainConfig(tokens=2 * 2 * 16 * 3, batch_size=2, lr=1e-3, kd_alpha=0.5)
            rep = train(model, data, cfg, teacher=teacher, progress=False)
            torch.save({"state": model.state_dict(), "steps": rep.steps, "world": rep.world_size}, f"{out_dir}/rank{rank}.pt")
        finally:
            dist.destroy_process_group()


def test_ddp_two_gloo_processes_end_with_identical_weights_equal_to_one_process(tmp_path):
    """The unchanged loop under DDP: both ranks agree, and equal one process on the whole global batch."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r0["steps"] == r1["steps"] == 3
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    # one process, batch 4 = the same global batch: DDP's averaged gradients give the same weights
    single = to_per_layer(tiny_llama(seed=1))
    train(single, windows(16, 16, seed=3).ids, TrainConfig(tokens=4 * 16 * 3, batch_size=4, lr=1e-3, kd_alpha=0.5),
          teacher=to_per_layer(tiny_llama(seed=2)), progress=False)  # fmt: skip
    moved = 0.0
    for k, v in single.state_dict().items():
        torch.testing.assert_close(r0["state"][k], v, atol=2e-5, rtol=1e-4)
        moved = max(moved, float((v - to_per_layer(tiny_llama(seed=1)).state_dict()[k]).abs().max()) if k.endswith("q_proj.weight") else moved)
    assert moved > 0 and math.isfinite(moved)


def test_bf16_autocast_and_frozen_embeddings():
    data = windows(4, 16).ids
    model = to_per_layer(tiny_llama())
    emb = model.get_input_embeddings().weight.detach().clone()
    rep = train(model, data, TrainConfig(tokens=4 * 16 * 6, batch_size=4, lr=3e-3, warmup=0.0, decay=0.0,
                                          train_dtype="bfloat16", freeze_embeddings=True), progress=False)  # fmt: skip
    assert rep.last_loss < rep.first_loss
    assert torch.equal(model.get_input_embeddings().weight, emb)  # frozen (and the tied head with it)
    assert model.get_input_embeddings().weight.requires_grad  # the caller's flags are restored
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay float32
    with pytest.raises(EdgepruneError, match="train_dtype"):
        TrainConfig(train_dtype="fp8")
