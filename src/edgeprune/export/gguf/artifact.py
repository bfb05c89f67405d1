"""The GGUF row's callables (``edgeprune.export.registry``): what builds, ``describe`` and profiling
need to know about a GGUF file (its evaluation backend is eval's: ``eval/backends.py``). Each imports
what it needs when called: gguf-py loads only when a GGUF is really written or read.
"""

from __future__ import annotations

import collections
from pathlib import Path

from edgeprune.export.common import Exported


def quants() -> tuple[str, ...]:
    from edgeprune.export.gguf.tables import QTYPES

    return tuple(QTYPES)


def needs(quant: str) -> str | None:
    """No type needs an outside program: K-quants come from llama.cpp's quantizer through
    llama-cpp-python (export/gguf/kquant.py)."""
    return None


def export(model, tokenizer, out_dir: Path, quant: str, *, verify: bool, source_gguf: str | None, imatrix: Path | None = None) -> Exported:
    """One ``model-<quant>.gguf`` in ``out_dir``; ``source_gguf``'s tokenizer keys are copied verbatim;
    ``imatrix``: an importance matrix file for the quantizer (GGUF only: the build's export step passes
    it when its config asks for one)."""
    from edgeprune.export.gguf.api import export_gguf

    name = f"model-{quant}.gguf"
    report = export_gguf(model, tokenizer, out_dir / name, qtype=quant, source_gguf=source_gguf, verify=verify,
                         imatrix=imatrix, progress=False)  # fmt: skip
    return Exported(artifact=name, bytes=(out_dir / name).stat().st_size, report=report.to_dict())


def find(path: Path) -> Path | None:
    return path if path.suffix == ".gguf" and not path.is_dir() else None


def describe(path: Path) -> dict:
    """Widths, parameter count and main type from the GGUF's key/values and tensor infos."""
    from gguf import GGMLQuantizationType

    from edgeprune.models.files import gguf_field, open_gguf, per_layer

    reader = open_gguf(path)
    arch = gguf_field(reader, "general.architecture")
    n = gguf_field(reader, f"{arch}.block_count")
    heads = per_layer(gguf_field(reader, f"{arch}.attention.head_count"), n)
    kv = per_layer(gguf_field(reader, f"{arch}.attention.head_count_kv", heads), n)
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
        "intermediate": per_layer(gguf_field(reader, f"{arch}.feed_forward_length"), n),
        "params": params,
        "dtype": types.most_common(1)[0][0].lower() if types else "?",
        "file_bytes": path.stat().st_size,
    }
