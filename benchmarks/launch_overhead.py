"""Where the eager (launch-included) time of one AWQLinear call goes, CPU side.

    PYTHONPATH=src python benchmarks/launch_overhead.py

A small layer (K = N = 1024, M = 1) keeps the GPU time of each call far below its CPU time, so
back-to-back calls measure the host cost of each layer of the stack: the module, the tuned dispatch,
the kernel's launcher, Triton's launch itself, and nn.Linear for comparison, for both GPU layouts.
Prints microseconds per call and a cProfile of the module call.
"""

from __future__ import annotations

import cProfile
import pstats
import time
from collections.abc import Callable
from typing import Any

import torch

from fastawq.kernels import dispatch, layouts, triton_awq, triton_frag


def per_call_us(fn: Callable[[], Any], calls: int = 1000, rounds: int = 7) -> float:
    """Best of ``rounds`` (host timing is noisy) of the mean time of ``calls`` back-to-back calls."""
    for _ in range(50):
        fn()
    best = float("inf")
    for _ in range(rounds):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / calls * 1e6)
    return best


def main() -> None:
    import sys

    sys.path.insert(0, "benchmarks")
    from kernels import frag_of, module_for, random_nk

    k = n = 1024
    g = 128
    w = random_nk(k, n, g, torch.Generator().manual_seed(0))
    x = torch.randn(1, k, device="cuda", dtype=torch.float16)
    mod = module_for(w, k, n, g)
    wf = frag_of(w)
    fmod = module_for(wf, k, n, g, layouts.NK_FRAG)
    fmod.kernel = None if dispatch.is_hopper(x.device) else fmod.kernel  # as loaded: the automatic choice
    lin = torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.float16)
    wt = mod.layout_tensors()
    with torch.no_grad():
        mod(x)  # tunes
        fmod(x)
        print("tuned choice:", triton_awq.choice(x, w, g, None), "| nk_frag:", triton_frag.choice(x, wf, g, None))
        rows = {
            "nn.Linear": lambda: lin(x),
            "torch.empty(1, N)": lambda: torch.empty(1, n, device="cuda", dtype=torch.float16),
            "torch.zeros(1, N)": lambda: torch.zeros(1, n, device="cuda", dtype=torch.float16),
            "AWQLinear module": lambda: mod(x),
            "AWQLinear module, nk_frag": lambda: fmod(x),
            "triton_awq.auto": lambda: triton_awq.auto(x, w, g, None),
            "triton_frag.frag_auto": lambda: triton_frag.frag_auto(x, wf, g, None),
            # the module's layers one by one
            "AWQLinear.forward (no __call__)": lambda: mod.forward(x),
            "dispatch.select": lambda: dispatch.select(x, k, n, g, None),
            "AWQLinear.layout_tensors()": mod.layout_tensors,
            "KERNELS['triton'].run": lambda: dispatch.KERNELS["triton"].run(x, wt, g, None),
            "triton_awq.auto, module's tensors": lambda: triton_awq.auto(x, wt, g, None),
        }
        for m_name, cfg in (
            ("gemv pairs", triton_awq.TileConfig(1, 16, 1024, 4, 2, pairs=True)),
            ("gemv fp32", triton_awq.TileConfig(1, 8, 1024, 4, 2, join=True)),
            ("mma split4", triton_awq.TileConfig(16, 64, 128, 4, 3, split=4)),
            ("mma split1", triton_awq.TileConfig(16, 64, 128, 4, 3, split=1)),
        ):
            fn = triton_awq.mma if m_name.startswith("mma") else triton_awq.gemv
            rows[f"launcher {m_name}"] = lambda fn=fn, cfg=cfg: fn(x, w, g, None, cfg)  # type: ignore[misc]
        for split in (1, 4):  # nk_frag GEMV: split-K adds the workspace lookup
            cfg = triton_awq.TileConfig(1, 16, 128, 2, 1, split=split)
            rows[f"launcher frag_gemv split{split}"] = lambda cfg=cfg: triton_frag.frag_gemv(x, wf, g, None, cfg)  # type: ignore[misc]
        for name, fn in rows.items():
            print(f"{name:36s} {per_call_us(fn):7.1f} us/call", flush=True)
        print(f"{'AWQLinear module (again)':36s} {per_call_us(lambda: mod(x)):7.1f} us/call", flush=True)
        print(f"{'AWQLinear module, nk_frag (again)':36s} {per_call_us(lambda: fmod(x)):7.1f} us/call", flush=True)
        triton_awq.FAST_LAUNCH = False
        print(f"{'AWQLinear module, Triton launcher':36s} {per_call_us(lambda: mod(x)):7.1f} us/call", flush=True)
        triton_awq.FAST_LAUNCH = True
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(2000):
            mod(x)
        prof.disable()
        torch.cuda.synchronize()
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
