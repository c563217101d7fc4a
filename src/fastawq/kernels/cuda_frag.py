"""A CUDA C++ tensor-core kernel on the ``nk_frag`` layout, compiled at run time with NVRTC.

Why not Triton here: for small M the work is a memory stream of the packed weight, and what decides the
speed is how many bytes each warp keeps in flight and how few instructions sit between a load and its
use; Triton chooses both itself. In this kernel (macros: ``G``, ``MT``, ``RB``, ``KW``, ``DEPTH``, ``XS``,
``WG``, ``BF16``):

- each warp owns 16 output rows and keeps ``DEPTH`` of its groups of weight in registers ahead of the
  group it multiplies (16-byte ``ld.global.nc`` loads that do not allocate in L1);
- a word is decoded into its ``mma.m16n8k16`` A fragments with one ``lop3`` and one ``fma`` per pair
  (fp16: one shift per word; row g + 8's nibbles are taken in place as 16·(q − z));
- x goes through ``XS`` shared-memory stages (``cp.async``, rows past M zero-filled) and reaches the
  MMA through ``ldmatrix``; a program is ``RB`` row blocks × ``KW`` warps that take turns over a row
  block's groups and add up in shared memory at the end;
- a group's product is accumulated in fp32 and scaled once; K may also be split over programs that add
  fp32 partial sums into the per-stream workspace of :mod:`.triton_awq` (the last writes y and
  re-zeroes its part), except inside a CUDA graph capture, where the same launch runs unsplit;
- ``WG``: warp groups of 4 warps (64 rows) multiply through Hopper's ``wgmma`` instead: each group is
  dequantized in registers as (q − z)·s into one of two A-fragment sets while the ``wgmma`` products of the previous
  group read the other (``wait_group 1``); x is a K-major tile in the 128-byte swizzle; up to 128 rows of x
  per program. Correct, but still slower than the Triton kernels (BENCHMARKS.md, seventh version), so the
  tuner times it only with ``FASTAWQ_CUDA_WGMMA=1``; the warp-specialized :mod:`.cuda_ws` is the ``wgmma``
  kernel that the tuner uses.

Rows of x: each program covers ``8·MT`` of them (``MT`` n8 tiles); more rows take more programs along the
grid's z axis, each reading the weight again, so the tuner offers the ``mma.sync`` path up to 64 rows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from fastawq.kernels import cuda_rt, layouts

NAME = "fastawq_frag_mma"

#: device helpers shared with the warp-specialized kernel (:mod:`.cuda_ws`): types, the decode, wgmma pieces
HEADER = r"""
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;

#define CH (G / 64)

__device__ __forceinline__ void ldw(const u32* p, u32 (&r)[4]) {
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];"
      : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "l"(p));
}

#if BF16
#define MAGIC 0x43004300u
#define MAGIC1 0x4300u
#define ONE2 0x3F803F80u
#define FMA2 "fma.rn.bf16x2"
#define MMA "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
__device__ __forceinline__ float tofloat(u16 h) { return __uint_as_float(((u32)h) << 16); }
__device__ __forceinline__ u16 fromfloat(float f) {
  u16 h;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
#else
#define MAGIC 0x64006400u
#define MAGIC1 0x6400u
#define ONE2 0x3C003C00u
#define FMA2 "fma.rn.f16x2"
#define MMA "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"
__device__ __forceinline__ float tofloat(u16 h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}
__device__ __forceinline__ u16 fromfloat(float f) {
  u16 h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
#endif

__device__ __forceinline__ float half_to_float(u32 bits) {  // the fp16 scale, whatever the activations
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"((u16)bits));
  return f;
}

// pair of -(magic + z) halves: the fma below subtracts the zero point exactly
__device__ __forceinline__ u32 zpair(u32 z) { return ((MAGIC1 + z) | 0x8000u) * 0x10001u; }

// MAGIC, but not a constant to ptxas (M, the rows of x, is never negative): a LOP3 takes one immediate, and
// a kernel short of registers that passes this to the decode keeps it in one register; with two constants
// ptxas re-created the mask before every word (an IMAD.MOV each)
__device__ __forceinline__ u32 opaque_magic(int M) { return MAGIC | ((u32)M >> 31); }

// nibbles (i, i + 4) of the shifted word -> the pair (q - z) in the two 16-bit lanes (magic: see opaque_magic)
__device__ __forceinline__ u32 dec(u32 shifted, u32 zp, u32 magic = MAGIC) {
  u32 p = (shifted & 0x000F000Fu) | magic;
  u32 r;
  asm(FMA2 " %0, %1, %2, %3;" : "=r"(r) : "r"(p), "r"(ONE2), "r"(zp));
  return r;
}

// nibbles (1, 5) of the word in place -> the pair 16·(q − z) (fp16 only; zp holds −(magic + 16·z))
__device__ __forceinline__ u32 dec16(u32 w, u32 zp, u32 magic = MAGIC) {
  u32 p = (w & 0x00F000F0u) | magic;
  u32 r;
  asm(FMA2 " %0, %1, %2, %3;" : "=r"(r) : "r"(p), "r"(ONE2), "r"(zp));
  return r;
}

// a word's four A-fragment pairs (q − z) (row g: zlo, row g + 8: zhi), one shift per pair
__device__ __forceinline__ void decode_shifts(u32 w, u32 zlo, u32 zhi, u32 (&a)[4], u32 magic = MAGIC) {
  a[0] = dec(w, zlo, magic); a[1] = dec(w >> 4, zhi, magic); a[2] = dec(w >> 8, zlo, magic);
  a[3] = dec(w >> 12, zhi, magic);
}

// the same for the mma.sync path, where the scales come after the product. fp16 has room for 16·q under the
// magic exponent, so row g + 8's pairs (nibbles 1, 5 and 3, 7) are taken in place as 16·(q − z): one shift
// per word, and that row's scale is divided by 16
__device__ __forceinline__ void decode(u32 w, u32 zlo, u32 zhi, u32 (&a)[4], u32 magic = MAGIC) {
#if BF16
  decode_shifts(w, zlo, zhi, a, magic);
#else
  const u32 w8 = w >> 8;
  a[0] = dec(w, zlo, magic); a[1] = dec16(w, zhi, magic); a[2] = dec(w8, zlo, magic); a[3] = dec16(w8, zhi, magic);
#endif
}

#if WG
// shared-memory matrix descriptor of a K-major x tile in the 128-byte swizzle: each 64 inputs of a row are
// one 128-byte line (16-byte chunk c of row r at c ^ (r % 8)), 8 rows make a 1024-byte atom (the stride
// between 8-row groups); a k16 step starts 32 bytes further into the line
__device__ __forceinline__ u64 gmma_desc(u32 addr) {
  return (u64)((addr & 0x3FFFF) >> 4) | ((u64)1 << 16) | ((u64)(1024 >> 4) << 32) | ((u64)1 << 62);
}

#if BF16
#define WGTYPE "f32.bf16.bf16"
#else
#define WGTYPE "f32.f16.f16"
#endif

// the scale pair (s, s) in the activation type (bf16 rounds the fp16 scale once)
__device__ __forceinline__ u32 spair(u32 bits) {
#if BF16
  return (u32)fromfloat(half_to_float(bits & 0xFFFF)) * 0x10001u;
#else
  return (bits & 0xFFFF) * 0x10001u;
#endif
}

// a word's four A-fragment pairs, dequantized: (q − z)·s, rounded once to the activation type
__device__ __forceinline__ void decode_scaled(u32 w, u32 zlo, u32 zhi, u32 slo, u32 shi, u32 (&a)[4],
                                              u32 magic = MAGIC) {
  u32 q[4];
  decode_shifts(w, zlo, zhi, q, magic);
  const u32 s[4] = {slo, shi, slo, shi};
#pragma unroll
  for (int i = 0; i < 4; ++i) asm(FMA2 " %0, %1, %2, %3;" : "=r"(a[i]) : "r"(q[i]), "r"(s[i]), "r"(0x80008000u));
}

//@WGMMA@
#endif

// keep registers read or written by an asynchronous wgmma alive and in place until its wait
__device__ __forceinline__ void keep(u32 (&a)[4]) {
  asm volatile("" : "+r"(a[0]), "+r"(a[1]), "+r"(a[2]), "+r"(a[3]) :: "memory");
}
__device__ __forceinline__ void keepf(float (&c)[4]) {
  asm volatile("" : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) :: "memory");
}

__device__ __forceinline__ void mma(float (&c)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  asm(MMA " {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ u32 smem_addr(const void* p) {
  u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}

"""

_KERNEL = r"""
// x tiles in shared memory: XS stages of [8·MT rows][KW·G inputs] (one group per K warp), 16-byte chunk c
// of row r stored at chunk c ^ (r % 8), so the eight rows an ldmatrix reads at once sit in different banks
#define NW (RB * KW)
#define XROW (KW * G * 2)
#define XSTAGE (8 * MT * XROW)
#define XCHUNKS (8 * MT * KW * G / 8)
#define XPER ((XCHUNKS + NW * 32 - 1) / (NW * 32))
// x stages filled ahead of the one in use (wgmma: one fewer, the previous step's products may still read theirs)
#define LOOK (XS - 1 - WG)

__device__ __forceinline__ void ldsm4(u32 (&r)[4], u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

// this thread's chunks of one stage of x (inputs k0…): 16-byte cp.async copies, zero-filled past M or K
__device__ __forceinline__ void copy_x(u32 stage, const u16* x, int k0, int K, const int (&src)[XPER],
                                       const u32 (&dst)[XPER], const int (&col)[XPER], const bool (&row_ok)[XPER]) {
#pragma unroll
  for (int j = 0; j < XPER; ++j) {
    const bool ok = row_ok[j] && k0 + col[j] < K;
    if (XCHUNKS % (NW * 32) == 0 || threadIdx.x + j * NW * 32 < XCHUNKS)
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
                   :: "r"(stage + dst[j]), "l"(x + (ok ? src[j] + k0 : 0)), "r"(ok ? 16 : 0));
  }
}

extern "C" __global__ void __launch_bounds__(NW * 32) fastawq_frag_mma(
    const u16* __restrict__ x, const u32* __restrict__ qw, const u32* __restrict__ sz,
    const u16* __restrict__ bias, u16* __restrict__ y, float* __restrict__ ws, int* __restrict__ cnt,
    int M, int N, int K, int ldx_, int gps, int has_bias) {
  extern __shared__ __align__(128) unsigned char xsm[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int rb = warp % RB, kw = warp / RB;  // this warp's row block in the program, and its K lane
  // a last program may reach past the rows: its extra warps compute a copy of the last row block (they
  // still meet the others at barriers and in warp-group MMAs) and store nothing
  const bool has_rows = blockIdx.x * RB + rb < (N >> 4);
  const int b = min(blockIdx.x * RB + rb, (N >> 4) - 1);
  const int ng = K / G;
  const int g0 = blockIdx.y * gps;
  const int g1 = min(ng, g0 + gps);
  const int iters = (g1 - g0 + KW - 1) / KW;  // step i: groups g0 + KW·i + (0…KW−1), one per K warp
  const int m0 = blockIdx.z * (8 * MT);
  const int kc = K >> 6;
  const u32 magic = opaque_magic(M);
  const int row_lo = b * 16 + g, row_hi = row_lo + 8;
  const u32* wp = qw + ((u64)b * kc * 32 + lane) * 4;
#if WG
  const u32 xs0 = (smem_addr(xsm) + 1023) & ~1023u;  // swizzle atoms sit on 1024-byte boundaries
#else
  const u32 xs0 = smem_addr(xsm);
#endif

  // the x chunks this thread copies into every stage (same rows and columns, K offset changes)
  int xsrc[XPER];
  u32 xdst[XPER];
  int xcol[XPER];
  bool xrow_ok[XPER];
#pragma unroll
  for (int j = 0; j < XPER; ++j) {
    const int i = threadIdx.x + j * NW * 32;
    const int r = i / (KW * G / 8), c = i % (KW * G / 8);
    xrow_ok[j] = i < XCHUNKS && m0 + r < M;
    xsrc[j] = (xrow_ok[j] ? (m0 + r) * ldx_ : 0) + c * 8;
    xcol[j] = c * 8;
#if WG  // 64-input column a of the stage holds the 8·MT rows' 128-byte lines, swizzled
    xdst[j] = (c >> 3) * (8 * MT * 128) + r * 128 + (((c & 7) ^ (r & 7)) << 4);
#else
    xdst[j] = r * XROW + ((c ^ (r & 7)) << 4);
#endif
  }
#if !WG
  // this lane's ldmatrix address for fragment pair p (fragments f = s·MT + mt, two per x4 load):
  // matrix q = lane / 8 is fragment 2p + q / 2, inputs 8·(q % 2)…; row lane % 8 of it
  const int q = lane >> 3;
  u32 lds[CH * 4 * MT / 2];
#pragma unroll
  for (int p = 0; p < CH * 4 * MT / 2; ++p) {
    const int f = 2 * p + (q >> 1);
    const int step = f / MT, mt = f % MT;
    const int row = 8 * mt + (lane & 7), chunk = 2 * step + (q & 1);
    lds[p] = row * XROW + kw * G * 2 + ((chunk ^ (lane & 7)) << 4);
  }
#else
  u32 af[2][CH * 4][4];  // decoded fragments: one set is read by the wgmmas in flight, the other is filled
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int st = 0; st < CH * 4; ++st)
#pragma unroll
      for (int i = 0; i < 4; ++i) af[h][st][i] = 0u;
#endif
  float acc[MT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[mt][i] = 0.f;

  u32 wr[DEPTH][CH][4];
  u32 sr[DEPTH][2];
#pragma unroll
  for (int d = 0; d < DEPTH; ++d) {
    const int grp = g0 + kw + KW * d;
    if (grp < g1) {
#pragma unroll
      for (int ch = 0; ch < CH; ++ch) ldw(wp + (u64)(grp * CH + ch) * 128, wr[d][ch]);
      sr[d][0] = __ldg(sz + (u64)grp * N + row_lo);
      sr[d][1] = __ldg(sz + (u64)grp * N + row_hi);
    }
  }
#pragma unroll
  for (int st = 0; st < LOOK; ++st) {
    if (st < iters) copy_x(xs0 + st * XSTAGE, x, (g0 + KW * st) * G, K, xsrc, xdst, xcol, xrow_ok);
    asm volatile("cp.async.commit_group;");
  }
  for (int base = 0; base < iters; base += DEPTH) {
#pragma unroll
    for (int d = 0; d < DEPTH; ++d) {
      const int it = base + d;
      if (it < iters) {
        asm volatile("cp.async.wait_group %0;" :: "n"(LOOK - 1));
#if WG
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");  // this thread's x, seen by wgmma
#endif
        __syncthreads();  // this step's x has landed for every thread; the stage refilled below is free
        const int nx = it + LOOK;
        if (nx < iters) copy_x(xs0 + (nx % XS) * XSTAGE, x, (g0 + KW * nx) * G, K, xsrc, xdst, xcol, xrow_ok);
        asm volatile("cp.async.commit_group;");
        const int grp = g0 + kw + KW * it;
        if (grp < g1) {
          const u32 stage = xs0 + (it % XS) * XSTAGE;
#if WG
          // one warp group (4 warps = 64 rows, same K warp) multiplies its dequantized rows by the stage's x
          // tile through wgmma (A from registers, B = x K-major from shared memory), then lets the wgmmas
          // of the previous step finish: the decode of the next group overlaps this group's products
          {
            const u32 zlo = zpair((sr[d][0] >> 16) & 0xFF), zhi = zpair((sr[d][1] >> 16) & 0xFF);
            const u32 slo = spair(sr[d][0]), shi = spair(sr[d][1]);
#pragma unroll
            for (int ch = 0; ch < CH; ++ch)
#pragma unroll
              for (int j = 0; j < 4; ++j) decode_scaled(wr[d][ch][j], zlo, zhi, slo, shi, af[d & 1][ch * 4 + j], magic);
          }
          asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
          const u64 desc = gmma_desc(stage + kw * (G / 64) * (8 * MT * 128));
#pragma unroll
          for (int st = 0; st < CH * 4; ++st)  // k16 step st: 64-input column st / 4, 32 bytes per step in it
            wgmma(acc, af[d & 1][st], desc + (((st >> 2) * (8 * MT * 128) + (st & 3) * 32) >> 4));
          asm volatile("wgmma.commit_group.sync.aligned;\nwgmma.wait_group.sync.aligned 1;" ::: "memory");
#pragma unroll
          for (int st = 0; st < CH * 4; ++st) keep(af[(d + 1) & 1][st]);  // read by the wgmmas just finished
#else
          const u32 zlo = zpair((sr[d][0] >> 16) & 0xFF);
#if BF16
          const u32 zhi = zpair((sr[d][1] >> 16) & 0xFF);
          const float shi = half_to_float(sr[d][1] & 0xFFFF);
#else
          const u32 zhi = zpair(((sr[d][1] >> 16) & 0xFF) << 4);
          const float shi = half_to_float(sr[d][1] & 0xFFFF) * 0.0625f;
#endif
          const float slo = half_to_float(sr[d][0] & 0xFFFF);
          u32 xf[CH * 4 * MT][2];
#pragma unroll
          for (int p = 0; p < CH * 4 * MT / 2; ++p) {
            u32 r[4];
            ldsm4(r, stage + lds[p]);
            xf[2 * p][0] = r[0];
            xf[2 * p][1] = r[1];
            xf[2 * p + 1][0] = r[2];
            xf[2 * p + 1][1] = r[3];
          }
          float part[MT][4];
#pragma unroll
          for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int i = 0; i < 4; ++i) part[mt][i] = 0.f;
#pragma unroll
          for (int ch = 0; ch < CH; ++ch) {
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              u32 a[4];
              decode(wr[d][ch][j], zlo, zhi, a, magic);
              const int step = ch * 4 + j;
#pragma unroll
              for (int mt = 0; mt < MT; ++mt)
                mma(part[mt], a[0], a[1], a[2], a[3], xf[step * MT + mt][0], xf[step * MT + mt][1]);
            }
          }
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            acc[mt][0] += slo * part[mt][0];
            acc[mt][1] += slo * part[mt][1];
            acc[mt][2] += shi * part[mt][2];
            acc[mt][3] += shi * part[mt][3];
          }
#endif
          const int nxt = grp + KW * DEPTH;
          if (nxt < g1) {
#pragma unroll
            for (int ch = 0; ch < CH; ++ch) ldw(wp + (u64)(nxt * CH + ch) * 128, wr[d][ch]);
            sr[d][0] = __ldg(sz + (u64)nxt * N + row_lo);
            sr[d][1] = __ldg(sz + (u64)nxt * N + row_hi);
          }
        }
      }
    }
  }
  asm volatile("cp.async.wait_group 0;");
#if WG
  asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) keepf(acc[mt]);
#endif
  if (KW > 1) {  // the K warps of a row block add their sums into K warp 0 through shared memory
    __syncthreads();
    float* red = reinterpret_cast<float*>(xsm + (xs0 - smem_addr(xsm)));  // the x stages are free now
    if (kw > 0) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < 4; ++i) red[(((kw - 1) * RB + rb) * MT * 4 + mt * 4 + i) * 32 + lane] = acc[mt][i];
    }
    __syncthreads();
    if (kw == 0) {
#pragma unroll
      for (int o = 0; o < KW - 1; ++o)
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int i = 0; i < 4; ++i) acc[mt][i] += red[((o * RB + rb) * MT * 4 + mt * 4 + i) * 32 + lane];
    }
  }
  const bool active = kw == 0 && has_rows;

  const float blo = (active && has_bias) ? tofloat(bias[row_lo]) : 0.f;
  const float bhi = (active && has_bias) ? tofloat(bias[row_hi]) : 0.f;
  if (gridDim.y == 1) {
    if (!active) return;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int m = m0 + mt * 8 + 2 * t + i;
        if (m < M) {
          y[(u64)m * N + row_lo] = fromfloat(acc[mt][i] + blo);
          y[(u64)m * N + row_hi] = fromfloat(acc[mt][2 + i] + bhi);
        }
      }
    return;
  }
  // split K: add the partial sums into the workspace; the last program of this tile writes y
  if (active) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int m = m0 + mt * 8 + 2 * t + i;
        if (m < M) {
          atomicAdd(ws + (u64)m * N + row_lo, acc[mt][i]);
          atomicAdd(ws + (u64)m * N + row_hi, acc[mt][2 + i]);
        }
      }
  }
  __threadfence();
  __syncthreads();
  __shared__ int last;
  if (threadIdx.x == 0) {
    const int tile = blockIdx.z * gridDim.x + blockIdx.x;
    const int prev = atomicAdd(cnt + tile, 1);
    last = prev == (int)gridDim.y - 1;
    if (last) cnt[tile] = 0;
  }
  __syncthreads();
  if (!last || !active) return;
  __threadfence();
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int m = m0 + mt * 8 + 2 * t + i;
      if (m < M) {
        const float lo = atomicExch(ws + (u64)m * N + row_lo, 0.f);
        const float hi = atomicExch(ws + (u64)m * N + row_hi, 0.f);
        y[(u64)m * N + row_lo] = fromfloat(lo + blo);
        y[(u64)m * N + row_hi] = fromfloat(hi + bhi);
      }
    }
}
"""

#: the group sizes of this kernel (the decode and warp-specialized kernels and the Triton ones also take 32)
GROUP_SIZES = (64, 128, 256)


@dataclass(frozen=True)
class CudaConfig:
    """Tiles of the CUDA fragment kernel. A program has ``rb`` × ``kw`` warps: ``rb`` blocks of 16 output
    rows, each shared by ``kw`` warps that take turns over its groups of K and add up at the end; each
    warp keeps ``depth`` of its groups of weight in flight, x goes through ``stages`` shared-memory
    stages, ``mt`` n8 tiles (8 rows of x each) per program, and K is split over ``split`` programs."""

    mt: int = 1
    rb: int = 4
    kw: int = 1
    depth: int = 2
    split: int = 1
    stages: int = 3
    #: warp groups multiply through ``wgmma`` (sm_90, needs rb % 4 == 0) instead of per-warp ``mma.sync``
    wgmma: bool = False

    def describe(self) -> str:
        s = f"mt{self.mt} rb{self.rb} kw{self.kw} d{self.depth} xs{self.stages} split{self.split}"
        return s + (" wgmma" if self.wgmma else "")

    @property
    def warps(self) -> int:
        return self.rb * self.kw

    def smem_bytes(self, group_size: int) -> int:
        stages = self.stages * 8 * self.mt * self.kw * group_size * 2
        reduce = (self.kw - 1) * self.rb * self.mt * 4 * 32 * 4
        return max(stages, reduce) + (1024 if self.wgmma else 0)  # wgmma: room to align the swizzle atoms

    def problem(self, group_size: int) -> str | None:
        """Why this config cannot be compiled for ``group_size`` (None: it can)."""
        if min(self.mt, self.rb, self.kw, self.depth, self.split, self.stages) < 1:
            return f"config {self.describe()}: every tile parameter must be at least 1"
        if self.wgmma:
            if self.rb % 4:
                return f"config {self.describe()}: wgmma needs whole warp groups of rows (rb a multiple of 4)"
            if self.depth != 2 or self.stages < 3:
                # one register set is decoded while the other is read; deeper rings make ptxas serialize
                return f"config {self.describe()}: wgmma takes depth 2 and at least 3 x stages"
            if self.mt > 32:
                return f"config {self.describe()}: wgmma covers at most 256 rows of x (mt <= 32)"
        smem = self.smem_bytes(group_size)
        if smem > SMEM_MAX:
            return f"config {self.describe()} needs {smem} bytes of shared memory (at most {SMEM_MAX})"
        return None


def wgmma_source(mt: int) -> str:
    """``wgmma(acc, a, desc)``: one m64n(8·mt)k16 product, A from registers, accumulating into acc; and
    ``wgmma_set(acc, a, desc)``, the same product written over acc (scale-d = 0)."""
    nacc = 4 * mt
    outs = ",".join(f"%{i}" for i in range(nacc))
    ins = ",".join(f"%{nacc + i}" for i in range(4))
    accs = ", ".join(f'"+f"(c[{i // 4}][{i % 4}])' for i in range(nacc))
    return "".join(
        f"__device__ __forceinline__ void {name}(float (&c)[MT][4], const u32 (&a)[4], u64 desc) {{\n"
        f'  asm volatile("wgmma.mma_async.sync.aligned.m64n{8 * mt}k16." WGTYPE " {{{outs}}}, {{{ins}}}, %{nacc + 4},'
        f' {scale_d}, 1, 1, 0;"\n      : {accs}\n'
        '      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));\n}\n'
        for name, scale_d in (("wgmma", 1), ("wgmma_set", 0))
    )


def source(dtype: torch.dtype, group_size: int, cfg: CudaConfig) -> str:
    bf16 = 1 if dtype == torch.bfloat16 else 0
    defs = {"BF16": bf16, "G": group_size, "MT": cfg.mt, "RB": cfg.rb, "KW": cfg.kw, "DEPTH": cfg.depth,
            "XS": cfg.stages, "WG": int(cfg.wgmma)}  # fmt: skip
    body = (HEADER + _KERNEL).replace("//@WGMMA@\n", wgmma_source(cfg.mt) if cfg.wgmma else "")
    return "".join(f"#define {k} {v}\n" for k, v in defs.items()) + body


def why_not(
    device: torch.device, dtype: torch.dtype, k: int, n: int, group_size: int, sizes: tuple[int, ...] = GROUP_SIZES
) -> str | None:
    """Why the CUDA fragment kernel (or another whose group sizes are ``sizes``) cannot run this call (None: it
    can)."""
    reason = cuda_rt.why_unavailable(device)
    if reason is not None:
        return reason
    if dtype not in (torch.float16, torch.bfloat16):
        return f"the CUDA kernel takes fp16 or bf16 activations, got {dtype}"
    if torch.cuda.get_device_capability(device) < (8, 0):
        return "the CUDA kernel needs compute capability 8.0 or newer (mma.m16n8k16 with bf16)"
    return layer_problem(k, n, group_size, sizes)


def layer_problem(k: int, n: int, group_size: int, sizes: tuple[int, ...] = GROUP_SIZES) -> str | None:
    """Why a CUDA kernel on ``nk_frag`` that takes group sizes ``sizes`` cannot take a [K, N] layer of this group
    size (None: it can)."""
    reason = layouts.frag_supported(k, n, group_size)
    if reason is None and group_size not in sizes:
        reason = f"this CUDA kernel takes group sizes {sizes}, not {group_size} (the Triton ones take it)"
    if reason is None and k % group_size:
        reason = f"K={k} is not a multiple of the group size {group_size}"
    return reason


#: the largest dynamic shared memory a config may ask for (an H100 allows 227 KiB a block)
SMEM_MAX = 160 * 1024


def n8_tiles(m: int) -> int:
    """The ``mt`` for M rows of x: 1, 2 or 4 n8 tiles (more rows take more programs along z)."""
    return 1 if m <= 8 else 2 if m <= 16 else 4


def wg_tiles(m: int) -> int:
    """The ``mt`` of the wgmma variant: n8 tiles for all M rows (a power of two), at most 16 (128 rows)."""
    mt = 1
    while mt < 16 and 8 * mt < m:
        mt *= 2
    return mt


def default_config(m: int, n: int, k: int, group_size: int) -> CudaConfig:
    mt = n8_tiles(m)
    cfg = CudaConfig(mt=mt, rb=2, kw=4, depth=2 if mt == 1 else 4, split=1, stages=3 if mt == 1 else 4)
    while cfg.smem_bytes(group_size) > SMEM_MAX:  # group size 256: fewer K warps
        cfg = dataclasses.replace(cfg, kw=cfg.kw // 2, rb=cfg.rb * 2)
    return cfg


def candidates(m: int, group_size: int = 128, wgmma: bool = False) -> list[CudaConfig]:
    """What the frag tuner times (the fastest configs of the H100 sweeps in BENCHMARKS.md): the mma.sync
    kernel up to 64 rows, with ``wgmma`` (an sm_90 GPU) the warp-group kernel from 9 to 128 rows."""
    out = _mma_candidates(m, group_size) + (_wg_candidates(m, group_size) if wgmma else [])
    return [c for c in out if c.problem(group_size) is None]


def _wg_candidates(m: int, group_size: int) -> list[CudaConfig]:
    if not 8 < m <= 128:
        return []
    mt = wg_tiles(m)
    shapes = [(8, 1, 4, 1), (8, 1, 4, 2), (4, 1, 4, 2), (4, 2, 3, 1), (4, 1, 3, 4)]  # (rb, kw, stages, split)
    return [CudaConfig(mt, rb, kw, 2, split, xs, wgmma=True) for rb, kw, xs, split in shapes]


def _mma_candidates(m: int, group_size: int) -> list[CudaConfig]:
    if m > 64:
        return []
    mt = n8_tiles(m)
    shapes = {  # (rb, kw, depth, stages, split)
        1: [(2, 4, 2, 3, 1), (4, 1, 2, 3, 2), (2, 2, 2, 3, 8), (4, 2, 2, 3, 4), (1, 4, 2, 3, 1), (2, 4, 2, 3, 4)],
        2: [(2, 4, 4, 4, 1), (2, 4, 2, 3, 1), (8, 1, 4, 4, 1), (4, 1, 2, 4, 4), (2, 4, 2, 3, 4)],
        4: [(2, 4, 4, 4, 1), (8, 1, 4, 4, 1), (4, 2, 4, 4, 2), (4, 1, 4, 4, 4), (2, 4, 2, 3, 1), (4, 2, 4, 4, 1)],
    }[mt]
    return [CudaConfig(mt, rb, kw, d, split, xs) for rb, kw, d, xs, split in shapes]


@dataclass(frozen=True, eq=False)
class CudaPlan:
    """A compiled launch of the CUDA fragment kernel for one shape: call it like a kernel entry point."""

    fn: cuda_rt.Function
    cfg: CudaConfig
    m: int
    n: int
    k: int
    group_size: int
    smem: int

    def grid(self, split: int) -> tuple[tuple[int, int, int], int]:
        ng = self.k // self.group_size
        gps = -(-ng // max(1, min(split, ng)))
        return (-(-(self.n // 16) // self.cfg.rb), -(-ng // gps), -(-self.m // (8 * self.cfg.mt))), gps

    def __call__(self, x2d: torch.Tensor, w: dict[str, torch.Tensor], bias: torch.Tensor | None) -> torch.Tensor:
        from fastawq.kernels.triton_awq import _workspace  # the shared per-stream split-K workspace

        x2d = cuda_rt.rows_16b(x2d)  # 16-byte cp.async of x
        m, n = self.m, self.n
        y = torch.empty(m, n, device=x2d.device, dtype=x2d.dtype)
        grid, gps = self.grid(self.cfg.split)
        ws, cnt = y, y  # not touched without split-K
        if grid[1] > 1:
            buf = _workspace(x2d.device, m * n, grid[0] * grid[2])
            if buf is None:  # too large, or inside a CUDA graph capture: the same kernel without split-K
                grid, gps = self.grid(1)
            else:
                ws, cnt = buf
        b = bias.to(x2d.dtype) if bias is not None else y
        qw, sz = w["qweight_frag"], w["sz_gn"]
        args = self.fn.args(_SIGNATURE)
        args.set(x2d.data_ptr(), qw.data_ptr(), sz.data_ptr(), b.data_ptr(), y.data_ptr(), ws.data_ptr(),
                 cnt.data_ptr(), m, n, self.k, x2d.stride(0), gps, int(bias is not None))  # fmt: skip
        self.fn.launch_on(x2d.device, grid, self.cfg.warps * 32, args, self.smem)
        return y


#: the kernel's parameters: x, qweight, scales/zeros, bias, y, workspace, counters; M, N, K, ldx, gps, has_bias
_SIGNATURE = "pppppppiiiiii"


_PLANS: dict[tuple[object, ...], CudaPlan] = {}


def plan(
    device: torch.device, dtype: torch.dtype, m: int, n: int, k: int, group_size: int, cfg: CudaConfig
) -> CudaPlan:
    """The compiled launch of ``cfg`` for an [M, K] × [K, N] call (compiled with NVRTC on first use)."""
    index = cuda_rt.device_index(device)
    key = (index, dtype, m, n, k, group_size, cfg)
    p = _PLANS.get(key)
    if p is not None:
        return p
    reason = layer_problem(k, n, group_size)
    if reason is not None:
        raise ValueError(f"the CUDA fragment kernel cannot take this layer: {reason}")
    problem = cfg.problem(group_size)
    if problem is not None:
        raise ValueError(problem)
    if cfg.wgmma and torch.cuda.get_device_capability(index) != (9, 0):
        raise ValueError(f"config {cfg.describe()} needs an sm_90 GPU (wgmma)")
    smem = cfg.smem_bytes(group_size)
    fn = cuda_rt.load(source(dtype, group_size, cfg), NAME, torch.device("cuda", index), smem)
    p = _PLANS[key] = CudaPlan(fn, cfg, m, n, k, group_size, smem)
    return p


def frag_dims(x2d: torch.Tensor, w: dict[str, torch.Tensor]) -> tuple[int, int, int]:
    """(M, N, K) of a call on the ``nk_frag`` tensors ``w``; an input of the wrong width is an error."""
    m, k = x2d.shape
    if w["qweight_frag"].shape[1] * 64 != k:
        raise ValueError(f"input has {k} features, the layer expects {w['qweight_frag'].shape[1] * 64}")
    return m, w["sz_gn"].shape[1], k


def frag_mma_cuda(
    x2d: torch.Tensor, w: dict[str, torch.Tensor], group_size: int, bias: torch.Tensor | None,
    config: CudaConfig | None = None,
) -> torch.Tensor:  # fmt: skip
    """``x2d @ dequant(W).T (+ bias)`` on the ``nk_frag`` tensors ``w`` (``qweight_frag``, ``sz_gn``)."""
    m, n, k = frag_dims(x2d, w)
    if x2d.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"the CUDA fragment kernel takes fp16 or bf16 activations, got {x2d.dtype}")
    cfg = config or default_config(m, n, k, group_size)
    return plan(x2d.device, x2d.dtype, m, n, k, group_size, cfg)(x2d, w, bias)
