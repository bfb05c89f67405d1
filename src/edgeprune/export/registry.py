"""The export formats, one row each: every layer that writes, plans, evaluates, profiles or
describes an artifact reads its row here instead of naming formats itself.

A row is data (name, runtime, what its artifacts look like, the bit width each format-neutral
alias means) plus lazy callables into the format's own package (``export/<name>/artifact.py``):
its quant names (the exporter's own list), the export a build runs, how to recognise and describe
an artifact; and its evaluation backend, which lives in ``eval/backends.py`` (eval sits above
export: exporters never import it). Those are imported when called, so this module stays as light
as ``import edgeprune`` must be. Adding a format is one row below plus its exporter package (and
its backend in eval/).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgeprune.errors import EdgepruneError
# Exported lives in common.py: the artifact modules this registry names return it without importing it back
from edgeprune.export.common import Exported, unknown_choice

# Format-neutral quant names a recipe may use; each row says which of its types each one means.
BIT_WIDTHS = ("4bit", "8bit", "float")
# What runs a model that is not an export artifact (a Hugging Face directory, a loaded model).
MODEL_RUNTIME = "torch"


@dataclass(frozen=True)
class Lazy:
    """A function named ``"module:function"``, imported on the first call (rows name code without importing it)."""

    target: str

    def __call__(self, *args, **kwargs):
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)(*args, **kwargs)


@dataclass(frozen=True)
class ExportFormat:
    """One export format, as every layer sees it."""

    name: str  # recipe / CLI name, and the artifact kind `describe` reports
    title: str  # for messages: "GGUF"
    artifact: str  # what its artifacts look like, for messages: "a .gguf file"
    runtime: str  # runs it in builds, evaluation and profiling
    # other profiling runtimes that open it (llama-bench; torch dequantizes a GGUF)
    extra_runtimes: tuple[str, ...]
    folder: bool  # the artifact is a folder; its recorded path names the main file inside
    bit_widths: dict[str, str]  # BIT_WIDTHS alias -> this format's type
    default_quant: str  # when a target lists none of this format's types
    gpu_note: str  # why this format suits a GPU target ("" when it says nothing)
    cli: str  # module of the `edgeprune export <name>` sub-verb
    quants: Callable[[], tuple[str, ...]]  # the exporter's own type names
    # (quant) -> the external binary the export step needs for that type, looked up on PATH; None: none
    needs: Callable[[str], str | None]
    # (model, tokenizer, stage_dir, quant, *, verify, source_gguf) -> Exported
    export: Callable[..., Exported]
    find: Callable[[Path], Path | None]  # (path) -> the artifact's main file when `path` names one
    describe: Callable[[Path], dict]  # (main file) -> metadata without loading weights
    # (main file, tokenizer spec, *, threads, batch_tokens) -> an evaluation backend
    evaluate: Callable[..., object]

    @property
    def runtimes(self) -> tuple[str, ...]:
        return (self.runtime, *self.extra_runtimes)

    def plain_quants(self) -> tuple[str, ...]:
        """The types the exporter makes on its own (no external binary)."""
        return tuple(q for q in self.quants() if self.needs(q) is None)


# The callables of a row, by field name: a format's artifact module defines one function of each name
# but "evaluate", which names the format's backend in eval/backends.py.
HOOKS = ("quants", "needs", "export", "find", "describe", "evaluate")


def hooks(module: str, *, evaluate: str) -> dict[str, Lazy]:
    """``module``'s functions named in HOOKS, and ``evaluate`` (``"module:function"``), each imported
    when first called."""
    return {**{name: Lazy(f"{module}:{name}") for name in HOOKS if name != "evaluate"}, "evaluate": Lazy(evaluate)}


FORMATS: dict[str, ExportFormat] = {
    "gguf": ExportFormat(
        name="gguf",
        title="GGUF",
        artifact="a .gguf file",
        runtime="llama.cpp",
        extra_runtimes=("llama-bench", "torch"),
        folder=False,
        bit_widths={"4bit": "q4_0", "8bit": "q8_0", "float": "f32"},
        default_quant="q4_0",
        gpu_note="llama.cpp offloads all layers to the GPU there",
        cli="edgeprune.cli.export_gguf_cmd",
        **hooks("edgeprune.export.gguf.artifact", evaluate="edgeprune.eval.backends:gguf_backend"),
    ),
    "onnx": ExportFormat(
        name="onnx",
        title="ONNX",
        artifact="a .onnx file or a folder holding model.onnx",
        runtime="onnxruntime",
        extra_runtimes=(),
        folder=True,  # graph, external data, tokenizer and genai_config travel together
        bit_widths={"4bit": "int4", "8bit": "int8", "float": "fp32"},
        default_quant="int4",
        gpu_note="",
        cli="edgeprune.cli.export_onnx_cmd",
        **hooks("edgeprune.export.onnx.artifact", evaluate="edgeprune.eval.backends:onnx_backend"),
    ),
}


def format_names() -> tuple[str, ...]:
    return tuple(FORMATS)


def get_format(name: str) -> ExportFormat:
    """The row for ``name``; one line with a "did you mean" and the registered names otherwise."""
    if name in FORMATS:
        return FORMATS[name]
    raise EdgepruneError(unknown_choice("export format", name, format_names())[0])


def all_quants() -> tuple[str, ...]:
    """Every registered format's type names, format by format."""
    return tuple(q for f in FORMATS.values() for q in f.quants())


def runtimes() -> tuple[str, ...]:
    """What evaluation runs on: torch for models, then each format's own runtime."""
    return tuple(dict.fromkeys([MODEL_RUNTIME, *(f.runtime for f in FORMATS.values())]))


def format_for_runtime(runtime: str) -> ExportFormat | None:
    """The format whose own runtime is ``runtime`` (None for torch or an unknown name)."""
    return next((f for f in FORMATS.values() if f.runtime == runtime), None)


def find_artifact(path: Path) -> tuple[ExportFormat, Path] | None:
    """(format, main file) of the first format that recognises ``path``, or None."""
    for fmt in FORMATS.values():
        main = fmt.find(path)
        if main is not None:
            return fmt, main
    return None
