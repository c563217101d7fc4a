"""Where the warp-specialized kernel's time goes: per-CTA ``%globaltimer`` stamps of ``cuda_ws`` on the GPU
(cold L2, as in benchmarks/kernels.py).

    PYTHONPATH=src python benchmarks/ws_trace.py --ms 16,32,64 --json ws-trace.json [--shapes 4096x4096,...]

A copy of the kernel source gets stamps: the CTA's start and SM (thread 0), and for each of its first four
pieces of work (thread 0 of the first consumer warp group) when the piece starts, when its main loop is done
and when its epilogue is done. The stamps are written where the bias would be read (the launch passes
has_bias = 0). The piece each stamp belongs to comes from replaying the host's schedule, so each piece is
known to be a whole tile, the head of a split tile (stages 0 …, which waits for the others and writes y) or
another part of one (which adds its sum into the workspace and goes on). In a cluster split every rank writes
its share of y after the others' sums of it are in: rank 0 counts as the head, the others as parts.

Per config (the tuner's candidates): the event time of the unstamped kernel, the span from the first CTA's
start to the last CTA's end, the wait for the first stage, the time a stage takes in the main loop, the
epilogue of each kind of piece, and when CTAs end (10th and 50th percentile and last).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fastawq.kernels import cuda_rt, cuda_ws
from fastawq.kernels.triton_awq import _workspace
from kernels import (
    TIMER_STAMPS,
    _flush_buffer,
    edited_source,
    frag_of,
    kernel_time_us,
    own_source,
    parse_shapes,
    random_nk,
    use_source,
)

_HEAD = 'extern "C" __global__ void CLUSTER_DIMS __launch_bounds__(NT, OCC) fastawq_frag_ws('
_ADDED = 'if (tid == 0) asm volatile("red.release.gpu.global.add.s32 [%0], 1;" :: "l"(cnt + slot) : "memory");\n'
_CL_STORE = "store_tile(y, acc, blo, bhi, M, N, tm * BT, n_lo - g, g, tq, own_lo, own_hi);  // its own slices"
_STORE = "store_tile(y, acc, blo, bhi, M, N, tm * BT, n_lo - g, g, tq);  // n_lo − g: the warp's first column"
_END = "if (st0) { tr[3 + 3 * pc] = gt(); tr[13] = pc + 1; }\n    ++pc;"
#: a CTA's 16 stamp words: 0 start, 1 + 3·i … piece i's start, main loop done, epilogue done (i < 4),
#: 13 pieces stamped, 15 SM
EDITS = {
    _HEAD: TIMER_STAMPS + _HEAD,
    "const int wg = threadIdx.x >> 7;\n": "const int wg = threadIdx.x >> 7;\n"
    "  unsigned long long* tr = (unsigned long long*)(bias) + blockIdx.x * 16;\n"
    "  if (threadIdx.x == 0) { tr[0] = gt(); tr[15] = smid(); }\n",
    "int s = 0, h = 0, old = S - (NSETS - 1);": "int s = 0, h = 0, old = S - (NSETS - 1), pc = 0;",
    "for_pieces(kc, dp, per, units, [&](int t, int c0, int c1) {\n#pragma unroll": "for_pieces(kc, dp, per, units, "
    "[&](int t, int c0, int c1) {\n    const bool st0 = cw == 0 && tid == 0 && pc < 4;\n"
    "    if (st0) tr[1 + 3 * pc] = gt();\n#pragma unroll",
    "for (int mt = 0; mt < MT; ++mt) keepf(acc[mt]);": "for (int mt = 0; mt < MT; ++mt) keepf(acc[mt]);\n"
    "    if (st0) tr[2 + 3 * pc] = gt();",
    _ADDED + "        return;": _ADDED + "        " + _END + "\n        return;",
    _CL_STORE: _CL_STORE + "\n    " + _END,
    _STORE: _STORE + "\n    " + _END,
}


def launch_stamped(
    p: cuda_ws.WsPlan, x2d: torch.Tensor, w: dict[str, torch.Tensor], tr: torch.Tensor
) -> tuple[int, ...]:
    """One launch of the stamped plan ``p`` (as ``WsPlan.__call__``, with ``tr`` as the bias and no bias
    added); returns (grid, dp, per, units, stages a tile)."""
    cfg, m, n = p.cfg, p.m, p.n
    y = torch.empty(m, n, device=x2d.device, dtype=x2d.dtype)
    grid, dp, per, units, slots = p.schedule(cfg.stream_k)
    ws, cnt = y, y
    if slots:
        buf = _workspace(x2d.device, slots * cfg.c * cfg.mt * 512, slots * cfg.c)
        assert buf is not None
        ws, cnt = buf
    xmap = cuda_rt.tensor_map_2d(x2d, box=(64, 8 * cfg.mt))
    wmap, szmap = p.weight_maps(w)
    args = p.fn.args(cuda_ws._SIGNATURE)
    args.set(xmap, wmap, szmap, tr.data_ptr(), y.data_ptr(), ws.data_ptr(), cnt.data_ptr(), m, n,
             p.k // (64 * cfg.kch), n // cfg.rows, dp, per, units, 0)  # fmt: skip
    p.fn.launch_on(x2d.device, (grid, 1, 1), cfg.threads, args, p.smem)
    return grid, dp, per, units, p.k // (64 * cfg.kch), cfg.cl


def pieces(b: int, grid: int, dp: int, per: int, units: int, kc: int, cl: int = 1) -> list[tuple[int, int, int]]:
    """CTA ``b``'s pieces (tile, first stage, end stage), in the kernel's order."""
    if cl > 1:  # a cluster split: one piece, the rank's share of the cluster's tile
        r = b % cl
        return [(b // cl, r * kc // cl, (r + 1) * kc // cl)]
    out = [(t, 0, kc) for t in range(b, dp, grid)]
    u, u1 = b * per, min(b * per + per, units)
    while u < u1:
        t, c0 = dp + u // kc, u % kc
        c1 = min(kc, c0 + u1 - u)
        out.append((t, c0, c1))
        u += c1 - c0
    return out


def summary(tr: torch.Tensor, sched: tuple[int, ...]) -> dict[str, Any]:
    grid, dp, per, units, kc, cl = sched
    rows = tr.view(-1, 16)[:grid].cpu().tolist()
    t0 = min(r[0] for r in rows if r[13])
    ends, first_wait, per_stage = [], [], []
    epi: dict[str, list[float]] = {"whole": [], "head": [], "part": []}
    for b, r in enumerate(rows):
        if not r[13]:
            continue
        for i, (_, c0, c1) in enumerate(pieces(b, grid, dp, per, units, kc, cl)[: min(4, r[13])]):
            start, loop, end = r[1 + 3 * i], r[2 + 3 * i], r[3 + 3 * i]
            if i == 0:
                first_wait.append((start - r[0]) / 1e3)
            per_stage.append((loop - start) / 1e3 / (c1 - c0))
            epi["whole" if c1 - c0 == kc else "head" if c0 == 0 else "part"].append((end - loop) / 1e3)
        ends.append((r[3 * min(4, r[13])] - t0) / 1e3)  # the last stamped piece's end

    def med(v: list[float]) -> float | None:
        return round(statistics.median(v), 3) if v else None

    ends.sort()
    return {"grid": grid, "whole_tiles": dp, "stages_a_cta": per, "span_us": round(ends[-1], 2),
            "first_wait_us": med(first_wait), "stage_us": med(per_stage),
            "stage_us_max": round(max(per_stage), 3), **{f"epilogue_{k}_us": med(v) for k, v in epi.items()},
            "end_p10_us": round(ends[len(ends) // 10], 2), "end_p50_us": round(ends[len(ends) // 2], 2)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ms", default="16,32,64")
    ap.add_argument("--json", default="ws-trace.json")
    ap.add_argument("--shapes", default="", help="subset, e.g. 4096x4096,14336x4096")
    args = ap.parse_args()
    shapes = parse_shapes(args.shapes)
    flush = _flush_buffer()
    rows: list[dict[str, Any]] = []
    with own_source(cuda_ws) as original:
        stamped = edited_source(original, EDITS)
        for k, n in shapes:
            wf = frag_of(random_nk(k, n, 128, torch.Generator().manual_seed(k + n)))
            for m in (int(v) for v in args.ms.split(",")):
                x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).half().cuda()
                for cfg in cuda_ws.candidates(m, n, k):
                    use_source(cuda_ws, original)
                    event = kernel_time_us(lambda cfg=cfg, x=x, wf=wf: cuda_ws.frag_ws(x, wf, 128, None, cfg), reps=20)  # type: ignore[misc]
                    use_source(cuda_ws, stamped)
                    p = cuda_ws.plan(x.device, x.dtype, m, n, k, 128, cfg)
                    tr = torch.zeros(max(n // 4, 16 * p.sms * cfg.occ), dtype=torch.int64, device=x.device)
                    runs = []
                    for _ in range(7):  # the run with the median span
                        flush.view(torch.int32).max()
                        torch.cuda._sleep(400_000)
                        tr.zero_()
                        sched = launch_stamped(p, x, wf, tr)
                        torch.cuda.synchronize()
                        runs.append(summary(tr, sched))
                    row = {"k": k, "n": n, "m": m, "cfg": cfg.describe(), "waves": p.waves, "event_us": round(event, 2),
                           **sorted(runs, key=lambda r: r["span_us"])[3]}  # fmt: skip
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    with open(args.json, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
