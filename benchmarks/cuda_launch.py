"""Host time of one CUDA fragment-kernel call: per-call ctypes packing (the sixth version) vs reusable arguments.

    PYTHONPATH=src python benchmarks/cuda_launch.py

Back-to-back calls of a compiled ``CudaPlan`` (M = 1) on a small layer, where the host dominates, and on two
large ones, with ``nn.Linear`` on the same layer for comparison. ``old`` rebuilds the sixth version's launch:
fresh ctypes objects for the 13 arguments and an untyped ``cuLaunchKernel``, every call.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fastawq.kernels import cuda_frag
from fastawq.kernels.cuda_frag import CudaConfig, CudaPlan
from fastawq.kernels.cuda_rt import _driver
from kernels import eager_time_us, frag_of, random_nk


@functools.cache
def _untyped_driver() -> ctypes.CDLL:
    """A second handle on libcuda, loaded once: its cuLaunchKernel is untyped, as the sixth version called it."""
    return ctypes.CDLL("libcuda.so.1")


def old_call(p: CudaPlan, x2d: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
    """The sixth version's launch path (no bias, contiguous x)."""
    from fastawq.kernels.triton_awq import _workspace

    y = torch.empty(p.m, p.n, device=x2d.device, dtype=x2d.dtype)
    grid, gps = p.grid(p.cfg.split)
    ws, cnt = y, y
    if grid[1] > 1:
        buf = _workspace(x2d.device, p.m * p.n, grid[0] * grid[2])
        if buf is None:
            grid, gps = p.grid(1)
        else:
            ws, cnt = buf
    args: list[object] = [ctypes.c_void_p(t.data_ptr()) for t in (x2d, w["qweight_frag"], w["sz_gn"], y, y, ws, cnt)]
    args += [ctypes.c_int(v) for v in (p.m, p.n, p.k, x2d.stride(0), gps, 0)]
    ptrs = (ctypes.c_void_p * len(args))(*[ctypes.cast(ctypes.pointer(a), ctypes.c_void_p) for a in args])  # type: ignore[call-overload, type-var]
    stream = torch.cuda.current_stream(x2d.device).cuda_stream
    drv = _untyped_driver()
    gx, gy, gz = grid
    res = drv.cuLaunchKernel(
        p.fn.handle, gx, gy, gz, p.cfg.warps * 32, 1, 1, p.smem, ctypes.c_void_p(stream), ptrs, None
    )
    assert res == 0, res
    return y


def measure(k: int, n: int, cfg: CudaConfig, g: int = 128) -> dict[str, float]:
    wf = frag_of(random_nk(k, n, g, torch.Generator().manual_seed(1)))
    x = torch.randn(1, k).half().cuda()
    p = cuda_frag.plan(x.device, x.dtype, 1, n, k, g, cfg)
    if cfg.split == 1:  # the two launches run the same kernel on the same arguments
        torch.testing.assert_close(old_call(p, x, wf), p(x, wf, None), rtol=0, atol=0)
    res: dict[str, float] = {}
    for name in ("old", "new", "old", "new"):  # twice, interleaved: the second reading is kept
        fn = (lambda: old_call(p, x, wf)) if name == "old" else (lambda: p(x, wf, None))
        res[name] = eager_time_us(fn, calls=2000)
    lin = torch.nn.Linear(k, n, bias=False).half().cuda()
    with torch.no_grad():
        res["nn.Linear"] = eager_time_us(lambda: lin(x), calls=2000)
    return res


def main() -> None:
    assert _driver() is not None, "needs a CUDA driver"
    print(torch.cuda.get_device_name())
    layers = [(512, 256, CudaConfig(1, 2, 2, 2, 1, 3)), (14336, 4096, CudaConfig(1, 2, 2, 2, 8, 3)),
              (8192, 8192, CudaConfig(1, 1, 4, 2, 1, 3))]  # fmt: skip
    for k, n, cfg in layers:
        res = measure(k, n, cfg)
        print(f"K={k:5d} N={n:5d} {cfg.describe():32s} " + "  ".join(f"{a} {b:6.1f} us" for a, b in res.items()))


if __name__ == "__main__":
    main()
