"""Where the decode kernel's time goes: per-CTA ``%globaltimer`` stamps of ``cuda_gemv``, and of a kernel that
only streams the packed weight, on the GPU (cold L2, as in benchmarks/kernels.py).

    PYTHONPATH=src python benchmarks/gemv_trace.py --ms 1,8 --json gemv-trace.json

A copy of the kernel source gets stamps (thread 0 of each CTA: start, its first row block done, all warps'
loops done, partial sums written, split-K counter, last CTA's write; the SM it ran on) and is launched like
the real one. Per config: the event time, the span from the first CTA's start to the last CTA's end, when
CTAs start (later waves start late), the loop and epilogue medians, when CTAs end, and the fraction of the
span the SMs held a CTA. The stamps add a few instructions; the unstamped kernel's time is reported too.
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

import cuda_frag as frag_bench
from fastawq.kernels import cuda_gemv, cuda_rt, triton_awq
from kernels import (
    SHAPES,
    TIMER_STAMPS,
    _flush_buffer,
    copy_bandwidth,
    edited_source,
    frag_of,
    kernel_time_us,
    random_nk,
)

#: stamp slots of a CTA (64 words each)
SM, START, FIRST, LOOP, EPI, COUNT, LAST = range(7)


def _sub(src: str, old: str, new: str) -> str:
    return edited_source(src, {old: new})


def stamped(src: str) -> str:
    """The decode kernel's source with the stamps (an extra last argument: the stamp buffer)."""
    s = _sub(src, "int rbc, int has_bias, u32 magic) {",
             "int rbc, int has_bias, u32 magic, u64* __restrict__ tr) {\n"
             "  const u64 T0 = gt();\n  u64 T1 = 0;")  # fmt: skip
    for pad in ("        ", "    "):  # the register loop, the cp.async loop: after row block 0's products
        head = f"\n#pragma unroll\n{pad}for (int mt = 0; mt < MT; ++mt)\n{pad}  red[SLOT(i, warp, mt)"
        s = _sub(s, head, f"\n{pad}if (i == 0) T1 = gt();" + head)
    s = _sub(s, "#endif\n  __syncthreads();\n",
             "#endif\n  __syncthreads();\n"
             "  const u64 cta = blockIdx.x + (u64)gridDim.x * (blockIdx.y + (u64)gridDim.y * blockIdx.z);\n"
             f"  if (threadIdx.x == 0) {{ tr[cta * 64 + {SM}] = smid(); tr[cta * 64 + {START}] = T0; "
             f"tr[cta * 64 + {FIRST}] = T1; tr[cta * 64 + {LOOP}] = gt(); }}\n")  # fmt: skip
    s = _sub(s, "  cluster_sync_all();  // no CTA leaves",
             f"  __syncthreads();\n  if (threadIdx.x == 0) tr[cta * 64 + {EPI}] = gt();\n"
             "  cluster_sync_all();  // no CTA leaves")  # fmt: skip
    s = _sub(s, "  if (!split) return;", f"  __syncthreads();\n  if (threadIdx.x == 0) tr[cta * 64 + {EPI}] = gt();\n"
             "  if (!split) return;")  # fmt: skip
    s = _sub(s, "  if (!last) return;", f"  if (threadIdx.x == 0) tr[cta * 64 + {COUNT}] = gt();\n  if (!last) return;")
    s = s.rstrip()
    assert s.endswith("}")
    return TIMER_STAMPS + s[:-1] + f"  __syncthreads();\n  if (threadIdx.x == 0) tr[cta * 64 + {LAST}] = gt();\n}}\n"


def stamped_probe() -> str:
    """The weight-only stream of benchmarks/cuda_frag.py (4 runs in flight a warp) with the same stamps."""
    s = _sub(frag_bench._PROBE, "u32* out) {", "u32* out, u64* tr) {\n  const u64 T0 = gt();\n  u64 T1 = 0;")
    s = _sub(s, "acc ^= v[u][0] ^ v[u][1] ^ v[u][2] ^ v[u][3];\n  }",
             "acc ^= v[u][0] ^ v[u][1] ^ v[u][2] ^ v[u][3];\n    if (T1 == 0) T1 = gt() | (acc & 1);\n  }")  # fmt: skip
    s = _sub(s, "  if (acc == 0x9E3779B9u) out[0] = acc;\n}",
             "  if (acc == 0x9E3779B9u) out[0] = acc;\n  __syncthreads();\n  if (threadIdx.x == 0) {\n"
             f"    tr[blockIdx.x * 64 + {SM}] = smid(); tr[blockIdx.x * 64 + {START}] = T0;\n"
             f"    tr[blockIdx.x * 64 + {FIRST}] = T1; tr[blockIdx.x * 64 + {LOOP}] = gt();\n"
             f"    tr[blockIdx.x * 64 + {EPI}] = gt();\n"
             "  }\n}")  # fmt: skip
    return "#define U 4\ntypedef unsigned long long u64;\n" + TIMER_STAMPS + s


def _cold_once(launch: Any, tr: torch.Tensor) -> None:
    flush = _flush_buffer()
    flush.view(torch.int32).max()
    torch.cuda._sleep(400_000)
    tr.zero_()
    launch()
    torch.cuda.synchronize()


def summary(tr: torch.Tensor, ctas: int, sms: int) -> dict[str, Any]:
    """The stamps of ``ctas`` CTAs in µs from the first CTA's start."""
    t = tr.view(-1, 64)[:ctas].cpu().tolist()
    t0 = min(r[START] for r in t)
    ends = [max(r[EPI], r[COUNT], r[LAST]) - t0 for r in t]
    starts = [r[START] - t0 for r in t]
    span = max(ends)
    held: dict[int, list[tuple[int, int]]] = {}
    for r, s, e in zip(t, starts, ends, strict=True):
        held.setdefault(r[SM], []).append((s, e))

    def union(iv: list[tuple[int, int]]) -> int:
        iv = sorted(iv)
        total, (cs, ce) = 0, iv[0]
        for s, e in iv[1:]:
            if s > ce:
                total, cs, ce = total + ce - cs, s, e
            else:
                ce = max(ce, e)
        return total + ce - cs

    def q(v: list[int], p: float) -> float:
        return sorted(v)[min(len(v) - 1, int(p * len(v)))] / 1e3

    def med(v: list[int]) -> float | None:
        return statistics.median(v) / 1e3 if v else None

    return {"ctas": ctas, "sms_used": len(held), "span_us": span / 1e3, "start_max_us": q(starts, 1.0),
            "loop_us": med([r[LOOP] - r[START] for r in t]),
            "epilogue_us": med([r[EPI] - r[LOOP] for r in t if r[EPI]]),
            "counter_us": med([r[COUNT] - r[EPI] for r in t if r[COUNT]]),
            "last_write_us": med([r[LAST] - r[COUNT] for r in t if r[LAST] and r[COUNT]]),
            "end_p10_us": q(ends, 0.1), "end_p50_us": q(ends, 0.5), "end_max_us": span / 1e3,
            "sm_held": sum(union(v) for v in held.values()) / (sms * span)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ms", default="1,8")
    ap.add_argument("--json", default="gemv-trace.json")
    args = ap.parse_args()
    dev = torch.device("cuda", torch.cuda.current_device())
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    bw = copy_bandwidth()
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "copy_bandwidth_TBps": bw / 1e12}
    print(info, flush=True)
    tr = torch.zeros(1 << 22, dtype=torch.int64, device=dev)
    rows: list[dict[str, Any]] = []
    g = 128
    for k, n in SHAPES:
        gen = torch.Generator().manual_seed(k + n)
        w = random_nk(k, n, g, gen)
        wf = frag_of(w)
        deq = triton_awq.dequantize(w, g, torch.float32)
        qw = wf["qweight_frag"].view(-1)
        out = torch.zeros(1, dtype=torch.int32, device=dev)
        fn = cuda_rt.load(stamped_probe(), "probe", dev)
        pa = fn.args("plpp")
        pa.set(qw.data_ptr(), qw.numel() // 4, out.data_ptr(), tr.data_ptr())
        stream = cuda_rt.current_stream_handle(dev)

        def probe(fn: cuda_rt.Function = fn, pa: cuda_rt.Args = pa, stream: int = stream) -> None:
            fn.launch((sms * 4, 1, 1), 512, pa, stream)

        row = {"k": k, "n": n, "kind": "probe", "us": kernel_time_us(probe, reps=20)}
        _cold_once(probe, tr)
        row.update(summary(tr, sms * 4, sms))
        rows.append(row)
        print(f"K={k} N={n} weight-only stream: {row['us']:.1f} us, span {row['span_us']:.1f}", flush=True)
        for m in [int(v) for v in args.ms.split(",")]:
            x = torch.randn(m, k, generator=gen).half().cuda()
            ref = x.float() @ deq.t()
            for cfg in cuda_gemv.candidates(m, n, k, g):
                p = cuda_gemv.plan(dev, torch.float16, m, n, k, g, cfg)
                cluster = p.split if p.clustered else 1
                sfn = cuda_rt.load(
                    stamped(cuda_gemv.source(torch.float16, g, cfg, cluster)), cuda_gemv.NAME, dev, p.smem
                )
                y = torch.empty(m, n, device=dev, dtype=torch.float16)
                ws, cnt = (y, y)
                if p.split > 1 and not p.clustered:
                    buf = triton_awq._workspace(dev, m * n, p.grid[0] * p.grid[1] * p.grid[2] // p.split)
                    assert buf is not None
                    ws, cnt = buf
                a = sfn.args(cuda_gemv._SIGNATURE + "p")
                a.set(x.data_ptr(), wf["qweight_frag"].data_ptr(), wf["sz_gn"].data_ptr(), y.data_ptr(), y.data_ptr(),
                      ws.data_ptr(), cnt.data_ptr(), m, n, k, x.stride(0), p.rbc, 0, cuda_gemv._MAGIC[torch.float16],
                      tr.data_ptr())  # fmt: skip

                def go(sfn: cuda_rt.Function = sfn, p: cuda_gemv.GemvPlan = p, a: cuda_rt.Args = a) -> None:
                    sfn.launch_on(dev, p.grid, p.cfg.kw * 32, a, p.smem)

                go()
                torch.cuda.synchronize()
                err = float((y.float() - ref).norm() / ref.norm())
                row = {"k": k, "n": n, "m": m, "kind": "gemv", "cfg": cfg.describe(), "grid": p.grid, "rel_err": err,
                       "us": kernel_time_us(go, reps=20),
                       "unstamped_us": kernel_time_us(lambda p=p, x=x, wf=wf: p(x, wf, None), reps=20)}  # fmt: skip
                _cold_once(go, tr)
                row.update(summary(tr, p.grid[0] * p.grid[1] * p.grid[2], sms))
                rows.append(row)
                print(f"K={k} N={n} M={m} {row['cfg']:40s} {row['unstamped_us']:5.1f} us (stamped {row['us']:5.1f}) "
                      f"span {row['span_us']:5.1f} last start {row['start_max_us']:5.1f} loop {row['loop_us']:5.1f} "
                      f"epilogue {row['epilogue_us'] or 0:4.2f} ends {row['end_p10_us']:5.1f}-{row['end_max_us']:5.1f} "
                      f"SMs held {100 * row['sm_held']:3.0f}% err {err:.1e}", flush=True)  # fmt: skip
        with open(args.json, "w") as f:
            json.dump({"info": info, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
