"""Device profiles (data, sources, did-you-mean) and the roofline cost model (pure arithmetic)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from edgeprune.cli.main import main
from edgeprune.devices import host as host_mod
from edgeprune.devices.cost import ArtifactCost, calibrate, predict
from edgeprune.devices.profiles import device_names, get_device
from edgeprune.errors import EdgepruneError

REQUIRED = ["jetson-orin-nano", "jetson-orin-nx-16gb", "jetson-agx-orin-64gb", "raspberry-pi-5-8gb",
            "snapdragon-8-gen-3", "apple-m2-8gb", "x86-laptop", "rtx-4090", "h100", "host"]  # fmt: skip

COST = ArtifactCost(name="m", n_layers=30, params=135_000_000, weight_bytes=100_000_000,
                    kv_bytes_per_position=23040, linear_flops_per_token=212_000_000,
                    attn_flops_per_position=69120, quant="q8_0")  # fmt: skip


@pytest.fixture(autouse=True)
def fake_host(monkeypatch, tmp_path):
    # The real host measurement takes seconds; the unit tier checks the plumbing with fixed figures.
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path))
    monkeypatch.setattr(host_mod, "measure_bandwidth_gbs", lambda: 20.0)
    monkeypatch.setattr(host_mod, "measure_matmul_tflops", lambda: 0.1)


def test_registry_has_every_required_device_with_sources():
    assert set(REQUIRED) <= set(device_names())
    for name in REQUIRED:
        p = get_device(name)
        assert p.name == name and p.bandwidth_gbs > 0 and p.peak_tflops and p.usable_memory_gb > 0
        assert "bandwidth_gbs" in p.sources and "peak_tflops" in p.sources, name
    assert get_device("jetson-orin-nano").sparse_24 and not get_device("raspberry-pi-5-8gb").sparse_24


def test_unknown_device_suggests_closest():
    with pytest.raises(EdgepruneError, match=r"unknown device 'jetson-nano'.*did you mean jetson-orin-nano"):
        get_device("jetson-nano")


def test_host_is_measured_once_and_cached(monkeypatch):
    first = get_device("host")
    assert first.measured and first.bandwidth_gbs == 20.0 and first.cpu_cores >= 1
    monkeypatch.setattr(host_mod, "measure_bandwidth_gbs", lambda: 999.0)
    assert get_device("host").bandwidth_gbs == 20.0  # read from the cache
    assert host_mod.host_profile(refresh=True).bandwidth_gbs == 999.0


def test_profiles_module_imports_no_torch():
    code = "import sys, edgeprune.devices.profiles, edgeprune.devices.cost; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_decode_is_bandwidth_bound_and_scales_with_bytes():
    pi = get_device("raspberry-pi-5-8gb")
    full = predict(pi, COST)
    half = predict(pi, dataclasses.replace(COST, weight_bytes=COST.weight_bytes // 2, kv_bytes_per_position=0))
    assert full.decode_bound == "bandwidth"
    # roofline: tokens/s = efficiency x bandwidth / bytes per token
    expected = 0.6 * 17e9 / (COST.weight_bytes + COST.kv_bytes_per_position * (512 + 64))
    assert full.decode_tps == pytest.approx(expected, rel=1e-9)
    assert half.decode_tps == pytest.approx(0.6 * 17e9 / (COST.weight_bytes // 2), rel=1e-9)


def test_fits_and_overhead_bound():
    big = dataclasses.replace(COST, weight_bytes=7 * 10**9)
    assert not predict(get_device("jetson-orin-nano"), big).fits
    assert predict(get_device("jetson-orin-nano"), COST).decode_bound == "overhead"


def test_calibrate_reproduces_a_measurement():
    pi = get_device("raspberry-pi-5-8gb")
    bw_eff, c_eff = calibrate(40.0, 300.0, pi, COST)
    p = predict(pi, COST, bw_efficiency=bw_eff, compute_efficiency=c_eff)
    assert p.decode_tps == pytest.approx(40.0, rel=1e-6)
    assert p.prefill_tps == pytest.approx(300.0, rel=1e-6)


def test_cli_devices_list_show_and_errors(capsys):
    assert main(["devices"]) == 0
    assert "raspberry-pi-5-8gb" in capsys.readouterr().out
    assert main(["devices", "show", "rtx-4090", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bandwidth_gbs"] == 1008
    assert main(["devices", "show", "rpi5"]) == 2
    assert "unknown device 'rpi5'" in capsys.readouterr().err


def test_host_calibration_is_fitted_persisted_and_used():
    from edgeprune.devices.cost import calibrate_bandwidth, calibrate_compute, decode_bytes_per_token

    host = get_device("host")
    assert predict(host, COST).bw_efficiency == 0.6  # nothing fitted yet: the default
    eff = calibrate_bandwidth([(40.0, COST)], host, prompt_tokens=128, gen_tokens=64)
    assert eff == pytest.approx(40.0 * decode_bytes_per_token(COST, prompt_tokens=128, gen_tokens=64) / 20e9)
    ceff = calibrate_compute([(500.0, COST)], host, prompt_tokens=128)
    host_mod.save_calibration({"llama.cpp": {"q8_0": {"bw_efficiency": eff, "compute_efficiency": ceff}}}, note="test")
    host = get_device("host")  # read back from the cache
    assert host.calibration["llama.cpp"]["q8_0"]["bw_efficiency"] == pytest.approx(eff)
    assert "calibration" in host.sources
    p = predict(host, COST, prompt_tokens=128, gen_tokens=64, runtime="llama.cpp")
    assert p.decode_tps == pytest.approx(40.0, rel=1e-9) and p.prefill_tps == pytest.approx(500.0, rel=1e-6)
    # a held-out artifact of the same type: decode scales with its bytes
    half = dataclasses.replace(COST, weight_bytes=COST.weight_bytes // 2)
    ratio = decode_bytes_per_token(COST, prompt_tokens=128, gen_tokens=64) / decode_bytes_per_token(half, prompt_tokens=128, gen_tokens=64)
    assert predict(host, half, prompt_tokens=128, gen_tokens=64).decode_tps == pytest.approx(40.0 * ratio, rel=1e-9)
    # other runtimes / types keep the defaults; re-measuring the host drops the calibration
    assert predict(host, COST, runtime="onnxruntime").bw_efficiency == 0.6
    assert host_mod.host_profile(refresh=True).calibration == {}


def test_fitted_per_layer_overhead_is_recovered_and_used():
    from edgeprune.devices.cost import calibrate_bandwidth, fit_per_layer_overhead

    host = get_device("host")  # 20 GB/s in this test
    # synthetic measurements: 100 us per layer (30 layers) + bytes at 8 GB/s
    sizes = [COST.weight_bytes, COST.weight_bytes // 2, COST.weight_bytes // 4]
    arts = [dataclasses.replace(COST, weight_bytes=b, kv_bytes_per_position=0) for b in sizes]
    measured = [(1.0 / (30 * 100e-6 + a.weight_bytes / 8e9), a) for a in arts]
    us = fit_per_layer_overhead(measured)
    assert us == pytest.approx(100.0, rel=1e-6)
    eff = calibrate_bandwidth(measured[:1], host, per_layer_overhead_us=us)
    assert eff == pytest.approx(8 / 20, rel=1e-6)
    host_mod.save_calibration({"llama.cpp": {"q8_0": {"bw_efficiency": eff, "per_layer_overhead_us": us}}})
    p = predict(get_device("host"), arts[2], runtime="llama.cpp")
    assert p.decode_tps == pytest.approx(measured[2][0], rel=1e-6)  # a held-out size, right because the fixed part is kept
