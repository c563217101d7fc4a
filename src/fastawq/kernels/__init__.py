"""Kernels: how ``y = x @ dequant(W)`` is computed for AWQ-quantized weights.

This release has the reference kernel (unpack, dequantize in the activation dtype, matmul), which
runs on any device in fp16, bf16 and fp32. Faster kernels register in :mod:`.dispatch`.
"""

from fastawq.kernels.dispatch import available_kernels, awq_linear

__all__ = ["available_kernels", "awq_linear"]
