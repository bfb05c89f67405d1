"""Exporters to GGUF (llama.cpp) and ONNX (onnxruntime): issues 4-5."""
