"""``AWQLinear``: a linear layer with a 4-bit AWQ weight.

A fresh or loaded module holds exactly the checkpoint tensors (``qweight``, ``qzeros``, ``scales``,
``bias``: the AWQ GEMM layout). The kernel chosen for a call (:mod:`fastawq.kernels.dispatch`) may want
another runtime layout (:mod:`fastawq.kernels.layouts`); the module then repacks itself once. Whatever
the layout, ``state_dict()`` yields the GEMM tensors, converted back exactly, so saving a repacked model
writes the checkpoint it was loaded from.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fastawq.algo.quant import QuantizedWeight
from fastawq.format.awq_gemm import dequantize_gemm, pack_gemm
from fastawq.kernels import dispatch, layouts

_GEMM_NAMES = ("qweight", "qzeros", "scales")


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
        self.layout = layouts.AWQ_GEMM
        #: kernel forced for this module (None/"auto": chosen per call); FASTAWQ_KERNEL overrides it
        self.kernel: str | None = None
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

    # ------------------------------------------------------------------------------------- layouts

    @property
    def device(self) -> torch.device:
        return next(iter(t for t in self._buffers.values() if t is not None)).device

    def layout_tensors(self) -> dict[str, torch.Tensor]:
        """The weight tensors of the current layout (no bias)."""
        return {k: v for k, v in self._buffers.items() if k != "bias" and v is not None}

    def gemm_tensors(self) -> layouts.GemmTensors:
        """The AWQ GEMM tensors, whatever the current layout (exact)."""
        return layouts.from_layout(self.layout_tensors(), self.layout)

    def to_layout(self, layout: str) -> None:
        """Repack the weight into ``layout`` (no-op if already there)."""
        if layout == self.layout:
            return
        new = layouts.to_layout(self.gemm_tensors(), layout)
        for name in list(self.layout_tensors()):
            del self._buffers[name]
        for name, t in new.items():
            self.register_buffer(name, t, persistent=layout == layouts.AWQ_GEMM)
        self.layout = layout

    def _apply(self, fn: Any, recurse: bool = True) -> AWQLinear:
        """``.to(device)`` moves the weight; ``.to(dtype)`` / ``.half()`` leave its tensors' dtypes alone.

        The codes, zero points and fp16 scales are the checkpoint: casting them (say scales to bf16)
        would lose bits silently. The bias follows the model's dtype like any other parameter.
        """
        before = self.layout_tensors()
        super()._apply(fn, recurse)
        for name, old in before.items():
            new = self._buffers[name]
            if new is not None and new.dtype != old.dtype:
                self._buffers[name] = old.to(new.device)
        return self

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        if self.layout == layouts.AWQ_GEMM:
            super()._save_to_state_dict(destination, prefix, keep_vars)
            return
        gemm = self.gemm_tensors()
        for name in _GEMM_NAMES:
            destination[prefix + name] = getattr(gemm, name)
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        self.to_layout(layouts.AWQ_GEMM)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -------------------------------------------------------------------------------------- compute

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The full-precision weight in ``nn.Linear`` orientation [out, in]."""
        g = self.gemm_tensors()
        return dequantize_gemm(g.qweight, g.qzeros, g.scales, self.group_size, dtype=dtype).t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"AWQLinear expects {self.in_features} input features, got shape {tuple(x.shape)}")
        x2d = x.reshape(-1, self.in_features)
        kernel = dispatch.select(x2d, self.in_features, self.out_features, self.group_size, self.kernel)
        if kernel.layout != self.layout:
            self.to_layout(kernel.layout)
        y = kernel.run(x2d, self.layout_tensors(), self.group_size, self.bias)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
            f"group_size={self.group_size}, bias={self.bias is not None}"
        )
