"""A model directory's record of the GGUF tokenizer it came from: ``tokenizer.gguf``.

A model loaded from a GGUF file (a built-in name or a ``.gguf``) has its tokenizer described by
that file's ``tokenizer.*`` keys. The Hugging Face tokenizer transformers builds from them cannot
always be turned back into those keys (SmolLM2's lacks 21 of the 256 byte tokens llama.cpp's
converter insists on), so the GGUF exporter copies the source file's keys verbatim instead. A
model directory edgeprune writes from such a model therefore carries them with it, in
``tokenizer.gguf``: a vocabulary-only GGUF file (no tensors, as llama.cpp's own
``ggml-vocab-*.gguf``) holding the source's ``tokenizer.*`` and ``general.*`` keys byte for byte.
The exporter reads it like any source GGUF. A copy rather than the source's path, because that
path may not exist on another machine or after a package upgrade.

``write`` makes the record; ``find`` looks for it. Loading a directory exposes it as
``LoadedModel.source_gguf``, so a command that saves a model passes that on and a chain of
commands (prune -> reconstruct -> export) keeps it.
"""

from __future__ import annotations

from pathlib import Path

RECORD_NAME = "tokenizer.gguf"

# Keys that describe the source file's tensors, not its vocabulary; the writer sets the architecture.
_SKIPPED = ("general.architecture", "general.alignment", "general.file_type", "general.quantization_version")


def find(directory: str | Path) -> Path | None:
    """``directory/tokenizer.gguf`` if the directory has a record, else None."""
    path = Path(directory) / RECORD_NAME
    return path if path.is_file() else None


def write(directory: str | Path, source_gguf: str | Path | None) -> Path | None:
    """Write ``directory/tokenizer.gguf`` from the GGUF ``source_gguf`` (None: write nothing).

    ``source_gguf`` may itself be a record: the keys come out the same. Raises EdgepruneError
    (one line) if the source is not a whole GGUF file or has no tokenizer.
    """
    from gguf import GGUFWriter

    from edgeprune.errors import EdgepruneError
    from edgeprune.models.files import gguf_fields

    if source_gguf is None:
        return None
    source = Path(source_gguf)
    fields = gguf_fields(source, ("tokenizer.", "general."))
    if not any(kv.key == "tokenizer.ggml.model" for kv in fields):
        raise EdgepruneError(f"source GGUF {source} has no tokenizer (no tokenizer.ggml.model): nothing to record")
    arch = next((kv.value for kv in fields if kv.key == "general.architecture"), b"llama")
    path = Path(directory) / RECORD_NAME
    w = GGUFWriter(str(path), arch.decode("utf-8") if isinstance(arch, bytes) else str(arch))
    for kv in fields:
        if kv.key not in _SKIPPED:
            w.add_key_value(kv.key, kv.value, kv.type, kv.sub_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    # No read-back here: parsing a 50k-token vocabulary takes seconds, and the GGUF export that
    # consumes the record reads it back anyway (a damaged one is a one-line error there).
    return path
