"""A decode kernel for up to 16 rows of x on the ``nk_frag`` layout (CUDA C++, compiled at run time with NVRTC).

At M ≤ 8 the product is a stream of the packed weight. Nsight Compute on the staged ``mma.sync`` kernel of
:mod:`.cuda_frag` (14336×4096, one row) counted about 290 warp instructions for each KiB of weight, with the
issue slots 58 % busy at 37 % of DRAM bandwidth (on an H200); an SM of an H100 receives a KiB every ~70
cycles at full bandwidth, 280 issue slots of its 4 schedulers. Most of those instructions were not the
decode but the work around it: copying x into shared memory, a block barrier a step, address arithmetic.
This kernel turns the loop inside out (x-stationary), about 95 instructions a KiB in its loop (SASS):

- each warp owns ``KC`` chunks (64 inputs each) of K and keeps the ``mma.m16n8k16`` B fragments of x for
  them in registers, loaded once from global memory as 16-byte pieces and transposed over each quad of lanes
  (rows past M are zero registers, not zero bytes);
- it then walks the CTA's ``rbc`` blocks of 16 output rows: one 16-byte ``ld.global.nc`` per chunk and
  lane (``DEPTH`` row blocks ahead in a register ring); a word becomes its A fragments with one ``lop3``
  per pair as magic + code (fp16: the high row's nibbles in place, 16× the code), the zero point is taken
  off after the ``mma`` through the group's sum of x (computed once, by an ``mma`` of all-ones), and each
  group's result is scaled once in fp32; the next row block is one pointer increment away;
- each warp leaves its fp32 partial sums of a row block in its own shared-memory slot (no barrier in the
  loop); at the end the CTA adds up its ``kw`` warps per output, and K slices beyond one CTA add up in
  the per-stream fp32 workspace of :mod:`.triton_awq` (the last CTA of a row range writes y, re-zeroes it);
- a group is counted in 16-input steps, so group size 32 (two groups a chunk) is the same loop.

With the instructions gone the kernel is bound by memory latency (H100, Nsight Compute: issue slots
27 – 29 % busy, DRAM 50 – 53 %, long-scoreboard stalls first), and it is 2 – 16 % faster than the staged
CUDA kernel at M = 1 and 8 on the five benchmark shapes (BENCHMARKS.md, tenth version).

Inside a CUDA graph capture (no workspace) a split config runs as the default :mod:`.cuda_frag` kernel, unless
its K slices sum up in a thread-block cluster (``cluster``), which needs no workspace. A program takes one or
two 8-row tiles of x (``mt``; each decoded fragment feeds ``mt`` products); more rows take more programs
along the grid's z axis, each reading the weight again. The tuner offers this kernel up to 16 rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from fastawq.kernels import cuda_frag, cuda_rt

NAME = "fastawq_frag_gemv"

_KERNEL = r"""
// a warp's groups: NGW groups of SPW 16-input steps (KC·4 steps in all, four a chunk; a group may also span
// several warps, and at group size 32 a chunk holds two)
// MT: 8-row tiles of x a program (each decoded A fragment feeds MT mma); a partial-sum slot is
// [row block][warp][tile][lane]
#define SLOT(i, w, mt) ((((i) * KW + (w)) * MT + (mt)) * 32)
#define SPG (G / 16)
#define SPW (KC * 4 < SPG ? KC * 4 : SPG)
#define NGW (KC * 4 / SPW)
#if BF16
#define MAGICF 128.f
#else
#define MAGICF 1024.f
#endif

// a word's four A-fragment pairs as magic + code (fp16: row g + 8 as magic + 16·code, in place); the zero
// point is taken off after the product, with the group's sum of x. magic is a run-time value so that the
// masks are the immediates of the lop3s (with both constants, ptxas re-materializes one for every lop3)
__device__ __forceinline__ void raw(u32 w, u32 magic, u32 (&a)[4]) {
#if BF16
  a[0] = (w & 0x000F000Fu) | magic;
  a[1] = ((w >> 4) & 0x000F000Fu) | magic;
  a[2] = ((w >> 8) & 0x000F000Fu) | magic;
  a[3] = ((w >> 12) & 0x000F000Fu) | magic;
#else
  const u32 w8 = w >> 8;
  a[0] = (w & 0x000F000Fu) | magic;
  a[1] = (w & 0x00F000F0u) | magic;
  a[2] = (w8 & 0x000F000Fu) | magic;
  a[3] = (w8 & 0x00F000F0u) | magic;
#endif
}

// a 4 × 4 transpose of u32s over the quad of lanes t = 0 … 3: e[i] of lane t becomes e[t] of lane i before
__device__ __forceinline__ void transpose4(u32 (&e)[4], int t) {
  const bool o1 = t & 1, o2 = t & 2;
  u32 a = __shfl_xor_sync(0xFFFFFFFFu, o1 ? e[0] : e[1], 1);
  u32 b = __shfl_xor_sync(0xFFFFFFFFu, o1 ? e[2] : e[3], 1);
  if (o1) { e[0] = a; e[2] = b; } else { e[1] = a; e[3] = b; }
  a = __shfl_xor_sync(0xFFFFFFFFu, o2 ? e[0] : e[2], 2);
  b = __shfl_xor_sync(0xFFFFFFFFu, o2 ? e[1] : e[3], 2);
  if (o2) { e[0] = a; e[1] = b; } else { e[2] = a; e[3] = b; }
}

#if CL > 1
// the K slices of a row range sum up through the cluster's shared memory (Hopper)
__device__ __forceinline__ void cluster_sync_all() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
__device__ __forceinline__ float4 ld_cluster(const float4* p, unsigned rank) {  // p in CTA `rank`'s shared memory
  unsigned a = (unsigned)__cvta_generic_to_shared(p), b;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(b) : "r"(a), "r"(rank));
  float4 v;
  asm volatile("ld.shared::cluster.v4.f32 {%0,%1,%2,%3}, [%4];" : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "r"(b)
               : "memory");
  return v;
}
#endif
#if STG
// each lane copies its own bytes and reads back only those: a wait on its own copy groups is all the sync
__device__ __forceinline__ void cp16(const void* s, const void* gp) {
  const unsigned a = (unsigned)__cvta_generic_to_shared(s);
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16;" :: "r"(a), "l"(gp) : "memory");
}
__device__ __forceinline__ void cp4(const void* s, const void* gp) {
  const unsigned a = (unsigned)__cvta_generic_to_shared(s);
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" :: "r"(a), "l"(gp) : "memory");
}
#endif

#if CL > 1
extern "C" __global__ void __cluster_dims__(CL, 1, 1) __launch_bounds__(KW * 32) fastawq_frag_gemv(
#else
extern "C" __global__ void __launch_bounds__(KW * 32) fastawq_frag_gemv(
#endif
    const u16* __restrict__ x, const u32* __restrict__ qw, const u32* __restrict__ sz,
    const u16* __restrict__ bias, u16* __restrict__ y, float* __restrict__ ws, int* __restrict__ cnt,
    int M, int N, int K, int ldx, int rbc, int has_bias, u32 magic) {
  // [rbc][kw][MT][32 lanes]: each warp's partial sums (rbc: the most row blocks a CTA takes); then the copy
  // stages (STG)
  extern __shared__ __align__(16) float4 red[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, kw = KW;
  const int g = lane >> 2, t = lane & 3;
  const int nb = N >> 4, kc = K >> 6;
  // KFIRST: the K slices of a row range are neighbours in the grid's x (they run at the same time)
  const int rr = KFIRST ? blockIdx.y : blockIdx.x, ks = KFIRST ? blockIdx.x : blockIdx.y;
  const int nrr = KFIRST ? gridDim.y : gridDim.x, nks = KFIRST ? gridDim.x : gridDim.y;
#if BAL
  // balanced: the row blocks shared out over the grid's row ranges, one more to the first nb % nrr of them
  const int rb0 = (int)(((long long)rr * nb) / nrr);
  const int nrb = (int)(((long long)(rr + 1) * nb) / nrr) - rb0;
#else
  const int rb0 = rr * rbc;
  const int nrb = min(rbc, nb - rb0);
#endif
  const int c0 = (ks * kw + warp) * KC;  // this warp's first chunk
  const int m0 = blockIdx.z * 8 * MT;
  const int mrows = min(8 * MT, M - m0);
  const bool busy = c0 < kc;

  // the weight loads go first (the x loads and their sums below wait for x). Row block rb, chunk c0 + j:
  // words (rb·kc + c0 + j)·128 + 4·lane; the next row block is kc·128 words on
  const u32* wp = qw + ((u64)rb0 * kc + c0) * 128 + lane * 4;
  const u64 wstep = (u64)kc * 128;
  const u32* sp = sz + (u64)(c0 * 64 / G) * N + rb0 * 16 + g;  // group c0·64 / G, row g of the row block
#if STG
  // STG copy stages a warp in shared memory instead of a register ring: [stage][chunk][lane] 16 bytes of
  // weight, then [stage][group][row half][lane] a scale/zero word
  uint4* wring = reinterpret_cast<uint4*>(red + rbc * KW * MT * 32) + (u64)warp * STG * KC * 32 + lane;
  u32* sring = reinterpret_cast<u32*>(reinterpret_cast<uint4*>(red + rbc * KW * MT * 32) + KW * STG * KC * 32) +
               (u64)warp * STG * NGW * 2 * 32 + lane;
  auto issue = [&](int rb, int st) {
#pragma unroll
    for (int j = 0; j < KC; ++j) cp16(wring + (st * KC + j) * 32, wp + rb * wstep + j * 128);
#pragma unroll
    for (int q = 0; q < NGW; ++q) {
      cp4(sring + ((st * NGW + q) * 2) * 32, sp + (u64)q * N + rb * 16);
      cp4(sring + ((st * NGW + q) * 2 + 1) * 32, sp + (u64)q * N + rb * 16 + 8);
    }
  };
#pragma unroll
  for (int st = 0; st < STG - 1; ++st) {
    if (busy && st < nrb) issue(st, st);
    asm volatile("cp.async.commit_group;" ::: "memory");
  }
#else
  u32 wr[DEPTH][KC][4];
  u32 sr[DEPTH][NGW][2];
#pragma unroll
  for (int d = 0; d < DEPTH; ++d) {
    if (busy && d < nrb) {
#pragma unroll
      for (int j = 0; j < KC; ++j) ldw(wp + d * wstep + j * 128, wr[d][j]);
#pragma unroll
      for (int q = 0; q < NGW; ++q) {
        sr[d][q][0] = __ldg(sp + (u64)q * N + d * 16);
        sr[d][q][1] = __ldg(sp + (u64)q * N + d * 16 + 8);
      }
    }
  }
#endif
  // x: B fragment of 16-input step s is x[g][k + 2t, +1] and x[g][k + 8 + 2t, +1], u32s 8s + t and 8s + 4 + t
  // of the row (rows past M: zero). Each half chunk of row g (16 u32s) comes in as 16-byte pieces, piece t to
  // lane t, and a transpose over the quad gives each lane its u32s 4i + t: whole 32-byte sectors, a quarter of
  // the loads (u32 loads used half of each sector, and the x read was most of the time 8 rows took over 1)
  u32 xf[KC * 4][MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    const int r = mt * 8 + g;
    const bool ok = busy && r < mrows;
    const uint4* xr = reinterpret_cast<const uint4*>(x + (u64)(m0 + (ok ? r : 0)) * ldx + c0 * 64) + t;
    uint4 v[KC * 2];
#pragma unroll
    for (int h = 0; h < KC * 2; ++h) v[h] = ok ? __ldg(xr + 4 * h) : make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
    for (int h = 0; h < KC * 2; ++h) {  // half chunk h: steps 2h and 2h + 1
      u32 e[4] = {v[h].x, v[h].y, v[h].z, v[h].w};
      transpose4(e, t);
      xf[2 * h][mt][0] = e[0];
      xf[2 * h][mt][1] = e[1];
      xf[2 * h + 1][mt][0] = e[2];
      xf[2 * h + 1][mt][1] = e[3];
    }
  }
  // each group's sum of x per x row (columns 2t, 2t + 1 of an all-ones A times x): the zero-point term
  float xs[NGW][MT][2];
  {
    const u32 one2 = ONE2;
#pragma unroll
    for (int q = 0; q < NGW; ++q) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        float c[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int s = q * SPW; s < (q + 1) * SPW; ++s)
          mma(c, one2, one2, one2, one2, xf[s][mt][0], xf[s][mt][1]);
        xs[q][mt][0] = c[0];
        xs[q][mt][1] = c[1];
      }
    }
  }
  // one row block's four outputs of this lane from its weight words w and scale/zero words s
  auto block = [&](const u32 (&w)[KC][4], const u32 (&s)[NGW][2], float (&acc)[MT][4]) {
#pragma unroll
    for (int q = 0; q < NGW; ++q) {
      // Σ (q − z)·x·s = (Σ (magic + q)·x − (magic + z)·Σ x)·s; fp16 row g + 8: 16·q and s / 16
      const float zlo = MAGICF + (float)((s[q][0] >> 16) & 0xFF);
      const float slo = half_to_float(s[q][0] & 0xFFFF);
#if BF16
      const float zhi = MAGICF + (float)((s[q][1] >> 16) & 0xFF);
      const float shi = half_to_float(s[q][1] & 0xFFFF);
#else
      const float zhi = MAGICF + 16.f * (float)((s[q][1] >> 16) & 0xFF);
      const float shi = half_to_float(s[q][1] & 0xFFFF) * 0.0625f;
#endif
      float part[MT][4] = {};
#pragma unroll
      for (int ss = 0; ss < SPW; ++ss) {
        const int st = q * SPW + ss;  // 16-input step st: word st % 4 of chunk st / 4
        u32 a[4];
        raw(w[st >> 2][st & 3], magic, a);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
          mma(part[mt], a[0], a[1], a[2], a[3], xf[st][mt][0], xf[st][mt][1]);
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        acc[mt][0] += slo * (part[mt][0] - zlo * xs[q][mt][0]);
        acc[mt][1] += slo * (part[mt][1] - zlo * xs[q][mt][1]);
        acc[mt][2] += shi * (part[mt][2] - zhi * xs[q][mt][0]);
        acc[mt][3] += shi * (part[mt][3] - zhi * xs[q][mt][1]);
      }
    }
  };
#if STG
  for (int i = 0; i < nrb; ++i) {
    const int nx = i + STG - 1;
    if (busy && nx < nrb) issue(nx, nx % STG);
    asm volatile("cp.async.commit_group;" ::: "memory");
    asm volatile("cp.async.wait_group %0;" :: "n"(STG - 1) : "memory");  // row block i's copies are in
    float acc[MT][4] = {};
    if (busy) {
      const int st = i % STG;
      u32 w[KC][4], s[NGW][2];
#pragma unroll
      for (int j = 0; j < KC; ++j) {
        const uint4 v = wring[(st * KC + j) * 32];
        w[j][0] = v.x;
        w[j][1] = v.y;
        w[j][2] = v.z;
        w[j][3] = v.w;
      }
#pragma unroll
      for (int q = 0; q < NGW; ++q) {
        s[q][0] = sring[((st * NGW + q) * 2) * 32];
        s[q][1] = sring[((st * NGW + q) * 2 + 1) * 32];
      }
      block(w, s, acc);
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
      red[SLOT(i, warp, mt) + lane] = make_float4(acc[mt][0], acc[mt][1], acc[mt][2], acc[mt][3]);
  }
#else
  for (int base = 0; base < nrb; base += DEPTH) {
#pragma unroll
    for (int d = 0; d < DEPTH; ++d) {
      const int i = base + d;
      if (i < nrb) {
        float acc[MT][4] = {};
        if (busy) {
          block(wr[d], sr[d], acc);
          const int nx = i + DEPTH;
          if (nx < nrb) {
#pragma unroll
            for (int j = 0; j < KC; ++j) ldw(wp + nx * wstep + j * 128, wr[d][j]);
#pragma unroll
            for (int q = 0; q < NGW; ++q) {
              sr[d][q][0] = __ldg(sp + (u64)q * N + nx * 16);
              sr[d][q][1] = __ldg(sp + (u64)q * N + nx * 16 + 8);
            }
          }
        }
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
          red[SLOT(i, warp, mt) + lane] = make_float4(acc[mt][0], acc[mt][1], acc[mt][2], acc[mt][3]);
      }
    }
  }
#endif
  __syncthreads();
  // the KW warps' partial sums of slot (row block i, tile mt), lane l
  auto warp_sum = [&](int i, int mt, int l) {
    float4 v = red[SLOT(i, 0, mt) + l];
    for (int w = 1; w < KW; ++w) {
      const float4 u = red[SLOT(i, w, mt) + l];
      v.x += u.x;
      v.y += u.y;
      v.z += u.z;
      v.w += u.w;
    }
    return v;
  };

#if CL > 1
  // the CL CTAs of the cluster are the K slices of this row range: each adds up its own warps (into warp
  // 0's slots), then takes 1 / CL of the items and sums them over the cluster's CTAs. No workspace: the
  // kernel can be captured in a CUDA graph
  for (int it = threadIdx.x; it < nrb * MT * 32; it += KW * 32) {
    const int i = it / (MT * 32), mt = (it >> 5) % MT, l = it & 31;
    red[SLOT(i, 0, mt) + l] = warp_sum(i, mt, l);
  }
  cluster_sync_all();
  {
    const int lo = ks * nrb * MT * 32 / CL, hi = (ks + 1) * nrb * MT * 32 / CL;  // ks: the rank in the cluster
    for (int it = lo + threadIdx.x; it < hi; it += KW * 32) {
      const int i = it / (MT * 32), mt = (it >> 5) % MT, l = it & 31;
      const int m = mt * 8 + 2 * (l & 3), row = (rb0 + i) * 16 + (l >> 2);
      if (m >= mrows) continue;
      float4 v = ld_cluster(&red[SLOT(i, 0, mt) + l], 0);
#pragma unroll
      for (int r = 1; r < CL; ++r) {
        const float4 u = ld_cluster(&red[SLOT(i, 0, mt) + l], r);
        v.x += u.x;
        v.y += u.y;
        v.z += u.z;
        v.w += u.w;
      }
      const float vals[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int mm = m + (e & 1), rw = row + 8 * (e >> 1);
        if (mm < mrows) y[(u64)(m0 + mm) * N + rw] = fromfloat(vals[e] + (has_bias ? tofloat(bias[rw]) : 0.f));
      }
    }
  }
  cluster_sync_all();  // no CTA leaves while another still reads its shared memory
  return;
#endif

  // item (row block i, lane l): the KW warps' partial sums of lane l added up; they are the outputs of rows
  // l / 4 and l / 4 + 8 of the block for x rows 2·(l % 4) and 2·(l % 4) + 1
  const bool split = nks > 1;
  for (int it = threadIdx.x; it < nrb * MT * 32; it += KW * 32) {
    const int i = it / (MT * 32), mt = (it >> 5) % MT, l = it & 31;
    const int m = mt * 8 + 2 * (l & 3), row = (rb0 + i) * 16 + (l >> 2);
    if (m >= mrows) continue;
    const float4 v = warp_sum(i, mt, l);
    const float vals[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int mm = m + (e & 1), rr = row + 8 * (e >> 1);
      if (mm < mrows) {
        if (split) atomicAdd(ws + (u64)(m0 + mm) * N + rr, vals[e]);
        else y[(u64)(m0 + mm) * N + rr] = fromfloat(vals[e] + (has_bias ? tofloat(bias[rr]) : 0.f));
      }
    }
  }
  if (!split) return;
  // K split over several CTAs: the last CTA of this row range to finish writes y from the workspace and
  // re-zeroes it
  __threadfence();
  __syncthreads();
  __shared__ int last;
  if (threadIdx.x == 0) {
    const int tile = blockIdx.z * nrr + rr;
    const int prev = atomicAdd(cnt + tile, 1);
    last = prev == nks - 1;
    if (last) cnt[tile] = 0;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  for (int o = threadIdx.x; o < nrb * 16 * 8 * MT; o += KW * 32) {  // o = (row of the range)·8·MT + x row
    const int mm = o % (8 * MT), rr = rb0 * 16 + o / (8 * MT);
    if (mm < mrows) {
      const float v = atomicExch(ws + (u64)(m0 + mm) * N + rr, 0.f);
      y[(u64)(m0 + mm) * N + rr] = fromfloat(v + (has_bias ? tofloat(bias[rr]) : 0.f));
    }
  }
}
"""


@dataclass(frozen=True)
class GemvConfig:
    """Tiles of the decode kernel: each of a CTA's ``kw`` warps takes ``kc`` chunks of 64 inputs (so a CTA
    covers ``64·kc·kw`` inputs; more take more CTAs along grid y, added up in the workspace) and walks
    ``rbc`` blocks of 16 output rows, ``depth`` of them loaded ahead.

    ``fill`` > 0 shares the row blocks out evenly over about ``fill`` CTAs an SM (one wave; ``rbc`` is then
    unused): a fixed ``rbc`` leaves a part-filled last wave or idle SMs. ``cluster`` sums the K slices of a
    row range through the shared memory of a thread-block cluster (sm_90, at most 8 slices) instead of the
    global workspace. ``stages`` > 0 streams the weight through that many ``cp.async`` stages a warp in
    shared memory instead of ``depth`` registers sets."""

    kc: int = 4
    kw: int = 8
    rbc: int = 4
    depth: int = 2
    #: the K slices of a row range are neighbours along the grid's x (scheduled together)
    kfirst: bool = False
    fill: int = 0
    cluster: bool = False
    stages: int = 0
    #: 8-row tiles of x a program: each decoded weight fragment feeds ``mt`` products (more rows of x take
    #: more programs along grid z, each reading the weight again)
    mt: int = 1

    def describe(self) -> str:
        rows = f"fill{self.fill}" if self.fill else f"rbc{self.rbc}"
        ahead = f"s{self.stages}" if self.stages else f"d{self.depth}"
        flags = (" kfirst" if self.kfirst else "") + (" cluster" if self.cluster else "")
        return f"gemv kc{self.kc} kw{self.kw} {rows} {ahead}{flags}" + (f" mt{self.mt}" if self.mt > 1 else "")

    def problem(self, group_size: int) -> str | None:
        """Why this config cannot be compiled for ``group_size`` (None: it can)."""
        if min(self.kc, self.kw, self.rbc, self.depth) < 1 or min(self.fill, self.stages) < 0:
            return f"config {self.describe()}: every tile parameter must be at least 1"
        if self.kw > 32:
            return f"config {self.describe()}: at most 32 warps a CTA"
        if self.mt not in (1, 2, 4):
            return f"config {self.describe()}: 1, 2 or 4 tiles of 8 rows of x a program"
        if self.stages == 1 or self.stages > 8:
            return f"config {self.describe()}: 2 to 8 copy stages (or 0: registers)"
        if self.cluster and not self.kfirst:
            return f"config {self.describe()}: a cluster needs the K slices along the grid's x (kfirst)"
        spg, steps = group_size // 16, 4 * self.kc  # 16-input steps of a group, of a warp
        if steps % spg and spg % steps:
            d = self.describe()
            return f"config {d}: a warp's {steps} steps of 16 inputs must divide, or be a multiple of, a group's {spg}"
        need = self.smem_bytes(group_size, 1 if self.fill else self.rbc)
        if need > SMEM_MAX:
            return f"config {self.describe()} needs {need} bytes of shared memory (at most {SMEM_MAX})"
        return None

    def smem_bytes(self, group_size: int, rbc: int) -> int:
        """Shared memory a CTA takes for ``rbc`` row blocks: the warps' partial sums, then the copy stages."""
        ngw = 4 * self.kc // min(4 * self.kc, group_size // 16)  # groups a warp: scale/zero words a stage
        return rbc * self.kw * self.mt * 512 + self.stages * self.kw * (self.kc * 512 + ngw * 2 * 128)

    def split(self, k: int) -> int:
        """CTAs along K for a K-input layer."""
        return -(-(k // 64) // (self.kc * self.kw))

    def programs(self, m: int) -> int:
        """Programs along grid z for M rows of x."""
        return -(-m // (MAX_ROWS * self.mt))

    def rows(self, n: int, k: int, m: int, group_size: int, sms: int) -> tuple[int, int]:
        """(row ranges along the grid, the most row blocks one of them takes) for an [M, K] × [K, N] call."""
        nb = n // 16
        if not self.fill:
            return -(-nb // self.rbc), self.rbc
        ranges = max(1, min(nb, sms * self.fill // (self.split(k) * self.programs(m))))
        per_range = (SMEM_MAX - self.smem_bytes(group_size, 0)) // (self.kw * self.mt * 512)
        ranges = max(ranges, -(-nb // per_range))  # a very wide layer: more than one wave, within shared memory
        return ranges, -(-nb // ranges)


#: group sizes: at 32 a chunk of 64 inputs holds two groups, each scaled after its two 16-input steps
GROUP_SIZES = (32, 64, 128, 256)
#: dynamic shared memory a CTA may ask for (an H100 allows 227 KiB a block)
SMEM_MAX = 200 * 1024
MAX_ROWS = 8
#: the most K slices one cluster sums (the portable cluster size)
MAX_CLUSTER = 8


def source(dtype: torch.dtype, group_size: int, cfg: GemvConfig, cluster: int = 1) -> str:
    """The kernel source for ``cfg``; ``cluster`` > 1: that many K slices sum up in a thread-block cluster."""
    defs = {"BF16": int(dtype == torch.bfloat16), "G": group_size, "KC": cfg.kc, "KW": cfg.kw, "DEPTH": cfg.depth,
            "KFIRST": int(cfg.kfirst), "WG": 0, "BAL": int(cfg.fill > 0), "CL": cluster, "STG": cfg.stages,
            "MT": cfg.mt}  # fmt: skip
    body = cuda_frag.HEADER.replace("//@WGMMA@\n", "") + _KERNEL
    return "".join(f"#define {k} {v}\n" for k, v in defs.items()) + body


def _clusters_ok() -> bool:
    """Whether the current CUDA device has thread-block clusters (sm_90 and newer)."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (9, 0)


def candidates(m: int, n: int, k: int, group_size: int) -> list[GemvConfig]:
    """What the frag tuner times up to 8 rows of x: the six fixed-row configs that together came within 1 % of
    the best of 120 on the five H100 sweep shapes at M = 1 and 8 (``benchmarks/cuda_frag.py --gemv``), and
    the one-wave configs that won a shape of the H200 sweep (``--gemv-fill``; BENCHMARKS.md, twelfth version);
    from 9 to 16 rows, one-wave configs with two 8-row tiles of x a program (none from 17 rows: the weight read
    twice lost to the tensor-core kernels in that sweep)."""
    if m > 2 * MAX_ROWS:
        return []
    if m > MAX_ROWS:  # 9 – 16 rows: one program of two 8-row tiles (H200 sweep, --gemv-fill --ms 16)
        out = [GemvConfig(4, 8, depth=1, kfirst=True, fill=2, cluster=True, mt=2),
               GemvConfig(4, 8, kfirst=True, fill=1, cluster=True, stages=3, mt=2),
               GemvConfig(2, 16, depth=2, kfirst=True, fill=1, cluster=True, mt=2),
               GemvConfig(4, 16, depth=1, kfirst=True, fill=1, cluster=True, mt=2),
               GemvConfig(2, 16, depth=1, kfirst=True, fill=2, mt=2)]  # fmt: skip
        return _fitting(out, k, group_size) or [GemvConfig(1, 8, 4, 1, True, mt=2)]
    out = [GemvConfig(2, 8, 4, 1, True), GemvConfig(4, 16, 8, 2, True), GemvConfig(4, 16, 2, 2, True),
           GemvConfig(4, 16, 16, 2, True), GemvConfig(4, 16, 4, 2), GemvConfig(2, 16, 8, 2, True)]  # fmt: skip
    out += [GemvConfig(4, 16, depth=1, kfirst=True, fill=1), GemvConfig(4, 16, depth=2, kfirst=True, fill=1),
            GemvConfig(2, 16, depth=1, kfirst=True, fill=2),
            GemvConfig(4, 16, kfirst=True, fill=1, cluster=True, stages=3),
            GemvConfig(2, 16, kfirst=True, fill=1, cluster=True, stages=3),
            GemvConfig(4, 8, kfirst=True, fill=1, cluster=True, stages=3)]  # fmt: skip
    return _fitting(out, k, group_size) or [default_config(m, n, k, group_size)]  # K / 64 odd: one chunk a warp


def _fitting(cfgs: list[GemvConfig], k: int, group_size: int) -> list[GemvConfig]:
    """The configs that can take a K-input layer of this group size on the current device."""
    clusters = _clusters_ok()
    return [c for c in cfgs if c.problem(group_size) is None and (k // 64) % c.kc == 0
            and (not c.cluster or (clusters and c.split(k) <= MAX_CLUSTER))]  # fmt: skip


def default_config(m: int, n: int, k: int, group_size: int) -> GemvConfig:
    """The untuned config: the sweep's best single one on average (1.02 – 1.23× each case's best time)."""
    return GemvConfig(2 if (k // 64) % 2 == 0 else 1, 8, 4, 1, True, mt=1 if m <= MAX_ROWS else 2)


@dataclass(frozen=True, eq=False)
class GemvPlan:
    """A compiled launch of the decode kernel for one shape: call it like a kernel entry point."""

    fn: cuda_rt.Function
    cfg: GemvConfig
    m: int
    n: int
    k: int
    group_size: int
    #: the launch grid, and how many CTAs share a row range's K (> 1: split-K through the workspace, or the
    #: cluster's shared memory with ``clustered``)
    grid: tuple[int, int, int]
    split: int
    #: the most row blocks a CTA takes, and the shared memory that needs
    rbc: int
    smem: int
    clustered: bool

    def __call__(self, x2d: torch.Tensor, w: dict[str, torch.Tensor], bias: torch.Tensor | None) -> torch.Tensor:
        from fastawq.kernels.triton_awq import _workspace  # the shared per-stream split-K workspace

        x2d = cuda_rt.rows_16b(x2d)  # 4-byte loads of x pairs
        m, n, grid = self.m, self.n, self.grid
        ws: torch.Tensor | None = None
        cnt: torch.Tensor | None = None
        if self.split > 1 and not self.clustered:
            buf = _workspace(x2d.device, m * n, grid[0] * grid[1] * grid[2] // self.split)  # a counter a row range
            if buf is None:  # too large, or inside a CUDA graph capture: the staged kernel, unsplit
                g = self.group_size
                if g not in cuda_frag.GROUP_SIZES:  # group size 32: the Triton kernel, unsplit
                    from fastawq.kernels import triton_frag

                    return triton_frag.frag_mma(
                        x2d, w, g, bias, replace(triton_frag.mma_default(m, n, self.k, g), split=1)
                    )
                cfg = cuda_frag.default_config(m, n, self.k, g)
                return cuda_frag.plan(x2d.device, x2d.dtype, m, n, self.k, g, cfg)(x2d, w, bias)
            ws, cnt = buf
        y = torch.empty(m, n, device=x2d.device, dtype=x2d.dtype)
        b = bias.to(x2d.dtype) if bias is not None else y
        args = self.fn.args(_SIGNATURE)
        args.set(x2d.data_ptr(), w["qweight_frag"].data_ptr(), w["sz_gn"].data_ptr(), b.data_ptr(), y.data_ptr(),
                 (ws if ws is not None else y).data_ptr(), (cnt if cnt is not None else y).data_ptr(), m, n, self.k,
                 x2d.stride(0), self.rbc, int(bias is not None), _MAGIC[x2d.dtype])  # fmt: skip
        self.fn.launch_on(x2d.device, grid, self.cfg.kw * 32, args, self.smem)
        return y


#: x, qweight, scales/zeros, bias, y, workspace, counters; M, N, K, ldx, row blocks a CTA, has_bias, magic
_SIGNATURE = "pppppppiiiiiii"

#: the decode's magic pair (1024.0 in fp16, 128.0 in bf16: code q in its low mantissa bits is magic + q)
_MAGIC = {torch.float16: 0x64006400, torch.bfloat16: 0x43004300}

_PLANS: dict[tuple[object, ...], GemvPlan] = {}


def why_not(device: torch.device, dtype: torch.dtype, k: int, n: int, group_size: int) -> str | None:
    """Why the decode kernel cannot run this call (None: it can)."""
    return cuda_frag.why_not(device, dtype, k, n, group_size, GROUP_SIZES)


def plan(
    device: torch.device, dtype: torch.dtype, m: int, n: int, k: int, group_size: int, cfg: GemvConfig
) -> GemvPlan:
    """The compiled launch of ``cfg`` for an [M, K] × [K, N] call (compiled with NVRTC on first use)."""
    index = cuda_rt.device_index(device)
    key = (index, dtype, m, n, k, group_size, cfg)
    p = _PLANS.get(key)
    if p is not None:
        return p
    reason = cuda_frag.layer_problem(k, n, group_size, GROUP_SIZES)
    if reason is None and (k // 64) % cfg.kc:
        reason = f"K={k} is not a multiple of the config's {64 * cfg.kc} inputs a warp"
    if reason is not None:
        raise ValueError(f"the CUDA decode kernel cannot take this layer: {reason}")
    problem = cfg.problem(group_size)
    if problem is not None:
        raise ValueError(problem)
    split, zs = cfg.split(k), cfg.programs(m)
    cluster = split if cfg.cluster and split > 1 else 1
    if cluster > MAX_CLUSTER:
        raise ValueError(f"config {cfg.describe()}: a cluster sums at most {MAX_CLUSTER} K slices, K={k} needs {split}")
    if cluster > 1 and torch.cuda.get_device_capability(index) < (9, 0):
        raise ValueError(f"config {cfg.describe()}: thread-block clusters need compute capability 9.0 or newer")
    sms = torch.cuda.get_device_properties(index).multi_processor_count
    rows, rbc = cfg.rows(n, k, m, group_size, sms)
    smem = cfg.smem_bytes(group_size, rbc)
    src, dev = source(dtype, group_size, cfg, cluster), torch.device("cuda", index)
    fn = cuda_rt.load(src, NAME, dev, smem)
    if cluster > 1 and cfg.fill:  # one wave: as many row ranges as clusters fit at once (GPCs may leave SMs over)
        with torch.cuda.device(index):
            fit = cuda_rt.max_active_clusters(fn, (split, rows, zs), cfg.kw * 32, smem)
        if fit is not None and zs <= fit < rows * zs:
            fewer = fit // zs
            more_blocks = -(-(n // 16) // fewer)
            need = cfg.smem_bytes(group_size, more_blocks)
            if need <= SMEM_MAX:  # else shared memory cannot hold the longer ranges: keep them (a second wave)
                rows, rbc, smem = fewer, more_blocks, need
                fn = cuda_rt.load(src, NAME, dev, smem)
    grid = (split, rows, zs) if cfg.kfirst else (rows, split, zs)
    p = _PLANS[key] = GemvPlan(fn, cfg, m, n, k, group_size, grid, split, rbc, smem, cluster > 1)
    return p


def frag_gemv_cuda(
    x2d: torch.Tensor, w: dict[str, torch.Tensor], group_size: int, bias: torch.Tensor | None,
    config: GemvConfig | None = None,
) -> torch.Tensor:  # fmt: skip
    """``x2d @ dequant(W).T (+ bias)`` on the ``nk_frag`` tensors ``w`` (``qweight_frag``, ``sz_gn``)."""
    m, n, k = cuda_frag.frag_dims(x2d, w)
    if x2d.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"the CUDA decode kernel takes fp16 or bf16 activations, got {x2d.dtype}")
    cfg = config or default_config(m, n, k, group_size)
    return plan(x2d.device, x2d.dtype, m, n, k, group_size, cfg)(x2d, w, bias)
