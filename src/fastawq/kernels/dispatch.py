"""Choosing a kernel for one AWQ linear call.

The choice depends on the device, the activation dtype and the number of rows M:

============  =================  =====================================================================
device        dtype              kernel
============  =================  =====================================================================
sm_90 (H100,  fp16 / bf16        ``triton_frag`` where the layer fits ``nk_frag`` (N % 16, K % 64,
H200)                            group size 32/64/128/256): on the ``nk_frag`` layout, whichever was
                                 fastest for this shape and M bucket on this card (timed on the first
                                 call) among its Triton kernels and the CUDA C++ kernels compiled at
                                 run time with NVRTC (:mod:`.cuda_frag`; the x-stationary decode kernel
                                 :mod:`.cuda_gemv` up to 16 rows; the warp-specialized :mod:`.cuda_ws`
                                 from 9 rows). On an H100 it is up to 1.5× faster
                                 than ``triton`` from 8 to 128 rows, 1.2 – 1.75× at 256 – 512, and
                                 about 6 % slower at one row on three of five shapes (BENCHMARKS.md).
                                 Group size 32 too (not the staged :mod:`.cuda_frag` kernel)
CUDA          fp16 / bf16        ``triton`` (other cards, other layers): tensor-core split-K kernel,
                                 GEMV, fused GEMM or dequantize + cuBLAS, whichever was fastest for
                                 this shape and M bucket on this card (timed on the first call, see
                                 :mod:`.triton_awq`), on the ``nk_int4`` layout; also ``kernel="triton"``
CUDA          fp16 / bf16        ``cuda_frag`` / ``cuda_ws`` / ``cuda_gemv`` (forced only): one CUDA kernel
                                 alone, untuned
CUDA          fp32               ``reference`` (notice once: load the model in fp16/bf16)
CPU           any float          ``cpu_int4`` (PyTorch's int4 kernel, bf16 compute) where the shape
                                 allows (N % 16 == 0, group size 32/64/128/256), else ``reference``
other                            ``reference``
============  =================  =====================================================================

``FASTAWQ_KERNEL=<name>`` (or ``kernel=`` when loading, stored on each :class:`~fastawq.nn.AWQLinear`)
forces one kernel; a forced kernel that cannot run a call is an error, never a silent fallback. An
automatic fallback to the reference kernel is announced once per reason with a
:class:`KernelFallbackWarning`.

Each kernel names the weight layout it reads (:mod:`.layouts`); the module repacks itself once when
the chosen kernel wants another layout.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from fastawq.errors import FastAWQError
from fastawq.kernels import layouts
from fastawq.kernels.reference import reference_awq_linear

Tensors = dict[str, torch.Tensor]
RunFn = Callable[[torch.Tensor, Tensors, int, "torch.Tensor | None"], torch.Tensor]

CPU_GROUP_SIZES = (32, 64, 128, 256)

#: the smallest group size the automatic choice puts on ``nk_frag`` on sm_90: all four. Group size 32 stayed on
#: ``nk_int4`` while only the Triton kernels took it there (1.2 – 1.7× slower from 8 rows, BENCHMARKS.md, eleventh
#: version); with the decode and warp-specialized kernels it is 1.3 – 1.9× faster at 1 – 128 rows and within a few
#: per cent from 4096 rows (H200, eighteenth version)
FRAG_AUTO_MIN_GROUP = 32


class KernelFallbackWarning(UserWarning):
    """The fast kernel could not run a call and the reference kernel was used instead."""


@dataclass(frozen=True)
class Kernel:
    name: str
    layout: str
    run: RunFn
    #: why this kernel cannot compute ``x2d`` against a [K, N] weight with this group size (None: it can)
    why_not: Callable[[torch.device, torch.dtype, int, int, int], str | None]


def _run_reference(x2d: torch.Tensor, w: Tensors, group_size: int, bias: torch.Tensor | None) -> torch.Tensor:
    return reference_awq_linear(x2d, w["qweight"], w["qzeros"], w["scales"], group_size, bias)


def _lazy_fn(name: str, module: str = "triton_awq") -> RunFn:
    """``<module>.<name>``, imported on the first call (triton is slow to import and optional)."""
    bound: list[RunFn] = []

    def run(x2d: torch.Tensor, w: Tensors, group_size: int, bias: torch.Tensor | None) -> torch.Tensor:
        if not bound:
            mod = importlib.import_module(f"fastawq.kernels.{module}")
            bound.append(getattr(mod, name))
        return bound[0](x2d, w, group_size, bias)

    return run


def _run_cpu_int4(x2d: torch.Tensor, w: Tensors, group_size: int, bias: torch.Tensor | None) -> torch.Tensor:
    sz = w["scale_zeros"]
    y: torch.Tensor = torch.ops.aten._weight_int4pack_mm_for_cpu(x2d.to(sz.dtype), w["weight_int4pack"], group_size, sz)
    y = y.to(x2d.dtype)
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y


def _why_not_any(device: torch.device, dtype: torch.dtype, k: int, n: int, group_size: int) -> str | None:
    if not dtype.is_floating_point:
        return f"activations must be floating point, got {dtype}"
    return None


@functools.cache
def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _why_not_triton(device: torch.device, dtype: torch.dtype, k: int, n: int, group_size: int) -> str | None:
    interpreting = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    if device.type != "cuda" and not interpreting:
        return f"the Triton kernels run on CUDA devices, the input is on {device}"
    if dtype not in (torch.float16, torch.bfloat16):
        return f"the Triton kernels take fp16 or bf16 activations, got {dtype}"
    if not triton_available():
        return "triton is not installed"
    if group_size not in (16, 32, 64, 128, 256) or k % group_size:
        return f"the Triton kernels take group sizes 16/32/64/128/256 dividing K, not {group_size} (K={k})"
    return None


def _why_not_frag(device: torch.device, dtype: torch.dtype, k: int, n: int, group_size: int) -> str | None:
    return _why_not_triton(device, dtype, k, n, group_size) or layouts.frag_supported(k, n, group_size)


def _why_not_in(module: str) -> Callable[[torch.device, torch.dtype, int, int, int], str | None]:
    """``<module>.why_not`` of a run-time-compiled CUDA kernel, imported when first asked."""

    def why_not(device: torch.device, dtype: torch.dtype, k: int, n: int, group_size: int) -> str | None:
        mod = importlib.import_module(f"fastawq.kernels.{module}")
        reason: str | None = mod.why_not(device, dtype, k, n, group_size)
        return reason

    return why_not


def _why_not_cpu(device: torch.device, dtype: torch.dtype, k: int, n: int, group_size: int) -> str | None:
    if device.type != "cpu":
        return f"the CPU int4 kernel runs on the CPU, the input is on {device}"
    if not dtype.is_floating_point:
        return f"activations must be floating point, got {dtype}"
    if not layouts.cpu_int4pack_available():
        return f"torch {torch.__version__} has no CPU int4 kernel (aten._weight_int4pack_mm_for_cpu)"
    if n % 16:
        return f"the CPU int4 kernel needs out_features divisible by 16, this layer has {n}"
    if group_size not in CPU_GROUP_SIZES:
        return f"the CPU int4 kernel takes group sizes {CPU_GROUP_SIZES}, not {group_size}"
    return None


KERNELS: dict[str, Kernel] = {
    k.name: k
    for k in (
        Kernel("reference", layouts.AWQ_GEMM, _run_reference, _why_not_any),
        Kernel("triton", layouts.NK_INT4, _lazy_fn("auto"), _why_not_triton),
        Kernel("triton_gemv", layouts.NK_INT4, _lazy_fn("gemv"), _why_not_triton),
        Kernel("triton_gemm", layouts.NK_INT4, _lazy_fn("gemm"), _why_not_triton),
        Kernel("triton_mma", layouts.NK_INT4, _lazy_fn("mma"), _why_not_triton),
        Kernel("triton_dequant", layouts.NK_INT4, _lazy_fn("dequant_matmul"), _why_not_triton),
        Kernel("triton_frag", layouts.NK_FRAG, _lazy_fn("frag_auto", "triton_frag"), _why_not_frag),
        Kernel("cuda_frag", layouts.NK_FRAG, _lazy_fn("frag_mma_cuda", "cuda_frag"), _why_not_in("cuda_frag")),
        Kernel("cuda_ws", layouts.NK_FRAG, _lazy_fn("frag_ws", "cuda_ws"), _why_not_in("cuda_ws")),
        Kernel("cuda_gemv", layouts.NK_FRAG, _lazy_fn("frag_gemv_cuda", "cuda_gemv"), _why_not_in("cuda_gemv")),
        Kernel("cpu_int4", layouts.CPU_INT4PACK, _run_cpu_int4, _why_not_cpu),
    )
}

_announced: set[str] = set()


def reset() -> None:
    """Forget remembered choices and announcements (tests; after changing the environment)."""
    _announced.clear()
    _auto.clear()


def available_kernels() -> list[str]:
    return sorted(KERNELS)


def notice_once(key: str, message: str) -> None:
    if key in _announced:
        return
    _announced.add(key)
    warnings.warn(message, KernelFallbackWarning, stacklevel=3)


def forced_kernel(module_choice: str | None = None) -> str | None:
    """The kernel forced by ``FASTAWQ_KERNEL`` (which wins) or by the module; None for automatic."""
    name = os.environ.get("FASTAWQ_KERNEL") or module_choice
    if name in (None, "", "auto"):
        return None
    if name not in KERNELS:
        raise FastAWQError(
            f"kernel {name!r} does not exist",
            hint=f"use one of: auto, {', '.join(available_kernels())} (FASTAWQ_KERNEL or kernel=)",
        )
    return name


def select(x2d: torch.Tensor, k: int, n: int, group_size: int, module_choice: str | None = None) -> Kernel:
    """The kernel for one call: ``x2d`` [M, K] against a [K, N] weight."""
    forced = forced_kernel(module_choice)
    if forced is not None:
        kernel = KERNELS[forced]
        reason = kernel.why_not(x2d.device, x2d.dtype, k, n, group_size)
        if reason is not None:
            raise FastAWQError(
                f"kernel {forced!r} was forced but cannot run this layer: {reason}",
                hint="unset FASTAWQ_KERNEL (or pass kernel='auto') to let fastawq choose",
            )
        return kernel
    return KERNELS[auto_kernel_name(x2d, k, n, group_size)]


_auto: dict[tuple[object, ...], str] = {}


def auto_kernel_name(x2d: torch.Tensor, k: int, n: int, group_size: int) -> str:
    """The automatic choice, remembered per (device, dtype, shape): it does not depend on M."""
    key = (x2d.device, x2d.dtype, k, n, group_size)
    name = _auto.get(key)
    if name is None:
        name = _auto[key] = auto_kernel_for(x2d.device, x2d.dtype, k, n, group_size, m=x2d.shape[0])
    return name


def is_hopper(device: torch.device) -> bool:
    """Whether ``device`` is an sm_90 GPU (H100 / H200), where the ``nk_frag`` kernels are the default."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device) == (9, 0)


def auto_kernel_for(device: torch.device, dtype: torch.dtype, k: int, n: int, group_size: int, m: int) -> str:
    """The automatic choice (announcing a fallback once)."""
    if device.type == "cuda":
        reason = _why_not_triton(device, dtype, k, n, group_size)
        if reason is not None:
            hint = " (load the model in fp16 or bf16)" if dtype == torch.float32 else ""
            notice_once(f"cuda:{reason}", f"fastawq: using the slow reference kernel on the GPU: {reason}{hint}")
            return "reference"
        if is_hopper(device) and group_size >= FRAG_AUTO_MIN_GROUP and layouts.frag_supported(k, n, group_size) is None:
            return "triton_frag"
        return "triton"
    if device.type == "cpu":
        reason = _why_not_cpu(device, dtype, k, n, group_size)
        if reason is not None:
            notice_once(f"cpu:{reason}", f"fastawq: using the reference kernel on the CPU: {reason}")
            return "reference"
        return "cpu_int4"
    notice_once(f"dev:{device.type}", f"fastawq: no fast kernel for {device.type} devices; using the reference kernel")
    return "reference"


def prepare(model: torch.nn.Module, dtype: torch.dtype, kernel: str | None = None) -> dict[str, int]:
    """Repack every AWQLinear of ``model`` once for the kernel that will run it; returns layout counts."""
    from fastawq.nn.qlinear import AWQLinear

    forced = forced_kernel(kernel)
    counts: dict[str, int] = {}
    for name, module in model.named_modules():
        if not isinstance(module, AWQLinear):
            continue
        module.kernel = kernel
        dev = module.device
        if forced is not None:
            layout = KERNELS[forced].layout
            why = layouts.why_not_layout(layout, module.in_features, module.out_features, module.group_size)
            if why is not None:
                raise FastAWQError(
                    f"kernel {forced!r} was forced but cannot hold layer {name!r}: {why}",
                    hint="load with kernel='auto' (or unset FASTAWQ_KERNEL) to let fastawq choose per layer",
                )
        else:
            name = auto_kernel_for(dev, dtype, module.in_features, module.out_features, module.group_size, m=1)
            layout = KERNELS[name].layout
        module.to_layout(layout)
        counts[layout] = counts.get(layout, 0) + 1
    return counts


def describe() -> dict[str, Any]:
    return {"kernels": available_kernels()}


def awq_linear(
    x: torch.Tensor,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x @ W.T + bias`` straight from the AWQ GEMM tensors of W (reference kernel, any device)."""
    return reference_awq_linear(x, qweight, qzeros, scales, group_size, bias)
