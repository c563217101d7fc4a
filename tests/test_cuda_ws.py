"""The warp-specialized Hopper kernel on ``nk_frag`` against float64 (GPU tests need an sm_90 GPU).

Without one, only what needs no GPU runs: configs name their problems, the source is well formed, the
schedule covers every chunk of every tile exactly once, and the kernel says why it cannot run.
"""

from __future__ import annotations

import ctypes
from dataclasses import replace

import pytest
import torch

from fastawq.kernels import cuda_rt, cuda_ws, layouts
from test_cuda_frag import check_forced_module, check_frag_tuner, check_graph_replay, check_matches_float64

from test_kernels import DEV, HAS_CUDA, SQNR_FLOOR, random_gemm, sqnr_db

gpu = pytest.mark.gpu
needs_hopper = pytest.mark.skipif(
    not HAS_CUDA or torch.cuda.get_device_capability() != (9, 0), reason="needs an sm_90 GPU"
)

CONFIGS = [
    cuda_ws.WsConfig(mt=1, c=1, stages=4),
    cuda_ws.WsConfig(mt=2, c=2, stages=6),
    cuda_ws.WsConfig(mt=4, c=1, stages=3, occ=2),
    cuda_ws.WsConfig(mt=8, c=3, stages=4),
    cuda_ws.WsConfig(mt=16, c=2, stages=4),
    cuda_ws.WsConfig(mt=32, c=2, stages=3),
    cuda_ws.WsConfig(mt=16, c=1, stages=4, stream_k=False),
    cuda_ws.WsConfig(mt=4, c=3, stages=5),
    cuda_ws.WsConfig(mt=2, c=2, stages=4, occ=2, sets=2),
    cuda_ws.WsConfig(mt=16, c=2, stages=3, sets=2),
    cuda_ws.WsConfig(mt=8, c=2, stages=3, sets=2, kch=2),
    cuda_ws.WsConfig(mt=32, c=2, stages=3, sets=2, kch=2, stream_k=False),
    cuda_ws.WsConfig(mt=4, c=1, stages=3, kch=2),
    cuda_ws.WsConfig(mt=2, c=2, stages=6, sets=2, kch=4),
    cuda_ws.WsConfig(mt=4, c=2, stages=4, sets=2, kch=4, stream_k=False),
    # cluster splits: a tile's stages over 2 – 8 CTAs of a cluster, summed in rank 0's shared memory
    cuda_ws.WsConfig(mt=2, c=2, stages=4, sets=2, kch=4, stream_k=False, cl=4),
    cuda_ws.WsConfig(mt=16, c=2, stages=3, sets=2, kch=2, stream_k=False, cl=2),
    cuda_ws.WsConfig(mt=8, c=1, stages=3, stream_k=False, cl=3),
    cuda_ws.WsConfig(mt=4, c=2, stages=3, sets=2, stream_k=False, cl=8),
    cuda_ws.WsConfig(mt=2, c=1, stages=6, occ=2, sets=2, kch=2, stream_k=False, cl=4),
    cuda_ws.WsConfig(mt=32, c=2, stages=4, sets=2, stream_k=False, cl=2),  # 16 slices of x rows a rank
    cuda_ws.WsConfig(mt=8, c=3, stages=5, sets=2, kch=2, stream_k=False, cl=3),  # pairs of slices 1, 1, 2
    cuda_ws.WsConfig(mt=4, c=1, stages=9, occ=2, sets=2, stream_k=False, cl=5),  # gathered into rank 0
    cuda_ws.WsConfig(mt=8, c=2, stages=4, sets=2, kch=2, stream_k=False, cl=6),  # two ranks own no rows
    cuda_ws.WsConfig(mt=16, c=3, stages=8, sets=2),  # 192-row tiles (N = 6144: 32 of them)
    # the scale after the product (where late_applies; else the usual decode, e.g. group size 256 at k128)
    cuda_ws.WsConfig(mt=2, c=2, stages=6, sets=2, kch=4, late=True),
    cuda_ws.WsConfig(mt=4, c=2, stages=6, sets=2, kch=2, late=True),
    cuda_ws.WsConfig(mt=8, c=2, stages=4, sets=2, kch=2, stream_k=False, cl=2, late=True),
    cuda_ws.WsConfig(mt=1, c=1, stages=4, sets=2, late=True),
    cuda_ws.WsConfig(mt=2, c=2, stages=8, sets=2, kch=2, late=True),  # four groups a stage at group size 32
]

# (m, k, n, g): odd M, several tiles of x, N of one tile (every CTA a few chunks of it, stream-K), and
# more tiles than SMs (whole tiles first, then the rest shared out); the last two at group size 32 (two groups a
# chunk)
SHAPES = [(1, 512, 128, 64), (7, 768, 384, 128), (16, 1024, 192, 256), (29, 512, 128, 128), (70, 384, 384, 64),
          (133, 512, 256, 128), (300, 1024, 384, 128), (600, 256, 3840, 128),
          (13, 768, 384, 32), (133, 512, 256, 32)]  # fmt: skip


@gpu
@needs_hopper
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=[c.describe() for c in CONFIGS])
@pytest.mark.parametrize(("m", "k", "n", "g"), SHAPES)
def test_ws_kernel_matches_float64(cfg: cuda_ws.WsConfig, m: int, k: int, n: int, g: int, dtype: torch.dtype) -> None:
    if n % cfg.rows or k % (64 * cfg.kch) or k // (64 * cfg.kch) < cfg.cl:
        pytest.skip(f"N={n} is not a multiple of {cfg.rows} rows, or K={k} of {64 * cfg.kch} inputs, or too short")
    if cfg.problem(g) is not None:  # group size 32: a stage takes more shared memory
        pytest.skip(str(cfg.problem(g)))
    check_matches_float64(cuda_ws.frag_ws, cfg, m, k, n, g, dtype)  # split tiles leave the workspace zeroed


@gpu
@needs_hopper
@pytest.mark.parametrize(("m", "g"), [(12, 128), (29, 128), (40, 128), (100, 128), (300, 128), (12, 32), (100, 32),
                                      (300, 32)])  # fmt: skip
def test_every_tuner_candidate_matches_float64(m: int, g: int) -> None:
    k, n = 1024, 640
    t, w = random_gemm(k, n, g, seed=m, device=DEV)
    wf = layouts.gemm_to_frag(t)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).half()
    cands = cuda_ws.candidates(m, n, k, torch.cuda.get_device_properties(0).multi_processor_count, g)
    assert cands and (m > 128 or any(cfg.cl > 1 for cfg in cands))  # 5 tiles: cluster splits up to 128 rows
    for cfg in cands:
        assert cfg.cl == 1 or cuda_ws.fits_one_wave(x.device, x.dtype, m, n, k, g, cfg)  # 5 clusters fit
        got = cuda_ws.frag_ws(x.to(DEV), wf, g, None, cfg)
        assert sqnr_db(got, x.double() @ w) > SQNR_FLOOR[torch.float16], cfg


@gpu
@needs_hopper
def test_ws_kernel_reads_a_strided_input_and_replays_in_a_graph() -> None:
    k, n, g, m = 1024, 256, 128, 24
    t, w = random_gemm(k, n, g, seed=5, device=DEV)
    wf = layouts.gemm_to_frag(t)
    gen = torch.Generator().manual_seed(9)
    big = torch.randn(m, 2 * k + 8, generator=gen).half().cuda()
    x = big[:, 8 : 8 + k]  # row stride 2K + 8, 16-byte aligned: read in place through the tensor map
    cfg = cuda_ws.WsConfig(mt=4, c=2, stages=4)  # 2 row tiles over 132 SMs: stream-K outside a capture
    assert sqnr_db(cuda_ws.frag_ws(x, wf, g, None, cfg), x.double().cpu() @ w) > SQNR_FLOOR[torch.float16]
    check_graph_replay(lambda: cuda_ws.frag_ws(x, wf, g, None, cfg), x, w, gen)  # captured: whole tiles only
    cl = cuda_ws.WsConfig(mt=4, c=2, stages=3, sets=2, kch=2, stream_k=False, cl=4)  # needs no workspace
    check_graph_replay(lambda: cuda_ws.frag_ws(x, wf, g, None, cl), x, w, gen)


def _plan(cfg: cuda_ws.WsConfig, m: int, n: int, k: int, sms: int) -> cuda_ws.WsPlan:
    return cuda_ws.WsPlan(fn=None, cfg=cfg, m=m, n=n, k=k, group_size=128, smem=0, sms=sms)  # type: ignore[arg-type]


@pytest.mark.parametrize("stream_k", [True, False])
@pytest.mark.parametrize(("m", "n", "k", "sms"), [(16, 4096, 4096, 132), (128, 28672, 4096, 132), (7, 128, 512, 132),
                                                  (4096, 4096, 4096, 132), (600, 3840, 256, 132),
                                                  (33, 640, 8192, 7)])  # fmt: skip
def test_schedule_covers_every_chunk_once(m: int, n: int, k: int, sms: int, stream_k: bool) -> None:
    """The kernel's piece loop, replayed in Python over the host's schedule."""
    for cfg in (cuda_ws.WsConfig(mt=2, c=2), cuda_ws.WsConfig(mt=16, c=1, occ=2), cuda_ws.WsConfig(mt=8, kch=2)):
        p = _plan(cfg, m, n, k, sms)
        grid, dp, per, units, slots = p.schedule(stream_k)
        kc, tiles = k // (64 * cfg.kch), -(-m // (8 * cfg.mt)) * (n // cfg.rows)
        assert grid <= sms * cfg.occ and slots == tiles - dp and (per == 0) == (dp == tiles)
        assert dp == (tiles // (sms * cfg.occ) * sms * cfg.occ if stream_k else tiles)  # every full round whole
        seen = torch.zeros(tiles, kc, dtype=torch.int32)
        parts = torch.zeros(tiles, dtype=torch.int32)
        head_cta: dict[int, int] = {}
        other_ctas: dict[int, list[int]] = {}
        for b in range(grid):
            for t in range(b, dp, grid):
                seen[t] += 1
            u, u1 = b * per, min(b * per + per, units)
            split: list[tuple[int, int, int]] = []
            while u < u1:
                t, c0 = dp + u // kc, u % kc
                c1 = min(kc, c0 + u1 - u)
                seen[t, c0:c1] += 1
                parts[t] += 1
                if c1 - c0 < kc:
                    split.append((t, c0, c1))
                u += c1 - c0
            for i, (t, c0, _) in enumerate(split):
                if c0 == 0:  # a head waits for the tile's other parts, so it must be its CTA's last piece
                    assert i == len(split) - 1
                    head_cta[t] = b
                else:
                    other_ctas.setdefault(t, []).append(b)
        assert bool((seen == 1).all())
        for t in range(dp, tiles):  # the count the head waits for (parts − 1), kept by later CTAs only
            u0 = (t - dp) * kc
            assert parts[t] == (u0 + kc - 1) // per - u0 // per + 1
            if parts[t] > 1:
                assert all(b > head_cta[t] for b in other_ctas[t]) and len(other_ctas[t]) == parts[t] - 1


def _owned(mt: int, cl: int, rank: int) -> range:
    """The kernel's OWN_LO / OWN_HI: pairs of 8-row slices shared out from 8 slices, else all in rank 0."""
    if mt < 8:
        return range(mt) if rank == 0 else range(0)
    pairs = mt // 2
    return range(2 * (rank * pairs // cl), 2 * ((rank + 1) * pairs // cl))


@pytest.mark.parametrize("mt", [1, 2, 4, 8, 16, 24, 32])
@pytest.mark.parametrize("cl", range(2, 9))
def test_cluster_split_owners_cover_every_slice_once_within_the_buffer(mt: int, cl: int) -> None:
    cfg = cuda_ws.WsConfig(mt=mt, c=2, stages=2, sets=2, stream_k=False, cl=cl)
    owned = [_owned(mt, cl, r) for r in range(cl)]
    assert sorted(i for o in owned for i in o) == list(range(mt))  # every slice written once
    assert max(len(o) for o in owned) <= cfg.owned_slices()  # a slot holds the largest share
    assert cfg.sum_bytes() == (cl - 1) * 2 * cfg.owned_slices() * 2048
    if mt >= 8:  # shared out: a rank's buffer holds less than the whole tile's sums
        assert cfg.owned_slices() < mt


@pytest.mark.parametrize(("m", "n", "k", "cl"), [(16, 4096, 4096, 4), (70, 384, 576, 3), (300, 256, 512, 8)])
def test_cluster_split_gives_each_rank_a_share_of_one_tile(m: int, n: int, k: int, cl: int) -> None:
    cfg = cuda_ws.WsConfig(mt=8, c=2, stages=3, sets=2, stream_k=False, cl=cl)
    grid, *_, slots = _plan(cfg, m, n, k, 132).schedule(False)
    kc, tiles = k // (64 * cfg.kch), -(-m // (8 * cfg.mt)) * (n // cfg.rows)
    assert grid == tiles * cl and slots == 0  # one cluster a tile, no workspace
    seen = torch.zeros(tiles, kc, dtype=torch.int32)
    for b in range(grid):  # the kernel's piece: tile = cluster id, stages rank·kc/cl … (rank + 1)·kc/cl
        t, r = b // cl, b % cl
        c0, c1 = r * kc // cl, (r + 1) * kc // cl
        assert c1 > c0 and (c0 > 0) == (r > 0)  # every rank has stages; only rank 0 starts at stage 0
        seen[t, c0:c1] += 1
    assert bool((seen == 1).all())


def test_cluster_split_candidates_fill_one_wave() -> None:
    for m, n, k in ((16, 4096, 4096), (32, 6144, 4096), (64, 4096, 14336), (128, 8192, 8192), (20, 768, 2048),
                    (100, 640, 1024)):  # fmt: skip
        splits = [c for c in cuda_ws.candidates(m, n, k, 132) if c.cl > 1]
        assert splits, (m, n, k)
        for c in splits:
            tiles, kc = n // c.rows, k // (64 * c.kch)
            assert tiles * c.cl <= 132 * c.occ and 2 <= c.cl <= min(8, kc)  # at most one cluster a tile a wave
            assert c.smem_bytes() * c.occ <= cuda_ws.SMEM_MAX
            assert c.sets <= c.stages <= max(c.sets, -(-kc // c.cl))  # no more stages than a CTA takes
    assert not [c for c in cuda_ws.candidates(16, 28672, 4096, 132) if c.cl > 1]  # 224 tiles: the persistent grid
    # from 33 rows also 256-input stages with the whole x tile (a rank's buffer holds only its share of the sums)
    assert any(c.kch == 4 and c.mt == 8 for c in cuda_ws.candidates(64, 4096, 4096, 132) if c.cl > 1)
    assert {c.mt for c in cuda_ws.candidates(128, 4096, 4096, 132) if c.cl > 1} == {8, 16}  # half x tiles too
    # from 129 rows: 256-row x tiles
    assert {(c.mt, c.cl) for c in cuda_ws.candidates(512, 4096, 14336, 132) if c.cl > 1} == {(32, 2)}
    assert not [c for c in cuda_ws.candidates(512, 28672, 4096, 132) if c.cl > 1]  # 224 tiles


def test_config_problems_are_named() -> None:
    assert cuda_ws.WsConfig().problem() is None
    cases = [
        (cuda_ws.WsConfig(mt=3), "mt must be"),
        (cuda_ws.WsConfig(c=4), "consumer warp groups"),
        (cuda_ws.WsConfig(stages=2), "as many stages as register sets"),
        (cuda_ws.WsConfig(sets=4), "register sets"),
        (cuda_ws.WsConfig(c=3, occ=2), "2 CTAs per SM"),
        (cuda_ws.WsConfig(mt=2, c=2, occ=2), "do not fit"),
        (cuda_ws.WsConfig(kch=3), "1, 2 or 4 chunks"),
        (cuda_ws.WsConfig(mt=32, c=2, stages=8), "shared memory"),
        (cuda_ws.WsConfig(cl=2), "cluster split"),  # stream-K on
        (cuda_ws.WsConfig(stream_k=False, cl=9), "cluster split"),
        (cuda_ws.WsConfig(mt=16, c=2, stages=5, sets=2, kch=2, stream_k=False, cl=2), "shared memory"),
    ]
    for cfg, words in cases:
        assert words in str(cfg.problem()), cfg
    for m in (1, 8, 16, 32, 64, 128, 129, 256, 512, 4096):
        mt = cuda_ws.x_tiles(m)
        assert 8 * mt >= min(m, 128) and (m <= 128 or mt in (16, 32))
        for n in (4096, 1536, 640, 4160):
            for k in (4096, 576):
                for cfg in cuda_ws.candidates(m, n, k) + [cuda_ws.default_config(m, n, k)]:
                    assert cfg.problem() is None and n % cfg.rows == 0 and k % (64 * cfg.kch) == 0, (m, n, k, cfg)
    # up to 64 rows the two-set candidates scale after the product; from 65 rows none do
    assert all(c.late == (c.sets == 2) for c in cuda_ws.candidates(16, 4096, 4096))
    assert not any(c.late for c in cuda_ws.candidates(128, 4096, 4096))
    # from 9 rows the tuner times the warp-specialized kernel too (256 inputs a stage where K allows)
    assert not cuda_ws.candidates(8, 4096, 4096)
    assert any(cfg.kch == 4 for cfg in cuda_ws.candidates(16, 4096, 4096))
    assert all(cfg.kch < 4 for cfg in cuda_ws.candidates(32, 4096, 576 + 64))


def test_group_size_32_takes_twice_the_scale_rows_and_fewer_stages_where_needed() -> None:
    """At group size 32 a stage holds two scale/zero rows a chunk: the stage grows by KCH rows of C·256 bytes
    (before rounding to 1 KiB), candidates that no longer fit take fewer stages, and late scaling needs room for
    twice the groups' accumulators."""
    for cfg in CONFIGS:
        extra = cfg.kch * cfg.c * 64 * 4
        grew = cfg.stage_bytes(32) - cfg.stage_bytes(64)
        assert grew % 1024 == 0 and abs(grew - extra) < 1024, cfg
        assert cfg.stage_bytes(64) == cfg.stage_bytes(128) == cfg.stage_bytes(256), cfg
    for m in (16, 32, 64, 128, 512):
        for n, k in ((4096, 4096), (4096, 14336), (640, 1024)):
            c128 = cuda_ws.candidates(m, n, k, 132, 128)
            c32 = cuda_ws.candidates(m, n, k, 132, 32)
            assert c32 and all(c.problem(32) is None for c in c32), (m, n, k)
            for a in c32:  # each the same tile as a candidate at group size 128, with at most its stages
                assert any(replace(a, stages=b.stages) == b and a.stages <= b.stages for b in c128), a
    for m in (1, 8, 16, 32, 64, 128, 512, 4096):  # the untuned config (a forced cuda_ws) fits at every group size
        for n, k in ((4096, 4096), (1536, 576), (4160, 4096)):
            for g in cuda_ws.GROUP_SIZES:
                assert cuda_ws.default_config(m, n, k, g).problem(g) is None, (m, n, k, g)
    assert cuda_ws.WsConfig(mt=2, sets=2, kch=2, late=True).late_applies(32)  # 4 groups a stage
    assert not cuda_ws.WsConfig(mt=2, sets=2, kch=4, late=True).late_applies(32)  # 8 groups: too many registers
    assert "#define LATE 1" in cuda_ws.source(torch.float16, 32, cuda_ws.WsConfig(mt=2, sets=2, kch=2, late=True))
    eight = cuda_ws.WsConfig(mt=2, c=2, stages=8, sets=2, kch=4)  # the 16-row candidate: 7 stages at group size 32
    assert eight.problem(64) is None and "shared memory" in str(eight.problem(32))
    assert "#define G 32" in cuda_ws.source(torch.float16, 32, cuda_ws.WsConfig())


def test_the_gpu_tests_configs_can_be_built() -> None:
    for cfg in CONFIGS:
        assert cfg.problem() is None, cfg
    late = [c for c in CONFIGS if c.late]
    # each late config of the GPU tests scales late at some group size, and each falls back at another
    assert all(any(c.late_applies(g) for g in (64, 128, 256)) for c in late)
    assert all(not all(c.late_applies(g) for g in (64, 128, 256)) for c in late[1:])


def test_late_scaling_is_a_two_set_option_that_knows_when_it_applies() -> None:
    assert "two register sets" in str(cuda_ws.WsConfig(late=True, sets=3).problem())
    assert cuda_ws.WsConfig(mt=2, sets=2, kch=4, late=True).late_applies(128)
    assert not cuda_ws.WsConfig(mt=2, sets=2, kch=4).late_applies(128)  # not asked for
    assert not cuda_ws.WsConfig(mt=2, sets=2, kch=1, late=True).late_applies(128)  # a group spans two stages
    assert not cuda_ws.WsConfig(mt=16, sets=2, kch=2, late=True).late_applies(128)  # too many registers
    src = cuda_ws.source(torch.float16, 128, cuda_ws.WsConfig(mt=2, sets=2, kch=4, late=True))
    assert "#define LATE 1" in src and "#define LATE 0" in cuda_ws.source(
        torch.float16, 256, cuda_ws.WsConfig(mt=4, sets=2, kch=2, late=True)
    )


def test_source_defines_the_tile() -> None:
    src = cuda_ws.source(torch.bfloat16, 64, cuda_ws.WsConfig(mt=8, c=2, stages=5))
    for define in ("#define BF16 1", "#define G 64", "#define MT 8", "#define C 2", "#define S 5", "m64n64k16"):
        assert define in src
    assert "//@WGMMA@" not in src and f"void CLUSTER_DIMS __launch_bounds__(NT, OCC) {cuda_ws.NAME}(" in src
    assert "#define CL 1" in src and "#define CL 4" in cuda_ws.source(
        torch.float16, 128, cuda_ws.WsConfig(stream_k=False, cl=4)
    )


def test_tensor_map_arguments_are_copied_in_place() -> None:
    args = cuda_rt.Args("tpi")
    raw = bytes(range(128))
    args.set(raw, 1 << 40, -3)
    assert ctypes.string_at(args.params[0], 128) == raw
    assert ctypes.cast(args.params[1], ctypes.POINTER(ctypes.c_uint64)).contents.value == 1 << 40
    with pytest.raises(ValueError, match="tensor map"):
        args.set(b"short", 1, 2)


def test_ws_kernel_says_why_it_cannot_run() -> None:
    assert "CUDA device" in str(cuda_ws.why_not(torch.device("cpu"), torch.float16, 4096, 4096, 128))
    # a cluster split that cannot be built here is simply not a candidate (no exception out of the tuner)
    split = cuda_ws.WsConfig(mt=2, c=2, stages=4, sets=2, kch=4, stream_k=False, cl=4)
    assert not cuda_ws.fits_one_wave(torch.device("cpu"), torch.float16, 16, 4096, 4096, 128, split)


@gpu
@needs_hopper
@pytest.mark.parametrize("m", [20, 100, 512])
def test_frag_tuner_times_the_ws_kernel_and_its_pick_is_right(m: int) -> None:
    timed = check_frag_tuner(m)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    fits = [c for c in cuda_ws.candidates(m, 768, 2048, sms)
            if cuda_ws.fits_one_wave(torch.device("cuda"), torch.float16, m, 768, 2048, 128, c)]  # fmt: skip
    assert sum(name == "cuda_ws" for name, _, _ in timed) == len(fits) > 0


@gpu
@needs_hopper
def test_forced_ws_kernel_runs_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    check_forced_module(monkeypatch, "cuda_ws", 40)
    check_forced_module(monkeypatch, "cuda_ws", 40, g=32)  # untuned config at group size 32


def test_forcing_the_ws_kernel_on_a_cpu_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastawq.errors import FastAWQError
    from fastawq.kernels import dispatch

    monkeypatch.setenv("FASTAWQ_KERNEL", "cuda_ws")
    with pytest.raises(FastAWQError, match="cuda_ws.*CUDA device"):
        dispatch.select(torch.randn(2, 256).half(), 256, 64, 64)


def test_inputs_are_copied_only_when_their_rows_are_not_16_byte_aligned() -> None:
    big = torch.randn(4, 2 * 64 + 8).half()
    aligned = big[:, 8 : 8 + 64]  # 16-byte offset, row stride 136 elements (272 bytes)
    assert cuda_rt.rows_16b(aligned) is aligned
    for bad in (big[:, 1 : 1 + 64], torch.randn(64, 4).half().t(), torch.randn(4, 67).half()[:, :64]):
        fixed = cuda_rt.rows_16b(bad)
        assert fixed is not bad and fixed.is_contiguous() and torch.equal(fixed, bad)
