"""``AWQLinear``: a linear layer whose weight is stored in the AWQ GEMM layout.

The module's buffers are exactly the checkpoint tensors (``qweight``, ``qzeros``, ``scales``,
``bias``), so ``state_dict()`` is what is saved and what is loaded; the product is computed by
:func:`fastawq.kernels.awq_linear`.
"""

from __future__ import annotations

import torch
from torch import nn

from fastawq.algo.quant import QuantizedWeight
from fastawq.format.awq_gemm import dequantize_gemm, pack_gemm
from fastawq.kernels import awq_linear


class AWQLinear(nn.Module):
    qweight: torch.Tensor
    qzeros: torch.Tensor
    scales: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        group_size: int,
        bias: bool,
        bits: int = 4,
        device: torch.device | str | None = None,
        scale_dtype: torch.dtype = torch.float16,
    ) -> None:
        super().__init__()
        if bits != 4:
            raise ValueError("AWQLinear holds 4-bit weights only")
        if in_features % group_size or out_features % 8:
            raise ValueError(
                f"AWQLinear({in_features}→{out_features}) needs in_features divisible by the group size "
                f"{group_size} and out_features divisible by 8"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.group_size = group_size
        self.bits = bits
        n_groups = in_features // group_size
        self.register_buffer("qweight", torch.zeros(in_features, out_features // 8, dtype=torch.int32, device=device))
        self.register_buffer("qzeros", torch.zeros(n_groups, out_features // 8, dtype=torch.int32, device=device))
        self.register_buffer("scales", torch.zeros(n_groups, out_features, dtype=scale_dtype, device=device))
        if bias:
            self.register_buffer("bias", torch.zeros(out_features, dtype=scale_dtype, device=device))
        else:
            self.bias = None

    @classmethod
    def from_quantized(
        cls, qw: QuantizedWeight, bias: torch.Tensor | None, bias_dtype: torch.dtype = torch.float16
    ) -> AWQLinear:
        n, k = qw.codes.shape
        mod = cls(k, n, group_size=qw.group_size, bias=bias is not None, bits=qw.bits, device=qw.codes.device)
        mod.qweight = pack_gemm(qw.codes.t().contiguous())
        mod.qzeros = pack_gemm(qw.zeros.t().contiguous())
        mod.scales = qw.scales.t().contiguous().to(torch.float16)
        if bias is not None:
            mod.bias = bias.detach().to(bias_dtype).clone()
        return mod

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The full-precision weight in ``nn.Linear`` orientation [out, in]."""
        return dequantize_gemm(self.qweight, self.qzeros, self.scales, self.group_size, dtype=dtype).t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return awq_linear(x, self.qweight, self.qzeros, self.scales, self.group_size, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
            f"group_size={self.group_size}, bias={self.bias is not None}"
        )
