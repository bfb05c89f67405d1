"""Describe a model artifact without loading its weights: an HF directory, or any registered export
format's artifact (GGUF file, ONNX graph; each format's describer is in its registry row).

Reads only headers and metadata (config.json + safetensors headers, GGUF key/values + tensor
infos, ONNX graph without external data), so it takes well under a second even for big models.
"""

from __future__ import annotations

import collections
import math
from pathlib import Path

from edgeprune.errors import EdgepruneError
from edgeprune.export.registry import FORMATS, find_artifact, get_format
from edgeprune.models.files import per_layer, safetensors_header


def resolve_artifact(source: str | Path) -> tuple[str, Path]:
    """(kind, path) for a built-in name or a path; kind is "hf-dir" or a registered export format
    (path: that artifact's main file)."""
    from edgeprune.models import builtin

    name = str(source)
    path = builtin.builtin_path(name) if builtin.is_builtin(name) else Path(name).expanduser()
    if path.exists():
        found = find_artifact(path)
        if found is not None:
            return found[0].name, found[1]
        if path.is_dir():
            return "hf-dir", path
        kinds = ", ".join(f.artifact for f in FORMATS.values())
        raise EdgepruneError(f"unknown artifact kind {path.name!r}: expected a model directory, {kinds}")
    hint = builtin.closest_builtin(name)
    did = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise EdgepruneError(f"no such model or file {name!r}{did}: pass a path or a built-in name ({', '.join(builtin.BUILTIN_MODELS)})")


def describe(source: str | Path) -> dict:
    kind, path = resolve_artifact(source)
    info = _describe_hf_dir(path) if kind == "hf-dir" else get_format(kind).describe(path)
    info.update(source=str(source), kind=kind, path=str(path))
    return info


def _describe_hf_dir(path: Path) -> dict:
    from edgeprune.models.loading import check_hf_dir

    cfg = check_hf_dir(path)
    n = cfg["num_hidden_layers"]
    heads = per_layer(cfg["num_attention_heads"], n)
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
        "kv_heads": per_layer(cfg.get("num_key_value_heads") or cfg["num_attention_heads"], n),
        "intermediate": per_layer(cfg["intermediate_size"], n),
        "params": params,
        "dtype": dtypes.most_common(1)[0][0].lower() if dtypes else "?",
        "file_bytes": nbytes,
    }


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
