"""Kernels against a float64 reference on fresh random data; layouts round-trip bit-exactly; dispatch.

Without a GPU the Triton kernels run under ``TRITON_INTERPRET=1`` (set in conftest) on CPU tensors;
on a CUDA machine the same tests run the compiled kernels on the GPU.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
import torch

from fastawq import AWQLinear
from fastawq.errors import FastAWQError
from fastawq.format.awq_gemm import pack_gemm
from fastawq.format.conversions import unpack_seq
from fastawq.kernels import dispatch, layouts

HAS_CUDA = torch.cuda.is_available()
DEV = "cuda" if HAS_CUDA else "cpu"


def random_gemm(k: int, n: int, g: int, seed: int, device: str = "cpu") -> tuple[layouts.GemmTensors, torch.Tensor]:
    """Random AWQ GEMM tensors and the float64 weight [K, N] they encode."""
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (k, n), generator=gen, dtype=torch.uint8)
    zeros = torch.randint(0, 16, (k // g, n), generator=gen, dtype=torch.uint8)
    scales = (torch.rand(k // g, n, generator=gen) * 0.03 + 0.002).half()
    w = (codes.double() - zeros.double().repeat_interleave(g, 0)) * scales.double().repeat_interleave(g, 0)
    t = layouts.GemmTensors(pack_gemm(codes).to(device), pack_gemm(zeros).to(device), scales.to(device))
    return t, w


def sqnr_db(got: torch.Tensor, ref: torch.Tensor) -> float:
    err = (got.double().cpu() - ref).pow(2).sum().item()
    return 10 * math.log10(ref.pow(2).sum().item() / max(err, 1e-300))


# fp16 output rounding alone is ~65 dB; bf16 ~ 50 dB, its dequantized weight rounding costs more
SQNR_FLOOR = {torch.float16: 55.0, torch.bfloat16: 38.0}


# ------------------------------------------------------------------------------------------ layouts


@pytest.mark.parametrize(("k", "n", "g"), [(64, 16, 32), (256, 48, 64), (384, 96, 128), (576, 1536, 64)])
def test_nk_layout_round_trips_bit_exactly(k: int, n: int, g: int) -> None:
    t, _ = random_gemm(k, n, g, seed=k + n)
    nk = layouts.gemm_to_nk(t)
    assert nk["qweight_nk"].shape == (n, k // 8) and nk["sz_gn"].shape == (k // g, n)
    back = layouts.nk_to_gemm(nk)
    for name in ("qweight", "qzeros", "scales"):
        assert torch.equal(getattr(back, name), getattr(t, name)), name


def test_scale_zero_words_keep_every_bit() -> None:
    gen = torch.Generator().manual_seed(5)
    bits = torch.randint(-(2**15), 2**15, (8, 64), generator=gen, dtype=torch.int32).to(torch.int16)
    scales = bits.view(torch.float16)  # every 16-bit pattern, sign bit included
    zeros = torch.randint(0, 16, (8, 64), generator=gen, dtype=torch.uint8)
    sz = layouts.pack_scale_zero(scales, zeros)
    assert sz.dtype == torch.int32
    assert torch.equal((sz & 0xFFFF).to(torch.int16), bits)
    assert torch.equal((sz >> 16).to(torch.uint8), zeros)


def test_nk_layout_puts_codes_in_plain_k_order() -> None:
    t, w = random_gemm(64, 16, 32, seed=3)
    nk = layouts.gemm_to_nk(t)
    codes = unpack_seq(nk["qweight_nk"]).double()  # [N, K]
    z = (nk["sz_gn"] >> 16).t().double().repeat_interleave(32, 1)
    s = (nk["sz_gn"] & 0xFFFF).to(torch.int16).view(torch.float16).t().double().repeat_interleave(32, 1)
    assert torch.equal((codes - z) * s, w.t())


@pytest.mark.skipif(not layouts.cpu_int4pack_available(), reason="torch has no CPU int4 kernel")
@pytest.mark.parametrize(
    ("k", "n", "g"), [(64, 16, 32), (256, 48, 64), (576, 1536, 64), (512, 32, 256), (128, 1040, 64)]
)
def test_cpu_layout_round_trips_bit_exactly(k: int, n: int, g: int) -> None:
    t, _ = random_gemm(k, n, g, seed=k * n)
    back = layouts.cpu_to_gemm(layouts.gemm_to_cpu(t))
    for name in ("qweight", "qzeros", "scales"):
        assert torch.equal(getattr(back, name), getattr(t, name)), name


@pytest.mark.skipif(not layouts.cpu_int4pack_available(), reason="torch has no CPU int4 kernel")
def test_cpu_repack_in_slices_equals_one_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    t, _ = random_gemm(128, 1040, 64, seed=9)  # 1040 rows: two slices of 512 and a last one of 16
    monkeypatch.setattr(layouts, "REPACK_ROWS", 512)
    sliced = layouts.gemm_to_cpu(t)["weight_int4pack"]
    codes = layouts.unpack_gemm(t.qweight).t().contiguous().to(torch.int32)
    assert torch.equal(sliced, torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1))
    monkeypatch.setattr(layouts, "REPACK_ROWS", 64)
    assert torch.equal(layouts.nk_to_gemm(layouts.gemm_to_nk(t)).qweight, t.qweight)


# ------------------------------------------------------------------------------------------ Triton

triton_awq = pytest.importorskip("fastawq.kernels.triton_awq", reason="triton is not installed")

TileConfig = triton_awq.TileConfig
TRITON_CASES = [
    # (kernel, config, M, K, N, group size): odd M, partial N tiles, every group size, K steps below and
    # above the group, both unpacking schemes (in-register joins, shift-and-reshape)
    ("gemv", None, 1, 256, 64, 32),
    ("gemv", TileConfig(1, 32, 512, 4, 1, join=True), 3, 512, 48, 128),
    ("gemv", TileConfig(1, 8, 1024, 4, 1, join=False), 2, 192, 32, 64),
    ("gemv", TileConfig(1, 16, 256, 4, 1, join=False), 1, 576, 32, 64),
    ("gemv", None, 1, 64, 16, 16),
    ("gemv", TileConfig(4, 16, 256, 4, 1, join=True), 6, 512, 48, 64),  # 4 rows per program, last partial
    ("gemv", TileConfig(8, 8, 512, 4, 1, join=True), 3, 256, 32, 128),
    ("gemv", TileConfig(1, 16, 256, 4, 1, join=True, split=4), 1, 1024, 48, 64),  # atomics over 4 K slices
    ("gemv", TileConfig(4, 8, 128, 4, 1, join=True, split=2), 5, 512, 32, 128),
    ("gemv", TileConfig(1, 16, 512, 4, 1, pairs=True), 1, 1024, 48, 128),  # packed-pair arithmetic
    ("gemv", TileConfig(1, 8, 128, 4, 1, pairs=True), 1, 192, 40, 32),
    ("gemv", TileConfig(1, 16, 256, 4, 3, pairs=True), 1, 1024, 40, 64),  # loads left to Triton's pipeline
    ("gemv", TileConfig(1, 16, 64, 4, 1, pairs=True, split=2), 1, 256, 32, 16),  # atomics over 2 K slices
    ("gemv", TileConfig(4, 16, 256, 4, 1, pairs=True), 6, 512, 48, 64),  # 4 rows per program, last partial
    ("gemv", TileConfig(2, 8, 256, 4, 1, pairs=True, split=2), 3, 512, 24, 128),
    ("gemm", None, 1, 256, 64, 64),
    ("gemm", TileConfig(16, 16, 128, 4, 2, join=True), 5, 256, 48, 32),
    ("gemm", TileConfig(32, 32, 256, 4, 2, join=False), 17, 512, 64, 128),
    ("gemm", TileConfig(64, 32, 64, 4, 2, join=False), 33, 384, 80, 64),
    ("gemm", TileConfig(16, 64, 128, 4, 2, join=True), 70, 256, 144, 32),
    ("gemm", None, 4, 576, 32, 64),
    ("mma", None, 1, 256, 64, 32),
    ("mma", TileConfig(16, 32, 64, 4, 2, split=1), 5, 192, 48, 64),  # partial N tile, odd M
    ("mma", TileConfig(32, 16, 128, 4, 2, split=1), 19, 512, 32, 128),
    ("mma", TileConfig(16, 32, 64, 4, 2, join=False, split=2), 2, 256, 48, 64),  # shift unpacking (no lop3)
    ("mma", TileConfig(16, 64, 16, 4, 2, split=4), 3, 256, 80, 16),  # atomics over 4 K slices
    ("mma", TileConfig(64, 32, 64, 4, 2, split=3), 70, 384, 32, 64),  # 6 groups in 3 slices, 2 M tiles
    ("mma", TileConfig(16, 32, 256, 4, 2, split=2), 3, 1024, 48, 64),  # 4 groups per step, 2 steps per slice
    ("mma", TileConfig(32, 16, 128, 4, 2, split=3), 9, 384, 32, 32),  # 4 groups per step, 3 slices
    ("mma", TileConfig(16, 32, 128, 4, 2, split=2, deq=True), 5, 512, 48, 64),  # fp16 dequantized in registers
    ("mma", TileConfig(64, 32, 64, 4, 2, split=1, deq=True), 70, 384, 32, 32),
    ("mma", TileConfig(16, 32, 64, 4, 2, split=2, sz_ahead=1), 5, 512, 48, 64),  # scales one group ahead
    ("mma", TileConfig(16, 16, 128, 4, 2, split=1, words=True), 3, 256, 32, 32),  # int32-word code loads
    ("mma", TileConfig(64, 32, 128, 4, 2, split=3, deq=True, sz_ahead=0), 33, 384, 48, 128),  # 1 group/slice
    ("mma", TileConfig(64, 32, 64, 4, 2, split=1, sz_ahead=1), 70, 384, 32, 32),
    ("mma", TileConfig(16, 32, 64, 4, 3, split=2, sz_ahead=0, words=True), 5, 512, 48, 64),  # Triton's pipeline
    ("mma", TileConfig(32, 16, 128, 4, 3, split=3, sz_ahead=1, deq=True), 9, 384, 32, 32),
    ("dequant_matmul", None, 7, 256, 64, 64),
    ("dequant_matmul", None, 9, 384, 48, 128),
    ("auto", None, 3, 256, 32, 128),
    ("auto", None, 40, 256, 32, 64),
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize(("kernel", "config", "m", "k", "n", "g"), TRITON_CASES)
def test_triton_kernels_match_float64(
    kernel: str, config: object, m: int, k: int, n: int, g: int, dtype: torch.dtype
) -> None:
    assert_kernel_matches_float64(getattr(triton_awq, kernel), layouts.gemm_to_nk, config, m, k, n, g, dtype)


def assert_kernel_matches_float64(
    fn: Any, to_layout: Any, config: object, m: int, k: int, n: int, g: int, dtype: torch.dtype
) -> None:
    """``fn`` (a kernel entry point, with ``config`` if given) on fresh random data with a bias, in the
    layout ``to_layout`` makes of the GEMM tensors, against the float64 product."""
    t, w = random_gemm(k, n, g, seed=m * 1000 + k + n, device=DEV)
    gen = torch.Generator().manual_seed(m + k)
    x = torch.randn(m, k, generator=gen).to(dtype)
    bias = torch.randn(n, generator=gen).half()
    args = (x.to(DEV), to_layout(t), g, bias.to(DEV)) + ((config,) if config is not None else ())
    got = fn(*args)
    assert got.dtype == dtype and got.shape == (m, n)
    assert sqnr_db(got, x.double() @ w + bias.double()) > SQNR_FLOOR[dtype]


SPLIT_CASES = [  # split-K plans of each kernel family: (kernel, config, M, K, N, group size)
    ("gemv", TileConfig(1, 16, 256, 4, 1, join=True, split=4), 1, 1024, 48, 64),
    ("gemv", TileConfig(2, 8, 256, 4, 1, pairs=True, split=2), 3, 512, 24, 128),
    ("mma", TileConfig(16, 32, 64, 4, 2, split=3), 5, 384, 80, 64),
]


def _workspace_is_zero() -> bool:
    return all(bool((ws == 0).all()) and bool((cnt == 0).all()) for ws, cnt in triton_awq._WORKSPACES.values())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize(("kernel", "config", "m", "k", "n", "g"), SPLIT_CASES)
def test_split_k_sums_in_fp32_and_leaves_its_workspace_zeroed(
    kernel: str, config: object, m: int, k: int, n: int, g: int, dtype: torch.dtype
) -> None:
    """Split-K without a zeroed output: the K slices add into the fp32 workspace and the last one writes
    y; the next call (another input) must not see anything of the previous one."""
    t, w = random_gemm(k, n, g, seed=k + n, device=DEV)
    nk = layouts.gemm_to_nk(t)
    gen = torch.Generator().manual_seed(m)
    fn = getattr(triton_awq, kernel)
    for _ in range(2):
        x = torch.randn(m, k, generator=gen).to(dtype)
        got = fn(x.to(DEV), nk, g, None, config)
        assert triton_awq._WORKSPACES and _workspace_is_zero()
        assert sqnr_db(got, x.double() @ w) > SQNR_FLOOR[dtype]


def test_split_k_without_a_workspace_adds_into_a_zeroed_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outputs too large for the workspace (and calls inside a CUDA graph capture) take the fallback."""
    _, config, m, k, n, g = SPLIT_CASES[2]
    t, w = random_gemm(k, n, g, seed=3, device=DEV)
    nk = layouts.gemm_to_nk(t)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(3)).half()
    monkeypatch.setattr(triton_awq, "WORKSPACE_MAX_BYTES", 0)
    monkeypatch.setattr(triton_awq, "_WORKSPACES", {})
    got = triton_awq.mma(x.to(DEV), nk, g, None, config)
    assert not triton_awq._WORKSPACES
    assert sqnr_db(got, x.double() @ w) > SQNR_FLOOR[torch.float16]


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_split_k_on_two_streams_uses_two_workspaces() -> None:
    t, w = random_gemm(4096, 1024, 128, seed=11, device=DEV)
    nk = layouts.gemm_to_nk(t)
    cfg = TileConfig(16, 64, 128, 4, 3, split=8)
    gen = torch.Generator().manual_seed(11)
    xs = [torch.randn(16, 4096, generator=gen).half() for _ in range(2)]
    streams = [torch.cuda.Stream() for _ in range(2)]
    outs = []
    for _ in range(20):  # both streams busy at once, many times
        for x, st in zip(xs, streams, strict=True):
            with torch.cuda.stream(st):
                outs.append(triton_awq.mma(x.cuda(non_blocking=False), nk, 128, None, cfg))
    torch.cuda.synchronize()
    keys = {key for key in triton_awq._WORKSPACES if key[1] in {st.cuda_stream for st in streams}}
    assert len(keys) == 2 and _workspace_is_zero()
    for i, y in enumerate(outs):
        assert sqnr_db(y, xs[i % 2].double() @ w) > SQNR_FLOOR[torch.float16]


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("m", [1, 2, 4, 16, 64, 300])
def test_every_tuning_candidate_is_correct_on_gpu(m: int, dtype: torch.dtype) -> None:
    k, n, g = 1024, 512, 128
    t, w = random_gemm(k, n, g, seed=m, device=DEV)
    nk = layouts.gemm_to_nk(t)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).to(dtype)
    ref = x.double() @ w
    for cand in triton_awq.candidates(m, n, k, g, dtype):
        got = triton_awq._run(cand, x.to(DEV), nk, g, None)
        assert sqnr_db(got, ref) > SQNR_FLOOR[dtype], cand
    triton_awq.auto(x.to(DEV), nk, g, None)
    assert triton_awq.choice(x.to(DEV), nk, g, None)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cached_launches_match_fresh_ones() -> None:
    """The second call of a shape launches the cached compiled kernel; inputs with another alignment,
    stride or row count must not reuse a kernel specialized for different ones."""
    k, n, g = 512, 96, 64
    t, w = random_gemm(k, n, g, seed=5, device=DEV)
    nk = layouts.gemm_to_nk(t)
    big = torch.randn(4, k + 8, generator=torch.Generator().manual_seed(5)).half().to(DEV)
    configs = [
        ("gemv", TileConfig(1, 16, 256, 4, 2, pairs=True)),
        ("gemv", TileConfig(1, 16, 256, 4, 2, join=True)),
        ("mma", TileConfig(16, 32, 128, 4, 2, split=2)),
        ("dequant_matmul", None),  # a two-dimensional grid
    ]
    for kernel, cfg in configs:
        for x in (big[:1, :k], big[:1, :k].clone(), big[:3, 2 : k + 2], big[:1, 2 : k + 2], big[:2, :k]):
            for _ in range(2):
                got = getattr(triton_awq, kernel)(x, nk, g, None, cfg)
                assert sqnr_db(got, x.double().cpu() @ w) > SQNR_FLOOR[torch.float16], (kernel, x.shape)
    assert triton_awq._COMPILED or not triton_awq.FAST_LAUNCH


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_direct_launch_failure_falls_back_to_tritons_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Triton whose compiled-kernel call differs must cost speed, not correctness."""
    k, n, g = 256, 64, 64
    t, w = random_gemm(k, n, g, seed=11, device=DEV)
    nk = layouts.gemm_to_nk(t)
    x = torch.randn(1, k, generator=torch.Generator().manual_seed(11)).half().to(DEV)
    cfg = TileConfig(1, 16, 256, 4, 2, pairs=True)
    monkeypatch.setattr(triton_awq, "FAST_LAUNCH", True)
    triton_awq.gemv(x, nk, g, None, cfg)  # compiles and caches the kernel

    class Changed:
        def __getitem__(self, grid: object) -> object:
            def run(*args: object) -> None:
                raise TypeError("the launcher takes other arguments")

            return run

    for key, (_, tail) in list(triton_awq._COMPILED.items()):
        triton_awq._COMPILED[key] = (Changed(), tail)
    with pytest.warns(RuntimeWarning, match="Triton's launcher"):
        got = triton_awq.gemv(x, nk, g, None, cfg)
    assert not triton_awq.FAST_LAUNCH
    assert sqnr_db(got, x.double().cpu() @ w) > SQNR_FLOOR[torch.float16]


@pytest.mark.parametrize("g", [32, 64, 128])
def test_triton_dequantize_is_exact_in_fp16(g: int) -> None:
    t, w = random_gemm(256, 32, g, seed=g, device=DEV)
    deq = triton_awq.dequantize(layouts.gemm_to_nk(t), g, torch.float16)
    assert torch.equal(deq.cpu(), w.t().half())  # one rounding of an exact product, as the reference


def test_triton_rejects_bad_shapes() -> None:
    t, _ = random_gemm(256, 32, 64, seed=1, device=DEV)
    nk = layouts.gemm_to_nk(t)
    with pytest.raises(ValueError, match="features"):
        triton_awq.gemv(torch.randn(1, 128).half().to(DEV), nk, 64, None)
    with pytest.raises(ValueError, match="group size"):
        triton_awq.gemm(torch.randn(4, 256).half().to(DEV), nk, 48, None)


# ------------------------------------------------------------------------------------------ CPU


CPU_CASES = [(1, 256, 48, 64), (5, 576, 1536, 64), (33, 512, 32, 128), (2, 64, 16, 32)]


@pytest.mark.skipif(not layouts.cpu_int4pack_available(), reason="torch has no CPU int4 kernel")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("m", "k", "n", "g"), CPU_CASES)
def test_cpu_int4_matches_float64(m: int, k: int, n: int, g: int, dtype: torch.dtype) -> None:
    t, w = random_gemm(k, n, g, seed=m + k + n)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).to(dtype)
    got = dispatch.KERNELS["cpu_int4"].run(x, layouts.gemm_to_cpu(t), g, None)
    assert got.dtype == dtype
    assert sqnr_db(got, x.double() @ w) > 38.0  # bf16 compute


# ------------------------------------------------------------------------------------------ module + dispatch


def _module(k: int = 256, n: int = 64, g: int = 64, seed: int = 0) -> tuple[AWQLinear, torch.Tensor]:
    t, w = random_gemm(k, n, g, seed=seed)
    mod = AWQLinear(k, n, group_size=g, bias=True)
    mod.qweight, mod.qzeros, mod.scales = t.qweight, t.qzeros, t.scales
    mod.bias = torch.randn(n, generator=torch.Generator().manual_seed(seed)).half()
    return mod, w


@pytest.mark.parametrize("layout", [layouts.NK_INT4, layouts.CPU_INT4PACK])
def test_state_dict_is_the_checkpoint_whatever_the_layout(layout: str) -> None:
    if layout == layouts.CPU_INT4PACK and not layouts.cpu_int4pack_available():
        pytest.skip("torch has no CPU int4 kernel")
    mod, _ = _module()
    before = {k: v.clone() for k, v in mod.state_dict().items()}
    mod.to_layout(layout)
    assert mod.layout == layout and not hasattr(mod, "qweight")
    after = mod.state_dict()
    assert sorted(after) == sorted(before)
    for key in before:
        assert torch.equal(after[key], before[key]), key
    fresh, _ = _module(seed=1)
    fresh.to_layout(layout)
    fresh.load_state_dict(after)  # loading goes back to the checkpoint layout
    assert fresh.layout == layouts.AWQ_GEMM and torch.equal(fresh.qweight, before["qweight"])


def test_module_auto_kernel_on_cpu_and_forced_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    mod, w = _module(576, 1536, 64)
    x = torch.randn(2, 3, 576)
    ref = x.double() @ w + mod.bias.double()
    with torch.no_grad():
        fast = mod(x)
        assert fast.shape == (2, 3, 1536)
        assert mod.layout == (layouts.CPU_INT4PACK if layouts.cpu_int4pack_available() else layouts.AWQ_GEMM)
        assert sqnr_db(fast, ref) > 38.0
        monkeypatch.setenv("FASTAWQ_KERNEL", "reference")
        exact = mod(x)
    assert mod.layout == layouts.AWQ_GEMM
    assert sqnr_db(exact, ref) > 120.0  # fp32 reference: only fp32 rounding


def test_fallback_is_announced_once() -> None:
    mod, w = _module(256, 40, 64)  # 40 outputs: the CPU int4 kernel needs a multiple of 16
    dispatch.reset()
    x = torch.randn(3, 256)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            y = mod(x)
    fallbacks = [c for c in caught if issubclass(c.category, dispatch.KernelFallbackWarning)]
    assert len(fallbacks) == 1 and "divisible by 16" in str(fallbacks[0].message)
    assert mod.layout == layouts.AWQ_GEMM
    assert sqnr_db(y, x.double() @ w + mod.bias.double()) > 120.0


def test_forced_kernel_that_cannot_run_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    mod, _ = _module()
    monkeypatch.setenv("FASTAWQ_KERNEL", "no_such_kernel")
    with pytest.raises(FastAWQError, match="does not exist"):
        mod(torch.randn(1, 256))
    monkeypatch.setenv("FASTAWQ_KERNEL", "triton_gemv")
    with pytest.raises(FastAWQError, match="cannot run this layer: the Triton kernels"):
        mod(torch.randn(1, 256))  # fp32 activations on the CPU: CUDA-only (or, interpreted, fp16/bf16-only)
    monkeypatch.delenv("FASTAWQ_KERNEL")
    mod.kernel = "cpu_int4"
    if layouts.cpu_int4pack_available():
        mod(torch.randn(1, 256))
        assert mod.layout == layouts.CPU_INT4PACK


def test_wrong_input_width_is_rejected() -> None:
    mod, _ = _module()
    with pytest.raises(ValueError, match="expects 256 input features"):
        mod(torch.randn(2, 255))


def test_auto_choice_by_device_dtype_and_rows() -> None:
    cuda = torch.device("cuda")
    if dispatch.triton_available():
        fast = "triton_frag" if dispatch.is_hopper(cuda) else "triton"  # see the next test
        assert dispatch.auto_kernel_for(cuda, torch.float16, 4096, 4096, 128, m=1) == fast
        assert dispatch.auto_kernel_for(cuda, torch.bfloat16, 4096, 4096, 128, m=64) == fast
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert dispatch.auto_kernel_for(cuda, torch.float32, 4096, 4096, 128, m=1) == "reference"
        assert dispatch.auto_kernel_for(torch.device("mps"), torch.float16, 64, 64, 32, m=1) == "reference"
    if layouts.cpu_int4pack_available():
        assert dispatch.auto_kernel_for(torch.device("cpu"), torch.float32, 576, 1536, 64, m=1) == "cpu_int4"


@pytest.mark.skipif(not dispatch.triton_available(), reason="triton is not installed")
@pytest.mark.parametrize(("capability", "expected"), [((9, 0), "triton_frag"), ((8, 0), "triton"), ((10, 0), "triton")])
def test_auto_choice_prefers_nk_frag_on_hopper(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], expected: str
) -> None:
    """sm_90 takes the nk_frag kernels where the layer fits that layout; other cards and layers keep nk_int4."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    cuda = torch.device("cuda", 0)
    for dtype in (torch.float16, torch.bfloat16):
        assert dispatch.auto_kernel_for(cuda, dtype, 4096, 4096, 128, m=1) == expected
        assert dispatch.auto_kernel_for(cuda, dtype, 4096, 4096, 64, m=300) == expected
    # group size 32 as well (the decode and warp-specialized kernels take it); layers nk_frag cannot hold (N not a
    # multiple of 16, K not a multiple of 64) keep nk_int4
    assert layouts.frag_supported(4096, 4096, 32) is None
    assert dispatch.auto_kernel_for(cuda, torch.float16, 4096, 4096, 32, m=1) == expected
    assert dispatch.auto_kernel_for(cuda, torch.float16, 576, 1536, 32, m=1) == expected
    assert dispatch.auto_kernel_for(cuda, torch.float16, 4096, 4104, 128, m=1) == "triton"
    assert dispatch.auto_kernel_for(cuda, torch.float16, 4128, 4096, 32, m=1) == "triton"
    assert dispatch.KERNELS[expected].layout == (layouts.NK_FRAG if expected == "triton_frag" else layouts.NK_INT4)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("g", [128, 32])
@pytest.mark.parametrize("m", [1, 3, 16, 100, 1500])
def test_module_on_gpu_every_auto_path(m: int, dtype: torch.dtype, g: int) -> None:
    mod, w = _module(1024, 768, g, seed=m)
    mod = mod.cuda()
    x = torch.randn(m, 1024, generator=torch.Generator().manual_seed(m)).to(dtype)
    with torch.no_grad():
        got = mod(x.cuda())
    assert mod.layout == (layouts.NK_FRAG if dispatch.is_hopper(torch.device("cuda")) else layouts.NK_INT4)
    assert sqnr_db(got, x.double() @ w + mod.bias.double().cpu()) > SQNR_FLOOR[dtype]
    sd = mod.state_dict()
    assert sd["qweight"].shape == (1024, 96) and sd["qweight"].device.type == "cuda"


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("g", [128, 32])
@pytest.mark.parametrize("m", [1, 16, 300])
def test_module_replays_in_a_cuda_graph(m: int, g: int) -> None:
    """Tuned once eagerly, then captured: every replay computes the new input's product (no stale plan,
    no allocation or tuning inside the capture)."""
    mod, w = _module(1024, 768, g, seed=m + 7)
    mod = mod.cuda()
    gen = torch.Generator().manual_seed(m)
    x = torch.randn(m, 1024, generator=gen).half().cuda()
    with torch.no_grad():
        mod(x)  # tunes and compiles outside the capture
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            mod(x)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            y = mod(x)
        for _ in range(3):
            fresh = torch.randn(m, 1024, generator=gen).half()
            x.copy_(fresh.cuda())
            graph.replay()
            torch.cuda.synchronize()
            ref = fresh.double() @ w + mod.bias.double().cpu()
            assert sqnr_db(y, ref) > SQNR_FLOOR[torch.float16]
