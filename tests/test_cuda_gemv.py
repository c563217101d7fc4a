"""The x-stationary CUDA decode kernel on ``nk_frag`` against float64 (GPU only: NVRTC needs a CUDA device).

Without a GPU only the parts that need none run: the source and config logic, and the kernel saying why
it cannot run on a CPU tensor.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from fastawq.kernels import cuda_frag, cuda_gemv, cuda_rt, dispatch, layouts
from test_cuda_frag import (
    check_forced_module,
    check_frag_tuner,
    check_graph_replay,
    check_matches_float64,
    check_strided_input,
)

from test_kernels import DEV, HAS_CUDA, random_gemm

gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")

GemvConfig = cuda_gemv.GemvConfig

CONFIGS = [
    GemvConfig(kc=2, kw=8, rbc=4, depth=1, kfirst=True),  # the default
    GemvConfig(kc=4, kw=8, rbc=4, depth=2),
    GemvConfig(kc=2, kw=2, rbc=3, depth=2),  # K split over CTAs, row blocks left over
    GemvConfig(kc=1, kw=3, rbc=1, depth=3),  # a group spread over several warps, odd warp count
    GemvConfig(kc=8, kw=2, rbc=5, depth=1),  # several groups a warp
    GemvConfig(kc=4, kw=16, rbc=2, depth=2),  # idle warps past K
    GemvConfig(kc=2, kw=2, rbc=3, depth=1, kfirst=True),  # K slices along the grid's x
    GemvConfig(kc=2, kw=2, depth=2, kfirst=True, fill=1),  # one wave of balanced row ranges, split-K workspace
    GemvConfig(kc=2, kw=2, depth=1, kfirst=True, fill=2, cluster=True),  # K slices summed in a cluster
    GemvConfig(kc=1, kw=3, kfirst=True, fill=3, cluster=True, stages=3),  # cluster, cp.async stages, odd warps
    GemvConfig(kc=4, kw=2, kfirst=True, fill=1, stages=2),  # cp.async stages, split-K workspace
    GemvConfig(kc=8, kw=2, depth=1, kfirst=True, fill=1, cluster=True),  # several groups a warp, cluster
    GemvConfig(kc=2, kw=2, depth=2, kfirst=True, fill=1, mt=2),  # 16 rows of x a program, workspace split-K
    GemvConfig(kc=1, kw=3, kfirst=True, fill=2, cluster=True, stages=2, mt=2),  # 16 rows, cluster, stages
    GemvConfig(kc=2, kw=4, rbc=3, depth=1, mt=2),  # 16 rows, fixed row ranges
]


def test_source_names_every_parameter() -> None:
    src = cuda_gemv.source(torch.bfloat16, 256, GemvConfig(kc=2, kw=4, rbc=3, depth=1))
    for name, value in (("BF16", 1), ("G", 256), ("KC", 2), ("KW", 4), ("DEPTH", 1), ("KFIRST", 0), ("WG", 0),
                        ("BAL", 0), ("CL", 1), ("STG", 0)):  # fmt: skip
        assert f"#define {name} {value}\n" in src
    src = cuda_gemv.source(torch.float16, 128, GemvConfig(kfirst=True, fill=2, cluster=True, stages=3), cluster=4)
    for name, value in (("BAL", 1), ("CL", 4), ("STG", 3)):
        assert f"#define {name} {value}\n" in src
    assert f"void __launch_bounds__(KW * 32) {cuda_gemv.NAME}(" in src
    assert "//@WGMMA@" not in src and "wgmma.mma_async" not in src


def test_config_problems_are_named() -> None:
    cases = [
        (GemvConfig(kc=0), "at least 1"),
        (GemvConfig(kw=33), "32 warps"),
        (GemvConfig(kc=3), "steps of 16 inputs"),
        (GemvConfig(kw=32, rbc=32), "shared memory"),
        (GemvConfig(stages=1), "copy stages"),
        (GemvConfig(stages=9), "copy stages"),
        (GemvConfig(cluster=True), "kfirst"),
        (GemvConfig(fill=-1), "at least 1"),
        (GemvConfig(mt=3), "tiles of 8 rows"),
    ]
    for cfg, words in cases:
        assert words in str(cfg.problem(128)), cfg
    assert GemvConfig(kc=3).problem(64) is None  # one chunk a group: any kc
    assert GemvConfig(kc=3).problem(32) is None  # two groups a chunk: any kc
    # a warp's scale/zero words a stage: one pair a group it covers (two a chunk at group size 32)
    cfg = GemvConfig(kc=4, kw=2, stages=2)
    assert cfg.smem_bytes(32, 1) - cfg.smem_bytes(128, 1) == 2 * 2 * (8 - 2) * 2 * 128  # stages, warps, groups
    assert GemvConfig(kc=2, kw=4).split(4096) == 8 and GemvConfig(kc=4, kw=16).split(4096) == 1
    assert GemvConfig(kc=4, kw=16).split(4160) == 2  # 65 chunks: a second CTA for the last one


def test_balanced_rows_cover_every_block_once_within_shared_memory() -> None:
    """``fill`` configs: the kernel's row ranges (rb0 = r·nb // R, mirrored here) take every block of 16 rows
    once, none more than the ``rbc`` the shared memory was sized for; a very wide layer (a vocabulary) takes
    more ranges rather than more shared memory."""
    for cfg in (GemvConfig(4, 16, kfirst=True, fill=1), GemvConfig(2, 8, kfirst=True, fill=2, stages=4),
                GemvConfig(2, 16, kfirst=True, fill=2, cluster=True)):  # fmt: skip
        for n, k, m in ((4096, 4096, 1), (28672, 4096, 8), (4096, 14336, 1), (128256, 4096, 1), (48, 8192, 5),
                        (6144, 4096, 16)):  # fmt: skip
            ranges, rbc = cfg.rows(n, k, m, 128, 132)
            nb = n // 16
            sizes = [((r + 1) * nb) // ranges - (r * nb) // ranges for r in range(ranges)]
            assert sum(sizes) == nb and min(sizes) >= 1 and max(sizes) <= rbc, (cfg, n, k, m)
            assert max(sizes) - min(sizes) <= 1, (cfg, n, k, m)
            assert cfg.smem_bytes(128, rbc) <= cuda_gemv.SMEM_MAX, (cfg, n, k, m)
            if n == 28672 and cfg.fill == 1:
                assert ranges == 132 // cfg.split(k), ranges  # one wave on 132 SMs
    assert GemvConfig(4, 16, kfirst=True, fill=1).rows(128256, 4096, 1, 128, 132)[0] > 132  # past one wave


def test_candidates_fit_and_stop_at_sixteen_rows() -> None:
    for m in (1, 5, 8, 9, 16):
        for g in cuda_gemv.GROUP_SIZES:
            for k in (4096, 14336, 4160):
                cands = cuda_gemv.candidates(m, 4096, k, g)
                assert cands, (m, g, k)
                for cfg in cands + [cuda_gemv.default_config(m, 4096, k, g)]:
                    assert cfg.problem(g) is None and (k // 64) % cfg.kc == 0, (m, g, k, cfg)
    assert all(c.mt == 2 for c in cuda_gemv.candidates(12, 4096, 4096, 128))
    assert cuda_gemv.candidates(17, 4096, 4096, 128) == []


def test_says_why_not_on_a_cpu() -> None:
    reason = cuda_gemv.why_not(torch.device("cpu"), torch.float16, 4096, 4096, 128)
    assert reason is not None and "CUDA device" in reason
    assert "cuda_gemv" in dispatch.available_kernels()


def test_zero_point_comes_off_after_the_product() -> None:
    """The kernel's algebra, in float64: with codes read as magic + q (fp16: row g + 8 as magic + 16·q),
    Σ (q − z)·x·s = (Σ (magic + q)·x − (magic + z)·Σ x)·s, and the 16× rows with s / 16."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randint(0, 16, (64,), generator=gen).double()
    x = torch.randn(64, generator=gen).double()
    z, s = 9.0, 0.037
    want = ((q - z) * x).sum() * s
    for magic, times in ((1024.0, 1.0), (1024.0, 16.0), (128.0, 1.0)):
        raw = ((magic + times * q) * x).sum()
        got = (raw - (magic + times * z) * x.sum()) * (s / times)
        assert torch.isclose(got, want, rtol=1e-12, atol=1e-12), (magic, times)


@gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=[c.describe() for c in CONFIGS])
@pytest.mark.parametrize(("m", "k", "n", "g"), [(1, 512, 96, 64), (3, 1024, 160, 128), (8, 1536, 48, 256),
                                                (13, 768, 64, 128), (1, 4096, 256, 128), (16, 512, 80, 128),
                                                (29, 1024, 48, 64), (1, 512, 96, 32), (8, 1024, 48, 32),
                                                (16, 768, 80, 32)])  # fmt: skip
def test_cuda_gemv_matches_float64(cfg: GemvConfig, m: int, k: int, n: int, g: int, dtype: torch.dtype) -> None:
    if cfg.problem(g) is not None:
        pytest.skip(str(cfg.problem(g)))
    if (k // 64) % cfg.kc:
        pytest.skip("the config's chunks a warp must divide K / 64")
    if cfg.cluster and cfg.split(k) > cuda_gemv.MAX_CLUSTER:
        pytest.skip("more K slices than a cluster sums")
    check_matches_float64(cuda_gemv.frag_gemv_cuda, cfg, m, k, n, g, dtype)


@gpu
@needs_cuda
def test_cuda_gemv_reads_a_strided_input() -> None:
    check_strided_input(cuda_gemv.frag_gemv_cuda)


@gpu
@needs_cuda
@pytest.mark.parametrize("g", [128, 32])
@pytest.mark.parametrize("cluster", [False, True], ids=["workspace", "cluster"])
def test_cuda_gemv_replays_in_a_cuda_graph(cluster: bool, g: int) -> None:
    """Inside a capture there is no workspace: a split config runs as the staged kernel, unsplit (at group size
    32, which that kernel does not take, the Triton MMA kernel), unless its K slices sum through the cluster's
    shared memory, which needs none: then the capture runs it as itself."""
    if cluster and torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("thread-block clusters need sm_90")
    k, n, m = 1024, 256, 4
    t, w = random_gemm(k, n, g, seed=5 + cluster, device=DEV)
    wf = layouts.gemm_to_frag(t)
    if cluster:
        cfg = GemvConfig(kc=2, kw=2, depth=1, kfirst=True, fill=1, cluster=True)
    else:
        cfg = GemvConfig(kc=2, kw=2, rbc=3, depth=2)
    p = cuda_gemv.plan(torch.device(DEV), torch.float16, m, n, k, g, cfg)
    assert p.split == 4 and p.clustered == cluster
    if cluster:
        assert p.grid[0] == 4  # the cluster's K slices along x
    gen = torch.Generator().manual_seed(9 + cluster)
    x = torch.randn(m, k, generator=gen).half().cuda()
    cuda_gemv.frag_gemv_cuda(x, wf, g, None, cfg)  # compiles outside the capture
    if not cluster and g in cuda_frag.GROUP_SIZES:
        cuda_frag.frag_mma_cuda(x, wf, g, None, cuda_frag.default_config(m, n, k, g))  # the capture's kernel too
    elif not cluster:
        from fastawq.kernels import triton_frag

        triton_frag.frag_mma(x, wf, g, None, replace(triton_frag.mma_default(m, n, k, g), split=1))
    check_graph_replay(lambda: cuda_gemv.frag_gemv_cuda(x, wf, g, None, cfg), x, w, gen)


@gpu
@needs_cuda
def test_cluster_rows_fit_in_one_wave() -> None:
    """Clusters of 4 K slices do not all fit on an H100/H200 at once (a GPC's SMs are not a multiple of 4): the
    plan takes no more row ranges than the driver says fit, so no cluster waits for a second wave."""
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("thread-block clusters need sm_90")
    cfg = GemvConfig(4, 16, kfirst=True, fill=1, cluster=True, stages=3)
    for m in (1, 8):
        p = cuda_gemv.plan(torch.device(DEV), torch.float16, m, 4096, 14336, 128, cfg)
        assert p.clustered and p.grid[0] == 4
        fit = cuda_rt.max_active_clusters(p.fn, p.grid, cfg.kw * 32, p.smem)
        assert fit is not None and 0 < p.grid[1] * p.grid[2] <= fit, (p.grid, fit)
        assert p.grid[1] * p.grid[2] * 4 >= 0.9 * torch.cuda.get_device_properties(0).multi_processor_count


@gpu
@needs_cuda
def test_cluster_past_eight_slices_is_refused_by_name() -> None:
    cfg = GemvConfig(kc=1, kw=1, kfirst=True, fill=1, cluster=True)
    t, _ = random_gemm(1024, 64, 128, seed=7, device=DEV)
    wf = layouts.gemm_to_frag(t)
    x = torch.randn(1, 1024, device=DEV).half()
    with pytest.raises(ValueError, match="at most 8 K slices"):
        cuda_gemv.frag_gemv_cuda(x, wf, 128, None, cfg)


@gpu
@needs_cuda
@pytest.mark.parametrize("m", [1, 8, 16])
def test_frag_tuner_times_the_decode_kernel(m: int) -> None:
    timed = check_frag_tuner(m)
    assert sum(name == "cuda_gemv" for name, _, _ in timed) == len(cuda_gemv.candidates(m, 768, 2048, 128))


@gpu
@needs_cuda
def test_forced_decode_kernel_runs_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    check_forced_module(monkeypatch, "cuda_gemv", 3)
    check_forced_module(monkeypatch, "cuda_gemv", 3, g=32)  # untuned config at group size 32
