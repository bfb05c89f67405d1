"""What an ONNX export wrote and how well it matched torch: a dataclass written as JSON beside the model."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class VerifyResult:
    """ORT vs torch on the same token ids, for a prefill and then greedy decode steps with the cache.

    ``*_max_rel_diff`` is ``max|ort - torch| / max|torch|`` over each compared logits tensor
    (the maximum over prompts and steps): an element-wise relative difference is meaningless for
    logits near zero, so the error is scaled by the largest logit instead.
    """

    prompts: int
    prompt_lengths: list[int]
    decode_steps: int
    prefill_max_rel_diff: float
    decode_max_rel_diff: float
    max_abs_diff: float
    argmax_agreement: float  # fraction of compared positions where ORT and torch pick the same token
    tolerance: float | None  # the bound checked (float32 exports); None: recorded only (quantized)
    passed: bool
    threads: int

    @property
    def max_rel_diff(self) -> float:
        return max(self.prefill_max_rel_diff, self.decode_max_rel_diff)


@dataclass
class OnnxExportReport:
    path: str  # the model.onnx file
    bytes: int  # model.onnx plus its external data, if any
    quant: str  # "fp32" | "int8" | "int8-dynamic" | "int4"
    block_size: int | None  # weights per scale (int8, int4)
    exporter: str  # "dynamo" | "torchscript": the one that produced the graph
    exporter_fallback: str | None  # why dynamo was not used, when it was asked for and failed
    opset: int
    external_data: bool
    architecture: str
    source_model_type: str | None
    num_layers: int
    heads: list[int]
    kv_heads: list[int]
    intermediate: list[int]
    head_dim: int
    inputs: list[str]
    outputs: list[str]
    sparsity_2_4: dict | None  # 2:4-sparse MatMul weights before quantization and whether quantization kept them
    verify: VerifyResult | None
    genai_config: bool
    # what a quantized graph stores: bits, block_size, symmetric, lm_head, accuracy_level, method and
    # "matmuls" (how many MatMul weights at int4 / int8 / fp32); None for fp32
    quantization: dict | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        return self.verify is not None and self.verify.passed

    @property
    def weights(self) -> str:
        """A short name for what the graph stores, e.g. ``int4 asym b32, lm_head int8``."""
        from edgeprune.export.onnx.quantize import weights_label

        return weights_label(self.quantization)

    @property
    def report_path(self) -> Path:
        from edgeprune.export.onnx.names import REPORT_FILE

        return Path(self.path).parent / REPORT_FILE

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.verify is not None:
            d["verify"]["max_rel_diff"] = self.verify.max_rel_diff
        d["weights"] = self.weights
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"
