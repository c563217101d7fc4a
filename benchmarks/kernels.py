"""W4A16 kernel benchmark: fastawq's kernels against fp16/bf16 cuBLAS, one run per device.

    PYTHONPATH=src python benchmarks/kernels.py --json results.json          # the BENCHMARKS.md table
    PYTHONPATH=src python benchmarks/kernels.py --sweep mma --json sweep.json  # tile-config search

What is measured (CUDA events around each call, L2 flushed before every call: "kernel time, cold L2"):
- copy bandwidth of a 1 GiB device-to-device copy (read + write bytes over time);
- for every shape K×N and row count M: cuBLAS (``F.linear`` with a dense weight of the activation dtype),
  the kernel the dispatcher picks, and each fastawq kernel where it applies; the headline pair (cuBLAS and
  the picked kernel) is timed in alternation, 5 rounds of 10 calls each, and the speed-up is the median of
  the rounds' ratios (``single_*``: the one-shot times from before the tuning, kept for reference);
- the int4 memory bound: (packed weights + fp16 scales + 4-bit zeros + x + y) / copy bandwidth;
- eager time: back-to-back ``AWQLinear`` / ``nn.Linear`` module calls, warm L2, wall clock per call,
  Python launch overhead included;
- --other: the same weight in the layout the dispatcher did not pick (``nk_frag`` is the default on sm_90,
  ``nk_int4`` elsewhere), tuned the same way;
- --gpu-time: CUPTI kernel durations (torch.profiler), without the ~4 µs the events add.
Weights are random (codes, zero points, scales; never zeros). Output: a printed table and JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import triton

from fastawq import AWQLinear
from fastawq.format.conversions import unpack_seq
from fastawq.kernels import dispatch, layouts, triton_awq, triton_frag
from fastawq.kernels.triton_awq import TileConfig

SHAPES = [(4096, 4096), (4096, 6144), (4096, 28672), (14336, 4096), (8192, 8192)]  # K × N
MS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
EXTRA_MS = [1, 16, 128, 512]


_FLUSH: list[torch.Tensor] = []


def _flush_buffer() -> torch.Tensor:
    """The 256 MiB buffer whose reading (or writing) evicts the 50 MiB L2 before a timed call."""
    if not _FLUSH:
        _FLUSH.append(torch.empty(256 << 20, dtype=torch.uint8, device="cuda"))
    return _FLUSH[0]


#: rounds of :func:`paired_times` for the headline fastawq / cuBLAS pair of each row
PAIR_ROUNDS = 5
#: "read": the L2 is flushed by reading 256 MiB (it ends up holding clean lines of another buffer, as
#: after the previous layer's kernel in a real forward pass); "write": by overwriting 256 MiB, which
#: leaves ~50 MiB of dirty lines that the timed kernel then pays to write back (triton's do_bench way).
FLUSH_MODE = ["read"]
#: also time the other layout's tuned kernel (--other), and CUPTI kernel durations (--gpu-time)
OTHER = [False]
GPU_TIME = [False]


def kernel_time_us(fn: Callable[[], Any], reps: int = 30) -> float:
    """Median GPU time of one call, cold L2, launch latency excluded.

    Before each call: read (or overwrite, see FLUSH_MODE) 256 MiB, which evicts the 50 MiB L2, then
    ``torch.cuda._sleep`` so the GPU is still busy while the CPU enqueues the call; the events then
    bracket only the kernel(s) of ``fn``.
    """
    flush = _flush_buffer()
    for _ in range(3):
        fn()
    start = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    end = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        if FLUSH_MODE[0] == "read":
            flush.view(torch.int32).max()
        else:
            flush.zero_()
        torch.cuda._sleep(400_000)
        start[i].record()
        fn()
        end[i].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(start, end)) * 1e3


def paired_times(
    a: Callable[[], Any], b: Callable[[], Any], rounds: int = PAIR_ROUNDS, reps: int = 10
) -> dict[str, Any]:
    """``a`` (the baseline) and ``b`` timed in alternation, ``rounds`` times :func:`kernel_time_us` each:
    the median of each, and the median of the per-round ratios a / b (b's speed-up).

    The card's speed drifts by up to ±10 % over seconds in compute-bound calls (an H200 at 4096 rows: cuBLAS
    1272 – 1537 µs within one process, BENCHMARKS.md sixteenth version), so a baseline timed once at the
    start of a row and the kernel timed a second later (after its tuning) are not comparable there;
    alternating puts both under the same conditions."""
    pairs = [(kernel_time_us(a, reps), kernel_time_us(b, reps)) for _ in range(rounds)]
    return {
        "a_us": statistics.median(p[0] for p in pairs),
        "b_us": statistics.median(p[1] for p in pairs),
        "ratio": statistics.median(p[0] / p[1] for p in pairs),
        "pairs": [[round(v, 2) for v in p] for p in pairs],
    }


def gpu_time_us(fn: Callable[[], Any], reps: int = 20) -> float:
    """GPU execution time of one call, cold L2: the summed durations of the kernels it launches.

    CUPTI (through ``torch.profiler``) reports when each kernel ran on the GPU; the L2 flush and the
    sleep kernel that precede every call are left out by name. Unlike :func:`kernel_time_us`, this
    excludes the ~4 µs that the two CUDA events and the launch add around even an empty kernel
    (BENCHMARKS.md), so it is the number to hold against the memory bound. NaN if profiling fails.
    """
    flush = _flush_buffer()
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                flush.view(torch.int32).max()
                torch.cuda._sleep(100_000)
                fn()
            torch.cuda.synchronize()
        total = 0.0
        for evt in prof.events():
            if evt.device_type != torch.autograd.DeviceType.CUDA:
                continue
            if "at::native::reduce_kernel" in evt.name or "spin_kernel" in evt.name or "Memcpy" in evt.name:
                continue
            total += evt.time_range.end - evt.time_range.start
        return total / reps if total > 0 else float("nan")
    except Exception as exc:  # a profiler that does not work here: the event timing still stands
        print("gpu_time_us failed:", repr(exc)[:200], flush=True)
        return float("nan")


def eager_time_us(fn: Callable[[], Any], calls: int = 200) -> float:
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / calls * 1e6


def copy_bandwidth() -> float:
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    t = kernel_time_us(lambda: b.copy_(a), reps=20) * 1e-6
    return 2 * n / t


def edited_source(src: str, edits: dict[str, str]) -> str:
    """A kernel source with each ``old`` replaced by ``new``, in order, for scripts that patch a kernel (stamps,
    ablations); each ``old`` must occur exactly once, or the kernel changed under the script."""
    for old, new in edits.items():
        if src.count(old) != 1:
            raise SystemExit(f"the kernel source changed: {old!r} found {src.count(old)} times; update this script")
        src = src.replace(old, new)
    return src


def use_source(module: Any, src: str) -> None:
    """Make a run-time-compiled kernel module (``cuda_frag``, ``cuda_ws``) compile ``src`` from its next plan on
    (its cached plans are dropped), for scripts that time an edited kernel, inside an :func:`own_source`
    block, which gives the module back its own source."""
    module._KERNEL = src
    module._PLANS.clear()


@contextlib.contextmanager
def own_source(module: Any) -> Iterator[str]:
    """A block in which a script may :func:`use_source` edited kernels: yields the module's own source and
    gives it back (plans dropped) when the block ends, also on an error."""
    original: str = module._KERNEL
    try:
        yield original
    finally:
        use_source(module, original)


#: device helpers for scripts that stamp a kernel copy: the global nanosecond timer and the SM a CTA runs on
TIMER_STAMPS = r"""
__device__ __forceinline__ unsigned long long gt() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ unsigned smid() {
  unsigned s;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(s));
  return s;
}
"""


def random_nk(k: int, n: int, g: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    words = torch.randint(-(2**31), 2**31 - 1, (n, k // 8), generator=gen, dtype=torch.int64).to(torch.int32)
    return {
        "qweight_nk": words.cuda(),
        "sz_gn": layouts.pack_scale_zero(
            (torch.rand(k // g, n, generator=gen) * 0.02 + 0.002).half(),
            torch.randint(0, 16, (k // g, n), generator=gen, dtype=torch.uint8),
        ).cuda(),
    }


def int4_bytes(m: int, k: int, n: int, g: int, act_bytes: int = 2) -> int:
    return k * n // 2 + (k // g) * n * 2 + (k // g) * n // 2 + m * k * act_bytes + m * n * act_bytes


def module_for(w: dict[str, torch.Tensor], k: int, n: int, g: int, layout: str = layouts.NK_INT4) -> AWQLinear:
    mod = AWQLinear(k, n, group_size=g, bias=False, device="meta")
    for name in list(mod.layout_tensors()):
        del mod._buffers[name]
    for name, t in w.items():
        mod.register_buffer(name, t, persistent=False)
    mod.layout = layout
    mod.kernel = "triton_frag" if layout == layouts.NK_FRAG else "triton"  # the layout's tuned kernel
    return mod


def frag_of(w: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weight in the ``nk_frag`` layout."""
    return {"qweight_frag": layouts.pack_frag(unpack_seq(w["qweight_nk"])), "sz_gn": w["sz_gn"]}


# ---------------------------------------------------- config sweeps of the CUDA kernels (cuda_frag.py, cuda_ws.py)


def add_config_sweep_args(ap: argparse.ArgumentParser, json_default: str, ms_default: str) -> None:
    """The options the CUDA config sweeps share."""
    ap.add_argument("--json", default=json_default)
    ap.add_argument("--ms", default=ms_default)
    ap.add_argument("--shapes", default="")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--triton", action="store_true", help="also time the tuned kernels of both layouts")
    ap.add_argument("--quick", action="store_true", help="fewer configs")


@dataclass
class SweepCase:
    """One (K, N, M) of a config sweep: x, the weight in both layouts, the fp32 reference, a dense fp16
    weight, and the JSON row (with the same-run cuBLAS time) that the sweep fills in."""

    k: int
    n: int
    m: int
    x: torch.Tensor
    w: dict[str, torch.Tensor]
    wf: dict[str, torch.Tensor]
    ref: torch.Tensor
    dense: torch.Tensor
    row: dict[str, Any]


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    """The K×N shapes of a ``--shapes`` option ("4096x4096,14336x4096"); empty: the five benchmark shapes."""
    return [tuple(int(v) for v in s.split("x")) for s in text.split(",")] if text else list(SHAPES)


def sweep_setup(
    args: argparse.Namespace,
) -> tuple[torch.dtype, int, list[int], list[tuple[int, ...]], float, dict[str, Any]]:
    """(dtype, group size, Ms, shapes, copy bandwidth, run info) of a config sweep; the info is printed."""
    shapes = parse_shapes(args.shapes)
    bw = copy_bandwidth()
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "python": platform.python_version(),
            "copy_bandwidth_TBps": bw / 1e12, "dtype": args.dtype, "group_size": args.group_size}  # fmt: skip
    print(info, flush=True)
    return getattr(torch, args.dtype), args.group_size, [int(v) for v in args.ms.split(",")], shapes, bw, info


def sweep_cases(
    shapes: list[tuple[int, ...]], ms: list[int], g: int, dtype: torch.dtype, bw: float
) -> Iterator[SweepCase]:
    """The sweep's cases, shape by shape (one random weight each), with fp16 cuBLAS timed for each."""
    for k, n in shapes:
        gen = torch.Generator().manual_seed(k + n)
        w = random_nk(k, n, g, gen)
        wf = frag_of(w)
        deq = triton_awq.dequantize(w, g, torch.float32)
        dense = (torch.randn(n, k, generator=gen) * 0.02).to(dtype).cuda()
        for m in ms:
            x = torch.randn(m, k, generator=gen).to(dtype).cuda()
            row: dict[str, Any] = {"k": k, "n": n, "m": m, "bound_us": int4_bytes(m, k, n, g) / bw * 1e6}
            row["cublas_us"] = kernel_time_us(lambda x=x, dense=dense: torch.nn.functional.linear(x, dense))  # type: ignore[misc]
            yield SweepCase(k, n, m, x, w, wf, x.float() @ deq.t(), dense, row)


def time_checked(cfgs: list[Any], run: Callable[[Any], torch.Tensor], ref: torch.Tensor) -> list[dict[str, Any]]:
    """Each config's kernel time (10 calls) after its result is checked against ``ref`` (relative error
    < 0.02: a wrong config cannot win); failures are recorded with their error, the first one printed."""
    results: list[dict[str, Any]] = []
    for cfg in cfgs:
        try:
            got = run(cfg)
            err = float((got.float() - ref).norm() / ref.norm())
            if not err < 0.02:
                raise ValueError(f"relative error {err:.3g}")
            t = kernel_time_us(lambda cfg=cfg: run(cfg), reps=10)  # type: ignore[misc]
            results.append({"cfg": cfg.describe(), "us": t, "rel_err": err})
        except Exception as exc:
            results.append({"cfg": cfg.describe(), "error": f"{type(exc).__name__}: {str(exc)[-300:]}"})
            if sum("error" in r for r in results) == 1:
                print("first failure:", cfg, str(exc)[-2000:], flush=True)
    return results


def time_best(
    case: SweepCase, cfgs: list[Any], run: Callable[[Any], torch.Tensor], prefix: str, gpu_time: bool
) -> None:
    """Every config checked and timed (:func:`time_checked`) into ``row[prefix_all]``; the fastest one's
    config, kernel time and error into ``prefix_cfg``, ``prefix_us``, ``rel_err``, and with ``gpu_time``
    its CUPTI time and cuBLAS's into ``gpu_prefix_us``, ``gpu_cublas_us``."""
    row = case.row
    results = time_checked(cfgs, run, case.ref)
    ok = sorted((r for r in results if "us" in r), key=lambda r: r["us"])
    row[f"{prefix}_all"] = results
    if not ok:
        return
    best = ok[0]
    cfg = next(c for c in cfgs if c.describe() == best["cfg"])
    row[f"{prefix}_cfg"] = best["cfg"]
    row[f"{prefix}_us"] = kernel_time_us(lambda: run(cfg))
    row["rel_err"] = best["rel_err"]
    if gpu_time:
        row[f"gpu_{prefix}_us"] = gpu_time_us(lambda: run(cfg))
        row["gpu_cublas_us"] = gpu_time_us(lambda: torch.nn.functional.linear(case.x, case.dense))


def time_tuned(case: SweepCase, g: int) -> None:
    """The tuned kernels of both layouts (``triton_frag.frag_auto``, ``triton_awq.auto``) into the row."""
    x, w, wf, row = case.x, case.w, case.wf, case.row
    row["triton_frag_us"] = kernel_time_us(lambda: triton_frag.frag_auto(x, wf, g, None))
    row["triton_frag_choice"] = triton_frag.choice(x, wf, g, None)
    row["triton_nk_us"] = kernel_time_us(lambda: triton_awq.auto(x, w, g, None))
    row["triton_nk_choice"] = triton_awq.choice(x, w, g, None)


def check(fn: Callable[[], torch.Tensor], x: torch.Tensor, w: dict[str, torch.Tensor], g: int) -> float:
    """Relative error of one result against the fp32 dequantized product (sanity, not the CI test)."""
    deq = triton_awq.dequantize(w, g, torch.float32)
    ref = x.float() @ deq.t()
    return float((fn().float() - ref).norm() / ref.norm())


#: the tuned kernel of each GPU layout: (run, its choice, its tuner)
TUNED = {
    "triton": (triton_awq.auto, triton_awq.choice, triton_awq.NK_TUNER),
    "triton_frag": (triton_frag.frag_auto, triton_frag.choice, triton_frag.FRAG_TUNER),
}


def bench_case(m: int, k: int, n: int, g: int, dtype: torch.dtype, bw: float) -> dict[str, Any]:
    """One table row: cuBLAS, the kernel the dispatcher picks (``fastawq_*``) and, with --other, the
    tuned kernel of the other layout on the same weight (``other_*``)."""
    gen = torch.Generator().manual_seed(m * 7 + k + n + g)
    w = random_nk(k, n, g, gen)
    x = torch.randn(m, k, generator=gen).to(dtype).cuda()
    dense = (torch.randn(n, k, generator=gen) * 0.02).to(dtype).cuda()
    auto = dispatch.auto_kernel_for(x.device, dtype, k, n, g, m)
    row: dict[str, Any] = {"m": m, "k": k, "n": n, "group_size": g, "dtype": str(dtype).split(".")[-1], "auto": auto}
    row["cublas_us"] = kernel_time_us(lambda: torch.nn.functional.linear(x, dense))
    row["bound_us"] = int4_bytes(m, k, n, g) / bw * 1e6
    lin = torch.nn.Linear(k, n, bias=False, device="cuda", dtype=dtype)
    lin.weight.data.copy_(dense)
    with torch.no_grad():
        row["eager_cublas_us"] = eager_time_us(lambda: lin(x))
    if GPU_TIME[0]:
        row["gpu_cublas_us"] = gpu_time_us(lambda: torch.nn.functional.linear(x, dense))
    kernels = [("fastawq", auto)]
    if OTHER[0] and layouts.frag_supported(k, n, g) is None:
        kernels.append(("other", "triton" if auto == "triton_frag" else "triton_frag"))
    for prefix, kernel in kernels:
        layout = dispatch.KERNELS[kernel].layout
        wk = frag_of(w) if layout == layouts.NK_FRAG else w
        run, choice, tuner = TUNED[kernel]

        def call(run: Callable[..., torch.Tensor] = run, wk: dict[str, torch.Tensor] = wk) -> torch.Tensor:
            return run(x, wk, g, None)

        row[f"{prefix}_kernel"] = kernel
        row[f"{prefix}_us"] = kernel_time_us(call)  # the first call tunes (warm-up)
        row[f"{prefix}_choice"] = choice(x, wk, g, None)
        row[f"{prefix}_tuning"] = triton_awq.TUNE_LOG.get(tuner.key(x, n, k, g, None), [])
        row[f"{prefix}_speedup"] = row["cublas_us"] / row[f"{prefix}_us"]
        if prefix == "fastawq":  # the headline pair, timed again in alternation (see paired_times)
            pair = paired_times(lambda: torch.nn.functional.linear(x, dense), call)
            row["single_cublas_us"], row["single_fastawq_us"] = row["cublas_us"], row["fastawq_us"]
            row["cublas_us"], row["fastawq_us"], row["fastawq_speedup"] = pair["a_us"], pair["b_us"], pair["ratio"]
            row["pairs_us"] = pair["pairs"]
        row[f"{prefix}_pct_of_bound"] = 100 * row["bound_us"] / row[f"{prefix}_us"]
        row[f"{prefix}_rel_err"] = check(call, x, w, g)
        if GPU_TIME[0]:
            row[f"gpu_{prefix}_us"] = gpu_time_us(call)
            row[f"gpu_{prefix}_pct_of_bound"] = 100 * row["bound_us"] / row[f"gpu_{prefix}_us"]
        mod = module_for(wk, k, n, g, layout)
        with torch.no_grad():
            row[f"eager_{prefix}_us"] = eager_time_us(lambda mod=mod: mod(x))  # type: ignore[misc]
    return row


#: the kernels a sweep candidate names (``frag_*``: on the nk_frag layout)
SWEEP_KERNELS = {
    "gemv": triton_awq.gemv, "gemm": triton_awq.gemm, "mma": triton_awq.mma, "frag_mma": triton_frag.frag_mma,
    "frag_gemv": triton_frag.frag_gemv,
}  # fmt: skip


def sweep_weights(w: dict[str, torch.Tensor]) -> Callable[[str], dict[str, torch.Tensor]]:
    """The weight in the layout a sweep candidate's kernel reads (nk_frag repacked once, on first use)."""
    frag: list[dict[str, torch.Tensor]] = []

    def of(kind: str) -> dict[str, torch.Tensor]:
        if not kind.startswith("frag"):
            return w
        if not frag:
            frag.append(frag_of(w))
        return frag[0]

    return of


def sweep_candidates(kinds: str, m: int, g: int) -> list[tuple[str, TileConfig]]:
    """The tile configs a sweep times at M rows (group size g)."""
    cands: list[tuple[str, TileConfig]] = []
    if kinds == "fraggemv":  # the nk_frag GEMV (inputs a warp, warps, K splits, Triton stages, register prefetch)
        for bk, kw, split, st, pf in itertools.product((64, 128, 256), (2, 4, 8, 16), (1, 2, 4), (1, 3, 4), (0, 1)):
            cands.append(("frag_gemv", TileConfig(1, 16, bk, kw, st, split=split, prefetch=pf)))
        # next to the nk_int4 GEMVs the default tuner times (same run)
        cands += [c for c in triton_awq.candidates(m, 4096, 4096, g) if c[0] == "gemv" and c[1] is not None]
        return cands
    if kinds == "fragmma":  # the nk_frag tensor-core kernel's tiles, warps, stages and K splits
        if m <= 32:
            bms, splits, stages = [max(16, triton.next_power_of_2(m))], (1, 2, 4, 8), (2, 3, 4)
        elif m <= 128:
            bms, splits, stages = [64, 128], (1, 2, 4), (2, 3, 4)
        else:
            bms, splits, stages = [128, 256], (1, 2), (2, 3)
        for bm, bn, split, st, nw in itertools.product(bms, (64, 128), splits, stages, (4, 8)):
            if (bm == 256 and ((st > 2 and bn == 128) or nw == 4)) or (bn == 64 and nw == 8 and bm < 64):
                continue  # shared memory / registers; 8 warps on 64 rows split x's rows between them
            cands.append(("frag_mma", TileConfig(bm, bn, g, nw, st, split=split)))
        return cands
    if kinds == "pairsplit":  # the packed-pair GEMV with K split over programs (split-K via the workspace)
        for bn, bk, split, nw, st in itertools.product((8, 16, 32), (256, 512, 1024), (1, 2, 4, 8), (4, 8), (3, 4)):
            cands.append(("gemv", TileConfig(min(m, 8), bn, bk, nw, st, pairs=True, split=split)))
        return cands
    if kinds == "pairs":  # the packed-pair GEMV against the fp32 one
        bm = min(m, 8)
        for bn, bk, nw, st in itertools.product((8, 16, 32), (256, 512, 1024), (4, 8), (2, 3, 4)):
            cands.append(("gemv", TileConfig(bm, bn, bk, nw, st, pairs=True)))
        cands.append(("gemv", TileConfig(bm, 8, 1024, 4, 2, join=True)))
        cands.append(("gemv", TileConfig(bm, 16, 512, 4, 2, join=True, split=2)))
    elif kinds == "stages":  # the tensor-core kernel's pipeline depth and warps, around the tuner's list
        bm = max(16, triton.next_power_of_2(m)) if m <= 64 else 64
        for bn, bk, split, st in itertools.product((64, 128), (g, 2 * g), (1, 4, 8), (3, 4, 5)):
            for nw in (4, 8) if bn == 128 else (4,):
                cands.append(("mma", TileConfig(bm, bn, bk, nw, st, split=split, deq=True)))
    elif kinds == "mma":
        bms = [max(16, triton.next_power_of_2(m))] if m <= 32 else [64, 128]
        bks = (g, 2 * g, 4 * g) if m <= 32 else (g, 2 * g)
        for bm, bn, bk, split in itertools.product(bms, (64, 128), bks, (1, 4, 8) if m <= 128 else (1, 2)):
            for nw in (4, 8) if bn * bm >= 128 * 64 else (4,):
                cands.append(("mma", TileConfig(bm, bn, bk, nw, 3, split=split)))
    elif kinds == "pipeline":  # the tensor-core kernel's load schemes
        tiles = {
            16: [(16, 128, g, 8, 4), (16, 64, 2 * g, 8, 4), (16, 64, g, 4, 4)],
            32: [(32, 128, g, 8, 4), (32, 64, g, 4, 4), (32, 128, 2 * g, 4, 4)],
            64: [(64, 128, g, 8, 4), (64, 64, g, 4, 4), (64, 128, g, 4, 8)],
            128: [(128, 64, g, 4, 4), (64, 128, g, 4, 4), (128, 128, g, 4, 8)],
            512: [(128, 128, g, 1, 8), (128, 64, g, 1, 4), (128, 128, g, 2, 8), (256, 128, g, 1, 8)],
        }[max(16, min(512, triton.next_power_of_2(m)))]
        # (scale/zero loads: in the loop or one group ahead, leaving every load to Triton's pipeline; or
        # two ahead by hand, which keeps the loop synchronous) × code loads (words or bytes) × stages. The
        # run in BENCHMARKS.md also timed a register prefetch of the codes, dropped since (never ahead).
        loads = [(2, False, 3), (0, True, 3), (0, True, 4), (1, True, 3), (0, False, 3)]
        for (bm, bn, bk, split, nw), (sz, words, st), deq in itertools.product(tiles, loads, (False, True)):
            cfg = TileConfig(bm, bn, bk, nw, st, split=split, deq=deq, words=words, sz_ahead=sz)
            cands.append(("mma", cfg))
    elif m <= 4:
        for bn, bk, nw, ns in itertools.product((8, 16, 32), (256, 512, 1024), (2, 4), (1, 2, 3)):
            cands.append(("gemv", TileConfig(1, bn, bk, nw, ns)))
    if m <= 64 and m not in (2, 4) and kinds not in ("pairs", "stages", "pipeline"):
        bm = max(16, triton.next_power_of_2(m))
        for bn, bk, nw, ns in itertools.product((16, 32, 64, 128), (128, 256, 512), (4,), (2, 3, 4)):
            cands.append(("gemm", TileConfig(bm, bn, bk, nw, ns)))
    if m >= 64 and kinds not in ("pairs", "stages", "pipeline"):
        for bm, bn, bk, nw, ns in itertools.product((64, 128), (64, 128, 256), (128, 256), (4, 8), (2, 3)):
            if bm * bn >= 128 * 256 and bk >= 256:
                continue  # too large for shared memory
            cands.append(("gemm", TileConfig(bm, bn, bk, nw, ns)))
    return cands


def table_cases(
    args: argparse.Namespace, shapes: list[tuple[int, ...]], ms: list[int]
) -> list[tuple[int, int, int, int, torch.dtype]]:
    """The table's rows, (M, K, N, group size, dtype), in the order they are measured."""
    plan = [(torch.float16, 128, m) for m in ms] if args.part in ("all", "main") else []
    if not args.quick and args.part in ("all", "extra"):
        extra_ms = [int(v) for v in args.extra_ms.split(",")]
        sets = args.extra_sets.split(",")
        plan += [(torch.bfloat16, 128, m) for m in extra_ms] if "bf16" in sets else []
        plan += [(torch.float16, g, m) for g in (64, 32) if f"g{g}" in sets for m in extra_ms]
    return [(m, k, n, g, dtype) for (dtype, g, m), (k, n) in itertools.product(plan, shapes)]


def compile_slice(args: argparse.Namespace, shapes: list[tuple[int, ...]], ms: list[int]) -> None:
    """A --jobs worker: run (and so compile) every n-th sweep candidate once on each shape."""
    i, n_jobs = (int(v) for v in args.compile_slice.split("/"))
    dtype = getattr(torch, args.dtype)
    j = 0
    if not args.sweep:  # the table: every tuning candidate of every case, both layouts
        for m, k, n, g, dt in table_cases(args, shapes, ms):
            j += 1
            if j % n_jobs != i:
                continue
            w = random_nk(k, n, g, torch.Generator().manual_seed(k + n))
            x = torch.randn(m, k, dtype=dt, device="cuda")
            auto = dispatch.auto_kernel_for(x.device, dt, k, n, g, m)
            cands: list[tuple[Any, Any, Any]] = []
            if auto == "triton" or OTHER[0]:
                cands += [(triton_awq._run, c, w) for c in triton_awq.candidates(m, n, k, g, dt)]
            if (auto == "triton_frag" or OTHER[0]) and layouts.frag_supported(k, n, g) is None:
                wf = frag_of(w)
                cands += [(triton_frag._run, c, wf) for c in triton_frag.candidates(m, n, k, g, dt)]
            for run, c, wk in cands:
                try:
                    run(c, x, wk, g, None)
                except Exception:  # the timing pass reports it
                    pass
        torch.cuda.synchronize()
        return
    for k, n in shapes:
        w = sweep_weights(random_nk(k, n, 128, torch.Generator().manual_seed(k + n)))
        for m in ms:
            x = torch.randn(m, k, dtype=dtype, device="cuda")
            for kind, cfg in sweep_candidates(args.sweep, m, 128):
                j += 1
                if j % n_jobs != i:
                    continue
                fn = SWEEP_KERNELS[kind]
                try:
                    fn(x, w(kind), 128, None, cfg)
                except Exception:  # the timing pass reports it
                    pass
    torch.cuda.synchronize()


def sweep(
    bw: float, shapes: list[tuple[int, int]], dtype: torch.dtype, path: str, info: Any, kinds: str, ms: list[int]
) -> list[dict[str, Any]]:
    """Time every candidate tile config per (M, shape); print the best per M."""
    out = []
    g = 128
    for k, n in shapes:
        gen = torch.Generator().manual_seed(k + n)
        w = random_nk(k, n, g, gen)
        w_of = sweep_weights(w)
        dense = (torch.randn(n, k, generator=gen) * 0.02).to(dtype).cuda()
        for m in ms:
            x = torch.randn(m, k, generator=gen).to(dtype).cuda()
            ref = x.float() @ triton_awq.dequantize(w, g, torch.float32).t()
            cands = sweep_candidates(kinds, m, g)
            cublas = kernel_time_us(lambda x=x, d=dense: torch.nn.functional.linear(x, d), reps=10)  # type: ignore[misc]
            results = []
            for kind, cfg in cands:
                fn = SWEEP_KERNELS[kind]
                try:
                    wk = w_of(kind)
                    err = float((fn(x, wk, g, None, cfg).float() - ref).norm() / ref.norm())
                    if not err < 0.02:  # a wrong kernel must not win a sweep
                        raise ValueError(f"relative error {err:.3g}")
                    t = kernel_time_us(lambda fn=fn, cfg=cfg, x=x, wk=wk: fn(x, wk, g, None, cfg), reps=10)  # type: ignore[misc]
                except Exception as exc:  # out of resources etc.
                    results.append({"kind": kind, "cfg": cfg.__dict__, "error": type(exc).__name__})
                    if len([r for r in results if "error" in r]) == 1:
                        print("first failure:", kind, cfg, str(exc)[-600:], flush=True)
                    continue
                results.append({"kind": kind, "cfg": cfg.__dict__, "us": t})
            ok = sorted((r for r in results if "us" in r), key=lambda r: r["us"])
            dq = kernel_time_us(lambda x=x, w=w: triton_awq.dequant_matmul(x, w, g, None), reps=10)  # type: ignore[misc]
            best = ok[0] if ok else None
            bound = int4_bytes(m, k, n, g) / bw * 1e6
            print(
                f"sweep K={k:5d} N={n:5d} M={m:4d} bound {bound:7.1f}us cuBLAS {cublas:7.1f}us "
                f"dequant+cuBLAS {dq:7.1f}us  best "
                f"{best['us'] if best else float('nan'):7.1f}us {best['kind'] if best else ''} "
                f"{best['cfg'] if best else ''}",
                flush=True,
            )
            for kind in sorted({r["kind"] for r in ok}) if len({r["kind"] for r in ok}) > 1 else ():
                top = next(r for r in ok if r["kind"] == kind)
                print(f"    best {kind}: {top['us']:7.1f}us {top['cfg']}", flush=True)
            for variant in ("pairs", "fp32"):
                sub = [r for r in ok if r["cfg"].get("pairs", False) == (variant == "pairs")]
                if sub and kinds == "pairs":
                    print(f"    best {variant}: {sub[0]['us']:7.1f}us {sub[0]['cfg']}", flush=True)
            out.append({"k": k, "n": n, "m": m, "bound_us": bound, "dequant_us": dq, "top": ok, "cublas": cublas})
        with open(path, "w") as f:  # after every shape: a run cut short keeps what it measured
            json.dump({"info": info, "sweep": out}, f, indent=1)
    return out


def time_tiles(tiles: list[dict[str, int]], fn: Callable[[dict[str, int]], Any]) -> list[dict[str, Any]]:
    """Kernel time of ``fn(tile)`` for every tile that runs (failures printed), fastest first."""
    res: list[dict[str, Any]] = []
    for c in tiles:
        try:
            t = kernel_time_us(lambda c=c: fn(c))  # type: ignore[misc]
        except Exception as exc:  # out of resources etc.
            print("failed", c, type(exc).__name__, flush=True)
            continue
        res.append({**c, "us": t})
    return sorted(res, key=lambda r: r["us"])


def dequant_sweep(bw: float, shapes: list[tuple[int, int]], path: str, info: Any) -> None:
    """Time the dequantize kernel (the first half of the prefill path) over its tile shapes."""
    out = []
    for k, n in shapes:
        w = random_nk(k, n, 128, torch.Generator().manual_seed(k + n))
        bound = (k * n * 2 + k * n // 2) / bw * 1e6  # write fp16 + read int4
        tiles = [
            {"bn": bn, "bk": bk, "num_warps": nw}
            for bn, bk, nw in itertools.product((16, 32, 64, 128), (128, 256, 512), (4, 8))
        ]
        res = time_tiles(tiles, lambda c, w=w: triton_awq.dequantize(w, 128, torch.float16, **c))  # type: ignore[misc]
        default = next(r for r in res if (r["bn"], r["bk"], r["num_warps"]) == (32, 512, 4))
        print(f"dequant K={k} N={n} bound {bound:6.1f}us default {default['us']:6.1f}us best {res[0]}", flush=True)
        out.append({"k": k, "n": n, "bound_us": bound, "results": res})
    with open(path, "w") as f:
        json.dump({"info": info, "dequant": out}, f, indent=1)


def frag_dequant_sweep(bw: float, shapes: list[tuple[int, int]], path: str, info: Any) -> None:
    """Time the nk_frag dequantize kernel over its tiles, next to the nk_int4 one (default tiles)."""
    out = []
    for k, n in shapes:
        w = random_nk(k, n, 128, torch.Generator().manual_seed(k + n))
        wf = frag_of(w)
        bound = (k * n * 2 + k * n // 2) / bw * 1e6  # write fp16 + read int4
        nk = kernel_time_us(lambda w=w: triton_awq.dequantize(w, 128, torch.float16))  # type: ignore[misc]
        tiles = [
            {"bn": bn, "groups": groups, "num_warps": nw}
            for bn, groups, nw in itertools.product((32, 64, 128), (1, 2, 4), (2, 4, 8))
            if bn // 16 <= nw * 2
        ]
        res = time_tiles(tiles, lambda c, wf=wf: triton_frag.frag_dequantize(wf, 128, torch.float16, **c))  # type: ignore[misc]
        default = next(r for r in res if (r["bn"], r["groups"], r["num_warps"]) == (64, 1, 4))
        print(f"frag dequant K={k} N={n} bound {bound:6.1f}us nk_int4 {nk:6.1f}us frag default {default['us']:6.1f}us"
              f" best {res[0]}", flush=True)  # fmt: skip
        out.append({"k": k, "n": n, "bound_us": bound, "nk_int4_us": nk, "results": res})
    with open(path, "w") as f:
        json.dump({"info": info, "frag_dequant": out}, f, indent=1)


def split_k_sweep(bw: float, shapes: list[tuple[int, int]], path: str, info: Any, ms: list[int]) -> None:
    """Split-K with the fp32 workspace (one kernel) against adding into a zeroed output (memset + kernel),
    for the tuner's split candidates of both layouts."""
    out = []
    g = 128
    for k, n in shapes:
        gen = torch.Generator().manual_seed(k + n)
        w = random_nk(k, n, g, gen)
        wf = frag_of(w) if layouts.frag_supported(k, n, g) is None else None
        for m in ms:
            x = torch.randn(m, k, generator=gen).half().cuda()
            ref = x.float() @ triton_awq.dequantize(w, g, torch.float32).t()
            cands = [("nk_int4", c) for c in triton_awq.candidates(m, n, k, g)]
            cands += [("nk_frag", c) for c in triton_frag.candidates(m, n, k, g)] if wf is not None else []
            for layout, (name, cfg) in cands:
                if cfg is None or cfg.split < 2:
                    continue
                wk = wf if layout == "nk_frag" else w
                run = triton_frag._run if layout == "nk_frag" else triton_awq._run

                def call(run=run, name=name, cfg=cfg, wk=wk, x=x) -> torch.Tensor:  # type: ignore[no-untyped-def]
                    return run((name, cfg), x, wk, g, None)

                row: dict[str, Any] = {"k": k, "n": n, "m": m, "layout": layout, "kernel": f"{name} {cfg.describe()}"}
                saved = triton_awq.WORKSPACE_MAX_BYTES, triton_awq.WORKSPACE_MAX_ROWS
                for mode, limits in (("workspace", (saved[0], m)), ("zeroed", (0, 0))):  # whatever M is
                    triton_awq.WORKSPACE_MAX_BYTES, triton_awq.WORKSPACE_MAX_ROWS = limits
                    try:
                        err = float((call().float() - ref).norm() / ref.norm())
                        row[f"{mode}_rel_err"] = err
                        row[f"{mode}_us"] = kernel_time_us(call)
                        if GPU_TIME[0]:
                            row[f"gpu_{mode}_us"] = gpu_time_us(call)
                    finally:
                        triton_awq.WORKSPACE_MAX_BYTES, triton_awq.WORKSPACE_MAX_ROWS = saved
                print(
                    f"split K={k:5d} N={n:5d} M={m:4d} {layout} {row['kernel']:42s} workspace "
                    f"{row['workspace_us']:6.1f}us zeroed {row['zeroed_us']:6.1f}us"
                    + (f"  GPU {row['gpu_workspace_us']:6.1f} / {row['gpu_zeroed_us']:6.1f}us" if GPU_TIME[0] else "")
                    + f"  err {row['workspace_rel_err']:.1e} / {row['zeroed_rel_err']:.1e}",
                    flush=True,
                )
                out.append(row)
        with open(path, "w") as f:
            json.dump({"info": info, "split_k": out}, f, indent=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default="kernels.json")
    ap.add_argument(
        "--sweep",
        default="",
        choices=[
            "",
            "classic",
            "mma",
            "pairs",
            "pairsplit",
            "dequant",
            "stages",
            "pipeline",
            "fragdequant",
            "fragmma",
            "fraggemv",
        ]
        + ["splitk"],
        help="search tile configs instead of the table: GEMV/GEMM (classic), the tensor-core kernel, or the"
        " packed-pair GEMV; the dequantize kernel's tiles; the MMA's pipeline depth (stages) or load scheme"
        " (pipeline); the nk_frag tensor-core kernel (fragmma); split-K through the workspace or a zeroed"
        " output (splitk)",
    )
    ap.add_argument("--shapes", default="", help="subset, e.g. 4096x4096,14336x4096")
    ap.add_argument("--ms", default="", help="row counts for the main table, e.g. 1,16,128")
    ap.add_argument("--quick", action="store_true", help="fp16 g128 only")
    ap.add_argument(
        "--part",
        default="all",
        choices=["all", "main", "extra"],
        help="main: fp16 g128 at every M; extra: bf16 and group sizes 64/32 at a few M",
    )
    ap.add_argument(
        "--extra-ms", default=",".join(map(str, EXTRA_MS)), help="the row counts of --part extra (comma-separated)"
    )
    ap.add_argument(
        "--extra-sets", default="bf16,g64,g32", help="what --part extra measures: bf16 g128, fp16 g64, fp16 g32"
    )
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"], help="for --sweep")
    ap.add_argument("--flush", default="read", choices=["read", "write"], help="how the L2 is flushed")
    ap.add_argument("--jobs", type=int, default=1, help="compile in this many processes first")
    ap.add_argument(
        "--other", "--frag", action="store_true", help="also time the other layout (nk_frag or nk_int4) tuned"
    )
    ap.add_argument("--gpu-time", action="store_true", help="also report CUPTI kernel durations (torch.profiler)")
    ap.add_argument("--compile-slice", default="", help=argparse.SUPPRESS)  # "i/n": a --jobs worker
    args = ap.parse_args()
    shapes = parse_shapes(args.shapes)
    ms = [int(v) for v in args.ms.split(",")] if args.ms else MS
    sweep_ms = ms if args.ms else [1, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    OTHER[0] = args.other
    if args.compile_slice:
        compile_slice(args, shapes, sweep_ms if args.sweep else ms)
        return
    if args.jobs > 1:  # fill Triton's disk cache in parallel; the timing below then loads
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen([sys.executable, *sys.argv, "--compile-slice", f"{i}/{args.jobs}"])
            for i in range(args.jobs)
        ]
        for proc in procs:
            proc.wait()
        print(f"compiled in {time.perf_counter() - t0:.0f}s by {args.jobs} processes", flush=True)
    torch.manual_seed(0)
    FLUSH_MODE[0] = args.flush
    OTHER[0] = args.other
    GPU_TIME[0] = args.gpu_time
    bw = copy_bandwidth()
    info = {
        "device": torch.cuda.get_device_name(),
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "copy_bandwidth_TBps": bw / 1e12,
        "flush": args.flush,
        "dispatch": dispatch.describe(),
    }
    one = torch.zeros(1, device="cuda")  # the timer's floor: a kernel that does (almost) nothing
    info["timer_floor_us"] = kernel_time_us(lambda: one.zero_())
    if args.gpu_time:
        info["gpu_time_floor_us"] = gpu_time_us(lambda: one.zero_())
    print(json.dumps(info), flush=True)
    if args.sweep == "dequant":
        dequant_sweep(bw, shapes, args.json, info)
        return
    if args.sweep == "fragdequant":
        frag_dequant_sweep(bw, shapes, args.json, info)
        return
    if args.sweep == "splitk":
        split_k_sweep(bw, shapes, args.json, info, ms if args.ms else [1, 4, 16, 32, 64, 128])
        return
    if args.sweep:
        sweep(bw, shapes, getattr(torch, args.dtype), args.json, info, args.sweep, sweep_ms)  # type: ignore[arg-type]
        return

    rows = []
    header = (
        f"{'dtype':5s} {'g':>4s} {'K':>6s} {'N':>6s} {'M':>5s} {'kernel (tuned)':38s} {'fastawq':>9s} {'cuBLAS':>9s} "
        f"{'speedup':>7s} {'%bound':>7s} {'eager':>9s} {'eager cuBLAS':>12s}"
        + (f" {'other':>8s} {'speedup':>7s} {'eager':>8s}" if args.other else "")
        + (f" {'GPU: cuBLAS':>11s} {'fastawq':>8s} {'%bound':>7s}" if args.gpu_time else "")
        + (f" {'other':>7s}" if args.gpu_time and args.other else "")
    )
    print(header)
    for m, k, n, g, dtype in table_cases(args, shapes, ms):
        r = bench_case(m, k, n, g, dtype, bw)
        rows.append(r)
        other = "other_us" in r
        lay = "frag" if r["fastawq_kernel"] == "triton_frag" else "nk"
        print(
            f"{r['dtype']:5s} {g:4d} {k:6d} {n:6d} {m:5d} {lay:4s} "
            f"{r['fastawq_choice'][:33]:33s} {r['fastawq_us']:8.1f}u {r['cublas_us']:8.1f}u "
            f"{r['fastawq_speedup']:6.2f}x {r['fastawq_pct_of_bound']:6.1f}% "
            f"{r['eager_fastawq_us']:8.1f}u {r['eager_cublas_us']:11.1f}u"
            + (f" {r['other_us']:7.1f}u {r['other_speedup']:6.2f}x {r['eager_other_us']:7.1f}u" if other else "")
            + (
                f" {r['gpu_cublas_us']:10.1f}u {r['gpu_fastawq_us']:7.1f}u {r['gpu_fastawq_pct_of_bound']:6.1f}%"
                if "gpu_cublas_us" in r
                else ""
            )
            + (f" {r['gpu_other_us']:6.1f}u" if "gpu_other_us" in r else "")
            + f"  err {r['fastawq_rel_err']:.1e}",
            flush=True,
        )
        with open(args.json, "w") as f:  # after every row: a run cut short keeps what it measured
            json.dump({"info": info, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
