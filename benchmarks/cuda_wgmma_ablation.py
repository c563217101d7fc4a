"""What limits the warp-group (wgmma) variant of the CUDA fragment kernel: parts of its main loop taken out.

    PYTHONPATH=src python benchmarks/cuda_wgmma_ablation.py --json wgmma-ablation.json

Each variant edits the kernel source before it is compiled and is timed like benchmarks/kernels.py (cold L2,
kernel time) on 4096×28672, fp16 g128, at 16 and 128 rows of x. Only ``base`` computes the right product:
``nodec`` feeds the raw words to the tensor cores instead of decoding them, ``nobar`` drops the barrier
before each step, ``nocopy`` stops refilling the x stages, ``all`` does all three. The results bound what
each part of the loop costs; they are not kernels to use.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fastawq.kernels import cuda_frag
from fastawq.kernels.cuda_frag import CudaConfig
from kernels import edited_source, frag_of, kernel_time_us, own_source, random_nk, use_source

_DECODE = "decode_scaled(wr[d][ch][j], zlo, zhi, slo, shi, af[d & 1][ch * 4 + j], magic);"
_RAW = "{ u32 (&a)[4] = af[d & 1][ch * 4 + j]; a[0] = wr[d][ch][j]; a[1] = wr[d][ch][j] >> 4; " \
       "a[2] = wr[d][ch][j] >> 8; a[3] = wr[d][ch][j] >> 12; }"  # fmt: skip
VARIANTS: dict[str, dict[str, str]] = {
    "base": {},
    "nodec": {_DECODE: _RAW},
    "nobar": {"__syncthreads();  // this step's x": "//"},
    "nocopy": {"if (nx < iters) copy_x(xs0 + (nx": "if (nx < 0) copy_x(xs0 + (nx"},
}
VARIANTS["all"] = {**VARIANTS["nodec"], **VARIANTS["nobar"], **VARIANTS["nocopy"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default="wgmma-ablation.json")
    args = ap.parse_args()
    k, n, g = 4096, 28672, 128
    wf = frag_of(random_nk(k, n, g, torch.Generator().manual_seed(1)))
    rows = []
    with own_source(cuda_frag) as original:
        for name, edits in VARIANTS.items():
            use_source(cuda_frag, edited_source(original, edits))
            for m, mt in ((16, 2), (128, 16)):
                x = torch.randn(m, k).half().cuda()
                for rb in (4, 8):
                    cfg = CudaConfig(mt=mt, rb=rb, kw=1, depth=2, split=1, stages=4, wgmma=True)
                    us = kernel_time_us(lambda x=x, cfg=cfg: cuda_frag.frag_mma_cuda(x, wf, g, None, cfg), reps=10)  # type: ignore[misc]
                    rows.append({"variant": name, "m": m, "cfg": cfg.describe(), "us": us})
                    print(f"{name:7s} M={m:3d} {cfg.describe():40s} {us:7.1f} us", flush=True)
    with open(args.json, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "k": k, "n": n, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
