"""The evaluation text the default build needs ships inside the package: a fresh install with no
data directory (or an override that lacks the file) still evaluates; anything else missing is one
line naming --data-dir / $EDGEPRUNE_DATA."""

from __future__ import annotations

import hashlib
import math

import pytest

from edgeprune.data.paths import DATA_ENV, EMBEDDED, EMBEDDED_DIR, resolve_data_file
from edgeprune.errors import EdgepruneError
from tests.tiny import save_tiny, tiny_llama

WIKI_TEST = "wikitext-2-raw/wiki.test.raw"


def test_the_shipped_files_are_the_recorded_bytes():
    for relative, sha in EMBEDDED.items():
        assert hashlib.sha256((EMBEDDED_DIR / relative).read_bytes()).hexdigest() == sha, relative
    assert "CC BY-SA 3.0" in (EMBEDDED_DIR / "README.md").read_text()  # the license travels with the text


def test_an_empty_override_falls_back_to_the_shipped_copy(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert resolve_data_file(WIKI_TEST) == EMBEDDED_DIR / WIKI_TEST
    assert resolve_data_file(WIKI_TEST, tmp_path) == EMBEDDED_DIR / WIKI_TEST


def test_a_data_directory_that_has_the_file_wins(tmp_path):
    (tmp_path / "wikitext-2-raw").mkdir()
    (tmp_path / WIKI_TEST).write_text("my own copy\n")
    assert resolve_data_file(WIKI_TEST, tmp_path) == tmp_path / WIKI_TEST


def test_a_file_not_shipped_names_the_override(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(EdgepruneError) as err:
        resolve_data_file("zeroshot/arc_easy/test.jsonl")
    msg = str(err.value)
    assert "zeroshot/arc_easy/test.jsonl" in msg and "--data-dir" in msg and DATA_ENV in msg and "\n" not in msg
    with pytest.raises(EdgepruneError, match="does not exist: pass an existing directory"):
        resolve_data_file(WIKI_TEST, tmp_path / "nowhere")  # an override that was asked for must exist


def test_the_default_builds_evaluate_stage_runs_with_an_empty_data_override(tmp_path, monkeypatch):
    from edgeprune.pipeline.recipes import parse_recipe
    from edgeprune.pipeline.runner import build

    first = parse_recipe("default").steps[0]
    assert first.STEP == "evaluate" and first.ppl and not first.tasks  # what `make run` starts with
    empty = tmp_path / "empty-data"
    empty.mkdir()
    monkeypatch.setenv(DATA_ENV, str(empty))
    # the default step, at a window the tiny model's 256 positions hold
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - step: evaluate\n    seq_len: 128\n    limit_tokens: 512\n")
    src = save_tiny(tiny_llama(), tmp_path / "tiny")
    report = build("host", model=str(src), recipe=str(recipe), out=tmp_path / "out", log=lambda m: None)
    (stage,) = report["stages"]
    figures = stage["figures"]
    assert figures["windows"] == 4 and figures["tokens"] == 4 * 127  # a window predicts its last 127 tokens
    assert math.isfinite(figures["ppl"]) and figures["ppl"] > 1
    assert list(empty.iterdir()) == []  # nothing was written into the override
