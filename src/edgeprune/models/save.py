"""Saving a model directory: weights, tokenizer, its GGUF tokenizer record and report files, atomically.

One writer for every command that leaves a model behind (``prune``, ``reconstruct``, ``sparsify
--save-dense``, a build's stages), so each such directory loads with ``from_pretrained`` and
exports to GGUF on its own (the ``tokenizer.gguf`` record, :mod:`edgeprune.models.tokenizer_record`).
"""

from __future__ import annotations

from pathlib import Path


def save_model(out: str | Path, model, tokenizer, *, source_gguf: str | Path | None = None,
               files: dict[str, str] | None = None) -> Path:  # fmt: skip
    """Write ``out/``: ``model.save_pretrained``, the tokenizer and its ``tokenizer.gguf`` record (from
    ``source_gguf``, the GGUF the tokenizer came from: ``LoadedModel.source_gguf``), and ``files``
    (name -> text: reports, the step's YAML). Returns ``out``.

    Atomic: written into a temporary directory renamed into place at the end, so a failure leaves
    no ``out`` behind (and an existing ``out`` untouched).
    """
    from edgeprune.fileio import atomic_dir
    from edgeprune.models import tokenizer_record

    out = Path(out)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:  # a model without one (a bare module in tests) is still a loadable model
            tokenizer.save_pretrained(tmp)
            tokenizer_record.write(tmp, source_gguf)
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)
    return out
