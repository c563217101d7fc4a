"""The run-time-compiled CUDA kernel on ``nk_frag`` (kernels/cuda_frag.py): tile sweep against cuBLAS.

    PYTHONPATH=src python benchmarks/cuda_frag.py --ms 1,8,16,32,64 --json cuda-frag.json [--triton]

Per shape K×N and row count M: fp16 cuBLAS, every CUDA tile config (checked against the fp32 product of
the dequantized weight first: a wrong config cannot win), with --triton also the tuned Triton kernels of
both layouts (``triton_frag.frag_auto``, ``triton_awq.auto``); the best CUDA config is timed again with
CUPTI (--gpu-time in kernels.py). Timing, flush and bound are those of benchmarks/kernels.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fastawq.kernels import cuda_frag, cuda_gemv
from fastawq.kernels.cuda_frag import CudaConfig
from fastawq.kernels.cuda_gemv import GemvConfig
from kernels import (
    SHAPES,
    add_config_sweep_args,
    kernel_time_us,
    sweep_cases,
    sweep_setup,
    time_best,
    time_tuned,
)


def configs(m: int, quick: bool, wgmma: bool = False, mma: bool = True) -> list[CudaConfig]:
    out = []
    if mma and m <= 64:  # mma.sync: 8·mt rows a program, more rows take more programs
        mt = cuda_frag.n8_tiles(m)
        shapes = ((4, 1), (8, 1), (2, 2), (4, 2), (1, 4), (2, 4)) if not quick else ((4, 1), (2, 2), (2, 4))
        for rb, kw in shapes:
            for depth in (2, 4):
                for stages in (3,) if mt == 1 else (3, 4):
                    for split in (1, 2, 4, 8):
                        out.append(CudaConfig(mt=mt, rb=rb, kw=kw, depth=depth, split=split, stages=stages))
    if wgmma:  # warp groups: up to 128 rows a program, depth 2 (deeper register rings make ptxas serialize)
        mt = cuda_frag.wg_tiles(m)
        for rb, kw in ((4, 1), (8, 1), (4, 2)) if not quick else ((8, 1), (4, 2)):
            for stages in (3, 4):
                for split in (1, 2, 4, 8):
                    cfg = CudaConfig(mt=mt, rb=rb, kw=kw, depth=2, split=split, stages=stages, wgmma=True)
                    if cfg.problem(128) is None:
                        out.append(cfg)
    return out


_PROBE = r"""
typedef unsigned int u32;
extern "C" __global__ void probe(const u32* __restrict__ p, long long n16, u32* out) {
  // every warp streams 512-byte runs (32 lanes x 16 B, as a warp reads nk_frag), U runs in flight
  const long long lane = threadIdx.x & 31;
  const long long warp = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
  const long long warps = (gridDim.x * (long long)blockDim.x) >> 5;
  u32 acc = 0;
  for (long long r = warp * U; r < n16 / 32; r += warps * U) {
    u32 v[U][4];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const long long i = (r + u) * 32 + lane;
      if (i < n16)
        asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];"
            : "=r"(v[u][0]), "=r"(v[u][1]), "=r"(v[u][2]), "=r"(v[u][3]) : "l"(p + i * 4));
      else v[u][0] = v[u][1] = v[u][2] = v[u][3] = 0;
    }
#pragma unroll
    for (int u = 0; u < U; ++u) acc ^= v[u][0] ^ v[u][1] ^ v[u][2] ^ v[u][3];
  }
  if (acc == 0x9E3779B9u) out[0] = acc;
}
"""


def gemv_configs(m: int, quick: bool) -> list[GemvConfig]:
    """The x-stationary decode kernel (up to 8 rows): chunks a warp × warps a CTA × row blocks a CTA × depth."""
    if m > cuda_gemv.MAX_ROWS:
        return []
    kcs, kws, rbcs = ((4,), (8, 16), (2, 4)) if quick else ((2, 4), (4, 8, 16), (2, 4, 8, 16, 32))
    return [GemvConfig(kc, kw, rbc, depth, kf) for kc in kcs for kw in kws for rbc in rbcs for depth in (1, 2)
            for kf in (False, True)]  # fmt: skip


def gemv_fill_configs(m: int) -> list[GemvConfig]:
    """The one-wave decode configs (balanced row ranges): tiles × CTAs an SM × cluster sums × register ring or
    cp.async stages."""
    if m > 4 * cuda_gemv.MAX_ROWS:
        return []
    # 8-row tiles of x a program: 1, 2 up to 16 rows, 4 from 17 rows (x's fragments then take 64 registers
    # for two chunks a warp, so four chunks spill)
    mt = 1 if m <= cuda_gemv.MAX_ROWS else 2 if m <= 2 * cuda_gemv.MAX_ROWS else 4
    tiles = ((4, 16), (2, 16), (4, 8), (2, 8)) if mt < 4 else ((2, 16), (2, 8), (1, 16), (1, 8))
    return [GemvConfig(kc, kw, depth=depth, kfirst=True, fill=fill, cluster=cluster, stages=stages, mt=mt)
            for kc, kw in tiles for fill in (1, 2) for cluster in (False, True)
            for depth, stages in ((1, 0), (2, 0), (2, 3), (2, 4))]  # fmt: skip


def _source(cfg: CudaConfig | GemvConfig, dtype: torch.dtype, g: int) -> tuple[str, str]:
    if isinstance(cfg, GemvConfig):
        return cuda_gemv.source(dtype, g, cfg), cuda_gemv.NAME
    return cuda_frag.source(dtype, g, cfg), cuda_frag.NAME


def _compile(source: str, name: str, arch: str) -> None:
    from fastawq.kernels import cuda_rt

    cuda_rt.cached_cubin(source, name, arch)


def precompile(cfgs: list[Any], dtype: torch.dtype, g: int, jobs: int) -> None:
    """Fill the cubin disk cache for every config in ``jobs`` processes (the timing then only loads)."""
    import concurrent.futures
    import multiprocessing
    import time

    from fastawq.kernels import cuda_rt

    arch = cuda_rt.arch(torch.cuda.current_device())
    sources = sorted({_source(c, dtype, g) for c in cfgs})
    t0 = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
        list(ex.map(_compile, [s for s, _ in sources], [n for _, n in sources], [arch] * len(sources)))
    print(f"compiled {len(sources)} sources in {time.perf_counter() - t0:.0f}s by {jobs} processes", flush=True)


def stream_probe(bw: float) -> list[dict[str, Any]]:
    """How fast a CUDA kernel streams the packed weight alone (no decode): the ceiling at M = 1."""
    from fastawq.kernels import cuda_rt

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    out_rows = []
    for k, n in SHAPES:
        qw = torch.randint(-(2**31), 2**31 - 1, (n * k // 8,), dtype=torch.int32, device="cuda")
        out = torch.zeros(1, dtype=torch.int32, device="cuda")
        bound = qw.numel() * 4 / bw * 1e6
        res = []
        for u in (1, 2, 4, 8):
            fn = cuda_rt.load(f"#define U {u}\n" + _PROBE, "probe", torch.device("cuda"))
            for threads in (128, 256, 512):
                for per_sm in (1, 2, 4, 8, 0):
                    blocks = sms * per_sm if per_sm else -(-qw.numel() // 4 // 32 // u // (threads // 32))
                    args = cuda_rt.Args("plp")
                    args.set(qw.data_ptr(), qw.numel() // 4, out.data_ptr())
                    stream = torch.cuda.current_stream().cuda_stream

                    def go(fn=fn, blocks=blocks, threads=threads, args=args, stream=stream) -> None:  # type: ignore[no-untyped-def]
                        fn.launch((blocks, 1, 1), threads, args, stream)

                    t = kernel_time_us(go, reps=10)
                    res.append({"u": u, "threads": threads, "blocks": blocks, "us": t})
        res.sort(key=lambda r: r["us"])
        best = res[0]
        print(f"probe K={k} N={n}: bound {bound:.1f} us, best {best['us']:.1f} us ({100 * bound / best['us']:.0f}%)"
              f" {best}", flush=True)  # fmt: skip
        out_rows.append({"k": k, "n": n, "bound_us": bound, "top": res[:10]})
    return out_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_sweep_args(ap, "cuda-frag.json", "1,8,16,32,64")
    ap.add_argument("--wgmma", action="store_true", help="also the warp-group (wgmma) variant, up to 128 rows")
    ap.add_argument("--no-mma", action="store_true", help="leave the mma.sync configs out (with --wgmma)")
    ap.add_argument("--probe", action="store_true", help="only the CUDA streaming probe (the M = 1 ceiling)")
    ap.add_argument("--tuner", action="store_true", help="also the tuner's staged-x mma.sync candidates")
    ap.add_argument("--gemv", action="store_true", help="also the x-stationary decode kernel (up to 8 rows)")
    ap.add_argument("--gemv-fill", action="store_true", help="also its one-wave configs (balanced rows, clusters)")
    ap.add_argument("--jobs", type=int, default=1, help="compile the configs in this many processes first")
    args = ap.parse_args()
    dtype, g, ms, shapes, bw, info = sweep_setup(args)
    if args.probe:
        with open(args.json, "w") as f:
            json.dump({"info": info, "probe": stream_probe(bw)}, f, indent=1)
        return
    rows: list[dict[str, Any]] = []

    def cfgs_of(m: int) -> list[CudaConfig]:
        out = configs(m, args.quick, args.wgmma, not args.no_mma)
        return out + [c for c in cuda_frag.candidates(m, g) if c not in out] if args.tuner else out

    def gemv_of(m: int, k: int) -> list[GemvConfig]:
        cfgs = (gemv_configs(m, args.quick) if args.gemv else []) + (gemv_fill_configs(m) if args.gemv_fill else [])
        return [c for c in cfgs if c.problem(g) is None and (k // 64) % c.kc == 0
                and (not c.cluster or c.split(k) <= cuda_gemv.MAX_CLUSTER)]  # fmt: skip

    if args.jobs > 1:
        precompile([c for m in ms for c in cfgs_of(m) + gemv_of(m, 4096)], dtype, g, args.jobs)
    for case in sweep_cases(shapes, ms, g, dtype, bw):
        k, n, m, x, wf, row = case.k, case.n, case.m, case.x, case.wf, case.row
        cfgs = cfgs_of(m)
        time_best(case, cfgs, lambda cfg, x=x, wf=wf: cuda_frag.frag_mma_cuda(x, wf, g, None, cfg), "cuda", True)  # type: ignore[misc]
        if gemv_of(m, k):
            time_best(case, gemv_of(m, k), lambda cfg, x=x, wf=wf: cuda_gemv.frag_gemv_cuda(x, wf, g, None, cfg),  # type: ignore[misc]
                      "gemv", True)  # fmt: skip
        if args.triton:
            time_tuned(case, g)
        rows.append(row)
        msg = (f"K={k:5d} N={n:5d} M={m:3d} bound {row['bound_us']:6.1f} cuBLAS {row['cublas_us']:6.1f} "
               f"cuda {row.get('cuda_us', float('nan')):6.1f} ({row.get('cuda_cfg', '-')}) "
               f"x{row['cublas_us'] / row.get('cuda_us', float('nan')):.2f} "
               f"{100 * row['bound_us'] / row.get('cuda_us', float('nan')):.0f}% of bound; "
               f"gpu {row.get('gpu_cuda_us', float('nan')):6.1f} "
               f"vs {row.get('gpu_cublas_us', float('nan')):6.1f}")  # fmt: skip
        if "gemv_us" in row:
            gv = row["gemv_us"]
            msg += (f" | gemv {gv:6.1f} ({row['gemv_cfg']}) x{row['cublas_us'] / gv:.2f} "
                    f"{100 * row['bound_us'] / gv:.0f}% gpu {row.get('gpu_gemv_us', float('nan')):6.1f}")  # fmt: skip
        if args.triton:
            msg += f" | triton_frag {row['triton_frag_us']:6.1f} nk {row['triton_nk_us']:6.1f}"
        print(msg, flush=True)
        with open(args.json, "w") as f:
            json.dump({"info": info, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
