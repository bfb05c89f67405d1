"""Recovery on a budget (compress/recover.py): the split of a budget between reconstruction and
distillation, the probe schedule, the config's checks, and whole runs on a tiny pruned model —
a token budget is spent as split and lowers the held-out loss, a CPU budget is turned into tokens
by a pilot, the step runs through the registry like every other."""

from __future__ import annotations

import copy

import pytest
import torch

from edgeprune.compress import StepContext, compress
from edgeprune.compress.recover import MIN_RECON_WINDOWS, Recover, probe_steps, recover, split_budget
from edgeprune.compress.structured.cut import cut_widths, random_keep
from edgeprune.data.calib import TokenWindows
from edgeprune.data.calib_policy import reads_calibration, training_tokens
from edgeprune.errors import EdgepruneError
from edgeprune.models import to_per_layer
from edgeprune.steps import config_from_yaml, step_for
from tests.tiny import tiny_llama
from tests.unit.sparse_helpers import one_thread  # noqa: F401  (autouse fixture)


def _windows(n=16, seq=32, seed=1) -> TokenWindows:
    return TokenWindows(torch.randint(0, 256, (n, seq), generator=torch.Generator().manual_seed(seed)), "random")


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    dense = to_per_layer(tiny_llama(seed=0)).eval()
    pruned = cut_widths(copy.deepcopy(dense), random_keep(dense.config, attn_keep=0.5, mlp_keep=0.5, seed=0))
    return dense, pruned


def _kl_probe(dense, windows):
    """KL(dense || model) per token on fixed windows: what recovery should lower."""

    def probe(model):
        with torch.no_grad():
            t = torch.log_softmax(dense(input_ids=windows.ids).logits.float(), -1)
            s = torch.log_softmax(model(input_ids=windows.ids).logits.float(), -1)
        return {"kl": float((t.exp() * (t - s)).sum(-1).mean())}

    return probe


# -- pure maths -------------------------------------------------------------------------------------------


def test_split_gives_reconstruction_its_share_then_distillation_the_rest_in_whole_steps():
    w, t = split_budget(100_000, recon_share=0.25, recon_max_tokens=10**9, recon_epochs=2, seq_len=256, step_tokens=1024,
                        recon_pool=512)
    assert w == 25_000 // 512 == 48 and t == ((100_000 - 48 * 512) // 1024) * 1024
    # the cap, then the pool, limit reconstruction
    assert split_budget(10**6, recon_share=0.5, recon_max_tokens=131_072, recon_epochs=2, seq_len=256, step_tokens=1024,
                        recon_pool=512)[0] == 256
    assert split_budget(10**6, recon_share=0.5, recon_max_tokens=10**9, recon_epochs=2, seq_len=256, step_tokens=1024,
                        recon_pool=100)[0] == 100
    # too few windows to be worth a pass: all to distillation; share 0: distillation only
    few = (MIN_RECON_WINDOWS - 1) * 256 * 2
    assert split_budget(few * 4, recon_share=0.25, recon_max_tokens=10**9, recon_epochs=2, seq_len=256, step_tokens=1024,
                        recon_pool=512) == (0, few * 4)
    assert split_budget(8192, recon_share=0.0, recon_max_tokens=10**9, recon_epochs=1, seq_len=256, step_tokens=1024,
                        recon_pool=512) == (0, 8192)


def test_probes_are_evenly_spaced_and_end_at_the_last_step():
    assert probe_steps(100, 4) == [25, 50, 75, 100]
    assert probe_steps(3, 5) == [1, 2, 3]
    assert probe_steps(10, 0) == [] and probe_steps(0, 3) == []


# -- the config -------------------------------------------------------------------------------------------


def test_config_checks_name_the_problem():
    with pytest.raises(EdgepruneError, match="a budget is needed"):
        Recover(tokens=0)
    with pytest.raises(EdgepruneError, match="train_dtype 'fp8' is not one of"):
        Recover(train_dtype="fp8")
    with pytest.raises(EdgepruneError, match="recon_share"):
        Recover(recon_share=1.5)
    with pytest.raises(EdgepruneError, match="unknown key 'budget'"):
        config_from_yaml("step: recover\nbudget: 3")
    cfg = config_from_yaml("step: recover\ntokens: 50000\nrecon_share: 0.5\n")
    assert cfg == Recover(tokens=50_000, recon_share=0.5) and Recover.from_yaml(cfg.to_yaml()) == cfg
    assert step_for("recover").config_class() is Recover


def test_the_policy_draws_reconstruction_windows_only_when_reconstruction_has_a_share():
    assert reads_calibration(Recover()) and not reads_calibration(Recover(recon_share=0.0))
    assert training_tokens(Recover(tokens=12_345)) == 12_345
    assert training_tokens(Recover(tokens=0, cpu_seconds=60)) > 10**9  # a CPU budget alone: as many windows as allowed


# -- runs ---------------------------------------------------------------------------------------------------


def test_a_token_budget_is_spent_as_split_and_lowers_the_loss_to_the_dense_model(pair):
    dense, pruned = pair
    model = copy.deepcopy(pruned)
    calib, train, held = _windows(16, seed=1), _windows(32, seed=2), _windows(4, seed=3)
    cfg = Recover(tokens=4096, recon_share=0.5, recon_epochs=2, batch_size=4, lr=1e-3, kd_topk=16, curve_points=2)
    model, rep = recover(model, cfg, dense=dense, calib=calib, train_windows=train, probe=_kl_probe(dense, held),
                         progress=False)
    # 2048 tokens for reconstruction = 32 windows x 32 tokens x 2 epochs, capped at the 16 drawn
    assert rep.recon_windows == 16 and rep.recon_tokens == 16 * 32 * 2
    assert rep.train_tokens == 4096 - 1024 and rep.spent_tokens == 4096 <= rep.budget_tokens
    assert [p["phase"] for p in rep.curve] == ["start", "reconstruct", "distill", "distill"]
    assert [p["tokens"] for p in rep.curve] == [0, 1024, 1024 + 1536, 4096]
    kl = [p["kl"] for p in rep.curve]
    assert kl[1] < kl[0] and kl[-1] < kl[0] * 0.9, kl
    assert rep.train["teacher_forwards"] <= 32  # top-k kept per window: each window's teacher forward once


def test_distillation_only_reads_no_reconstruction_windows(pair):
    dense, pruned = pair
    model = copy.deepcopy(pruned)
    cfg = Recover(tokens=1024, recon_share=0.0, batch_size=4, kd_topk=0, curve_points=0)
    model, rep = recover(model, cfg, dense=dense, calib=None, train_windows=_windows(8), progress=False)
    assert rep.recon_windows == 0 and rep.reconstruct is None and rep.train_tokens == 1024 and rep.curve == []


def test_a_cpu_budget_is_turned_into_tokens_by_a_pilot(pair):
    dense, pruned = pair
    model = copy.deepcopy(pruned)
    cfg = Recover(tokens=0, cpu_seconds=1.5, recon_share=0.0, batch_size=2, kd_topk=8, curve_points=0)
    model, rep = recover(model, cfg, dense=dense, calib=None, train_windows=_windows(16), progress=False)
    assert rep.pilot_tokens_per_cpu_s > 0 and rep.budget_tokens > 0
    assert rep.train_tokens <= rep.budget_tokens and rep.train_tokens % (2 * 32) == 0
    # the budget is CPU-seconds: spent within a few pilot steps of it (tiny steps time noisily)
    assert rep.spent_cpu_s < 1.5 * 3


def test_the_step_runs_through_compress_with_the_contexts_windows(pair):
    dense, pruned = pair
    model = copy.deepcopy(pruned)
    ctx = StepContext(calib=_windows(16), dense=dense, progress=False)
    out, rep = compress(model, Recover(tokens=2048, recon_share=0.5, curve_points=0, kd_topk=16), ctx=ctx)
    assert rep.recon_windows == 16 and rep.spent_tokens == 2048 and out is model


def test_windows_of_two_lengths_are_refused(pair):
    dense, pruned = pair
    with pytest.raises(EdgepruneError, match="draw both at one length"):
        recover(copy.deepcopy(pruned), Recover(tokens=2048), dense=dense, calib=_windows(8, seq=16), train_windows=_windows(8),
                progress=False)


@pytest.mark.parametrize("keep", [True, False])
def test_masks_chosen_in_reconstruction_survive_distillation_only_when_zeros_are_kept(pair, keep):
    from edgeprune.compress.sparse import masks as mk
    from edgeprune.compress.sequential import block_linears, decoder_layers

    dense, _ = pair
    model = copy.deepcopy(dense)
    cfg = Recover(tokens=4096, recon_share=0.5, recon_prune="sparsegpt", keep_zeros=keep, kd_topk=8, curve_points=0, lr=1e-3)
    model, rep = recover(model, cfg, dense=dense, calib=_windows(16), train_windows=_windows(32, seed=2), progress=False)
    assert rep.reconstruct["params_pruned_in_loop"] > 0 and rep.train_tokens > 0
    weights = [lin.weight.detach() for layer in decoder_layers(model) for lin in block_linears(layer).values()]
    assert all(mk.satisfies_nm(w, 2, 4) for w in weights) is keep


def test_choosing_masks_needs_a_budget_that_reaches_reconstruction(pair):
    dense, pruned = pair
    with pytest.raises(EdgepruneError, match="recon_prune chooses masks inside reconstruction"):
        Recover(recon_share=0.0, recon_prune="wanda")
    with pytest.raises(EdgepruneError, match="prune 'lasso' is not one of"):
        Recover(recon_prune="lasso")
    with pytest.raises(EdgepruneError, match="fewer than 8 windows to choose its 2:4 masks"):
        recover(copy.deepcopy(dense), Recover(tokens=1024, recon_prune="wanda"), dense=dense, calib=_windows(16),
                train_windows=_windows(8), progress=False)


# -- the CLI ------------------------------------------------------------------------------------------------


def test_cli_recovers_a_pruned_model_and_writes_its_report(pair, tmp_path, capsys, monkeypatch):
    import json

    from edgeprune.cli.main import main
    from tests.tiny import save_tiny

    (tmp_path / "data").mkdir()
    monkeypatch.setenv("EDGEPRUNE_DATA", str(tmp_path / "data"))  # no general/ text: no held-out curve, as on a fresh install
    dense, pruned = pair
    save_tiny(dense, tmp_path / "dense")
    save_tiny(pruned, tmp_path / "pruned")
    (tmp_path / "calib.txt").write_text("The quick brown fox jumps over the lazy dog, again and again. " * 300)
    out = tmp_path / "out"
    argv = ["recover", "--model", tmp_path / "pruned", "--dense", tmp_path / "dense", "--out", out, "--calib", tmp_path / "calib.txt",
            "--calib-windows", 16, "--calib-seq-len", 32, "--tokens", 4096, "--recon-share", 0.5, "--quiet"]
    assert main(list(map(str, argv))) == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "spent 4096 of 4096 tokens" in stdout and f"wrote {out}" in stdout
    rep = json.loads((out / "recover_report.json").read_text())["recover"]
    assert rep["recon_windows"] == 16 and rep["train_tokens"] == 4096 - 16 * 32 * 2
    assert Recover.from_yaml((out / "recover.yaml").read_text()).recon_share == 0.5
    # bad input: one line, exit 2, nothing written
    bad = tmp_path / "bad"
    assert main(list(map(str, [*argv[:5], "--out", bad, "--tokens", 0, "--quiet"]))) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "a budget is needed" in err and not bad.exists()


def test_the_default_probe_scores_the_general_texts_held_out_documents_only(tmp_path, pair):
    import shutil

    from edgeprune.compress.recover import heldout_probe
    from edgeprune.data.general import general_heldout_text
    from tests.tiny import tiny_tokenizer
    from tests.unit.test_general_data import _user_folder

    tok = tiny_tokenizer()
    assert heldout_probe(tok, n_windows=2, seq_len=16, data_dir=tmp_path)[0] is None  # no general/: no curve
    root = tmp_path / "data" / "general"
    for sub in ("c4", "wikipedia", "gutenberg"):
        (root / sub).mkdir(parents=True)
    _user_folder(tmp_path / "u")
    shutil.copy(tmp_path / "u" / "sub" / "notes.jsonl", root / "c4" / "web.jsonl")
    probe, name = heldout_probe(tok, n_windows=2, seq_len=16, data_dir=tmp_path / "data")
    assert "general held-out documents, 2 windows of 16 tokens" == name
    dense, pruned = pair
    a, b = probe(dense)["heldout_ppl"], probe(pruned)["heldout_ppl"]
    assert 1 < a < 10**4 and a != b
    assert len(tok(general_heldout_text(tmp_path / "data"))["input_ids"]) >= 32  # what the probe's windows come from
