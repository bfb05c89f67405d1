"""Group-wise int4/int8 weight quantization: RTN and GPTQ (``weights.py``, ``step: quantize``) over
the pure maths of ``quantize.py``."""
