"""The warp-specialized Hopper kernel on ``nk_frag`` (kernels/cuda_ws.py): config sweep against cuBLAS.

    PYTHONPATH=src python benchmarks/cuda_ws.py --ms 16,32,64,128,256,512,4096 --json cuda-ws.json [--triton]

Per shape K×N and row count M: fp16 cuBLAS, the sweep's warp-specialized configs (each checked against
the fp32 product of the dequantized weight first: a wrong config cannot win), with --triton also the
tuned kernels of both layouts (``triton_frag.frag_auto`` on ``nk_frag``, which includes the CUDA
``mma.sync`` kernel; ``triton_awq.auto`` on ``nk_int4``, dequantize + cuBLAS from 512 rows). Timing,
flush and bound are those of benchmarks/kernels.py (cold L2, median of CUDA-event times).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fastawq.kernels import cuda_ws, triton_awq, triton_frag
from fastawq.kernels.cuda_ws import WsConfig
from kernels import SHAPES, copy_bandwidth, frag_of, gpu_time_us, int4_bytes, kernel_time_us, random_nk


def configs(m: int, n: int, k: int, quick: bool) -> list[WsConfig]:
    """The tuner's candidates plus a sweep around them: consumer groups, CTAs per SM, register sets,
    stages (8 and as many as fit), 64 or 128 inputs a stage, stream-K on and off."""
    out = list(cuda_ws.candidates(m, n, k))
    mts = {cuda_ws.x_tiles(m)} | ({16, 32} if m > 128 else set())
    for mt in sorted(mts):
        shapes = [(2, 1, 3), (2, 1, 2), (1, 2, 3), (3, 1, 3), (2, 2, 2), (1, 1, 3)]  # (c, occ, sets)
        for c, occ, sets in shapes[:3] if quick else shapes:
            for kch in (1, 2):
                room = (cuda_ws.SMEM_MAX // occ - 1024) // WsConfig(mt, c, kch=kch).stage_bytes()
                for s in sorted({8 // kch, min(room, 32)}) if not quick else (room,):
                    out.append(WsConfig(mt, c, min(s, room), occ, True, sets, kch))
        for kch in (1, 2):
            room = (cuda_ws.SMEM_MAX - 1024) // WsConfig(mt, 2, kch=kch).stage_bytes()
            out.append(WsConfig(mt, 2, min(8 // kch, room), 1, False, 2, kch))
    seen: list[WsConfig] = []
    for cfg in out:
        if cfg not in seen and cfg.problem() is None and n % cfg.rows == 0 and k % (64 * cfg.kch) == 0:
            seen.append(cfg)
    return seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default="cuda-ws.json")
    ap.add_argument("--ms", default="16,32,64,128,256,512,4096")
    ap.add_argument("--shapes", default="")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--triton", action="store_true", help="also time the tuned kernels of both layouts")
    ap.add_argument("--quick", action="store_true", help="fewer configs")
    ap.add_argument("--gpu-time", action="store_true", help="also CUPTI GPU time of the best config and cuBLAS")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    g = args.group_size
    ms = [int(v) for v in args.ms.split(",")]
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")] if args.shapes else SHAPES
    bw = copy_bandwidth()
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "python": platform.python_version(),
            "copy_bandwidth_TBps": bw / 1e12, "dtype": args.dtype, "group_size": g}  # fmt: skip
    print(info, flush=True)
    rows: list[dict[str, Any]] = []
    for k, n in shapes:
        gen = torch.Generator().manual_seed(k + n)
        w = random_nk(k, n, g, gen)
        wf = frag_of(w)
        deq = triton_awq.dequantize(w, g, torch.float32)
        dense = (torch.randn(n, k, generator=gen) * 0.02).to(dtype).cuda()
        for m in ms:
            x = torch.randn(m, k, generator=gen).to(dtype).cuda()
            ref = x.float() @ deq.t()
            row: dict[str, Any] = {"k": k, "n": n, "m": m, "bound_us": int4_bytes(m, k, n, g) / bw * 1e6}
            row["cublas_us"] = kernel_time_us(lambda x=x, dense=dense: torch.nn.functional.linear(x, dense))  # type: ignore[misc]
            results = []
            for cfg in configs(m, n, k, args.quick):
                try:
                    got = cuda_ws.frag_ws(x, wf, g, None, cfg)
                    err = float((got.float() - ref).norm() / ref.norm())
                    if not err < 0.02:
                        raise ValueError(f"relative error {err:.3g}")
                    t = kernel_time_us(lambda x=x, cfg=cfg, wf=wf: cuda_ws.frag_ws(x, wf, g, None, cfg), reps=10)  # type: ignore[misc]
                    results.append({"cfg": cfg.describe(), "us": t, "rel_err": err})
                except Exception as exc:
                    results.append({"cfg": cfg.describe(), "error": f"{type(exc).__name__}: {str(exc)[-300:]}"})
                    if sum("error" in r for r in results) == 1:
                        print("first failure:", cfg, str(exc)[-2000:], flush=True)
            ok = sorted((r for r in results if "us" in r), key=lambda r: r["us"])
            row["ws_all"] = results
            if ok:
                best = ok[0]
                cfg = next(c for c in configs(m, n, k, args.quick) if c.describe() == best["cfg"])
                row["ws_cfg"] = best["cfg"]
                row["ws_us"] = kernel_time_us(lambda x=x, cfg=cfg, wf=wf: cuda_ws.frag_ws(x, wf, g, None, cfg))  # type: ignore[misc]
                row["rel_err"] = best["rel_err"]
                if args.gpu_time:
                    row["gpu_ws_us"] = gpu_time_us(lambda x=x, cfg=cfg, wf=wf: cuda_ws.frag_ws(x, wf, g, None, cfg))  # type: ignore[misc]
                    row["gpu_cublas_us"] = gpu_time_us(lambda x=x, dense=dense: torch.nn.functional.linear(x, dense))  # type: ignore[misc]
            if args.triton:
                row["triton_frag_us"] = kernel_time_us(lambda x=x, wf=wf: triton_frag.frag_auto(x, wf, g, None))  # type: ignore[misc]
                row["triton_frag_choice"] = triton_frag.choice(x, wf, g, None)
                row["triton_nk_us"] = kernel_time_us(lambda x=x, w=w: triton_awq.auto(x, w, g, None))  # type: ignore[misc]
                row["triton_nk_choice"] = triton_awq.choice(x, w, g, None)
            rows.append(row)
            ws_us = row.get("ws_us", float("nan"))
            msg = (f"K={k:5d} N={n:5d} M={m:4d} cuBLAS {row['cublas_us']:7.1f} ws {ws_us:7.1f} "
                   f"x{row['cublas_us'] / ws_us:.2f} ({row.get('ws_cfg', '-')})")  # fmt: skip
            if args.triton:
                best_t = min(row["triton_frag_us"], row["triton_nk_us"])
                msg += (f" | triton frag {row['triton_frag_us']:7.1f} nk {row['triton_nk_us']:7.1f}"
                        f" x{row['cublas_us'] / best_t:.2f}")  # fmt: skip
            print(msg, flush=True)
            with open(args.json, "w") as f:
                json.dump({"info": info, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
