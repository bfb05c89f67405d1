"""Compression steps (structured pruning, reconstruction, 2:4 sparsity, quantization): issues 6-8."""
