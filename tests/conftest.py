"""Test tiers: tests/unit -> `unit` (default, tiny in-memory models), tests/integration ->
`integration` (the real SmolLM2-135M, onnxruntime, llama.cpp). `device` tests need real hardware
and run only with --device."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_addoption(parser):
    parser.addoption("--device", action="store_true", help="also run tests marked `device` (real board or GPU)")


def pytest_collection_modifyitems(config, items):
    run_device = config.getoption("--device")
    deselected = []
    kept = []
    for item in items:
        path = Path(str(item.fspath))
        if HERE / "integration" in path.parents:
            item.add_marker(pytest.mark.integration)
        elif HERE / "unit" in path.parents:
            item.add_marker(pytest.mark.unit)
        if item.get_closest_marker("device") and not run_device:
            deselected.append(item)
        else:
            kept.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@pytest.fixture(autouse=True, scope="session")
def checkout_data_dir():
    """Every test reads the checkout's fixtures (tests/data: calib/, zeroshot/, general/ excerpts) as
    its data directory, never ../shared/data: a run's default calibration source (``general``
    where the data directory has it) is the same on a fresh clone and on a machine with ../shared."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEPRUNE_DATA", str(HERE / "data"))
        yield
