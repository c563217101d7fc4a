"""A warp-specialized Hopper kernel on the ``nk_frag`` layout (sm_90, compiled at run time with NVRTC).

The pipelined ``wgmma`` path of :mod:`.cuda_frag` spends its time on the per-step block barrier and on
every warp copying x; its ablation (BENCHMARKS.md, seventh version) showed that no tile choice fixes
that. This kernel splits the work by role, the mixed-input design of CUTLASS and Machete:

- one **producer** warp group, of which one thread issues every copy, all through TMA: x (a tensor map
  with the 128-byte swizzle that ``wgmma`` reads), the packed weight's 512-byte fragment blocks (one box of
  the tile's blocks a stage) and the scale/zero words (one box of the stage's groups), into ``S``
  shared-memory stages guarded by ``mbarrier`` pairs (full: the copies' bytes have landed; empty: every
  consumer thread is done with the stage). Few copies matter: with few rows of x the producer's own
  instructions set the pace (BENCHMARKS.md, fourteenth version);
- ``C`` **consumer** warp groups, 64 output rows each, that only wait, decode ((q − z)·s, ``decode_scaled``
  of :data:`fastawq.kernels.cuda_frag.HEADER`, into one of ``NSETS`` A-fragment register sets) and
  issue ``wgmma`` (A from registers, B = the x tile); a stage is released once the ``wgmma``s that read
  it have finished (``wait_group NSETS − 1``, that many stages later). No block-wide barrier in the loop.

A stage holds ``KCH`` chunks of 64 inputs (one wait, one release and one batch of ``4·KCH`` ``wgmma``s
each; two chunks halve that overhead, which was what limited the kernel). A tile is ``64·C`` output rows
× ``8·MT`` rows of x. The grid is persistent (CTAs per SM × SMs): CTA ``b`` first takes whole tiles
``b, b + grid, …`` and then an equal share of the remaining tiles' stages (stream-K); a tile whose stages
are spread over several CTAs is summed in fp32 in the per-stream workspace of :mod:`.triton_awq` (in the
consumers' register order, 16-byte reductions). Its later parts, each the first piece of its CTA, add in
and count themselves without waiting; its head (stages 0 …, the last piece of an earlier CTA) waits for that
count, adds the sum to its own, writes y and re-zeroes the slot and its counter. So a tile waits only on
CTAs that the GPU started later, and a part that is not the head costs no round trip to L2 (a protocol where
the last part to finish writes y made every part wait for a fence and an atomic: up to 9 % slower at 16 – 64
rows, BENCHMARKS.md, fifteenth version). Inside a CUDA graph capture every tile is whole.

A **cluster split** (``WsConfig.cl`` > 1, for layers with fewer tiles than SMs) replaces the persistent grid:
each tile is one thread-block cluster of ``cl`` CTAs, rank r taking stages r·kc/cl …; the sums meet in
shared memory. From 64 x rows a tile the ranks reduce-scatter them: each owns a share of the tile's x rows,
the others store their sums of those rows into its shared memory (a slot each, ``st.shared::cluster``) and
arrive on its ``mbarrier``, and it adds them and writes its rows of y. Smaller tiles gather everything into
rank 0, as before (their sums are small, and the other ranks then wait for nothing). No workspace and no round
trip to L2, so it also runs inside a graph capture. (Gathering 256 x rows took 4 – 7 µs an epilogue; adding
into one buffer with ``red.shared::cluster`` took 3 – 11 µs.) Clusters
sit inside a GPC, so fewer may fit at once than the SMs suggest (on an H200, 30 clusters of 4 at one CTA an
SM): :attr:`WsPlan.waves` says how many rounds a plan takes and the tuner keeps only one-round splits.

Limits (:meth:`WsConfig.problem` and :func:`why_not`): fp16/bf16, group sizes 32/64/128/256, N a multiple
of 64·C, K a multiple of 64·KCH, x rows 16-byte aligned.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from fastawq.kernels import cuda_frag, cuda_rt

NAME = "fastawq_frag_ws"

_KERNEL = r"""
#define BT (8 * MT)
#define NT (128 * (C + 1))
// a stage holds KCH chunks of 64 inputs: KCH x tiles (1024-byte multiples), then the tile's 16-row blocks'
// fragment blocks (in pieces of WP chunks, below), then the scale/zero words of the GR groups it covers (≤ KCH
// rows; 2·KCH at group size 32, two groups a chunk)
#define XBYTES (BT * 128)
#define WBYTES (C * 4 * 512)
#define SZBYTES (C * 64 * 4)
#define GR ((KCH * 64 + G - 1) / G)
// LATE: the decode leaves the scale out ((q − z) only, exact), each group's product goes to its own accumulator
// (PART), and the scale is applied to it in fp32 once its wgmmas are done (WsConfig.late_applies: a stage holds
// whole groups, and the registers suffice)
// the weight comes in pieces of WP chunks (a TMA box is at most 256 words wide): piece p holds every block's
// chunks p·WP … side by side
#define WP (KCH < 2 ? KCH : 2)
#define WPIECE (4 * C * WP * 512)
#define WOFF (KCH * XBYTES)
#define SOFF (KCH * (XBYTES + WBYTES))
#define SZROWS (GR > KCH ? GR : KCH)
#define STAGE ((KCH * (XBYTES + WBYTES) + SZROWS * SZBYTES + 1023) / 1024 * 1024)
#if CL > 1
// a cluster split: the CL CTAs of a cluster take one tile's stages in CL ranges and then reduce-scatter their
// sums: rank r owns the x-row slices of pairs [r·PAIRS / CL, (r + 1)·PAIRS / CL) (OWN_LO, OWN_HI), and every
// other rank stores its sums of those slices in r's buffer, a slot each ([writer][consumer group][slice][thread]
// float4s, OWNED slices a slot), after the stages
#if MT >= 8
#define PAIRS (MT / 2)
#define OWN_LO(r) (2 * ((r) * PAIRS / CL))
#define OWN_HI(r) (2 * (((r) + 1) * PAIRS / CL))
#define OWNED (2 * ((PAIRS + CL - 1) / CL))
#else
// small x tiles gather into rank 0: their sums are small, and the other ranks then wait for nothing
#define OWN_LO(r) 0
#define OWN_HI(r) ((r) == 0 ? MT : 0)
#define OWNED MT
#endif
#define RBUF (S * STAGE)
#define CLUSTER_DIMS __cluster_dims__(CL, 1, 1)
#else
#define CLUSTER_DIMS
#endif

struct __align__(64) TMap { u64 v[16]; };

__device__ __forceinline__ void bar_init(u32 bar, u32 count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void bar_wait(u32 bar, u32 parity) {
  u32 done;
  do {
    asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                 : "=r"(done) : "r"(bar), "r"(parity) : "memory");
  } while (!done);
}
__device__ __forceinline__ void bar_wait_cluster(u32 bar, u32 parity) {  // sees what the arrivals released
  u32 done;
  do {
    asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n"
                 "selp.u32 %0, 1, 0, p; }" : "=r"(done) : "r"(bar), "r"(parity) : "memory");
  } while (!done);
}
__device__ __forceinline__ u32 cluster_reg(int which) {  // 0: this CTA's rank in its cluster, 1: the cluster
  u32 v;
  if (which == 0) asm("mov.u32 %0, %%cluster_ctarank;" : "=r"(v));
  else asm("mov.u32 %0, %%clusterid.x;" : "=r"(v));
  return v;
}
__device__ __forceinline__ u32 rank_addr(u32 a, u32 rank) {  // the same shared-memory address in CTA `rank`
  u32 r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(rank));
  return r;
}
__device__ __forceinline__ void bar_arrive(u32 bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r"(bar) : "memory");
}
__device__ __forceinline__ void bar_expect(u32 bar, u32 bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void tma2d(u32 dst, const TMap* map, int c0, int c1, u32 bar) {
  asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];"
               :: "r"(dst), "l"((u64)map), "r"(c0), "r"(c1), "r"(bar) : "memory");
}

__device__ __forceinline__ u32 pack2(float a, float b) { return (u32)fromfloat(a) | ((u32)fromfloat(b) << 16); }

// a warp's 16 columns of y (n0 …) for the tile's rows m0 …, from the accumulators (thread g, tq holds columns
// g and g + 8 of rows 2·tq and 2·tq + 1 of each 8-row slice mt), stored in 16-byte pieces: whole 32-byte
// sectors instead of 2-byte stores. Three exchanges regroup the values: lanes g, g ^ 1 swap so each holds two
// adjacent columns of both rows; lanes g, g ^ 2 swap so each holds four columns of one row; lanes g, g ^ 4 swap
// across two slices so each holds eight columns of one row (one slice: 8-byte pieces). Only slices
// [s_lo, s_hi) are stored (warp-uniform; a pair's first slice decides)
__device__ __forceinline__ void store_tile(u16* __restrict__ y, const float (&acc)[MT][4], float blo, float bhi,
                                           int M, int N, int m0, int n0, int g, int tq, int s_lo = 0, int s_hi = MT) {
  const bool odd = g & 1, up = g & 2;
  const int col = (odd ? g + 7 : g) - (up ? 2 : 0);  // of this lane's first column after two exchanges
  uint2 q[MT];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    if (mt < (s_lo & ~1) || mt >= s_hi + (s_hi & 1)) continue;
    const u32 lo = pack2(acc[mt][0] + blo, acc[mt][1] + blo), hi = pack2(acc[mt][2] + bhi, acc[mt][3] + bhi);
    const u32 keep = odd ? hi : lo, r = __shfl_xor_sync(0xFFFFFFFFu, odd ? lo : hi, 4);
    const u32 p0 = __byte_perm(keep, r, odd ? 0x1054 : 0x5410), p1 = __byte_perm(keep, r, odd ? 0x3276 : 0x7632);
    const u32 r2 = __shfl_xor_sync(0xFFFFFFFFu, up ? p0 : p1, 8);
    q[mt] = up ? make_uint2(r2, p1) : make_uint2(p0, r2);
  }
#if MT % 2
  const int m = m0 + 2 * tq + up;
  if (m < M && s_lo == 0 && s_hi > 0) *reinterpret_cast<uint2*>(y + (u64)m * N + n0 + col) = q[0];
#else
  const bool hi3 = g & 4;
#pragma unroll
  for (int p = 0; p < MT / 2; ++p) {
    if (2 * p < s_lo || 2 * p >= s_hi) continue;
    const uint2 a = q[2 * p], b = q[2 * p + 1], s = hi3 ? a : b;
    const u32 rx = __shfl_xor_sync(0xFFFFFFFFu, s.x, 16), ry = __shfl_xor_sync(0xFFFFFFFFu, s.y, 16);
    const int m = m0 + (2 * p + hi3) * 8 + 2 * tq + up;
    if (m < M)
      *reinterpret_cast<uint4*>(y + (u64)m * N + n0 + col - (hi3 ? 4 : 0)) =
          hi3 ? make_uint4(rx, ry, b.x, b.y) : make_uint4(a.x, a.y, rx, ry);
  }
#endif
}

// the pieces of work of this CTA, in order: whole tiles b, b + grid, … below dp, then its share (per
// stages) of the kc stages of each tile from dp on: f(tile, first stage, end stage). A cluster split: one piece
template <class F>
__device__ __forceinline__ void for_pieces(int kc, int dp, int per, int units, F f) {
#if CL > 1
  const int r = cluster_reg(0);  // a cluster split: the cluster's tile, this rank's share of its stages
  f((int)cluster_reg(1), r * kc / CL, (r + 1) * kc / CL);
#else
  for (int t = blockIdx.x; t < dp; t += gridDim.x) f(t, 0, kc);
  int u = blockIdx.x * per;
  const int u1 = min(u + per, units);
  while (u < u1) {
    const int t = dp + u / kc, c0 = u % kc;
    const int c1 = min(kc, c0 + (u1 - u));
    f(t, c0, c1);
    u += c1 - c0;
  }
#endif
}

// one stage (KCH chunks of 64 inputs) for one consumer warp group: wait for it, decode this thread's
// fragments into register set H (of NSETS), multiply, and release the stage read NSETS − 1 stages ago once
// its wgmmas are done (wait_group NSETS − 1: that many stages of products stay in flight during a decode).
// LATE (two register sets): the decode comes first, then a wait for every wgmma; the previous stage's
// products (part[other set][group]) are scaled into acc and its stage released; then this stage's wgmmas
#if LATE
#define PARTS float (&part)[NSETS][GR][MT][4]
// the finished products of a stage (register set P, its scale/zero words at stg) scaled into acc
template <int P>
__device__ __forceinline__ void fixup(u32 stg, int row, float (&acc)[MT][4], PARTS) {
#pragma unroll
  for (int q = 0; q < GR; ++q) {
    u32 szlo, szhi;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(szlo) : "r"(stg + SOFF + q * SZBYTES + row * 4));
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(szhi) : "r"(stg + SOFF + q * SZBYTES + row * 4 + 32));
    const float slo = half_to_float(szlo & 0xFFFF);
#if BF16
    const float shi = half_to_float(szhi & 0xFFFF);
#else
    const float shi = half_to_float(szhi & 0xFFFF) * 0.0625f;  // row g + 8 decoded as 16·(q − z)
#endif
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      keepf(part[P][q][mt]);
      acc[mt][0] += slo * part[P][q][mt][0];
      acc[mt][1] += slo * part[P][q][mt][1];
      acc[mt][2] += shi * part[P][q][mt][2];
      acc[mt][3] += shi * part[P][q][mt][3];
    }
  }
}
#else
#define PARTS float (&part)[1][1][1][4]
#endif

template <int H>
__device__ __forceinline__ void consume(u32 st, u32 full, u32 parity, u32 old_st, u32 old_empty, bool release,
                                      int wrow, int row, float (&acc)[MT][4], u32 (&af)[NSETS][4 * KCH][4],
                                      u32 magic, PARTS) {
  bar_wait(full, parity);
#pragma unroll
  for (int j = 0; j < KCH; ++j) {
    u32 w[4], szlo, szhi;
    asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(w[0]), "=r"(w[1]), "=r"(w[2]), "=r"(w[3])
                 : "r"(st + WOFF + wrow + (j / WP) * WPIECE + (j % WP) * 512));
    const u32 sz = st + SOFF + (j * 64 / G) * SZBYTES + row * 4;  // this chunk's group row
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(szlo) : "r"(sz));
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(szhi) : "r"(sz + 32));
#if G < 64
    // two groups a chunk: k16 steps 0 and 1 take this group row, 2 and 3 the next one
    u32 szlo2, szhi2;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(szlo2) : "r"(sz + SZBYTES));
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(szhi2) : "r"(sz + SZBYTES + 32));
#endif
#if LATE
#if BF16
    const u32 zlo = zpair((szlo >> 16) & 0xFF), zhi = zpair((szhi >> 16) & 0xFF);
#else
    const u32 zlo = zpair((szlo >> 16) & 0xFF), zhi = zpair(((szhi >> 16) & 0xFF) << 4);
#endif
#if G < 64
#if BF16
    const u32 zlo2 = zpair((szlo2 >> 16) & 0xFF), zhi2 = zpair((szhi2 >> 16) & 0xFF);
#else
    const u32 zlo2 = zpair((szlo2 >> 16) & 0xFF), zhi2 = zpair(((szhi2 >> 16) & 0xFF) << 4);
#endif
#pragma unroll
    for (int i = 0; i < 2; ++i) decode(w[i], zlo, zhi, af[H][4 * j + i], magic);
#pragma unroll
    for (int i = 2; i < 4; ++i) decode(w[i], zlo2, zhi2, af[H][4 * j + i], magic);
#else
#pragma unroll
    for (int i = 0; i < 4; ++i) decode(w[i], zlo, zhi, af[H][4 * j + i], magic);
#endif
#else
    const u32 zlo = zpair((szlo >> 16) & 0xFF), zhi = zpair((szhi >> 16) & 0xFF);
    const u32 slo = spair(szlo), shi = spair(szhi);
#if G < 64
    const u32 zlo2 = zpair((szlo2 >> 16) & 0xFF), zhi2 = zpair((szhi2 >> 16) & 0xFF);
    const u32 slo2 = spair(szlo2), shi2 = spair(szhi2);
#pragma unroll
    for (int i = 0; i < 2; ++i) decode_scaled(w[i], zlo, zhi, slo, shi, af[H][4 * j + i], magic);
#pragma unroll
    for (int i = 2; i < 4; ++i) decode_scaled(w[i], zlo2, zhi2, slo2, shi2, af[H][4 * j + i], magic);
#else
#pragma unroll
    for (int i = 0; i < 4; ++i) decode_scaled(w[i], zlo, zhi, slo, shi, af[H][4 * j + i], magic);
#endif
#endif
  }
#if LATE
  // the previous stage's products (the other register set) are done once every wgmma is: ptxas serializes all
  // wgmmas if accumulators are read after a wait that leaves some in flight. Scale them, release their stage
  asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
#pragma unroll
  for (int j = 0; j < 4 * KCH; ++j) keep(af[(H + 1) % NSETS][j]);  // read by the wgmmas just finished
  if (release) {
    fixup<(H + 1) % NSETS>(old_st, row, acc, part);
    bar_arrive(old_empty);
  }
#endif
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#pragma unroll
  for (int j = 0; j < KCH; ++j) {
    const u64 desc = gmma_desc(st + j * XBYTES);
#pragma unroll
    for (int i = 0; i < 4; ++i) {  // k16 step i: 32 bytes in
#if LATE
      const int kq = j * 64 + i * 16;  // the k16 step's first input in the stage: group kq / G
      if (kq % G == 0)  // a group's first k16 step starts its accumulators
        wgmma_set(part[H][kq / G], af[H][4 * j + i], desc + ((i * 32) >> 4));
      else wgmma(part[H][kq / G], af[H][4 * j + i], desc + ((i * 32) >> 4));
#else
      wgmma(acc, af[H][4 * j + i], desc + ((i * 32) >> 4));
#endif
    }
  }
#if LATE
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");  // waited for at the next stage
#else
  asm volatile("wgmma.commit_group.sync.aligned;\nwgmma.wait_group.sync.aligned %0;" :: "n"(NSETS - 1) : "memory");
#pragma unroll
  for (int j = 0; j < 4 * KCH; ++j) keep(af[(H + 1) % NSETS][j]);  // read by the wgmmas just finished
  if (release) bar_arrive(old_empty);
#endif
}

extern "C" __global__ void CLUSTER_DIMS __launch_bounds__(NT, OCC) fastawq_frag_ws(
    const __grid_constant__ TMap xmap, const __grid_constant__ TMap wmap, const __grid_constant__ TMap szmap,
    const u16* __restrict__ bias, u16* __restrict__ y, float* __restrict__ ws, int* __restrict__ cnt,
    int M, int N, int kc, int nrb, int dp, int per, int units, int has_bias) {
  extern __shared__ __align__(1024) unsigned char smem[];
  __shared__ __align__(8) u64 bars[2 * S + 1];  // S full, S empty, the cluster split's sums
  const u32 base = (smem_addr(smem) + 1023) & ~1023u;  // TMA's 128-byte swizzle wants 1024-byte atoms
  const u32 full0 = smem_addr(bars), empty0 = full0 + 8 * S;
  const int wg = threadIdx.x >> 7;
  if (threadIdx.x == 0) {
    for (int s = 0; s < S; ++s) {
      bar_init(full0 + 8 * s, 1);
      bar_init(empty0 + 8 * s, 128 * C);
    }
#if CL > 1
    bar_init(full0 + 16 * S, (CL - 1) * 128 * C);  // the other ranks' consumer threads: their sums are in
#endif
    asm volatile("fence.mbarrier_init.release.cluster;\nfence.proxy.async.shared::cta;" ::: "memory");
  }
  __syncthreads();
#if CL > 1
  // every rank has started and its barriers are ready before another writes to it (they wait on this); a
  // thread that exits counts as arrived
  asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
#endif

  if (wg == 0) {  // the producer
#if C > 1 && OCC == 1
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
#endif
    if (threadIdx.x != 0) return;
    int s = 0, n = 0;  // stage, and how many times the ring has been filled (its parity the empty phase)
    for_pieces(kc, dp, per, units, [&](int t, int c0, int c1) {
      const int tm = t / nrb, rb = t % nrb;
      for (int c = c0; c < c1; ++c) {
        if (n > 0) bar_wait(empty0 + 8 * s, (n - 1) & 1);
        const u32 st = base + s * STAGE, full = full0 + 8 * s;
        bar_expect(full, KCH * (XBYTES + WBYTES) + GR * SZBYTES);
#pragma unroll
        for (int j = 0; j < KCH; ++j) tma2d(st + j * XBYTES, &xmap, (c * KCH + j) * 64, tm * BT, full);
#pragma unroll
        for (int p = 0; p < KCH / WP; ++p)  // the tile's 4·C blocks, WP chunks of each
          tma2d(st + WOFF + p * WPIECE, &wmap, (c * KCH + p * WP) * 128, rb * 4 * C, full);
        tma2d(st + SOFF, &szmap, rb * 64 * C, c * KCH * 64 / G, full);  // GR group rows of the tile's columns
        if (++s == S) {
          s = 0;
          ++n;
        }
      }
    });
    return;
  }

  // a consumer: warp group cw owns rows 64·cw … of the tile
#if C > 1 && OCC == 1
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" :: "n"(CONSUMER_REGS));
#endif
  const int cw = wg - 1, tid = threadIdx.x & 127, lane = tid & 31, wq = tid >> 5;
  const int g = lane >> 2, tq = lane & 3;
  const int row = cw * 64 + wq * 16 + g;  // this thread's rows in the tile: row and row + 8
  const int wrow = (cw * 4 + wq) * (WP * 512) + lane * 16;
  u32 af[NSETS][4 * KCH][4];
  const u32 magic = opaque_magic(M);
#pragma unroll
  for (int h = 0; h < NSETS; ++h)
#pragma unroll
    for (int j = 0; j < 4 * KCH; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) af[h][j][i] = 0u;
  float acc[MT][4];
#if LATE
  float part[NSETS][GR][MT][4];
#else
  float part[1][1][1][4];
#endif
  // the ring position s of the next stage (counted over all pieces, as the producer counts) and its phase
  // parity, the stage released after it (NSETS − 1 back) and its register set h: all kept incrementally
  int s = 0, h = 0, old = S - (NSETS - 1);
  u32 parity = 0;
  for_pieces(kc, dp, per, units, [&](int t, int c0, int c1) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][i] = 0.f;
    for (int c = c0; c < c1; ++c) {
      const u32 st = base + s * STAGE, full = full0 + 8 * s, old_empty = empty0 + 8 * old;
      const u32 old_st = base + old * STAGE;
      const bool release = c - c0 >= NSETS - 1;
      if (h == 0) consume<0>(st, full, parity, old_st, old_empty, release, wrow, row, acc, af, magic, part);
#if NSETS > 2
      else if (h == 2) consume<2>(st, full, parity, old_st, old_empty, release, wrow, row, acc, af, magic, part);
#endif
      else consume<1>(st, full, parity, old_st, old_empty, release, wrow, row, acc, af, magic, part);
      h = h + 1 == NSETS ? 0 : h + 1;
      old = old + 1 == S ? 0 : old + 1;
      if (++s == S) {
        s = 0;
        parity ^= 1;
      }
    }
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
#if LATE
    // the products of the stages not scaled yet (the last min(NSETS − 1, stages) ones, register sets h − r)
    for (int r = min(NSETS - 1, c1 - c0); r > 0; --r) {
      const u32 stg = base + ((s + S - r) % S) * STAGE;
      const int p = (h + NSETS - r) % NSETS;
      if (p == 0) fixup<0>(stg, row, acc, part);
#if NSETS > 2
      else if (p == 2) fixup<2>(stg, row, acc, part);
#endif
      else fixup<1>(stg, row, acc, part);
    }
#else
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) keepf(acc[mt]);
#endif
    // the stages this piece has not released yet: its last min(NSETS − 1, stages) ones
    for (int r = min(NSETS - 1, c1 - c0); r > 0; --r) bar_arrive(empty0 + 8 * ((s + S - r) % S));

    const int tm = t / nrb, rb = t % nrb;
    const int n_lo = rb * 64 * C + row, n_hi = n_lo + 8;
#if CL > 1
    // reduce-scatter: store this rank's sums of every other rank's slices in that rank's buffer and count them
    // there; then add the other ranks' sums of this rank's own slices and write those
    const u32 rank = cluster_reg(0), sumbar = full0 + 16 * S;
    const u32 slot = base + RBUF + cw * (OWNED * 2048) + tid * 16;  // + (writer slot · C) · OWNED · 2048
    bool sends = false;  // to a rank that owns rows (gathering, rank 0 sends nothing and waits for nobody else)
#pragma unroll
    for (u32 q = 0; q < CL; ++q) sends |= q != rank && OWN_LO(q) < OWN_HI(q);
    if (sends) asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");  // their barriers are set up
    for (u32 i = 1; i < CL; ++i) {
      const u32 q = (rank + i) % CL;  // the ranks after this one first: not every rank sends to rank 0 at once
      const int lo = OWN_LO(q), hi = OWN_HI(q);
      if (lo >= hi) continue;  // q owns no rows
      const u32 dst = rank_addr(slot + (rank < q ? rank : rank - 1) * (C * OWNED * 2048), q);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
        if (mt >= lo && mt < hi)
          asm volatile("st.shared::cluster.v4.f32 [%0], {%1, %2, %3, %4};" :: "r"(dst + (mt - lo) * 2048),
                       "f"(acc[mt][0]), "f"(acc[mt][1]), "f"(acc[mt][2]), "f"(acc[mt][3]) : "memory");
      asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];" :: "r"(rank_addr(sumbar, q))
                   : "memory");
    }
    const int own_lo = OWN_LO(rank), own_hi = OWN_HI(rank);
    if (own_lo >= own_hi) return;  // nothing to write: the owners have this rank's sums
    bar_wait_cluster(sumbar, 0);  // every other rank's sums of this rank's slices are in
#pragma unroll
    for (int r = 0; r < CL - 1; ++r)
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        if (mt < own_lo || mt >= own_hi) continue;
        float v[4];
        asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];" : "=f"(v[0]), "=f"(v[1]), "=f"(v[2]), "=f"(v[3])
                     : "r"(slot + r * (C * OWNED * 2048) + (mt - own_lo) * 2048) : "memory");
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[mt][i] += v[i];
      }
#else
    if (c1 - c0 < kc) {  // part of a tile, summed in its workspace slot
      const int slot = (t - dp) * C + cw;
      float* wsp = ws + (u64)slot * (MT * 512) + tid * 4;
      if (c0 > 0) {  // not the tile's head: add this part and count it, then go on (nothing to wait for)
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
          asm volatile("red.relaxed.gpu.global.add.v4.f32 [%0], {%1, %2, %3, %4};" :: "l"(wsp + mt * 512),
                       "f"(acc[mt][0]), "f"(acc[mt][1]), "f"(acc[mt][2]), "f"(acc[mt][3]) : "memory");
        asm volatile("bar.sync %0, 128;" :: "r"(1 + cw) : "memory");  // the group's adds come before the count
        if (tid == 0) asm volatile("red.release.gpu.global.add.s32 [%0], 1;" :: "l"(cnt + slot) : "memory");
        return;
      }
      // the head (stages 0 …) writes the tile. It is its CTA's last piece, and every other part is the first
      // piece of a later CTA, so those are done (or nearly) by now: wait until all have been counted
      if (tid == 0) {
        const int u0 = (t - dp) * kc;
        const int others = (u0 + kc - 1) / per - u0 / per;
        int seen;
        do {
          asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(seen) : "l"(cnt + slot) : "memory");
        } while (seen < others);
        cnt[slot] = 0;
      }
      asm volatile("bar.sync %0, 128;" :: "r"(1 + cw) : "memory");
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        float4* p = reinterpret_cast<float4*>(wsp + mt * 512);
        const float4 v = __ldcg(p);
        __stcg(p, make_float4(0.f, 0.f, 0.f, 0.f));
        acc[mt][0] += v.x; acc[mt][1] += v.y; acc[mt][2] += v.z; acc[mt][3] += v.w;
      }
    }
#endif
    const float blo = has_bias ? tofloat(bias[n_lo]) : 0.f, bhi = has_bias ? tofloat(bias[n_hi]) : 0.f;
#if CL > 1 && MT >= 8
    store_tile(y, acc, blo, bhi, M, N, tm * BT, n_lo - g, g, tq, own_lo, own_hi);  // its own slices
#else
    store_tile(y, acc, blo, bhi, M, N, tm * BT, n_lo - g, g, tq);  // n_lo − g: the warp's first column
#endif
  });
}
"""

#: the largest dynamic shared memory a config may ask for (an H100 allows 227 KiB a block)
SMEM_MAX = 220 * 1024
#: group sizes: at 32 a chunk's two groups each take two of its k16 steps, and a stage holds twice the scale/zero
#: rows
GROUP_SIZES = (32, 64, 128, 256)

#: the most CTAs of a cluster split (the portable cluster size)
MAX_CLUSTER = 8


@dataclass(frozen=True)
class WsConfig:
    """Tiles of the warp-specialized kernel: ``c`` consumer warp groups (64 output rows each), ``mt`` n8
    tiles of x rows (``8·mt`` ≤ 256 rows a tile), ``stages`` shared-memory stages, ``occ`` CTAs per SM in
    the persistent grid, whether tiles may be split along K (stream-K) when they do not fill it, the
    consumers' register sets of decoded weights, and ``kch`` chunks of 64 inputs a stage."""

    mt: int = 2
    c: int = 2
    stages: int = 8
    occ: int = 1
    stream_k: bool = True
    #: register sets of decoded A fragments: sets − 1 stages of wgmma stay in flight while one is decoded
    sets: int = 3
    #: chunks of 64 inputs a stage (and a wait / a release / a wgmma batch)
    kch: int = 1
    #: > 1: a cluster split instead of the persistent grid: each tile is one thread-block cluster of ``cl``
    #: CTAs, each taking 1 / ``cl`` of its stages, and the sums are reduce-scattered through the ranks'
    #: shared memory
    cl: int = 1
    #: the scale applied after the product: the decode gives (q − z) only, each group of a stage has its own
    #: accumulators, scaled in fp32 once their wgmmas are done. Where :meth:`late_applies` says no for a group
    #: size (a group spans stages, or the accumulators would not fit in registers) the kernel scales as usual
    late: bool = False

    def describe(self) -> str:
        s = f"ws mt{self.mt} c{self.c} s{self.stages} occ{self.occ} r{self.sets}"
        s += f" k{64 * self.kch}" if self.kch > 1 else ""
        s += " late" if self.late else ""
        if self.cl > 1:
            return s + f" cl{self.cl}"
        return s + ("" if self.stream_k else " nosk")

    @property
    def threads(self) -> int:
        return 128 * (self.c + 1)

    @property
    def rows(self) -> int:
        """Output rows of a tile."""
        return 64 * self.c

    def tiles(self, m: int, n: int) -> int:
        """Tiles of an [M, N] output: x tiles of 8·mt rows × weight tiles of :attr:`rows` rows."""
        return -(-m // (8 * self.mt)) * (n // self.rows)

    def stage_bytes(self, group_size: int = 64) -> int:
        """A stage's shared memory: x, the weight, and room for KCH group rows of scale/zero words (2·KCH at
        group size 32)."""
        rows = max(self.kch, -(-64 * self.kch // group_size))
        raw = self.kch * (self.mt * 8 * 128 + self.c * 4 * 512) + rows * self.c * 64 * 4
        return -(-raw // 1024) * 1024

    def owned_slices(self) -> int:
        """The most 8-row slices of x one rank of a cluster split owns (sums up and writes): from 8 slices
        pairs of them shared out over the ranks, else all of them in rank 0."""
        return 2 * -(-(self.mt // 2) // self.cl) if self.mt >= 8 else self.mt

    def sum_bytes(self) -> int:
        """A rank's buffer for the other ranks' sums of its own slices in a cluster split."""
        return (self.cl - 1) * self.c * self.owned_slices() * 2048 if self.cl > 1 else 0

    def late_applies(self, group_size: int) -> bool:
        """Whether ``late`` takes effect at this group size: every group within one stage, and an estimate of
        the consumer's registers (accumulators, decoded register sets, the groups' own accumulators) of at most
        232, the most that compiled without spills or serialized wgmmas for 2 – 8 x-row tiles on sm_90."""
        groups = -(-64 * self.kch // group_size)
        need = 4 * self.mt + 16 * self.sets * self.kch + 4 * self.mt * self.sets * groups + 32
        return self.late and group_size <= 64 * self.kch and need <= 232

    def smem_bytes(self, group_size: int = 64) -> int:
        return self.stages * self.stage_bytes(group_size) + self.sum_bytes() + 1024  # + room to align the first stage

    def most_stages(self, group_size: int = 64) -> int:
        """The most stages that fit beside the cluster split's buffer in an SM's share of shared memory."""
        return (SMEM_MAX // self.occ - 1024 - self.sum_bytes()) // self.stage_bytes(group_size)

    def consumer_regs(self) -> int:
        """Registers a consumer thread gets after the producer gives its own back (``setmaxnreg``)."""
        return (512 - 40) // self.c // 8 * 8

    def register_budget(self) -> int:
        """Registers a consumer thread may use."""
        if self.c > 1 and self.occ == 1:
            return self.consumer_regs()
        return min(255, 65536 // (self.threads * self.occ) // 8 * 8)

    def problem(self, group_size: int = 64) -> str | None:
        """Why this config cannot be compiled for ``group_size`` (None: it can)."""
        d = self.describe()
        if self.mt not in (1, 2, 4, 8, 16, 24, 32):
            return f"config {d}: mt must be 1, 2, 4, 8, 16, 24 or 32 (x tiles of 8 to 256 rows)"
        if self.c not in (1, 2, 3):  # four hung on the H100 (setmaxnreg with 640 threads; not understood)
            return f"config {d}: 1 to 3 consumer warp groups"
        if self.sets not in (2, 3):
            return f"config {d}: 2 or 3 register sets"
        if self.late and self.sets != 2:
            return f"config {d}: late scaling takes two register sets"
        if self.stages < self.sets:
            return f"config {d}: at least as many stages as register sets"
        if self.occ not in (1, 2) or (self.occ == 2 and self.c > 2):
            return f"config {d}: 2 CTAs per SM take at most two consumer warp groups"
        if self.kch not in (1, 2, 4):
            return f"config {d}: a stage holds 1, 2 or 4 chunks of 64 inputs"
        if not 1 <= self.cl <= MAX_CLUSTER or (self.cl > 1 and self.stream_k):
            return f"config {d}: a cluster split takes 2 to {MAX_CLUSTER} CTAs and no stream-K"
        if 4 * self.mt + 16 * self.sets * self.kch + 32 > self.register_budget():  # else ptxas serializes the wgmmas
            return f"config {d}: the accumulators and register sets do not fit {self.register_budget()} registers"
        smem = self.smem_bytes(group_size) * self.occ
        if smem > SMEM_MAX:
            return f"config {d} needs {smem} bytes of shared memory an SM (at most {SMEM_MAX})"
        return None


def source(dtype: torch.dtype, group_size: int, cfg: WsConfig) -> str:
    bf16 = 1 if dtype == torch.bfloat16 else 0
    defs = {"BF16": bf16, "G": group_size, "MT": cfg.mt, "C": cfg.c, "S": cfg.stages, "OCC": cfg.occ,
            "NSETS": cfg.sets, "KCH": cfg.kch, "CONSUMER_REGS": cfg.consumer_regs(), "CL": cfg.cl,
            "LATE": int(cfg.late_applies(group_size)), "WG": 1}  # fmt: skip
    header = cuda_frag.HEADER.replace("//@WGMMA@\n", cuda_frag.wgmma_source(cfg.mt))
    return "".join(f"#define {k} {v}\n" for k, v in defs.items()) + header + _KERNEL


def why_not(device: torch.device, dtype: torch.dtype, k: int, n: int, group_size: int) -> str | None:
    """Why the warp-specialized kernel cannot run this call (None: it can, for some config)."""
    reason = cuda_rt.why_unavailable(device)
    if reason is not None:
        return reason
    if torch.cuda.get_device_capability(device) != (9, 0):
        return "the warp-specialized kernel needs an sm_90 GPU (TMA, wgmma)"
    if dtype not in (torch.float16, torch.bfloat16):
        return f"the warp-specialized kernel takes fp16 or bf16 activations, got {dtype}"
    if n % 64:
        return f"the warp-specialized kernel needs out_features % 64 == 0, got {n}"
    return cuda_frag.layer_problem(k, n, group_size, GROUP_SIZES)


def x_tiles(m: int) -> int:
    """The ``mt`` for M rows of x: one tile for all of them up to 256 rows, else tiles of 128 rows."""
    mt = 1
    while mt < 16 and 8 * mt < m:
        mt *= 2
    return 32 if 128 < m <= 256 else mt


def cluster_split(m: int, n: int, k: int, sms: int, base: WsConfig, group_size: int = 64) -> list[WsConfig]:
    """Cluster splits of ``base``'s tile for a layer with fewer tiles than SMs: the most CTAs a tile that
    still leave every tile its own cluster in one wave (one less, and half that: clusters sit inside a GPC, so
    fewer may fit), each with as many stages as fit in shared memory and as it has to take."""
    tiles = base.tiles(m, n)
    kc = k // (64 * base.kch)
    most = min(MAX_CLUSTER, sms * base.occ // max(tiles, 1), kc)
    out = []
    for cl in sorted({most, most - 1, most // 2} - {0, 1}, reverse=True):
        c = replace(base, cl=cl, stream_k=False)
        c = replace(c, stages=max(c.sets, min(c.most_stages(group_size), -(-kc // cl))))
        if c.problem(group_size) is None:
            out.append(c)
    return out


def candidates(m: int, n: int, k: int, sms: int = 132, group_size: int = 64) -> list[WsConfig]:
    """What the frag tuner times for M rows of x and a [K, N] weight on a GPU of ``sms`` SMs: the fastest
    configs of the sweeps in BENCHMARKS.md (H100, eighth version; up to 64 rows H200, fourteenth version,
    where 256 inputs a stage won), and cluster splits where the tiles do not fill the GPU (sixteenth and
    seventeenth versions). Up to 8 rows the decode kernels win every shape."""
    if m <= 8:
        out = []
    elif m <= 32:
        mt = x_tiles(m)  # 2 up to 16 rows, else 4
        out = [WsConfig(mt, 2, 8 if mt == 2 else 6, sets=2, kch=4), WsConfig(mt, 2, 4, sets=2, kch=4, stream_k=False),
               WsConfig(mt, 2, 16 if mt == 2 else 12, sets=2, kch=2)]  # fmt: skip
    elif m <= 64:
        out = [WsConfig(8, 2, 4, sets=2, kch=4), WsConfig(8, 2, 4, sets=2, kch=4, stream_k=False),
               WsConfig(8, 2, 8, sets=3, kch=2), WsConfig(8, 2, 8, sets=2, kch=2),
               WsConfig(8, 1, 9, occ=2)]  # fmt: skip
    elif m <= 128:
        out = [WsConfig(16, 2, 5, sets=2, kch=2), WsConfig(16, 2, 5, kch=2), WsConfig(16, 2, 4, sets=2, kch=2,
               stream_k=False), WsConfig(16, 2, 10, sets=2)]  # fmt: skip
    else:
        out = [WsConfig(32, 2, 3, sets=2, kch=2), WsConfig(32, 2, 3, sets=2, kch=2, stream_k=False),
               WsConfig(16, 2, 5, sets=2, kch=2), WsConfig(16, 2, 4, sets=2, kch=2, stream_k=False),
               WsConfig(32, 2, 5, sets=2), WsConfig(32, 2, 5, sets=2, stream_k=False),
               # 192-row tiles where N takes them: 4096×6144 at 512 rows fills 128 SMs (sixteenth version)
               WsConfig(16, 3, 8, sets=2), WsConfig(16, 3, 8, sets=2, stream_k=False)]  # fmt: skip
    # cluster splits (H200 sweeps, sixteenth and seventeenth versions; the reduce-scatter's smaller buffers
    # leave room for 256-input stages with the whole x tile from 33 rows, and for 256-row x tiles from 129)
    if 8 < m <= 32:
        splits = [WsConfig(x_tiles(m), 2, sets=2, kch=4)]
    elif 32 < m <= 64:
        splits = [WsConfig(8, 2, sets=2, kch=4), WsConfig(8, 2, sets=2, kch=2), WsConfig(4, 2, sets=2, kch=4)]
    elif 64 < m <= 128:
        splits = [WsConfig(8, 2, sets=2, kch=2), WsConfig(16, 2, sets=2, kch=2), WsConfig(16, 2, sets=2)]
    elif m > 128:  # 14336×4096 at 512 rows
        splits = [WsConfig(32, 2, sets=2)]
    else:
        splits = []
    for base in splits:
        out += cluster_split(m, n, k, sms, base, group_size)
    if m <= 64:  # the scale after the product (seventeenth version: 2 – 11 % up to 64 rows where it applies)
        out = [replace(c, late=True) if c.sets == 2 else c for c in out]
    out = [_fewer_stages(c, group_size) for c in out]
    return [c for c in out if c.problem(group_size) is None and n % c.rows == 0 and k % (64 * c.kch) == 0]


def _fewer_stages(cfg: WsConfig, group_size: int) -> WsConfig:
    """``cfg`` with as many stages as fit where its stages do not (group size 32: twice the scale/zero rows)."""
    if cfg.smem_bytes(group_size) * cfg.occ <= SMEM_MAX:
        return cfg
    return replace(cfg, stages=max(cfg.sets, cfg.most_stages(group_size)))


def default_config(m: int, n: int, k: int, group_size: int = 64) -> WsConfig:
    """An untuned config: the first candidate; else (up to 8 rows, or N or K that the candidates do not
    divide) one consumer group, with 2 CTAs an SM up to 32 rows and as many stages as fit otherwise."""
    cands = candidates(m, n, k, group_size=group_size)
    if cands:
        return cands[0]
    mt = x_tiles(m)
    if m <= 32:
        return _fewer_stages(WsConfig(mt, 1, 12, occ=2), group_size)
    return WsConfig(mt, 1, min(8, WsConfig(mt, 1).most_stages(group_size)), sets=2)


@dataclass(frozen=True, eq=False)
class WsPlan:
    """A compiled launch of the warp-specialized kernel for one shape: call it like a kernel entry point."""

    fn: cuda_rt.Function
    cfg: WsConfig
    m: int
    n: int
    k: int
    group_size: int
    smem: int
    sms: int
    #: how many rounds the grid's clusters take (a cluster split; else 1): the tuner skips those over one
    waves: int = 1
    #: a weight's two tensor maps per address of its packed words and of its scales (the plan fixes their
    #: shapes and boxes, so the addresses are all that tells two weights' maps apart); a lookup by two ints,
    #: cheaper on every call than building ``cuda_rt.tensor_map_2d``'s own cache key twice
    maps: dict[tuple[int, int], tuple[bytes, bytes]] = field(default_factory=dict)

    def weight_maps(self, w: dict[str, torch.Tensor]) -> tuple[bytes, bytes]:
        """The TMA maps of the packed weight, as [N/16 blocks, 2·K words] read a box of the tile's 4·C blocks
        × 2 chunks (or 1) at a time, and of the scale/zero words [K/G, N], a box of the tile's columns × the
        stage's groups."""
        qw, sz = w["qweight_frag"], w["sz_gn"]
        key = (qw.data_ptr(), sz.data_ptr())
        hit = self.maps.get(key)
        if hit is None:
            cfg = self.cfg
            wmap = cuda_rt.tensor_map_2d(qw.view(qw.shape[0], -1), (128 * min(2, cfg.kch), 4 * cfg.c), swizzle=False)
            szmap = cuda_rt.tensor_map_2d(sz, (64 * cfg.c, -(-64 * cfg.kch // self.group_size)), swizzle=False)
            if len(self.maps) > 4096:
                self.maps.clear()
            hit = self.maps[key] = (wmap, szmap)
        return hit

    def schedule(self, stream_k: bool) -> tuple[int, int, int, int, int]:
        """(grid, dp, per, units, workspace slots): tiles below dp are whole; the ``units`` stages of the rest
        are shared out, ``per`` a CTA. Every full round of tiles is whole and only the part-filled last round
        is shared out (sharing the last full round too, as the stream-K paper does, was 2 – 10 % slower on
        4096×28672 at 16 – 512 rows on an H200; BENCHMARKS.md, fifteenth version)."""
        kc, tiles = self.k // (64 * self.cfg.kch), self.cfg.tiles(self.m, self.n)
        if self.cfg.cl > 1:  # a cluster split: one cluster a tile, no workspace
            return tiles * self.cfg.cl, tiles, 0, 0, 0
        grid0 = self.sms * self.cfg.occ
        if not stream_k or tiles % grid0 == 0:
            return min(grid0, tiles), tiles, 0, 0, 0
        dp = tiles // grid0 * grid0
        units = (tiles - dp) * kc
        grid = grid0 if dp else min(grid0, units)
        return grid, dp, -(-units // grid), units, tiles - dp

    def __call__(self, x2d: torch.Tensor, w: dict[str, torch.Tensor], bias: torch.Tensor | None) -> torch.Tensor:
        from fastawq.kernels.triton_awq import _workspace  # the shared per-stream split-K workspace

        x2d = cuda_rt.rows_16b(x2d)  # TMA: 16-byte rows
        m, n, cfg = self.m, self.n, self.cfg
        y = torch.empty(m, n, device=x2d.device, dtype=x2d.dtype)
        grid, dp, per, units, slots = self.schedule(cfg.stream_k)
        ws, cnt = y, y  # not touched without split tiles
        if slots:
            buf = _workspace(x2d.device, slots * cfg.c * cfg.mt * 512, slots * cfg.c)
            if buf is None:  # too large, or inside a CUDA graph capture: whole tiles only
                grid, dp, per, units, slots = self.schedule(False)
            else:
                ws, cnt = buf
        b = bias.to(x2d.dtype) if bias is not None else y
        xmap = cuda_rt.tensor_map_2d(x2d, box=(64, 8 * cfg.mt))
        wmap, szmap = self.weight_maps(w)
        args = self.fn.args(_SIGNATURE)
        args.set(xmap, wmap, szmap, b.data_ptr(), y.data_ptr(), ws.data_ptr(), cnt.data_ptr(), m, n,
                 self.k // (64 * cfg.kch), n // cfg.rows, dp, per, units, int(bias is not None))  # fmt: skip
        self.fn.launch_on(x2d.device, (grid, 1, 1), cfg.threads, args, self.smem)
        return y


#: the tensor maps of x, the packed weight and the scales/zeros; bias, y, workspace, counters;
#: M, N, stages a tile (K / (64·kch)), row tiles, dp (whole tiles), per (stages a CTA), units (stages shared
#: out), has_bias
_SIGNATURE = "tttppppiiiiiiii"

_PLANS: dict[tuple[object, ...], WsPlan] = {}


def plan(device: torch.device, dtype: torch.dtype, m: int, n: int, k: int, group_size: int, cfg: WsConfig) -> WsPlan:
    """The compiled launch of ``cfg`` for an [M, K] × [K, N] call (compiled with NVRTC on first use)."""
    index = cuda_rt.device_index(device)
    key = (index, dtype, m, n, k, group_size, cfg)
    p = _PLANS.get(key)
    if p is not None:
        return p
    reason = why_not(torch.device("cuda", index), dtype, k, n, group_size)  # ends with cuda_frag.layer_problem
    if reason is None and n % cfg.rows:
        reason = f"N={n} is not a multiple of the config's {cfg.rows} rows a tile"
    if reason is None and k % (64 * cfg.kch):
        reason = f"K={k} is not a multiple of the config's {64 * cfg.kch} inputs a stage"
    if reason is None and k // (64 * cfg.kch) < cfg.cl:
        reason = f"K={k} has fewer stages of {64 * cfg.kch} inputs than the config's cluster of {cfg.cl} CTAs"
    if reason is not None:
        raise ValueError(f"the warp-specialized kernel cannot take this layer: {reason}")
    problem = cfg.problem(group_size)
    if problem is not None:
        raise ValueError(problem)
    smem = cfg.smem_bytes(group_size)
    fn = cuda_rt.load(source(dtype, group_size, cfg), NAME, torch.device("cuda", index), smem)
    sms = torch.cuda.get_device_properties(index).multi_processor_count
    waves = 1
    if cfg.cl > 1:  # clusters sit inside a GPC, so fewer may fit at once than the SMs say
        tiles = cfg.tiles(m, n)
        with torch.cuda.device(index):
            fit = cuda_rt.max_active_clusters(fn, (tiles * cfg.cl, 1, 1), cfg.threads, smem)
        waves = -(-tiles // fit) if fit else 1
    p = _PLANS[key] = WsPlan(fn, cfg, m, n, k, group_size, smem, sms, waves)
    return p


def fits_one_wave(device: torch.device, dtype: torch.dtype, m: int, n: int, k: int, group_size: int,
                  cfg: WsConfig) -> bool:  # fmt: skip
    """Whether ``cfg``'s grid runs in one round on this GPU (compiling it if need be); False also where it
    cannot be built here, so a tuner can leave it out like any config the card cannot hold."""
    try:
        return plan(device, dtype, m, n, k, group_size, cfg).waves == 1
    except Exception:  # NVRTC, the driver or the plan's own checks: not a candidate here
        return False


def frag_ws(
    x2d: torch.Tensor, w: dict[str, torch.Tensor], group_size: int, bias: torch.Tensor | None,
    config: WsConfig | None = None,
) -> torch.Tensor:  # fmt: skip
    """``x2d @ dequant(W).T (+ bias)`` on the ``nk_frag`` tensors ``w`` (``qweight_frag``, ``sz_gn``)."""
    m, n, k = cuda_frag.frag_dims(x2d, w)
    cfg = config or default_config(m, n, k, group_size)
    return plan(x2d.device, x2d.dtype, m, n, k, group_size, cfg)(x2d, w, bias)
