"""The run-time-compiled CUDA kernel on ``nk_frag`` against float64 (GPU only: NVRTC needs a CUDA device).

Without a GPU only the parts that need none run: the source is well formed for every configuration and
the kernel says why it cannot run on a CPU tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fastawq.kernels import cuda_frag, dispatch, layouts, triton_awq, triton_frag

from test_kernels import DEV, HAS_CUDA, SQNR_FLOOR, _module, random_gemm, sqnr_db

gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")

CONFIGS = [
    cuda_frag.CudaConfig(mt=1, rb=4, kw=1, depth=4, split=1),
    cuda_frag.CudaConfig(mt=1, rb=2, kw=4, depth=2, split=4, stages=4),
    cuda_frag.CudaConfig(mt=2, rb=1, kw=2, depth=4, split=2, stages=2),
    cuda_frag.CudaConfig(mt=4, rb=2, kw=3, depth=2, split=3),
    cuda_frag.CudaConfig(mt=8, rb=2, kw=1, depth=1, split=1, stages=2),
    cuda_frag.CudaConfig(mt=1, rb=4, kw=2, depth=2, split=3, wgmma=True),
    cuda_frag.CudaConfig(mt=2, rb=4, kw=1, depth=2, split=1, stages=4, wgmma=True),
    cuda_frag.CudaConfig(mt=4, rb=8, kw=1, depth=2, split=2, wgmma=True),
    cuda_frag.CudaConfig(mt=2, rb=4, kw=4, depth=2, split=1, wgmma=True),
    cuda_frag.CudaConfig(mt=8, rb=8, kw=1, depth=2, split=2, stages=4, wgmma=True),
    cuda_frag.CudaConfig(mt=16, rb=4, kw=1, depth=2, split=1, stages=3, wgmma=True),
]


def test_source_names_every_parameter() -> None:
    cfg = cuda_frag.CudaConfig(mt=2, rb=4, kw=2, depth=3, split=2)
    src = cuda_frag.source(torch.bfloat16, 128, cfg)
    for name, value in (("BF16", 1), ("G", 128), ("MT", 2), ("RB", 4), ("KW", 2), ("DEPTH", 3), ("XS", 3), ("WG", 0)):
        assert f"#define {name} {value}\n" in src
    assert f"void __launch_bounds__(NW * 32) {cuda_frag.NAME}(" in src


def test_says_why_not_on_a_cpu() -> None:
    reason = cuda_frag.why_not(torch.device("cpu"), torch.float16, 4096, 4096, 128)
    assert reason is not None and "CUDA device" in reason


@gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=[c.describe() for c in CONFIGS])
@pytest.mark.parametrize(("m", "k", "n", "g"), [(1, 512, 96, 64), (7, 768, 160, 128), (16, 1024, 48, 256),
                                                (29, 512, 64, 128), (70, 384, 80, 64),
                                                (133, 512, 64, 128)])  # fmt: skip
def test_cuda_frag_matches_float64(
    cfg: cuda_frag.CudaConfig, m: int, k: int, n: int, g: int, dtype: torch.dtype
) -> None:
    if k % g:
        pytest.skip("group size must divide K")
    if cfg.problem(g) is not None:
        pytest.skip(str(cfg.problem(g)))
    check_matches_float64(cuda_frag.frag_mma_cuda, cfg, m, k, n, g, dtype)


def check_matches_float64(run: Callable[..., torch.Tensor], cfg: object, m: int, k: int, n: int, g: int,
                          dtype: torch.dtype) -> None:  # fmt: skip
    """``run(x, nk_frag tensors, g, bias, cfg)`` against float64 on fresh random data, with and without a
    bias; afterwards every split-K workspace and counter is zero again (the next call relies on it)."""
    t, w = random_gemm(k, n, g, seed=m * 1000 + k + n, device=DEV)
    wf = layouts.gemm_to_frag(t)
    gen = torch.Generator().manual_seed(m + k)
    for with_bias in (True, False):  # twice: split-K must leave its workspace zeroed for the next call
        x = torch.randn(m, k, generator=gen).to(dtype)
        bias = torch.randn(n, generator=gen).half() if with_bias else None
        got = run(x.to(DEV), wf, g, bias.to(DEV) if bias is not None else None, cfg)
        ref = x.double() @ w + (bias.double() if bias is not None else 0)
        assert got.dtype == dtype and got.shape == (m, n)
        assert sqnr_db(got, ref) > SQNR_FLOOR[dtype], (cfg, with_bias)
    assert all(bool((ws == 0).all()) and bool((c == 0).all()) for ws, c in triton_awq._WORKSPACES.values())


@gpu
@needs_cuda
def test_cuda_frag_reads_a_strided_input() -> None:
    check_strided_input(cuda_frag.frag_mma_cuda)


def check_strided_input(run: Callable[..., torch.Tensor]) -> None:
    """``run(x, nk_frag tensors, g, bias)`` on rows with a 2K stride and a 2-byte aligned start (copied before
    the 4-byte loads) against float64."""
    k, n, g = 512, 64, 128
    t, w = random_gemm(k, n, g, seed=3, device=DEV)
    wf = layouts.gemm_to_frag(t)
    big = torch.randn(5, 2 * k, generator=torch.Generator().manual_seed(2)).half().to(DEV)
    x = big[:, 1 : 1 + k]
    got = run(x, wf, g, None)
    assert sqnr_db(got, x.double().cpu() @ w) > SQNR_FLOOR[torch.float16]


def test_tuner_leaves_the_cuda_kernel_out_without_a_gpu() -> None:
    if HAS_CUDA:
        pytest.skip("this machine has a GPU")
    assert not any(name == "cuda_mma" for name, _ in triton_frag.candidates(8, 4096, 4096, 128))


def test_candidates_fit_the_shared_memory_limit() -> None:
    for m in (1, 8, 9, 16, 32, 64, 100, 128):
        for g in cuda_frag.GROUP_SIZES:
            # 128 rows of x in groups of 256 need 192 KiB a stage set: the Triton kernels take those alone
            assert cuda_frag.candidates(m, g, wgmma=True) or (m > 64 and g == 256), (m, g)
            for cfg in cuda_frag.candidates(m, g, wgmma=True) + [cuda_frag.default_config(m, 4096, 4096, g)]:
                assert cfg.problem(g) is None and cfg.smem_bytes(g) <= cuda_frag.SMEM_MAX, (m, cfg, g)
                assert not cfg.wgmma or 8 * cfg.mt >= m  # one program covers every row
    assert not any(c.wgmma for c in cuda_frag.candidates(64, 128))  # wgmma only where asked (sm_90)
    assert not any(c.wgmma for c in cuda_frag.candidates(8, 128, wgmma=True))
    assert cuda_frag.candidates(65) == [] and cuda_frag.candidates(129, wgmma=True) == []


def test_config_problems_are_named() -> None:
    ok = cuda_frag.CudaConfig(mt=4, rb=8, kw=1, depth=2, stages=4, wgmma=True)
    assert ok.problem(128) is None
    cases = [
        (cuda_frag.CudaConfig(mt=4, rb=2, kw=1, depth=2, wgmma=True), "warp groups"),
        (cuda_frag.CudaConfig(mt=4, rb=4, kw=1, depth=4, wgmma=True), "depth 2"),
        (cuda_frag.CudaConfig(mt=4, rb=4, kw=1, depth=2, stages=2, wgmma=True), "3 x stages"),
        (cuda_frag.CudaConfig(mt=16, rb=4, kw=4, depth=2, stages=4, wgmma=True), "shared memory"),
        (cuda_frag.CudaConfig(mt=1, rb=0), "at least 1"),
    ]
    for cfg, words in cases:
        assert words in str(cfg.problem(128)), cfg


def test_wgmma_source_names_every_accumulator() -> None:
    for mt in (1, 2, 4, 8, 16):
        src = cuda_frag.source(torch.float16, 64, cuda_frag.CudaConfig(mt=mt, rb=4, depth=2, wgmma=True))
        assert f"m64n{8 * mt}k16" in src and f"c[{mt - 1}][3]" in src and f"c[{mt}][0]" not in src
        assert "//@WGMMA@" not in src
    assert "wgmma.mma_async" not in cuda_frag.source(torch.float16, 64, cuda_frag.CudaConfig())


def test_reusable_launch_arguments_point_at_their_values() -> None:
    import ctypes

    from fastawq.kernels import cuda_rt

    args = cuda_rt.Args("ppil")
    for values in ((1 << 40, 12345, -7, -(1 << 40)), (3, 1 << 47, 2**31 - 1, 1 << 62)):
        args.set(*values)
        kinds = (ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int, ctypes.c_int64)
        read = [ctypes.cast(args.params[i], ctypes.POINTER(kinds[i])).contents.value for i in range(4)]
        assert read == list(values)
    with pytest.raises(ValueError):
        args.set(1, 2, 3)  # one value missing


@gpu
@needs_cuda
@pytest.mark.parametrize(("m", "wgmma"), [(1, False), (8, False), (24, False), (24, True), (100, True)])
def test_frag_tuner_times_the_cuda_kernel_and_its_pick_is_right(
    m: int, wgmma: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTAWQ_CUDA_WGMMA", "1" if wgmma else "0")
    timed = check_frag_tuner(m)  # the same shape is tuned again with and without the wgmma configs
    wgmma = wgmma and torch.cuda.get_device_capability() == (9, 0)
    assert sum(name == "cuda_mma" for name, _, _ in timed) == len(cuda_frag.candidates(m, 128, wgmma=wgmma))


def check_frag_tuner(m: int) -> list[tuple[str, str, float]]:
    """The ``nk_frag`` tuner, its memory cleared, on a 2048 → 768 layer (group size 128) at ``m`` rows: its
    first result and its cached launch against float64; returns what it timed."""
    triton_frag.FRAG_TUNER.tuned.clear()
    triton_frag.FRAG_TUNER.plans.clear()
    k, n, g = 2048, 768, 128
    t, w = random_gemm(k, n, g, seed=m, device=DEV)
    wf = layouts.gemm_to_frag(t)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).half()
    got = triton_frag.frag_auto(x.to(DEV), wf, g, None)
    assert sqnr_db(got, x.double() @ w) > SQNR_FLOOR[torch.float16]
    # the tuned launch, cached; not bit-equal to the first result in general (a split-K pick adds its fp32
    # partial sums with atomics in any order, and the fp16 rounding of y can flip by an ulp), so checked alone
    again = triton_frag.frag_auto(x.to(DEV), wf, g, None)
    assert sqnr_db(again, x.double() @ w) > SQNR_FLOOR[torch.float16]
    return triton_awq.TUNE_LOG[triton_frag.FRAG_TUNER.key(x.to(DEV), n, k, g, None)]


@gpu
@needs_cuda
@pytest.mark.parametrize("wgmma", [False, True], ids=["mma", "wgmma"])
def test_cuda_kernel_replays_in_a_cuda_graph_without_split_k(wgmma: bool) -> None:
    """Inside a capture there is no workspace: the split config runs unsplit, and replays stay right."""
    if wgmma and torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("wgmma needs an sm_90 GPU")
    k, n, g, m = 1024, 256, 128, 4
    t, w = random_gemm(k, n, g, seed=5, device=DEV)
    wf = layouts.gemm_to_frag(t)
    cfg = cuda_frag.CudaConfig(mt=1, rb=4 if wgmma else 2, kw=2, depth=2, split=4, wgmma=wgmma)
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(m, k, generator=gen).half().cuda()
    cuda_frag.frag_mma_cuda(x, wf, g, None, cfg)  # compiles outside the capture
    check_graph_replay(lambda: cuda_frag.frag_mma_cuda(x, wf, g, None, cfg), x, w, gen)


def check_graph_replay(run: Callable[[], torch.Tensor], x: torch.Tensor, w: torch.Tensor, gen: torch.Generator) -> None:
    """``run()`` (a kernel call on ``x``) warmed up on a side stream, captured in a CUDA graph, and replayed on
    fresh values written into ``x``: each replay's result against float64."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        run()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = run()
    for _ in range(3):
        fresh = torch.randn(*x.shape, generator=gen).half()
        x.copy_(fresh.cuda())
        graph.replay()
        torch.cuda.synchronize()
        assert sqnr_db(y, fresh.double() @ w) > SQNR_FLOOR[torch.float16]


def check_forced_module(monkeypatch: pytest.MonkeyPatch, kernel: str, rows: int, g: int = 128) -> None:
    """A module forced (``FASTAWQ_KERNEL``) to ``kernel`` repacks to ``nk_frag`` and matches float64."""
    mod, w = _module(512, 128, g, seed=2)
    mod = mod.cuda()
    monkeypatch.setenv("FASTAWQ_KERNEL", kernel)
    dispatch.reset()
    x = torch.randn(rows, 512, generator=torch.Generator().manual_seed(1)).half()
    with torch.no_grad():
        y = mod(x.cuda())
    assert mod.layout == layouts.NK_FRAG
    assert sqnr_db(y, x.double() @ w + mod.bias.double().cpu()) > SQNR_FLOOR[torch.float16]


@gpu
@needs_cuda
def test_forced_cuda_kernel_runs_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    check_forced_module(monkeypatch, "cuda_frag", 3)


def test_runtime_compiler_says_why_it_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastawq.kernels import cuda_rt

    assert "CUDA device" in str(cuda_rt.why_unavailable(torch.device("cpu")))
    monkeypatch.setattr(cuda_rt, "_nvrtc", lambda: None)
    with pytest.raises(cuda_rt.CudaError, match="NVRTC is not available"):
        cuda_rt.compile_cubin('extern "C" __global__ void k() {}', "k", "90")


def test_cubins_are_kept_on_disk_between_processes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A second load of the same source skips NVRTC; another source, architecture or a cut-short file
    compiles again; FASTAWQ_CUBIN_CACHE=0 always compiles."""
    from fastawq.kernels import cuda_rt

    monkeypatch.setenv("FASTAWQ_CACHE", str(tmp_path))
    compiled: list[tuple[str, str]] = []

    def fake_compile(source: str, name: str, arch: str) -> bytes:
        compiled.append((source, arch))
        return b"\x7fELF" + f"{source}|{arch}".encode()

    monkeypatch.setattr(cuda_rt, "compile_cubin", fake_compile)
    src_a, src_b = 'extern "C" __global__ void k() {}', 'extern "C" __global__ void k() { }'
    first = cuda_rt.cached_cubin(src_a, "k", "90a")
    assert cuda_rt.cached_cubin(src_a, "k", "90a") == first and len(compiled) == 1
    assert cuda_rt.cached_cubin(src_b, "k", "90a") != first and len(compiled) == 2
    assert cuda_rt.cached_cubin(src_a, "k", "80") != first and len(compiled) == 3
    path = cuda_rt.cubin_path(src_a, "k", "90a")
    assert path.startswith(str(tmp_path))
    with open(path, "wb") as f:
        f.write(b"\x7fEL")  # cut short
    assert cuda_rt.cached_cubin(src_a, "k", "90a") == first and len(compiled) == 4
    assert cuda_rt.cached_cubin(src_a, "k", "90a") == first and len(compiled) == 4
    monkeypatch.setenv("FASTAWQ_CUBIN_CACHE", "0")
    assert cuda_rt.cached_cubin(src_a, "k", "90a") == first and len(compiled) == 5


def test_forcing_the_cuda_kernel_on_a_cpu_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastawq.errors import FastAWQError

    monkeypatch.setenv("FASTAWQ_KERNEL", "cuda_frag")
    x = torch.randn(2, 256).half()
    with pytest.raises(FastAWQError, match="cuda_frag.*CUDA device"):
        dispatch.select(x, 256, 64, 64)
