"""Describe a model artifact without loading its weights: HF directory, GGUF file or ONNX file.

Reads only headers and metadata (config.json + safetensors headers, GGUF key/values + tensor
infos, ONNX graph without external data), so it takes well under a second even for big models.
"""

from __future__ import annotations

import collections
import math
from pathlib import Path

from edgeprune.errors import EdgepruneError


def resolve_artifact(source: str | Path) -> tuple[str, Path]:
    """(kind, path) for a built-in name or a path; kind is "hf-dir", "gguf" or "onnx"."""
    from edgeprune.models import builtin

    name = str(source)
    if builtin.is_builtin(name):
        return "gguf", builtin.builtin_path(name)
    path = Path(name).expanduser()
    if path.is_dir():
        if list(path.glob("*.onnx")) and not (path / "config.json").is_file():
            return "onnx", sorted(path.glob("*.onnx"))[0]
        return "hf-dir", path
    if path.is_file():
        if path.suffix == ".gguf":
            return "gguf", path
        if path.suffix == ".onnx":
            return "onnx", path
        raise EdgepruneError(f"unknown artifact kind {path.name!r}: expected a model directory, a .gguf or an .onnx file")
    hint = builtin.closest_builtin(name)
    did = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise EdgepruneError(f"no such model or file {name!r}{did}: pass a path or a built-in name ({', '.join(builtin.BUILTIN_MODELS)})")


def describe(source: str | Path) -> dict:
    kind, path = resolve_artifact(source)
    info = {"hf-dir": _describe_hf_dir, "gguf": _describe_gguf, "onnx": _describe_onnx}[kind](path)
    info.update(source=str(source), kind=kind, path=str(path))
    return info


def _per_layer(value, n):
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def _describe_hf_dir(path: Path) -> dict:
    from edgeprune.models.files import safetensors_header
    from edgeprune.models.loading import check_hf_dir

    cfg = check_hf_dir(path)
    n = cfg["num_hidden_layers"]
    heads = _per_layer(cfg["num_attention_heads"], n)
    params, dtypes, nbytes = 0, collections.Counter(), 0
    for f in sorted(path.glob("*.safetensors")):
        nbytes += f.stat().st_size
        for k, v in safetensors_header(f).items():
            if k == "__metadata__":
                continue
            count = math.prod(v["shape"])
            params += count
            dtypes[v["dtype"]] += count
    return {
        "architecture": cfg.get("model_type"),
        "layers": n,
        "hidden_size": cfg["hidden_size"],
        "vocab_size": cfg["vocab_size"],
        "head_dim": cfg.get("head_dim") or cfg["hidden_size"] // max(heads),
        "heads": heads,
        "kv_heads": _per_layer(cfg.get("num_key_value_heads") or cfg["num_attention_heads"], n),
        "intermediate": _per_layer(cfg["intermediate_size"], n),
        "params": params,
        "dtype": dtypes.most_common(1)[0][0].lower() if dtypes else "?",
        "file_bytes": nbytes,
    }


def _describe_gguf(path: Path) -> dict:
    from gguf import GGMLQuantizationType

    from edgeprune.models.files import gguf_field, open_gguf

    reader = open_gguf(path)
    arch = gguf_field(reader, "general.architecture")
    n = gguf_field(reader, f"{arch}.block_count")
    heads = _per_layer(gguf_field(reader, f"{arch}.attention.head_count"), n)
    kv = _per_layer(gguf_field(reader, f"{arch}.attention.head_count_kv", heads), n)
    hidden = gguf_field(reader, f"{arch}.embedding_length")
    types = collections.Counter()
    params = 0
    vocab = None
    for t in reader.tensors:
        count = int(t.n_elements)
        params += count
        types[GGMLQuantizationType(t.tensor_type).name] += count
        if t.name == "token_embd.weight":
            vocab = int(max(t.shape))
    return {
        "architecture": arch,
        "name": gguf_field(reader, "general.name"),
        "layers": n,
        "hidden_size": hidden,
        "vocab_size": gguf_field(reader, f"{arch}.vocab_size", vocab),
        "head_dim": gguf_field(reader, f"{arch}.attention.key_length") or hidden // max(heads),
        "heads": heads,
        "kv_heads": kv,
        "intermediate": _per_layer(gguf_field(reader, f"{arch}.feed_forward_length"), n),
        "params": params,
        "dtype": types.most_common(1)[0][0].lower() if types else "?",
        "file_bytes": path.stat().st_size,
    }


def _describe_onnx(path: Path) -> dict:
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


def _widths_line(label: str, values) -> str:
    if values is None:
        return ""
    if len(set(values)) == 1:
        return f"{label:<13}{values[0]} (all layers)"
    return f"{label:<13}{' '.join(map(str, values))}"


def format_description(info: dict) -> str:
    """Human-readable text for ``describe``'s result."""
    lines = [
        f"model        {info['source']}",
        f"kind         {info['kind']}  ({info['path']})",
        f"architecture {info['architecture']}" + (f"  [{info['name']}]" if info.get("name") else ""),
    ]
    if info.get("layers"):
        lines.append(f"layers       {info['layers']}")
    for key in ("hidden_size", "head_dim", "vocab_size"):
        if info.get(key):
            lines.append(f"{key.replace('_', ' '):<13}{info[key]}")
    if info.get("heads") is not None and info.get("kv_heads") is not None:
        h, k = info["heads"], info["kv_heads"]
        if len(set(h)) == 1 and len(set(k)) == 1:
            lines.append(f"{'heads':<13}{h[0]}/{k[0]} (query/KV, all layers)")
        else:
            lines.append(_widths_line("heads", h))
            lines.append(_widths_line("kv heads", k))
    if info.get("intermediate") is not None:
        lines.append(_widths_line("mlp width", info["intermediate"]))
    lines.append(f"{'parameters':<13}{info['params']:,} ({info['params'] / 1e6:.1f}M)")
    lines.append(f"{'dtype':<13}{info['dtype']}")
    lines.append(f"{'file size':<13}{info['file_bytes']:,} bytes ({info['file_bytes'] / 2**20:.1f} MiB)")
    return "\n".join(line for line in lines if line)
