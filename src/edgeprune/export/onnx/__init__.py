"""ONNX export of Llama-family decoders (uniform or per-layer widths) with a KV cache, for onnxruntime.

    from edgeprune.export.onnx import export_onnx
    report = export_onnx(model, "out/model-onnx", tokenizer=tok, quant="int4", block_size=32)

Modules: ``names`` (I/O names and metadata keys, as data), ``decoder`` (the flat-KV torch module
that is exported), ``api`` (orchestration), ``quantize`` (onnxruntime's int8 / int4 quantizers),
``sparsity`` (2:4 checks, pure numpy), ``verify`` (onnxruntime vs torch), ``genai``
(``genai_config.json``), ``report``. Importing this package imports neither torch nor onnxruntime.
"""

from edgeprune.export.onnx.api import OnnxExportConfig, export_onnx
from edgeprune.export.onnx.report import OnnxExportReport, VerifyResult

__all__ = ["OnnxExportConfig", "OnnxExportReport", "VerifyResult", "export_onnx"]
