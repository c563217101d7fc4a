"""On-disk formats: how quantized integers, scales and zero points lie in a checkpoint.

Nothing here chooses scales (that is :mod:`fastawq.algo`) or multiplies matrices (that is
:mod:`fastawq.kernels`); a format only packs and unpacks.
"""

from fastawq.format.awq_gemm import AWQ_ORDER, AWQ_REVERSE_ORDER, pack_gemm, unpack_gemm

__all__ = ["AWQ_ORDER", "AWQ_REVERSE_ORDER", "pack_gemm", "unpack_gemm"]
