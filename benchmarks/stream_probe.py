"""How fast can a kernel stream the nk_int4 weight with a given tiling? (a ceiling for the W4A16 kernels)

    PYTHONPATH=src python benchmarks/stream_probe.py out.json [read|write]

The probe kernel reads the packed weight [N, K/8] in the same tiles and split-K pattern as the
tensor-core kernel (BN rows × BK inputs per step, ``split`` programs along K) and only reduces the
bits, so its time is what the memory system allows for that access pattern. Kernel time, cold L2.
"""

from __future__ import annotations

import itertools
import json
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, "benchmarks")
from kernels import FLUSH_MODE, copy_bandwidth, kernel_time_us


@triton.jit
def _stream(qw_ptr, out_ptr, N, K, words_per_split, BN: tl.constexpr, BW: tl.constexpr, BYTES: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BN + tl.arange(0, BN)
    w_lo = pid_k * words_per_split
    if BYTES:
        acc = tl.zeros((BN, BW * 4), dtype=tl.int32)
        bp = qw_ptr.to(tl.pointer_type(tl.uint8))
        for w0 in range(w_lo, w_lo + words_per_split, BW):
            b = tl.load(bp + offs_n[:, None] * (K // 2) + (w0 * 4 + tl.arange(0, BW * 4))[None, :])
            acc ^= b.to(tl.int32)
    else:
        acc = tl.zeros((BN, BW), dtype=tl.int32)
        for w0 in range(w_lo, w_lo + words_per_split, BW):
            acc ^= tl.load(qw_ptr + offs_n[:, None] * (K // 8) + (w0 + tl.arange(0, BW))[None, :])
    tl.store(out_ptr + pid_k * N + offs_n, tl.xor_sum(acc, axis=1))


def main() -> None:
    FLUSH_MODE[0] = sys.argv[2] if len(sys.argv) > 2 else "read"
    print("L2 flush by", FLUSH_MODE[0])
    bw = copy_bandwidth()
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s", flush=True)
    rows = []
    for k, n in [(4096, 4096), (4096, 28672), (14336, 4096)]:
        qw = torch.randint(-(2**31), 2**31 - 1, (n, k // 8), dtype=torch.int32, device="cuda")
        bound = qw.numel() * 4 / bw * 1e6
        best = []
        for bn, bk, split, stages, warps, as_bytes in itertools.product(
            (16, 64), (128, 256, 1024), (1, 4, 8), (3,), (4,), (True, False)
        ):
            if (k // bk) % split:
                continue
            out = torch.empty(split, n, dtype=torch.int32, device="cuda")
            grid = (triton.cdiv(n, bn), split)
            wps = k // 8 // split

            def fn(qw=qw, n=n, k=k, bn=bn, bk=bk, wps=wps, out=out, grid=grid, st=stages, nw=warps, b=as_bytes):  # type: ignore[no-untyped-def]
                _stream[grid](qw, out, n, k, wps, BN=bn, BW=bk // 8, BYTES=b, num_warps=nw, num_stages=st)

            t = kernel_time_us(fn, reps=10)
            best.append((t, dict(bn=bn, bk=bk, split=split, stages=stages, warps=warps, bytes=as_bytes)))
        best.sort(key=lambda r: r[0])
        for t, cfg in best[:6]:
            print(
                f"K={k} N={n} weight-only bound {bound:6.1f}us  {t:6.1f}us ({100 * bound / t:4.0f}%) {cfg}", flush=True
            )
        for as_bytes in (True, False):
            for bk in (128, 256, 512, 1024):
                sub = [r for r in best if r[1]["bk"] == bk and r[1]["bytes"] == as_bytes]
                if sub:
                    print(f"   best with bk={bk} bytes={as_bytes}: {sub[0][0]:6.1f}us {sub[0][1]}", flush=True)
        rows.append({"k": k, "n": n, "bound_us": bound, "top": best[:20]})
    with open(sys.argv[1] if len(sys.argv) > 1 else "stream_probe.json", "w") as f:
        json.dump({"copy_bandwidth": bw, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
