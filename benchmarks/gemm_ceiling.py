"""How close can a Triton GEMM get to cuBLAS at prefill sizes? (a ceiling for fused W4A16 kernels at M ≥ 512)

    PYTHONPATH=src python benchmarks/gemm_ceiling.py out.json

A fused W4A16 kernel does the dense GEMM's tensor-core work plus the decode; at M ≥ 512 the GEMM is
compute-bound, so a *plain* fp16 Triton GEMM on the same toolchain (no quantization at all) is an
upper bound for any fused Triton kernel there. This times one, x [M, K] @ W[N, K]ᵀ with TMA tensor
descriptors and ``tl.dot``, over a few tiles, with and without Triton's automatic warp specialization,
against ``F.linear`` (cuBLAS) in the same run, with the table's timer (kernel time, cold L2).
"""

from __future__ import annotations

import itertools
import json
import sys
from typing import Any

import torch
import triton
import triton.language as tl

sys.path.insert(0, "benchmarks")
from kernels import SHAPES, kernel_time_us

triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))


@triton.jit
def _mm(x_ptr, w_ptr, y_ptr, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, WS: tl.constexpr,
        STAGES: tl.constexpr):  # fmt: skip
    xd = tl.make_tensor_descriptor(x_ptr, shape=[M, K], strides=[K, 1], block_shape=[BM, BK])
    wd = tl.make_tensor_descriptor(w_ptr, shape=[N, K], strides=[K, 1], block_shape=[BN, BK])
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in tl.range(0, K, BK, warp_specialize=WS, num_stages=STAGES):
        acc = tl.dot(xd.load([pid_m * BM, k]), wd.load([pid_n * BN, k]).T, acc)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    tl.store(y_ptr + offs_m[:, None] * N + offs_n[None, :], acc.to(y_ptr.dtype.element_ty), mask=mask)


TILES = [  # (BM, BN, BK, warps, stages)
    (128, 128, 64, 4, 3), (128, 128, 64, 8, 3), (128, 256, 64, 8, 3), (128, 128, 64, 4, 4), (64, 128, 64, 4, 4),
]  # fmt: skip


def main() -> None:
    rows: list[dict[str, Any]] = []
    for (k, n), m in itertools.product(SHAPES, (512, 4096)):
        gen = torch.Generator().manual_seed(k + n + m)
        x = torch.randn(m, k, generator=gen).half().cuda()
        w = (torch.randn(n, k, generator=gen) * 0.02).half().cuda()
        ref = torch.nn.functional.linear(x, w)
        cublas = kernel_time_us(lambda x=x, w=w: torch.nn.functional.linear(x, w))  # type: ignore[misc]
        res = []
        for (bm, bn, bk, nw, st), ws in itertools.product(TILES, (False, True)):
            y = torch.empty(m, n, device="cuda", dtype=torch.float16)
            grid = (triton.cdiv(m, bm), triton.cdiv(n, bn))

            def fn(x=x, w=w, y=y, grid=grid, mnk=(m, n, k), bm=bm, bn=bn, bk=bk, nw=nw, st=st, ws=ws):  # type: ignore[no-untyped-def]
                _mm[grid](x, w, y, *mnk, bm, bn, bk, ws, st, num_warps=nw)

            tile = {"tile": [bm, bn, bk, nw, st], "ws": ws}
            try:
                fn()
                err = float((y.float() - ref.float()).norm() / ref.float().norm())
                assert err < 1e-2, err
                res.append({**tile, "us": kernel_time_us(fn), "rel_err": err})
            except Exception as exc:  # out of resources, or warp specialization not available
                res.append({**tile, "error": f"{type(exc).__name__}: {str(exc)[-200:]}"})
        ok = sorted((r for r in res if "us" in r), key=lambda r: r["us"])
        best = ok[0] if ok else None
        found = f"{best['us']:7.1f}us ({cublas / best['us']:.2f}×) {best['tile']} ws={best['ws']}" if best else "—"
        print(
            f"K={k:5d} N={n:5d} M={m:4d} cuBLAS {cublas:7.1f}us  best Triton fp16 GEMM {found}"
            f"  [{sum('error' in r for r in res)} failed]",
            flush=True,
        )
        rows.append({"k": k, "n": n, "m": m, "cublas_us": cublas, "results": res})
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__}
    with open(sys.argv[1] if len(sys.argv) > 1 else "gemm_ceiling.json", "w") as f:
        json.dump({"info": info, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
