"""The ONNX row's callables (``edgeprune.export.registry``): what builds, ``describe`` and profiling
need to know about an ONNX export (its evaluation backend is eval's: ``eval/backends.py``). Each
imports what it needs when called: onnx and onnxruntime load only when a graph is really written or
read.

An ONNX artifact is a folder (graph, external data, tokenizer, genai_config); its main file is
``model.onnx``, the name edgeprune and optimum both write.
"""

from __future__ import annotations

import collections
import math
from pathlib import Path

from edgeprune.errors import EdgepruneError
from edgeprune.export.onnx.names import MODEL_FILE
from edgeprune.export.common import Exported


def quants() -> tuple[str, ...]:
    from edgeprune.export.onnx.api import QUANTS

    return QUANTS


def needs(quant: str) -> str | None:
    return None  # onnxruntime's own quantizers make every type


def export(model, tokenizer, out_dir: Path, quant: str, *, verify: bool, source_gguf: str | None) -> Exported:
    """One ``onnx-<quant>/`` folder in ``out_dir`` (``source_gguf`` is not needed: the tokenizer is saved as is)."""
    from edgeprune.export.onnx.api import export_onnx

    folder = out_dir / f"onnx-{quant}"
    report = export_onnx(model, folder, tokenizer=tokenizer, quant=quant, verify=verify)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.suffix in (".onnx", ".data"))
    main = find(folder)
    artifact = folder.name if main is None else f"{folder.name}/{main.name}"
    return Exported(artifact=artifact, bytes=size, report=report.to_dict())


def find(path: Path) -> Path | None:
    """A ``.onnx`` file; a folder holding ``model.onnx``; or a folder of other ``.onnx`` graphs that
    is not a Hugging Face model directory (no config.json), its first graph by name."""
    if path.is_dir():
        if (path / MODEL_FILE).is_file():
            return path / MODEL_FILE
        graphs = sorted(path.glob("*.onnx"))
        return graphs[0] if graphs and not (path / "config.json").is_file() else None
    return path if path.suffix == ".onnx" else None


def describe(path: Path) -> dict:
    """Layers, I/O names, parameter count and widths from the graph (external data is not read)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise EdgepruneError(f"corrupt ONNX file {path}: {str(exc)[:100]}; re-export it") from None
    meta = {p.key: p.value for p in model.metadata_props}
    inputs = [i.name for i in model.graph.input]
    layers = sum(1 for name in inputs if name.startswith("past_key_values.") and name.endswith(".key"))
    params, types = 0, collections.Counter()
    for init in model.graph.initializer:
        count = math.prod(init.dims)
        params += count
        types[onnx.TensorProto.DataType.Name(init.data_type).lower()] += count
    files = [path] + [p for p in path.parent.glob(path.name + "*.data")] + list(path.parent.glob(path.stem + ".onnx_data"))
    info = {
        "architecture": meta.get("edgeprune.architecture", "onnx"),
        "layers": layers or None,
        "inputs": inputs,
        "outputs": [o.name for o in model.graph.output],
        "params": params,
        "dtype": types.most_common(1)[0][0] if types else "?",
        "file_bytes": sum(f.stat().st_size for f in set(files) if f.exists()),
    }
    for key in ("heads", "kv_heads", "intermediate"):
        if f"edgeprune.{key}" in meta:
            info[key] = [int(x) for x in meta[f"edgeprune.{key}"].split(",")]
    for key in ("head_dim", "hidden_size", "vocab_size"):  # what the cost model needs besides widths
        if f"edgeprune.{key}" in meta:
            info[key] = int(meta[f"edgeprune.{key}"])
    return info
