"""Shared fixtures for the integration tier: the real SmolLM2-135M default model, loaded once."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def default_model():
    from edgeprune.models import load

    return load("smollm2-135m")
