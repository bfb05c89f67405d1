"""Budgeted builds (pipeline/search.py, pipeline/frontier.py): the frontier maths, the candidates a
registry row gives, a tiny search end to end (bounds met, a bound nobody meets) and its cache."""

from __future__ import annotations

import json

import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.pipeline import frontier as fr
from tests.unit.eval_helpers import TEST_DATA

pytestmark = pytest.mark.unit

SHAKESPEARE = TEST_DATA / "calib" / "tiny_shakespeare.txt"


def _c(name, ppl_ratio, tps, mib=100.0, plain=True, quant="q8_0") -> fr.Scored:
    return fr.Scored(name=name, method=fr.DENSE if plain else "adapt 0.2 + reconstruct", quant=quant,
                     bytes=int(mib * 2**20), ppl=10 * ppl_ratio, ppl_ratio=ppl_ratio, decode_tps=tps)  # fmt: skip


CANDS = [_c("dense-q8_0", 1.01, 100, 145), _c("dense-q4_k_m", 1.06, 110, 105), _c("dense-q4_0", 1.28, 140, 92),
         _c("adapt20-q8_0", 1.5, 125, 117, plain=False), _c("adapt20-q4_0", 1.9, 120, 80, plain=False)]  # fmt: skip


# -- frontier maths ---------------------------------------------------------------------------------


def test_pareto_sets_by_speed_and_by_bytes():
    assert [c.name for c in fr.pareto(CANDS)] == ["dense-q8_0", "dense-q4_k_m", "dense-q4_0"]
    # by bytes, the 80 MiB pruned model is on the frontier though slower than adapt20-q8_0
    assert [c.name for c in fr.pareto(CANDS, speed="bytes")] == ["dense-q8_0", "dense-q4_k_m", "dense-q4_0", "adapt20-q4_0"]
    assert fr.pareto([]) == []


@pytest.mark.parametrize("bounds, chosen", [
    (fr.Bounds(max_ppl_ratio=1.10), "dense-q4_k_m"),
    (fr.Bounds(max_ppl_ratio=2.0), "dense-q4_0"),
    (fr.Bounds(max_ppl_ratio=2.0, max_bytes=85 * 2**20), "adapt20-q4_0"),
    (fr.Bounds(max_bytes=120 * 2**20, min_decode_tps=121), "dense-q4_0"),
    (fr.Bounds(max_ppl_ratio=1.6, min_decode_tps=120), "dense-q4_0"),
])  # fmt: skip
def test_choice_under_each_bound(bounds, chosen):
    assert fr.choose(CANDS, bounds).name == chosen


def test_a_near_tie_in_speed_goes_to_the_better_quality():
    near = [_c("dense-q4_k_m", 1.06, 85.2, 100.6), _c("dense-q4_k_m-imatrix", 1.037, 82.4, 100.6),
            _c("dense-q5_k_m-imatrix", 1.008, 84.0, 106.9), _c("dense-q8_0", 1.005, 79.5, 138.1)]  # fmt: skip
    assert fr.choose(near, fr.Bounds(max_ppl_ratio=1.1)).name == "dense-q5_k_m-imatrix"  # 79.5 is more than 5% off
    assert fr.choose(near, fr.Bounds(max_ppl_ratio=1.1, max_bytes=101 * 2**20)).name == "dense-q4_k_m-imatrix"
    assert fr.choose(near[:1] + near[3:], fr.Bounds(max_ppl_ratio=1.1)).name == "dense-q4_k_m"  # 7% faster: no tie


def test_memory_bound_uses_predicted_memory():
    cands = [fr.Scored("a", fr.DENSE, "q8_0", 10, 1.0, 1.0, 200.0, memory_bytes=900), fr.Scored("b", fr.DENSE, "q4_0", 5, 1.1, 1.1, 100.0, memory_bytes=500)]
    assert fr.choose(cands, fr.Bounds(max_ppl_ratio=2, max_memory_bytes=600)).name == "b"


def test_no_candidate_names_the_closest_in_one_line():
    with pytest.raises(fr.NoCandidate) as e:
        fr.choose(CANDS, fr.Bounds(max_ppl_ratio=1.005, max_bytes=200 * 2**20))
    msg = str(e.value)
    assert e.value.exit_code == 2 and "\n" not in msg
    assert "closest is dense-q8_0" in msg and "--max-ppl-ratio by 0%" in msg and "meets --max-bytes" in msg
    assert "nothing shipped" in msg


def test_verdict_names_the_plain_quant_it_beats_or_says_plain_wins():
    plain_wins = fr.verdict(fr.choose(CANDS, fr.Bounds(max_ppl_ratio=1.1)), CANDS, fr.Bounds(max_ppl_ratio=1.1))
    assert "Plain quantization of the dense model wins" in plain_wins
    fast = CANDS + [_c("adapt30-q4_k_m", 1.08, 165, 70, plain=False)]
    text = fr.verdict(fr.choose(fast, fr.Bounds(max_ppl_ratio=1.1)), fast, fr.Bounds(max_ppl_ratio=1.1))
    assert "shipped adapt30-q4_k_m" in text and "1.50x as fast as the best plain quant" in text and "dense-q4_k_m" in text


def test_contradictory_bounds_are_reported_together():
    b = fr.Bounds(max_ppl_ratio=0.9, max_bytes=200 * 2**20, min_decode_tps=-1, max_memory_bytes=100 * 2**20)
    probs = b.problems()
    assert len(probs) == 3 and "below 1" in probs[0] and "contradict" in probs[2]
    assert fr.Bounds(min_decode_tps=10).searches() is False and fr.Bounds(max_bytes=1).searches()


def test_speed_gap_is_relative_to_the_measurement():
    c = fr.Scored("a", fr.DENSE, "q8_0", 1, 1.0, 1.0, 100.0, decode_tps_measured=100.0, decode_tps_predicted=130.0)
    assert c.speed_gap == pytest.approx(0.3) and c.to_dict()["plain"]


# -- candidates from the registry row ---------------------------------------------------------------


def test_default_types_come_from_the_registry_row():
    from edgeprune.export.registry import FORMATS
    from edgeprune.pipeline.search import candidate_specs, default_types

    assert default_types(FORMATS["gguf"]) == ("q8_0", "q6_k", "q5_k_m", "q5_0", "q4_k_m", "q4_0")
    assert default_types(FORMATS["onnx"]) == ("int8", "int4")
    specs = candidate_specs(("q8_0", "q4_0"), (0.3, 0.1))
    assert [s.name for s in specs] == ["dense-q8_0", "dense-q4_0", "adapt10-q8_0", "adapt10-q4_0", "adapt30-q8_0", "adapt30-q4_0"]


def test_unknown_types_and_bad_settings_fail_in_one_line():
    from edgeprune.pipeline.search import SearchConfig, check_search

    with pytest.raises(EdgepruneError) as e:
        check_search("host", SearchConfig(types=("q8_0", "int4"), ratios=(0.2, 1.5)), fr.Bounds(max_ppl_ratio=0.5))
    msg = str(e.value)
    assert "below 1" in msg and "unknown gguf type(s) for host: int4" in msg and "(0, 1)" in msg and "\n" not in msg
    assert check_search("host", SearchConfig(format="onnx"), fr.Bounds(max_ppl_ratio=1.1)) == ("onnx", ("int8", "int4"))


# -- a tiny search, end to end ----------------------------------------------------------------------


def _tiny_cfg(**kw):
    from edgeprune.compress.reconstruct.local import Reconstruct
    from edgeprune.compress.structured.config import StructuredPrune
    from edgeprune.pipeline.search import SearchConfig

    base = dict(ratios=(0.2, 0.4), depths=(), imatrix=False, types=("q8_0", "q4_0"), ppl_windows=2, seq_len=64, measure=False,
                prune=StructuredPrune(method="adapt", align=16, calib_windows=4),
                reconstruct=Reconstruct(epochs=1, calib_windows=8, batch_size=4), prompt_tokens=16, gen_tokens=8,
                verify=False)  # fmt: skip
    return SearchConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tiny_src(tmp_path_factory):
    from tests.tiny import tiny_llama
    from tests.unit.gguf_helpers import bpe_tokenizer

    root = tmp_path_factory.mktemp("search")
    tok = bpe_tokenizer()  # llama.cpp needs BPE merges: the byte tokenizer of tests/tiny.py has none
    text = SHAKESPEARE.read_text()
    held_out, calib = root / "held_out.txt", root / "calib.txt"
    held_out.write_text(text[-20000:])  # the calibration text is the rest: nothing fitted on the held-out part
    calib.write_text(text[:-20000])
    model = tiny_llama(num_hidden_layers=3, vocab_size=len(tok), bos_token_id=0, eos_token_id=1, pad_token_id=2)
    model.save_pretrained(root / "tiny")
    tok.save_pretrained(root / "tiny")
    return root / "tiny", held_out, calib


def _search(tmp_path, src, bounds, counts=None, **kw):
    from edgeprune.pipeline import search as s

    model, held_out, calib = src
    return s.search("host", bounds, _tiny_cfg(), model=str(model), out=tmp_path / "out", calib=str(calib),
                    eval_data=str(held_out), log=lambda m: None, **kw)  # fmt: skip


def test_tiny_search_ships_the_fastest_candidate_and_resumes_from_cache(tmp_path, tiny_src, monkeypatch):
    from edgeprune.pipeline import search as s

    prunes = []
    real = s.structured_prune if hasattr(s, "structured_prune") else None
    import edgeprune.compress.structured.prune as sp

    orig = sp.structured_prune
    monkeypatch.setattr(sp, "structured_prune", lambda *a, **k: prunes.append(k.get("snapshots")) or orig(*a, **k))
    rep = _search(tmp_path, tiny_src, fr.Bounds(max_ppl_ratio=1e6))
    assert real is None and prunes == [(0.2,)]  # one Adapt-Pruner run gives both ratios
    names = [c["name"] for c in rep["candidates"]]
    assert names == ["dense-q8_0", "dense-q4_0", "adapt20-q8_0", "adapt20-q4_0", "adapt40-q8_0", "adapt40-q4_0"]
    best = max(rep["candidates"], key=lambda c: c["decode_tps"])
    assert rep["chosen"] == best["name"] and not best["plain"] and rep["shipped"].endswith(f"{best['name']}.gguf")
    out = tmp_path / "out"
    assert (out / f"{best['name']}.gguf").is_file() and (out / "frontier.png").stat().st_size > 0
    md = (out / "report.md").read_text()
    assert "held_out.txt: the first 2 x 64 tokens" in md and "| dense-q8_0 |" in md and "(shipped)" in md
    assert "2:4 sparse models: not candidates: llama.cpp has no 2:4 storage or kernels" in md
    assert all(c["decode_tps_predicted"] and c["decode_tps_measured"] is None for c in rep["candidates"])
    assert len(rep["computed"]) == 1 + 2 + 6 + 6  # reference, two pruned models, six candidates, their scores
    # rerun: everything from the cache, nothing pruned again
    again = _search(tmp_path, tiny_src, fr.Bounds(max_ppl_ratio=1e6), resume=True)
    assert again["computed"] == [] and prunes == [(0.2,)] and again["chosen"] == rep["chosen"]
    # another bound re-chooses from the same cache
    tight = _search(tmp_path, tiny_src, fr.Bounds(max_ppl_ratio=1.02), resume=True)
    assert tight["computed"] == [] and all(c["ppl_ratio"] <= 1.02 for c in tight["candidates"] if c["name"] == tight["chosen"])


def test_tiny_search_with_an_impossible_bound_ships_nothing_via_the_cli(tmp_path, tiny_src, monkeypatch, capsys):
    from edgeprune.cli.main import main
    from edgeprune.pipeline import search as s

    seen = {}
    cfg = _tiny_cfg(types=("q8_0",), ratios=(0.2,))  # the CLI's settings, on the tiny model's scale
    monkeypatch.setattr(s, "SearchConfig", lambda **kw: seen.update(kw) or cfg)
    model, held_out, calib = tiny_src
    args = ["build", "--model", str(model), "--out", str(tmp_path / "out"), "--calib", str(calib), "--eval",
            str(held_out), "--max-ppl-ratio", "1.0", "--max-bytes", "1K", "--types", "q8_0", "--ratios", "0.2"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # above it: transformers' loading bars
    assert err.startswith("edgeprune: error: no candidate meets") and "closest is" in err and "nothing shipped" in err
    assert "no candidate meets" in err and "closest is" in err and "nothing shipped" in err
    assert not list((tmp_path / "out").glob("*.gguf"))
    assert json.loads((tmp_path / "out" / "report.json").read_text())["shipped"] is None
    assert seen == {"ratios": (0.2,), "depths": (3, 6), "types": ("q8_0",), "ppl_windows": 4, "imatrix": True}


def test_cli_rejects_bad_bounds_before_loading(tmp_path, monkeypatch, capsys):
    from edgeprune.cli.main import main
    import edgeprune.models as models

    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("loaded a model"))
    assert main(["build", "--max-ppl-ratio", "1.1", "--types", "q8_0,int4", "--out", str(tmp_path / "o")]) == 2
    assert "unknown gguf type(s) for host: int4" in capsys.readouterr().err
    assert main(["build", "--max-ppl-ratio", "1.1", "--max-bytes", "1G", "--max-memory", "100", "--out", str(tmp_path / "o")]) == 2
    assert "contradict" in capsys.readouterr().err
    assert main(["build", "--max-bytes", "12x"]) == 2
    assert main(["build", "--max-ppl-ratio", "1.1", "--dry-run", "--ratios", "0.1", "--depths", "2"]) == 0
    out = capsys.readouterr().out
    # six types (five read an imatrix): dense 6 + 5 with it; each compressed model 1 + 5 with it
    assert "23 candidates" in out and "depths 2" in out and "imatrix q6_k, q5_k_m, q5_0, q4_k_m, q4_0" in out
    assert main(["build", "--max-ppl-ratio", "1.1", "--dry-run", "--ratios", "", "--depths", "", "--no-imatrix"]) == 0
    assert "6 candidates" in capsys.readouterr().out
    assert main(["build", "--max-ppl-ratio", "1.1", "--dry-run", "--depths", "0,x"]) == 2


def test_plain_quants_only_measured_on_the_host_flag_a_speed_gap(tmp_path, tiny_src, monkeypatch):
    from edgeprune.pipeline import search as s

    monkeypatch.setattr(s, "_measure", lambda path, cfg: {"decode_tps": 10.0 if "q8_0" in path else 20.0, "loadavg_1m": 0.5})
    model, held_out, calib = tiny_src
    rep = s.search("host", fr.Bounds(max_bytes=10 * 2**20), _tiny_cfg(ratios=(), measure=True), model=str(model),
                   out=tmp_path / "out", calib=str(calib), eval_data=str(held_out), log=lambda m: None)  # fmt: skip
    assert [c["name"] for c in rep["candidates"]] == ["dense-q8_0", "dense-q4_0"]
    assert rep["chosen"] == "dense-q4_0" and "Plain quantization of the dense model wins" in rep["verdict"]
    assert all(c["gap_flag"] and c["decode_tps"] == c["decode_tps_measured"] for c in rep["candidates"])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "measured on the host" in md and "(!)" in md and "| 0.50 |" in md


def test_two_held_out_texts_bound_the_worse_ratio_and_a_new_text_scores_only_itself(tmp_path, tiny_src):
    from edgeprune.pipeline import search as s

    model, held_out, calib = tiny_src
    other = tmp_path / "other.txt"
    other.write_text(held_out.read_text()[::-1])  # another "domain": the same characters reversed
    cfg = _tiny_cfg(ratios=(0.2,), types=("q8_0",))
    kw = dict(model=str(model), out=tmp_path / "out", calib=str(calib), log=lambda m: None)
    one = s.search("host", fr.Bounds(max_ppl_ratio=1e6), cfg, eval_data=str(held_out), **kw)
    two = s.search("host", fr.Bounds(max_ppl_ratio=1e6), cfg, eval_data=f"{held_out},{other}", resume=True, **kw)
    # only the new text's reference and the two candidates' scores on it were computed
    assert sorted(two["computed"]) == ["reference/other", "scores/adapt20-q8_0-other", "scores/dense-q8_0-other"]
    for c in two["candidates"]:
        assert set(c["ppl_ratios"]) == {"held_out", "other"} and c["ppl_ratio"] == max(c["ppl_ratios"].values())
    first = {c["name"]: c["ppl_ratios"]["held_out"] for c in one["candidates"]}
    assert {c["name"]: c["ppl_ratios"]["held_out"] for c in two["candidates"]} == first  # the cached scores, unchanged
    md = (tmp_path / "out" / "report.md").read_text()
    assert "ppl ratio held_out | ppl ratio other | worst" in md and "worst over these texts" in md
    with pytest.raises(EdgepruneError, match="both name"):
        s.search("host", fr.Bounds(max_ppl_ratio=1.1), cfg, eval_data=f"{held_out},{calib}", resume=True, **kw)


def test_the_python_build_runs_a_search_when_given_a_bound(tmp_path, tiny_src, monkeypatch):
    from edgeprune.pipeline import runner
    from edgeprune.pipeline import search as s

    seen = {}
    monkeypatch.setattr(s, "search", lambda target, bounds, cfg, **kw: seen.update(bounds=bounds, cfg=cfg, **kw) or {"ok": 1})
    cfg = _tiny_cfg()
    assert runner.build("host", max_ppl_ratio=1.2, max_bytes=2**20, search=cfg, out=tmp_path / "o") == {"ok": 1}
    assert seen["bounds"] == fr.Bounds(max_ppl_ratio=1.2, max_bytes=2**20) and seen["cfg"] is cfg
    with pytest.raises(EdgepruneError, match="drop recipe= and remote="):
        runner.build("host", max_ppl_ratio=1.2, recipe="default", out=tmp_path / "o")


def test_depth_and_imatrix_candidates_and_hopeless_models_are_not_quantized_further(tmp_path, tiny_src, monkeypatch):
    from edgeprune.pipeline import search as s

    real = s._perplexity
    # the depth model scores far worse than the bound (a deterministic stand-in for a bad model)
    monkeypatch.setattr(s, "_perplexity", lambda what, tok, cfg, text: {**real(what, tok, cfg, text), "ppl": 1e9}
                        if "depth1" in str(what) else real(what, tok, cfg, text))  # fmt: skip
    model, held_out, calib = tiny_src
    cfg = _tiny_cfg(ratios=(), depths=(1,), imatrix=True)
    kw = dict(model=str(model), out=tmp_path / "out", calib=str(calib), eval_data=str(held_out), log=lambda m: None)
    rep = s.search("host", fr.Bounds(max_ppl_ratio=1e6), cfg, **kw)
    assert [c["name"] for c in rep["candidates"]] == ["dense-q8_0", "dense-q4_0", "dense-q4_0-imatrix", "depth1-q8_0"]
    assert rep["skipped"] == ["depth1-q4_0-imatrix"] and rep["hopeless"] == {"depth1": "depth1-q8_0"}
    md = (tmp_path / "out" / "report.md").read_text()
    assert "- not made: depth1 in q4_0-imatrix (depth1-q8_0 already misses the ppl bound)" in md
    methods = {c["name"]: (c["method"], c["plain"]) for c in rep["candidates"]}
    assert methods["dense-q4_0-imatrix"] == ("dense + imatrix", True)
    assert methods["depth1-q8_0"] == ("depth -1 layers + reconstruct", False)
    assert any(p.startswith("imatrix/dense") for p in rep["computed"]) and any(p.startswith("models/depth1") for p in rep["computed"])
    import gguf

    art = gguf.GGUFReader(next(c["path"] for c in rep["candidates"] if c["name"] == "depth1-q8_0"))
    assert art.fields["llama.block_count"].parts[-1][0] == 2  # three layers, one removed
    # without a ppl bound nothing is hopeless: the skipped candidate is made, the rest read from the cache
    again = s.search("host", fr.Bounds(max_bytes=2**30), cfg, resume=True, **kw)
    assert again["computed"] == ["imatrix/depth1", "cands/depth1-q4_0-imatrix", "scores/depth1-q4_0-imatrix-held_out"]


def test_bad_held_out_texts_are_one_line_before_loading(tmp_path, monkeypatch, capsys):
    from edgeprune.cli.main import main
    import edgeprune.models as models

    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("loaded a model"))
    for eval_arg, text in (("wikitext2,wikitext2", "names a text twice"), (" , ", "names no text"),
                           ("wikitext2,shakespeare", "both name shakespeare")):  # fmt: skip
        out = tmp_path / f"o{len(text)}"
        assert main(["build", "--max-ppl-ratio", "1.1", "--eval", eval_arg, "--calib", "shakespeare", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert text in err and "\n" not in err and not out.exists()
