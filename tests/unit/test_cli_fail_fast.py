"""Fail before work: a bad output path or a bad flag is one line on stderr and exit code 2, before
any model is loaded or any file is written (issue 16, item 5)."""

from __future__ import annotations

import importlib

import pytest

from edgeprune.cli.main import main
from edgeprune.errors import EdgepruneError
from edgeprune.fileio import check_output_dir, check_writable

# Everything that costs seconds to minutes once the output check has passed. Each is replaced by a
# function that fails the test, so the tests prove the check runs before any of them.
EXPENSIVE = [
    ("edgeprune.models", "load"),
    ("edgeprune.models.loading", "load"),
    ("edgeprune.compress.sparse.packed", "load_packed"),
    ("edgeprune.data.calib", "calibration_windows"),
    ("edgeprune.eval.evaluator", "Evaluator"),
    ("edgeprune.runtime.profile", "profile"),
    ("edgeprune.pipeline.runner", "prepare"),  # reads model metadata: after the output check too
]

# verb -> its command line writing to OUT; the model arguments name things that do not exist, so
# reaching the model would fail differently (and the patched loaders fail the test first)
WRITERS = {
    "prune": ["prune", "--out", "OUT"],
    "sparsify": ["sparsify", "--quant", "int4", "--out", "OUT"],
    "reconstruct": ["reconstruct", "--model", "no-such-model", "--dense", "no-such-model", "--out", "OUT"],
    "build": ["build", "--model", "no-such-model", "--out", "OUT"],
    "profile": ["profile", "no-such-model", "--out", "OUT"],
    "eval --json": ["eval", "--ppl", "--model", "no-such-model", "--json", "OUT"],
    "export gguf": ["export", "gguf", "--model", "no-such-model", "--out", "OUT"],
    "export onnx": ["export", "onnx", "--model", "no-such-model", "--out", "OUT"],
}


@pytest.fixture
def no_work(monkeypatch, tmp_path):
    """Run in an empty tmp_path (so 'nothing created' covers the working directory) with every
    expensive entry point replaced by one that fails the test."""

    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded (or calibration began) before the output was checked")

    for module, name in EXPENSIVE:
        monkeypatch.setattr(importlib.import_module(module), name, loaded)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _argv(verb: str, out) -> list[str]:
    return [str(out) if a == "OUT" else a for a in WRITERS[verb]]


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("edgeprune: error: ")
    return lines[0]


@pytest.mark.parametrize("below", [("sub",), ("a", "b")], ids=["FILE-sub", "FILE-a-b"])
@pytest.mark.parametrize("verb", list(WRITERS))
def test_output_under_a_regular_file_fails_before_loading(no_work, capsys, verb, below):
    blocker = no_work / "FILE"
    blocker.write_text("x")
    out = blocker.joinpath(*below)
    assert main(_argv(verb, out)) == 2
    line = _one_error_line(capsys)
    assert str(out) in line and f"{blocker} is a file, not a folder" in line
    assert sorted(no_work.iterdir()) == [blocker] and blocker.read_text() == "x"


@pytest.mark.parametrize(
    "verb, flag",
    [("prune", "--force"), ("sparsify", "--overwrite"), ("reconstruct", "--overwrite"), ("export onnx", "--overwrite")],
)
def test_existing_output_folder_needs_the_flag(no_work, capsys, verb, flag):
    out = no_work / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(_argv(verb, out)) == 2
    line = _one_error_line(capsys)
    assert f"output {out} already exists: pass {flag} to replace it" in line
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_existing_gguf_needs_overwrite(no_work, capsys):
    out = no_work / "m.gguf"
    out.write_bytes(b"precious")
    assert main(_argv("export gguf", out)) == 2
    assert "already exists: pass --overwrite" in _one_error_line(capsys)
    assert out.read_bytes() == b"precious"


@pytest.mark.parametrize("verb", ["prune", "sparsify", "reconstruct", "export onnx", "build", "profile"])
def test_folder_output_that_is_a_file(no_work, capsys, verb):
    out = no_work / "taken"
    out.write_text("x")
    assert main(_argv(verb, out) + (["--force"] if verb == "prune" else [])) == 2
    assert f"output {out} is a file, not a folder" in _one_error_line(capsys)
    assert out.read_text() == "x"


@pytest.mark.parametrize("verb", ["eval --json", "export gguf"])
def test_file_output_that_is_a_folder(no_work, capsys, verb):
    out = no_work / "dir"
    out.mkdir()
    assert main(_argv(verb, out)) == 2
    assert f"output {out} is a directory: pass a file name" in _one_error_line(capsys)


@pytest.mark.parametrize("verb", ["prune", "sparsify", "reconstruct"])
def test_missing_parent_must_be_created_first(no_work, capsys, verb):
    # these verbs have always asked for an existing parent: a typo in it should not grow a tree
    out = no_work / "missing" / "out"
    assert main(_argv(verb, out)) == 2
    assert f"directory {no_work / 'missing'} does not exist; create it first" in _one_error_line(capsys)
    assert list(no_work.iterdir()) == []


def test_build_refuses_a_foreign_folder_and_an_unresumed_build(no_work, capsys):
    from edgeprune.pipeline.runner import check_build_dir

    out = no_work / "dist"
    out.mkdir()
    check_build_dir(out, resume=False)  # an empty folder is fine
    (out / "notes.txt").write_text("x")
    assert main(_argv("build", out)) == 2
    assert "is not an edgeprune build" in _one_error_line(capsys)
    (out / "notes.txt").unlink()
    (out / "build.json").write_text("{}")
    assert main(_argv("build", out)) == 2
    assert "already holds a build: pass --resume" in _one_error_line(capsys)
    check_build_dir(out, resume=True)  # --resume into the existing build passes the check


def test_dry_run_reports_an_output_under_a_file(tmp_path):
    from edgeprune.pipeline.runner import prepare

    (tmp_path / "FILE").write_text("x")
    with pytest.raises(EdgepruneError, match="FILE is a file, not a folder"):
        prepare("host", model=None, recipe="default", out=tmp_path / "FILE" / "sub")


# -- the helpers ------------------------------------------------------------------------------------


def test_check_output_dir_cases(tmp_path):
    assert check_output_dir(tmp_path / "new") == (tmp_path / "new").resolve()
    (tmp_path / "old").mkdir()
    with pytest.raises(EdgepruneError, match="already exists: pass --force"):
        check_output_dir(tmp_path / "old", option="--force")
    assert check_output_dir(tmp_path / "old", overwrite=True) == (tmp_path / "old").resolve()
    assert check_output_dir(tmp_path / "old", exist_ok=True) == (tmp_path / "old").resolve()
    with pytest.raises(EdgepruneError, match="does not exist; create it first"):
        check_output_dir(tmp_path / "a" / "b")
    assert check_output_dir(tmp_path / "a" / "b", parents=True) == (tmp_path / "a" / "b").resolve()
    assert not (tmp_path / "a").exists()  # a check creates nothing


def test_check_writable_cases(tmp_path):
    (tmp_path / "FILE").write_text("x")
    with pytest.raises(EdgepruneError, match="FILE is a file, not a folder"):
        check_writable(tmp_path / "FILE" / "a" / "r.json", parents=True)
    with pytest.raises(EdgepruneError, match="does not exist; create it first"):
        check_writable(tmp_path / "a" / "r.json")
    assert check_writable(tmp_path / "a" / "r.json", parents=True) == (tmp_path / "a" / "r.json").resolve()
    assert check_writable(tmp_path / "FILE", overwrite=True) == (tmp_path / "FILE").resolve()


def test_not_writable_nearest_folder(tmp_path, monkeypatch):
    # the permission branch without chmod (which does not stop root): the folder reports no write access
    import os

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real_access(p, mode))
    with pytest.raises(EdgepruneError, match=f"folder {tmp_path} is not writable; choose another path"):
        check_output_dir(tmp_path / "a" / "b", parents=True)
    with pytest.raises(EdgepruneError, match=f"folder {tmp_path} is not writable"):
        check_writable(tmp_path / "r.json")
    with pytest.raises(EdgepruneError, match=f"folder {tmp_path} is not writable"):
        check_output_dir(tmp_path, exist_ok=True)  # a folder written into must itself be writable


# -- argparse errors: one line -----------------------------------------------------------------------


def _usage_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_invalid_choice_is_one_line_naming_the_allowed_values(capsys):
    line = _usage_error(capsys, ["sparsify", "--out", "x", "--quant", "int3"])
    assert line.startswith("edgeprune sparsify: error: argument --quant: invalid choice: 'int3'")
    assert all(q in line for q in ("none", "int4", "int8"))
    assert line.endswith("see 'edgeprune sparsify --help'")


def test_nested_subcommand_errors_name_their_own_help(capsys):
    line = _usage_error(capsys, ["export", "onnx", "--out", "x", "--exporter", "jit"])
    assert "invalid choice: 'jit'" in line and "dynamo" in line and "torchscript" in line
    assert line.endswith("see 'edgeprune export onnx --help'")
    line = _usage_error(capsys, ["export", "gguf", "--out", "x", "--bogus"])
    assert "unrecognized arguments: --bogus" in line and line.endswith("see 'edgeprune export gguf --help'")
    assert "required: FORMAT" in _usage_error(capsys, ["export"])


def test_unknown_flag_missing_argument_and_unknown_verb(capsys):
    line = _usage_error(capsys, ["prune", "--out", "x", "--bogus", "1"])
    assert line.startswith("edgeprune prune: error: unrecognized arguments: --bogus 1")
    assert "required: --out" in _usage_error(capsys, ["prune"])
    line = _usage_error(capsys, ["prun"])
    assert line.startswith("edgeprune: error: argument VERB: invalid choice: 'prun'") and "prune" in line


@pytest.mark.parametrize("argv", [["--help"], ["sparsify", "--help"], ["export", "gguf", "--help"]])
def test_help_is_still_the_full_help(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: edgeprune") and len(out.splitlines()) > 5
