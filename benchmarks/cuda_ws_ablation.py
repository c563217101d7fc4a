"""What limits the warp-specialized kernel (kernels/cuda_ws.py): parts of it taken out, one at a time.

    PYTHONPATH=src python benchmarks/cuda_ws_ablation.py --ms 128,512,4096 --json ws-ablation.json

For each shape K×N (fp16, g128) and row count M, the tuner's candidates are timed and the fastest one is
rebuilt with the kernel source edited before it is compiled; each variant is timed like benchmarks/kernels.py
(cold L2, kernel time) next to fp16 cuBLAS. Only ``base`` computes the right product: ``nodec`` feeds the
raw words to the tensor cores instead of decoding them, ``raw`` decodes them as magic + code only (no zero
point, no scale), ``noepi`` stores no output, ``nowg`` issues no
``wgmma``, ``nox`` copies x only for the first stage of each piece of work (the other stages keep stale x),
``now`` copies no packed weights (the stages keep stale words). The differences bound what each part costs;
they are not kernels to use. Up to 8 rows, where the tuner has no ``cuda_ws`` candidates, the config is the
best 16-row config of the H200 sweep (``SMALL_M``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fastawq.kernels import cuda_ws
from kernels import edited_source, frag_of, kernel_time_us, own_source, parse_shapes, random_nk, use_source

_DECODE = "decode_scaled(w[i], zlo, zhi, slo, shi, af[H][4 * j + i], magic);"
_STORE = "if (m < M)\n      *reinterpret_cast<uint4*>"
VARIANTS: dict[str, dict[str, str]] = {
    "base": {},
    "nodec": {
        _DECODE: "{ u32 (&a)[4] = af[H][4 * j + i]; a[0] = w[i]; a[1] = w[i] >> 4; a[2] = w[i] >> 8; "
        "a[3] = w[i] >> 12; }"
    },
    # the cheapest decode: magic | code (one shift a word, one LOP3 a pair), no zero point and no scale; what
    # a kernel that takes both off after the product (with the group's sum of x) would pay for the decode
    "raw": {
        _DECODE: "{ u32 (&a)[4] = af[H][4 * j + i]; const u32 w8 = w[i] >> 8; a[0] = (w[i] & 0x000F000Fu) | magic; "
        "a[1] = (w[i] & 0x00F000F0u) | magic; a[2] = (w8 & 0x000F000Fu) | magic; a[3] = (w8 & 0x00F000F0u) | magic; }"
    },
    "noepi": {_STORE: "if (m < M && a.x == 0x7C017C01u)\n      *reinterpret_cast<uint4*>"},
    "nowg": {"wgmma(acc, af[H][4 * j + i], desc + ((i * 32) >> 4));": "keep(af[H][4 * j + i]);"},
    "nox": {
        "bar_expect(full, KCH * (XBYTES + WBYTES) + GR * SZBYTES);": (
            "bar_expect(full, KCH * ((c == c0 ? XBYTES : 0) + WBYTES) + GR * SZBYTES);"
        ),
        "for (int j = 0; j < KCH; ++j) tma2d(": "for (int j = 0; j < KCH && c == c0; ++j) tma2d(",
    },
    "now": {
        "bar_expect(full, KCH * (XBYTES + WBYTES) + GR * SZBYTES);": "bar_expect(full, KCH * XBYTES + GR * SZBYTES);",
        "tma2d(st + WOFF + p * WPIECE, &wmap,": "if (0) tma2d(st + WOFF + p * WPIECE, &wmap,",
    },
}

#: up to 8 rows: the fastest 16-row config of `benchmarks/cuda_ws.py --ms 16,32,64 --quick` on an H200
#: (`cuda-ws-sweep-k256-h200-2026-11-28.json`)
SMALL_M = cuda_ws.WsConfig(2, 2, 8, sets=2, kch=4)


def case(m: int, k: int, n: int, g: int, wf: dict[str, torch.Tensor], dense: torch.Tensor, original: str,
         sources: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """One row: the fastest candidate of the unedited kernel, then every variant of it and cuBLAS."""
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).half().cuda()
    use_source(cuda_ws, original)
    timed = [(kernel_time_us(lambda c=c: cuda_ws.frag_ws(x, wf, g, None, c), reps=10), c)  # type: ignore[misc]
             for c in cuda_ws.candidates(m, n, k, group_size=g) or [SMALL_M]]  # fmt: skip
    cfg = min(timed, key=lambda t: t[0])[1]
    row: dict[str, Any] = {"k": k, "n": n, "m": m, "cfg": cfg.describe()}
    row["cublas"] = kernel_time_us(lambda: torch.nn.functional.linear(x, dense), reps=20)
    for name, src in sources.items():
        use_source(cuda_ws, src)
        row[name] = kernel_time_us(lambda: cuda_ws.frag_ws(x, wf, g, None, cfg), reps=20)
    times = " ".join(f"{v} {row[v]:7.1f}" for v in ["cublas", *VARIANTS])
    print(f"{k:5d}x{n:<5d} M={m:<4d} {row['cfg']:32s} {times}", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ms", default="128,512,4096")
    ap.add_argument("--json", default="ws-ablation.json")
    ap.add_argument("--shapes", default="", help="subset, e.g. 4096x28672,14336x4096")
    args = ap.parse_args()
    shapes = parse_shapes(args.shapes)
    g = 128
    rows: list[dict[str, Any]] = []
    with own_source(cuda_ws) as original:
        sources = {name: edited_source(original, edits) for name, edits in VARIANTS.items()}
        for k, n in shapes:
            wf = frag_of(random_nk(k, n, g, torch.Generator().manual_seed(k + n)))
            dense = torch.randn(n, k, device="cuda", dtype=torch.float16)
            for m in (int(v) for v in args.ms.split(",")):
                rows.append(case(m, k, n, g, wf, dense, original, sources))
    with open(args.json, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
