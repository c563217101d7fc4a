"""The ``nk_frag`` layout and its Triton kernels (opt-in ``triton_frag``) against float64.

Without a GPU the kernels run under ``TRITON_INTERPRET=1`` (set in conftest) on CPU tensors; on a CUDA
machine the same tests run the compiled kernels, with the decode asm.
"""

from __future__ import annotations

import pytest
import torch

from fastawq.errors import FastAWQError
from fastawq.format.awq_gemm import unpack_gemm
from fastawq.kernels import dispatch, layouts

from test_kernels import DEV, HAS_CUDA, SQNR_FLOOR, _module, assert_kernel_matches_float64, random_gemm, sqnr_db

# ------------------------------------------------------------------------------------------ layout


@pytest.mark.parametrize(("k", "n", "g"), [(64, 16, 64), (256, 48, 128), (512, 96, 256), (576, 160, 64), (192, 32, 32)])
def test_frag_layout_round_trips_bit_exactly(k: int, n: int, g: int) -> None:
    t, _ = random_gemm(k, n, g, seed=k + n)
    d = layouts.to_layout(t, layouts.NK_FRAG)
    assert d["qweight_frag"].shape == (n // 16, k // 64, 32, 4) and d["qweight_frag"].dtype == torch.int32
    back = layouts.from_layout(d, layouts.NK_FRAG)
    for name in ("qweight", "qzeros", "scales"):
        assert torch.equal(getattr(back, name), getattr(t, name)), name


def test_frag_words_hold_each_lanes_mma_fragments() -> None:
    """Word j of lane l = 4g + t in block (b, c), nibble FRAG_NIBBLE[v], is row 16b + g + 8·v1 at input
    64c + 16j + 2t + 8·v2 + v0 (v = 4·v2 + 2·v1 + v0): the A-fragment layout of mma.m16n8k16."""
    n, k = 32, 128
    codes = torch.randint(0, 16, (n, k), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    words = layouts.pack_frag(codes)
    for b, c, lane, j, v in [(0, 0, 0, 0, 0), (1, 1, 31, 3, 7), (0, 1, 13, 2, 5), (1, 0, 6, 1, 2), (1, 1, 20, 0, 3)]:
        g, t = divmod(lane, 4)
        v2, v1, v0 = v >> 2, (v >> 1) & 1, v & 1
        want = codes[16 * b + g + 8 * v1, 64 * c + 16 * j + 2 * t + 8 * v2 + v0]
        got = (int(words[b, c, lane, j]) >> (4 * layouts.FRAG_NIBBLE[v])) & 0xF
        assert got == int(want), (b, c, lane, j, v)


def test_frag_repack_in_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    t, _ = random_gemm(128, 176, 64, seed=4)  # 176 rows: slices of 64, 64 and 48
    monkeypatch.setattr(layouts, "REPACK_ROWS", 64)
    d = layouts.gemm_to_frag(t)
    codes = unpack_gemm(t.qweight).t().contiguous()
    assert torch.equal(d["qweight_frag"], layouts.pack_frag(codes))


def test_frag_layout_says_what_it_cannot_hold() -> None:
    assert layouts.frag_supported(4096, 4096, 128) is None
    assert "% 16" in str(layouts.frag_supported(4096, 40, 128))
    assert "% 64" in str(layouts.frag_supported(96, 64, 32))
    assert layouts.frag_supported(4096, 4096, 32) is None
    assert "group sizes" in str(layouts.frag_supported(4096, 4096, 16))
    # group size 32: the decode and warp-specialized CUDA kernels take it, the staged one says it does not
    from fastawq.kernels import cuda_frag, cuda_gemv, cuda_ws

    assert "CUDA kernel takes group sizes (64, 128, 256), not 32" in str(cuda_frag.layer_problem(4096, 4096, 32))
    assert cuda_frag.layer_problem(4096, 4096, 64) is None
    for sizes in (cuda_gemv.GROUP_SIZES, cuda_ws.GROUP_SIZES):
        assert cuda_frag.layer_problem(4096, 4096, 32, sizes) is None
        assert "not 16" in str(cuda_frag.layer_problem(4096, 4096, 16, sizes))


# ------------------------------------------------------------------------------------------ kernels

triton_frag = pytest.importorskip("fastawq.kernels.triton_frag", reason="triton is not installed")
TileConfig = triton_frag.TileConfig

FRAG_CASES = [
    # (kernel, config, M, K, N, group size): odd M, N not a multiple of the tile, K slices, bias
    ("frag_mma", None, 1, 256, 64, 64),
    ("frag_mma", TileConfig(16, 64, 128, 4, 2, split=1), 5, 256, 48, 128),  # partial row tile
    ("frag_mma", TileConfig(16, 32, 64, 2, 2, split=2), 3, 384, 80, 64),  # 2 warps, 2 K slices
    ("frag_mma", TileConfig(32, 64, 256, 4, 2, split=1), 19, 512, 64, 256),  # 4 chunks per group
    ("frag_mma", TileConfig(64, 128, 128, 8, 2, split=3), 33, 768, 144, 128),  # 2 M tiles of x rows
    ("frag_gemv", None, 1, 256, 64, 64),
    ("frag_gemv", TileConfig(1, 16, 128, 2, 1, split=2, prefetch=1), 1, 1024, 48, 128),
    ("frag_gemv", TileConfig(1, 16, 64, 4, 1, split=1, prefetch=0), 2, 512, 32, 64),  # one row per program
    ("frag_gemv", TileConfig(1, 16, 256, 8, 1, split=1, prefetch=1), 1, 512, 16, 256),  # warps > groups
    ("frag_gemv", TileConfig(1, 16, 64, 4, 3, split=2), 3, 1024, 48, 128),  # half a group a warp
    ("frag_gemv", TileConfig(1, 16, 256, 2, 1, split=1, prefetch=1), 1, 1024, 32, 64),  # 4 groups a warp
    ("frag_gemv", TileConfig(1, 16, 512, 4, 1, split=1, prefetch=0), 1, 768, 16, 128),  # fewer steps than asked
    ("frag_mma", TileConfig(16, 64, 32, 4, 2, split=2), 5, 256, 48, 32),  # group size 32: two groups a step
    ("frag_mma", TileConfig(32, 32, 32, 2, 2, split=1), 19, 384, 80, 32),  # 2 warps, 32 rows of x
    ("frag_gemv", TileConfig(1, 16, 128, 2, 1, split=2, prefetch=1), 1, 512, 48, 32),  # 4 groups a warp
    ("frag_gemv", TileConfig(1, 16, 64, 4, 1, split=1, prefetch=0), 3, 256, 32, 32),  # 2 groups a warp
    ("frag_dequant_matmul", None, 7, 256, 80, 64),
    ("frag_dequant_matmul", None, 6, 384, 48, 32),
    ("frag_auto", None, 1, 256, 32, 128),
    ("frag_auto", None, 40, 256, 48, 64),
    ("frag_auto", None, 300, 128, 16, 64),
    ("frag_auto", None, 1, 256, 32, 32),
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize(("kernel", "config", "m", "k", "n", "g"), FRAG_CASES)
def test_frag_kernels_match_float64(
    kernel: str, config: object, m: int, k: int, n: int, g: int, dtype: torch.dtype
) -> None:
    assert_kernel_matches_float64(getattr(triton_frag, kernel), layouts.gemm_to_frag, config, m, k, n, g, dtype)


@pytest.mark.parametrize("g", [32, 64])
def test_frag_dequantize_is_the_reference_weight(g: int) -> None:
    t, w = random_gemm(256, 48, g, seed=8, device=DEV)
    got = triton_frag.frag_dequantize(layouts.gemm_to_frag(t), g, torch.float32)
    # (q − z) is exact and ·s is one fp32 rounding of an fp16 scale: equal to float64 to fp32 precision
    assert torch.allclose(got.double().cpu(), w.t(), rtol=1e-6, atol=1e-7)


def test_frag_kernels_reject_a_weight_they_cannot_hold() -> None:
    t, _ = random_gemm(256, 64, 64, seed=2)
    d = layouts.gemm_to_frag(t)
    with pytest.raises(ValueError, match="expects 256"):
        triton_frag.frag_mma(torch.randn(1, 128).half().to(DEV), {k: v.to(DEV) for k, v in d.items()}, 64, None)
    with pytest.raises(ValueError, match="group sizes"):
        triton_frag.frag_mma(torch.randn(1, 256).half().to(DEV), {k: v.to(DEV) for k, v in d.items()}, 16, None)


# ------------------------------------------------------------------------------------------ dispatch


@pytest.mark.parametrize("g", [64, 32])
def test_forcing_triton_frag_repacks_and_keeps_the_checkpoint(monkeypatch: pytest.MonkeyPatch, g: int) -> None:
    mod, w = _module(256, 64, g, seed=3)
    before = {k: v.clone() for k, v in mod.state_dict().items()}
    mod = mod.to(DEV)
    mod.kernel = "triton_frag"
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(3)).half().to(DEV)
    with torch.no_grad():
        got = mod(x)
    assert mod.layout == layouts.NK_FRAG
    assert sqnr_db(got, x.double().cpu() @ w + mod.bias.double().cpu()) > SQNR_FLOOR[torch.float16]
    after = mod.state_dict()
    for key in before:
        assert torch.equal(after[key].cpu(), before[key]), key


def test_forcing_triton_frag_on_a_shape_it_cannot_hold_is_a_clear_error() -> None:
    mod, _ = _module(256, 40, 64)  # 40 outputs: not a multiple of 16
    mod = mod.to(DEV)
    mod.kernel = "triton_frag"
    with pytest.raises(FastAWQError, match="fragment layout needs out_features % 16"):
        mod(torch.randn(1, 256).half().to(DEV))


def test_triton_frag_is_listed() -> None:
    assert "triton_frag" in dispatch.available_kernels()
    assert dispatch.KERNELS["triton_frag"].layout == layouts.NK_FRAG


GPU_CASES = [(1, 128), (1, 64), (1, 32), (16, 64), (16, 128), (16, 256), (16, 32), (64, 128), (100, 128), (100, 32),
             (200, 128)]  # fmt: skip


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize(("m", "g"), GPU_CASES)
def test_every_frag_candidate_is_correct_on_gpu(m: int, g: int, dtype: torch.dtype) -> None:
    k, n = 1024, 512
    t, w = random_gemm(k, n, g, seed=m + g, device=DEV)
    d = layouts.gemm_to_frag(t)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).to(dtype)
    ref = x.double() @ w
    for cand in triton_frag.candidates(m, n, k, g, dtype):
        got = triton_frag._run(cand, x.to(DEV), d, g, None)
        assert sqnr_db(got, ref) > SQNR_FLOOR[dtype], cand
    triton_frag.frag_auto(x.to(DEV), d, g, None)
    assert triton_frag.choice(x.to(DEV), d, g, None)


def test_loading_with_triton_frag_names_the_layer_it_cannot_hold() -> None:
    good, _ = _module(256, 64, 64, seed=5)
    bad, _ = _module(256, 40, 64, seed=6)
    model = torch.nn.ModuleDict({"ok": good, "odd": bad})
    with pytest.raises(FastAWQError, match="cannot hold layer 'odd'.*% 16"):
        dispatch.prepare(model, torch.float16, "triton_frag")
    counts = dispatch.prepare(torch.nn.ModuleDict({"ok": good}), torch.float16, "triton_frag")
    assert counts == {layouts.NK_FRAG: 1} and good.layout == layouts.NK_FRAG
