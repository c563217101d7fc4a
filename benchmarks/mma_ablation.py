"""Where does the tensor-core kernel's time go? Ablations of ``_mma_kernel`` (timing only: most
variants compute a wrong product on purpose).

    PYTHONPATH=src python benchmarks/mma_ablation.py

Each variant removes one part of the per-group work: the lop3 decode (replaced by a plain byte
conversion), the scale / zero-point loads (constants), the per-group sum of x, or the atomics.
Kernel time, cold L2 (read flush), for the configs the tuner picks at M = 1 and 16.
"""

from __future__ import annotations

import sys

import torch
import triton
import triton.language as tl

from fastawq.kernels import triton_awq as ta

sys.path.insert(0, "benchmarks")
from kernels import copy_bandwidth, int4_bytes, kernel_time_us, random_nk


@triton.jit
def _ablate(
    x_ptr, qw_ptr, sz_ptr, y_ptr, M, N, K, stride_xm, stride_ym, groups_per_split,
    G: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
    DECODE: tl.constexpr, SZ: tl.constexpr, XSUM: tl.constexpr, ATOMIC: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(2)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_m = tl.arange(0, BM)
    mask_n = offs_n < N
    mask_m = offs_m < M
    offs_k = tl.arange(0, G)
    g_lo = pid_k * groups_per_split
    acc = tl.zeros((BN, BM), dtype=tl.float32)
    for g in range(g_lo, g_lo + groups_per_split):
        k0 = g * G
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + (k0 + offs_k)[None, :], mask=mask_m[:, None], other=0.0)
        if DECODE:
            q = ta._codes_tile(qw_ptr, offs_n, mask_n, k0, K, BN, G, x.dtype, True)
        else:
            offs_b = k0 // 2 + tl.arange(0, G // 2)
            b = tl.load(qw_ptr.to(tl.pointer_type(tl.uint8)) + offs_n[:, None] * (K // 2) + offs_b[None, :])
            bf = b.to(tl.float16)
            q = tl.reshape(tl.join(bf, bf), (BN, G))
        if SZ:
            sz = tl.load(sz_ptr + g * N + offs_n, mask=mask_n, other=0)
            s = ta._scale(sz)
            z = ta._zero(sz)
        else:
            s = tl.full((BN,), 0.01, tl.float32)
            z = tl.full((BN,), 8.0, tl.float32)
        if DOT:
            d = tl.dot(q, tl.trans(x))
        else:
            d = tl.broadcast_to(tl.sum(q.to(tl.float32), axis=1)[:, None], (BN, BM))
        if XSUM:
            xs = tl.sum(x.to(tl.float32), axis=1)
            acc += s[:, None] * (d - z[:, None] * xs[None, :])
        else:
            acc += s[:, None] * d
    y_ptrs = y_ptr + offs_m[None, :] * stride_ym + offs_n[:, None]
    y_mask = mask_n[:, None] & mask_m[None, :]
    if ATOMIC:
        tl.atomic_add(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=y_mask, sem="relaxed")
    else:
        tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=y_mask)


VARIANTS = {
    "full": dict(DECODE=True, SZ=True, XSUM=True, ATOMIC=True, DOT=True),
    "no lop3 decode": dict(DECODE=False, SZ=True, XSUM=True, ATOMIC=True, DOT=True),
    "no s/z loads": dict(DECODE=True, SZ=False, XSUM=True, ATOMIC=True, DOT=True),
    "no x sum": dict(DECODE=True, SZ=True, XSUM=False, ATOMIC=True, DOT=True),
    "no atomics/memset": dict(DECODE=True, SZ=True, XSUM=True, ATOMIC=False, DOT=True),
    "no MMA (row sums)": dict(DECODE=True, SZ=True, XSUM=True, ATOMIC=True, DOT=False),
    "bare (loads only)": dict(DECODE=False, SZ=False, XSUM=False, ATOMIC=False, DOT=True),
}


def main() -> None:
    bw = copy_bandwidth()
    g = 128
    for k, n in [(4096, 4096), (4096, 28672), (14336, 4096)]:
        w = random_nk(k, n, g, torch.Generator().manual_seed(k + n))
        for m in (1, 16):
            x = torch.randn(m, k, device="cuda", dtype=torch.float16)
            bound = int4_bytes(m, k, n, g) / bw * 1e6
            for bn, split in ((128, 8), (64, 4)):
                kg = k // g
                line = f"K={k:5d} N={n:5d} M={m:2d} bn{bn} split{split} bound {bound:5.1f}us:"
                for name, flags in VARIANTS.items():
                    y = torch.zeros(m, n, device="cuda", dtype=torch.float16)

                    def fn(y=y, x=x, w=w, bn=bn, split=split, kg=kg, m=m, n=n, k=k, flags=flags):  # type: ignore[no-untyped-def]
                        if flags["ATOMIC"]:
                            y.zero_()
                        _ablate[(triton.cdiv(n, bn), 1, split)](
                            x, w["qweight_nk"], w["sz_gn"], y, m, n, k, x.stride(0), y.stride(0),
                            kg // split, G=g, BM=16, BN=bn, num_warps=4, num_stages=3, **flags,
                        )  # fmt: skip

                    line += f"  {name} {kernel_time_us(fn, reps=15):5.1f}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
