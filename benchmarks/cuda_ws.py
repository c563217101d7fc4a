"""The warp-specialized Hopper kernel on ``nk_frag`` (kernels/cuda_ws.py): config sweep against cuBLAS.

    PYTHONPATH=src python benchmarks/cuda_ws.py --ms 16,32,64,128,256,512,4096 --json cuda-ws.json [--triton]
    PYTHONPATH=src python benchmarks/cuda_ws.py --cluster --ms 16,32,64,128 --json cuda-ws-cluster.json
    PYTHONPATH=src python benchmarks/cuda_ws.py --late --ms 16,32,64 --json cuda-ws-late.json

Per shape K×N and row count M: fp16 cuBLAS, the sweep's warp-specialized configs (each checked against
the fp32 product of the dequantized weight first: a wrong config cannot win), with --triton also the
tuned kernels of both layouts (``triton_frag.frag_auto`` on ``nk_frag``, which includes the CUDA
``mma.sync`` kernel; ``triton_awq.auto`` on ``nk_int4``, dequantize + cuBLAS from 512 rows). Timing,
flush and bound are those of benchmarks/kernels.py (cold L2, median of CUDA-event times).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from dataclasses import replace
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fastawq.kernels import cuda_ws
from fastawq.kernels.cuda_ws import WsConfig
from kernels import (
    add_config_sweep_args,
    sweep_cases,
    sweep_setup,
    time_best,
    time_tuned,
)


def configs(m: int, n: int, k: int, quick: bool, g: int = 128) -> list[WsConfig]:
    """The tuner's candidates plus a sweep around them: consumer groups, CTAs per SM, register sets,
    stages (8 and as many as fit), 64, 128 or 256 inputs a stage, stream-K on and off (at group size ``g``)."""
    out = list(cuda_ws.candidates(m, n, k, group_size=g))
    mts = {cuda_ws.x_tiles(m)} | ({16, 32} if m > 128 else set())
    for mt in sorted(mts):
        shapes = [(2, 1, 3), (2, 1, 2), (1, 2, 3), (3, 1, 3), (2, 2, 2), (1, 1, 3)]  # (c, occ, sets)
        for c, occ, sets in shapes[:3] if quick else shapes:
            for kch in (1, 2, 4):
                room = WsConfig(mt, c, occ=occ, kch=kch).most_stages(g)
                for s in sorted({8 // kch, min(room, 32)}) if not quick else (room,):
                    out.append(WsConfig(mt, c, min(s, room), occ, True, sets, kch))
        for kch in (1, 2, 4):
            room = WsConfig(mt, 2, kch=kch).most_stages(g)
            out.append(WsConfig(mt, 2, min(max(8 // kch, 4), room), 1, False, 2, kch))
    seen: list[WsConfig] = []
    for cfg in out:
        if cfg not in seen and cfg.problem(g) is None and n % cfg.rows == 0 and k % (64 * cfg.kch) == 0:
            seen.append(cfg)
    return seen


def cluster_configs(m: int, n: int, k: int, g: int = 128) -> list[WsConfig]:
    """The tuner's candidates, then cluster splits (``cuda_ws.cluster_split``: the most CTAs a tile that fit
    in one wave, one less, half) of two or three consumer groups (one CTA an SM) or one (two CTAs an SM) at
    64, 128 and 256 inputs a stage, with the x tile of the tuner and a half and a quarter of it (from 129 rows
    also 256-row x tiles)."""
    out = cuda_ws.candidates(m, n, k, group_size=g)
    mt0 = cuda_ws.x_tiles(m)
    mts = {mt0, mt0 // 2, mt0 // 4} | ({32} if m > 128 else set())  # from 129 rows also 256-row x tiles
    for mt in sorted(mts - {0}, reverse=True):
        for kch, c in itertools.product((1, 2, 4), (2, 1, 3)):
            base = WsConfig(mt, c, 2, occ=2 if c == 1 else 1, sets=2, kch=kch, stream_k=False)
            out += cuda_ws.cluster_split(m, n, k, 132, base, g)
    return list(dict.fromkeys(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_sweep_args(ap, "cuda-ws.json", "16,32,64,128,256,512,4096")
    ap.add_argument("--gpu-time", action="store_true", help="also CUPTI GPU time of the best config and cuBLAS")
    ap.add_argument("--cluster", action="store_true", help="the tuner's configs against cluster splits only")
    ap.add_argument("--late", action="store_true", help="the tuner's configs with and without late scaling only")
    args = ap.parse_args()
    dtype, g, ms, shapes, bw, info = sweep_setup(args)
    rows: list[dict[str, Any]] = []
    for case in sweep_cases(shapes, ms, g, dtype, bw):
        k, n, m, x, wf, row = case.k, case.n, case.m, case.x, case.wf, case.row
        if args.late:
            cfgs = cuda_ws.candidates(m, n, k, group_size=g)
            cfgs += [c for c in (replace(c, late=True, sets=2) for c in cfgs) if c.problem(g) is None]
            cfgs = list(dict.fromkeys(cfgs))
        else:
            cfgs = cluster_configs(m, n, k, g) if args.cluster else configs(m, n, k, args.quick, g)
        # a cluster split whose clusters do not all fit at once (GPCs) runs a second wave: not a candidate
        cfgs = [c for c in cfgs if c.cl == 1 or cuda_ws.fits_one_wave(x.device, x.dtype, m, n, k, g, c)]
        time_best(case, cfgs, lambda cfg, x=x, wf=wf: cuda_ws.frag_ws(x, wf, g, None, cfg), "ws", args.gpu_time)  # type: ignore[misc]
        if args.triton:
            time_tuned(case, g)
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
