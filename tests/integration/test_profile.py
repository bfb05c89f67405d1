"""The harness on the real default GGUF in llama.cpp: fresh processes, sane figures, a report."""

from __future__ import annotations

from edgeprune.cli.main import main
from edgeprune.runtime.profile import profile


def test_profile_default_gguf_in_llamacpp():
    res = profile("smollm2-135m", prompt_tokens=64, gen_tokens=16, reps=2)
    assert res.runtime == "llama.cpp" and len(res.runs) == 2
    s = res.summary
    # measured and positive; which speed beats which is bench/'s business, not a test's
    assert s["prefill_tps"]["median"] > 0 and s["decode_tps"]["median"] > 0
    assert 50 < s["peak_rss_mb"]["median"] < 2000
    assert s["ttft_ms"]["min"] <= s["ttft_ms"]["median"] <= s["ttft_ms"]["max"]


def test_cli_profile_writes_report(tmp_path, capsys):
    assert main(["profile", "smollm2-135m", "--reps", "1", "--prompt-tokens", "32", "--gen-tokens", "8", "--out", str(tmp_path)]) == 0
    assert "decode tok/s" in capsys.readouterr().out
    assert {p.name for p in tmp_path.iterdir()} >= {"profile.json", "profile.md", "profile.png"}
