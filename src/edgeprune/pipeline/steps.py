"""Build-level step configs: export, evaluate, profile. Compression steps register themselves in
``edgeprune.compress``; all share the registry in ``edgeprune.config``."""

from __future__ import annotations

from dataclasses import dataclass

from edgeprune.config import StepConfig, register_step
from edgeprune.export.common import unknown_choice
from edgeprune.export.registry import BIT_WIDTHS, FORMATS, all_quants, format_names
from edgeprune.pipeline.plan import AUTO_FORMATS


@register_step("export")
@dataclass(frozen=True)
class Export(StepConfig):
    """Write a deployable artifact in one of the registered formats (GGUF for llama.cpp, ONNX for onnxruntime)."""

    format: str = "auto"  # "auto": the target's preferred format; "alt": its second (or the other one)
    # one of the format's types (GGUF q8_0, q4_k_m, ...; ONNX fp32, int8, int4), a bit width (4bit,
    # 8bit, float) resolved for the chosen format, or "auto": the target's preferred type
    quant: str = "auto"
    verify: bool = True

    def check(self) -> list[str]:
        problems = unknown_choice("export format", self.format, AUTO_FORMATS + format_names())
        # the types the chosen format's exporter accepts; any format's while the target decides
        quants = FORMATS[self.format].quants() if self.format in FORMATS else all_quants()
        valid = quants + BIT_WIDTHS
        if self.quant != "auto" and self.quant not in valid:
            problems.append(f"export quant {self.quant!r} is not one of {', '.join(valid)}")
        return problems


@register_step("evaluate")
@dataclass(frozen=True)
class Evaluate(StepConfig):
    """Measure quality: WikiText-2 perplexity and optional zero-shot tasks."""

    ppl: bool = True
    seq_len: int = 1024
    limit_tokens: int | None = 16384  # a fixed prefix (16 windows of 1024) of the test set keeps builds short; None = all
    tasks: tuple[str, ...] = ()
    limit: int | None = 200  # examples per zero-shot task
    # tokens per forward pass: one 1024-token window keeps the logits of a 49k-vocabulary model at
    # 200 MB (four windows at once pushed a build's peak RSS past 4 GB in onnxruntime)
    batch_tokens: int = 1024

    def check(self) -> list[str]:
        problems = []
        if self.seq_len < 16:
            problems.append(f"evaluate seq_len must be >= 16, got {self.seq_len}")
        if self.batch_tokens < self.seq_len:
            problems.append(f"evaluate batch_tokens ({self.batch_tokens}) must hold one window ({self.seq_len})")
        if self.limit_tokens is not None and self.limit_tokens < self.seq_len:
            problems.append(f"evaluate limit_tokens ({self.limit_tokens}) is shorter than one window ({self.seq_len})")
        return problems


@register_step("profile")
@dataclass(frozen=True)
class Profile(StepConfig):
    """Measure speed and memory of the exported artifacts on the host (llama-bench methodology)."""

    prompt_tokens: int = 512
    gen_tokens: int = 128
    reps: int = 3

    def check(self) -> list[str]:
        bad = [k for k in ("prompt_tokens", "gen_tokens", "reps") if getattr(self, k) < 1]
        return [f"profile {k} must be >= 1" for k in bad]
