"""Integrity checks on weight files, before transformers sees them (its errors are tracebacks), and
GGUF metadata read back as written (for copying keys into another GGUF file)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune.errors import EdgepruneError


def safetensors_header(path: Path) -> dict:
    """Parse a safetensors header and check the file holds every byte it declares.

    Layout: 8-byte little-endian header length N, N bytes of JSON, then the tensor data; each
    tensor's ``data_offsets`` are relative to the end of the header.
    """
    path = Path(path)
    size = path.stat().st_size
    fix = "re-download or re-save the model"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("file shorter than its 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise ValueError(f"header claims {n} bytes but the file has {size - 8}")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise EdgepruneError(f"corrupt safetensors file {path}: {exc}; {fix}") from None
    if 8 + n + end != size:
        raise EdgepruneError(
            f"truncated or corrupt safetensors file {path}: expected {8 + n + end} bytes, found {size}; {fix}"
        )
    return header


def open_gguf(path: Path):
    """Open a GGUF file with gguf-py's reader; a one-line error if it is not a whole GGUF file."""
    from gguf import GGUFReader

    path = Path(path)
    fix = "re-download or re-export the file"
    try:
        reader = GGUFReader(str(path), "r")
    except Exception as exc:  # gguf-py raises ValueError/struct errors/IndexError on bad bytes
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EdgepruneError(f"corrupt or truncated GGUF file {path}: {msg}; {fix}") from None
    size = path.stat().st_size
    end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    if end > size:
        raise EdgepruneError(f"truncated GGUF file {path}: tensor data ends at byte {end} but the file has {size}; {fix}")
    return reader


def gguf_field(reader, key: str, default=None):
    """Value of a GGUF metadata key as a Python scalar, string or list (gguf-py >= 0.10 API)."""
    field = reader.get_field(key)
    if field is None:
        return default
    return field.contents()


def per_layer(value, n):
    """A width a header gives once for all ``n`` layers, or already per layer, as a per-layer list."""
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


@dataclass(frozen=True)
class KV:
    """One GGUF metadata key with its value as gguf-py's ``GGUFWriter.add_key_value`` takes it."""

    key: str
    value: Any
    type: Any  # gguf.GGUFValueType
    sub_type: Any = None  # element type of an ARRAY


def _field_value(field) -> tuple[Any, Any, Any]:
    """(value, type, sub_type) of a GGUFReader field, strings kept as raw bytes (no re-encoding)."""
    from gguf import GGUFValueType

    vtype = field.types[0]
    if vtype == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]), vtype, None
    if vtype == GGUFValueType.ARRAY:
        sub = field.types[1] if len(field.types) > 1 else None
        if sub == GGUFValueType.STRING:
            return [bytes(field.parts[i]) for i in field.data], vtype, sub
        if sub == GGUFValueType.ARRAY:
            raise EdgepruneError(f"cannot copy nested array {field.name} from the source GGUF")
        return field.contents(), vtype, sub
    return field.contents(), vtype, None


def gguf_fields(path: Path, prefixes: tuple[str, ...]) -> list[KV]:
    """Every field of a GGUF file whose key starts with one of ``prefixes``, ready to write again."""
    reader = open_gguf(Path(path))
    out = []
    for key, field in reader.fields.items():
        if key.startswith(prefixes):
            value, vtype, sub = _field_value(field)
            out.append(KV(key, value, vtype, sub))
    return out
