"""Reproducible ONNX artifacts (issue 21 item 5): the same model and settings give byte-identical
files from any checkout, output folder, working directory or process.

The dynamo exporter records a stack trace per node naming the checkout's and the venv's absolute
paths; ``passes.strip_metadata`` drops those records. The second export here runs in a subprocess
(its own hash seed) from a copy of the package elsewhere, in another working directory, into an
output path of another length. The dynamo exporter runs once per process (~10 s); the int8 and
int4 exports reuse its raw graph, so what they test is edgeprune's own tidying and quantizing.
Every file must match but ``export_report.json``, which records the output path and timings.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import edgeprune
from edgeprune.export.onnx import api, export_onnx, names, passes
from edgeprune.export.onnx.verify import empty_past, open_session, run_step
from tests.tiny import tiny_llama, tiny_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(edgeprune.__file__).resolve().parent  # src/edgeprune of this checkout
QUANTS = ("fp32", "int8", "int4")
RUN_FIELDS = ("path", "timings")  # the report's only run-specific fields: where it went, how long it took


def export_all(out: Path) -> None:
    """Export the tiny model as every quant in QUANTS into ``out/<quant>`` (dynamo, run once)."""
    model = tiny_llama(tie_word_embeddings=True)
    with _dynamo_once():
        for quant in QUANTS:
            export_onnx(model, out / quant, tokenizer=tiny_tokenizer(), quant=quant, exporter="dynamo", threads=1)


@contextlib.contextmanager
def _dynamo_once():
    """Run the dynamo exporter for the first export only; later ones get a copy of its raw files."""
    real, saved = api._export_dynamo, {}

    def export(wrapper, args, path: Path, n_layers: int) -> None:
        if not saved:
            real(wrapper, args, path, n_layers)
            saved.update({f.name: f.read_bytes() for f in path.parent.iterdir()})
        for name, data in saved.items():
            (path.parent / name).write_bytes(data)

    api._export_dynamo = export
    try:
        yield
    finally:
        api._export_dynamo = real


@pytest.fixture(scope="module")
def two_exports(tmp_path_factory):
    """(here, there): the same exports from this process and from a subprocess on a copied checkout."""
    root = tmp_path_factory.mktemp("repro")
    checkout = root / "another-checkout-with-a-longer-name" / "src"
    shutil.copytree(PACKAGE, checkout / "edgeprune", ignore=shutil.ignore_patterns("__pycache__"))
    cwd = root / "cwd"
    cwd.mkdir()
    there = root / "exports-from-elsewhere" / "nested"
    code = ("import sys, edgeprune; from pathlib import Path; print(edgeprune.__file__); "
            "from tests.unit.test_onnx_reproducible import export_all; export_all(Path(sys.argv[1]))")  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(checkout), str(REPO)]), PYTHONHASHSEED="7")
    log = root / "child.log"  # a file, not a pipe: nobody reads a pipe while this process exports
    with open(log, "w") as out:
        child = subprocess.Popen([sys.executable, "-c", code, str(there)], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    here = root / "h"
    try:
        export_all(here)  # while the subprocess works
        child.wait(timeout=300)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    text = log.read_text()
    assert child.returncode == 0, text[-3000:]
    assert str(checkout / "edgeprune" / "__init__.py") in text.splitlines()  # the copy ran, not this checkout
    return here, there, checkout


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("quant", QUANTS)
def test_exports_are_byte_identical_across_checkouts_and_processes(two_exports, quant):
    here, there, _ = two_exports
    a, b = _files(here / quant), _files(there / quant)
    assert sorted(a) == sorted(b) and names.MODEL_FILE in a
    differ = [name for name in a if name != names.REPORT_FILE and a[name] != b[name]]
    assert not differ, f"{differ} differ between the two exports"
    first, second = ({k: v for k, v in json.loads(x[names.REPORT_FILE]).items() if k not in RUN_FIELDS} for x in (a, b))
    assert first == second


@pytest.mark.parametrize("quant", QUANTS)
def test_no_exporter_records_or_paths_are_left(two_exports, quant):
    here, there, checkout = two_exports
    graph = onnx.load(str(here / quant / names.MODEL_FILE))
    graphs = [graph.graph] + [f for f in graph.functions]
    keys = [p.key for g in graphs for n in g.node for p in n.metadata_props]
    keys += [p.key for p in graph.graph.metadata_props] + [p.key for v in graph.graph.input for p in v.metadata_props]
    assert not keys  # not one pkg.torch.onnx.* (or any other) record on nodes, graph or inputs
    assert all(p.key.startswith(names.META_PREFIX) for p in graph.metadata_props)
    assert {p.key for p in graph.metadata_props} >= {names.META_ARCHITECTURE, names.META_QUANT}
    for folder, elsewhere in ((here, there), (there, here)):
        for name, data in _files(folder / quant).items():
            if name == names.REPORT_FILE:
                continue  # it records where it was written, by design
            for path in (REPO, checkout.parent, folder, elsewhere, Path(sys.prefix)):
                assert str(path).encode() not in data, f"{name} holds {path}"
            assert b"site-packages" not in data and b"pkg.torch" not in data


@pytest.mark.parametrize("quant", QUANTS)
def test_stripped_graphs_still_match_torch(two_exports, quant):
    here, _, _ = two_exports
    report = json.loads((here / quant / names.REPORT_FILE).read_text())
    assert report["exporter"] == "dynamo" and report["verify"]["passed"]
    model = tiny_llama(tie_word_embeddings=True)
    ids = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(7))
    session = open_session(here / quant / names.MODEL_FILE, 1)
    logits, _ = run_step(session, ids.numpy(), empty_past([2] * 3, 16, 2), 0)
    with torch.no_grad():
        ref = model(ids).logits.numpy()
    rel = float(np.abs(logits - ref).max() / np.abs(ref).max())
    assert rel <= (1e-4 if quant == "fp32" else 0.5)  # quantized: close, not exact (as verify)


def test_strip_metadata_reaches_functions_subgraphs_and_keeps_edgeprune_keys():
    from onnx import TensorProto, helper

    def tag(message, text):
        message.doc_string = text
        if hasattr(message, "metadata_props"):
            helper.set_metadata_props(message, {"pkg.torch.onnx.stack_trace": text})
        return message

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])
    branch = helper.make_graph([tag(helper.make_node("Identity", ["x"], ["z"]), "/src/a.py")], "branch", [], [z])
    tag(branch, "/src/b.py")
    const = helper.make_node("Constant", [], ["c"], value=tag(helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]), "/src/t.py"))
    cond = helper.make_node("Constant", [], ["cond"], value=helper.make_tensor("b", TensorProto.BOOL, [], [True]))
    branch_if = tag(helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch), "/src/c.py")
    body = tag(helper.make_graph([const, cond, branch_if], "main", [tag(x, "/src/d.py")], [y]), "/src/e.py")
    function = tag(helper.make_function("local", "f", ["a"], ["b"], [tag(helper.make_node("Identity", ["a"], ["b"]), "/src/f.py")],
                                        [helper.make_opsetid("", 18)]), "/src/g.py")  # fmt: skip
    model = tag(helper.make_model(body, functions=[function], opset_imports=[helper.make_opsetid("", 18),
                                                                             helper.make_opsetid("local", 1)]), "/src/h.py")  # fmt: skip
    helper.set_metadata_props(model, {names.META_ARCHITECTURE: "llama", "pkg.torch.export.signature": "/src/i.py"})
    dropped = passes.strip_metadata(model)
    # a doc string and a record each: 4 nodes (If, Identity in then, else and the function), 3 graphs
    # (main, then, else), input x, the Constant's tensor, the function; the model's doc string and foreign key
    assert dropped == 2 * 10 + 2
    assert b"/src/" not in model.SerializeToString()
    assert {p.key: p.value for p in model.metadata_props} == {names.META_ARCHITECTURE: "llama"}
    onnx.checker.check_model(model)
