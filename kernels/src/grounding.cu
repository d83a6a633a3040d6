// groundrt CUDA kernels: mask-phrase affinity and mask decoding, loaded by name from the fatbin
// (kernels/cuda.py with pycuda, benchmarks/kernels_gpu.py with cupy). All pointers are device
// pointers to dense row-major arrays; the per-element arithmetic is groundrt/grounding_math.h,
// the same functions the CPU library runs (built with -fmad=false so both round alike).
//
// Launch order for one image (one stream):
//   grt_affinity_kernel        grid (P),                             block 128, shared Q * 4 bytes
//   grt_phrase_logits_kernel   grid (ceil(rows * cols / 128), P),    block 128 (resets the stats)
//   grt_decode_masks_kernel    grid (ceil(W / 256), ceil(H / R), P), block 256 (R rows, <= 64)
//   grt_finalize_stats_kernel  grid (ceil(P / 128)),                 block 128
//
// Decoding: one thread per output column x, looping over R rows (the block's y taps in shared
// memory); packed bits come from a warp ballot. Statistics are deterministic: every accumulator
// is an integer (area, sums of x and y, box extremes, and the sum of sigmoid(logit) in 2^-24
// fixed point). A thread sums its column, the block reduces with warp shuffles and shared memory,
// then thread 0 adds the block's totals with 64-bit integer atomicAdd and 32-bit
// atomicMin/atomicMax; integer addition is associative, so the result does not depend on the
// order in which blocks finish.
#include "groundrt/grounding_math.h"

namespace {

using groundrt::StatsAcc;
using groundrt::Tap;

constexpr int kDecodeBlock = 256;  // threads per decode block: one output pixel each, along x
constexpr int kMaxRowsPerBlock = 64;
constexpr unsigned kFullWarp = 0xffffffffu;

__device__ __forceinline__ void warp_reduce(StatsAcc& a) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    StatsAcc b;
    b.area = __shfl_down_sync(kFullWarp, a.area, offset);
    b.sum_x = __shfl_down_sync(kFullWarp, a.sum_x, offset);
    b.sum_y = __shfl_down_sync(kFullWarp, a.sum_y, offset);
    b.score = __shfl_down_sync(kFullWarp, a.score, offset);
    b.x_min = __shfl_down_sync(kFullWarp, a.x_min, offset);
    b.y_min = __shfl_down_sync(kFullWarp, a.y_min, offset);
    b.x_max = __shfl_down_sync(kFullWarp, a.x_max, offset);
    b.y_max = __shfl_down_sync(kFullWarp, a.y_max, offset);
    groundrt::stats_merge(a, b);
  }
}

// Reduce every thread's accumulator in the block and add the total to *dst (thread 0).
__device__ void block_commit(StatsAcc a, StatsAcc* dst) {
  __shared__ StatsAcc warp_total[kDecodeBlock / 32];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  warp_reduce(a);
  if (lane == 0) warp_total[warp] = a;
  __syncthreads();
  if (threadIdx.x != 0) return;
  StatsAcc total = warp_total[0];
  for (int i = 1; i < (int)(blockDim.x >> 5); ++i) groundrt::stats_merge(total, warp_total[i]);
  if (total.area == 0) return;
  atomicAdd(&dst->area, total.area);
  atomicAdd(&dst->sum_x, total.sum_x);
  atomicAdd(&dst->sum_y, total.sum_y);
  atomicAdd(&dst->score, total.score);
  atomicMin(&dst->x_min, total.x_min);
  atomicMin(&dst->y_min, total.y_min);
  atomicMax(&dst->x_max, total.x_max);
  atomicMax(&dst->y_max, total.y_max);
}

}  // namespace

// scores [P, Q], selected [P, Q] from phrase_embed [P, D], mask_embed [Q, D], plural [P].
extern "C" __global__ void grt_affinity_kernel(
    const float* __restrict__ phrase_embed, const float* __restrict__ mask_embed, int P, int Q,
    int D, float logit_scale, float bias, const unsigned char* __restrict__ plural,
    float threshold, float* __restrict__ scores, unsigned char* __restrict__ selected) {
  extern __shared__ float row[];  // Q scores of this phrase
  __shared__ int best;
  const int p = blockIdx.x;
  if (p >= P) return;
  const float* phrase = phrase_embed + (size_t)p * D;
  const float phrase_norm = groundrt::norm(phrase, D);
  for (int q = threadIdx.x; q < Q; q += blockDim.x) {
    const float* mask = mask_embed + (size_t)q * D;
    const float d = groundrt::dot(phrase, mask, D, 1);
    const float s =
        groundrt::affinity_score(d, phrase_norm, groundrt::norm(mask, D), logit_scale, bias);
    row[q] = s;
    scores[(size_t)p * Q + q] = s;
  }
  __syncthreads();
  if (threadIdx.x == 0) best = groundrt::argmax_first(row, Q);
  __syncthreads();
  for (int q = threadIdx.x; q < Q; q += blockDim.x) {
    selected[(size_t)p * Q + q] =
        groundrt::is_selected(q, best, plural[p] != 0, row[q], threshold) ? 1 : 0;
  }
}

// logits [P, rows, cols]: phrase logits over the image region of pixel_embed [D, h, w]; also
// resets the P stats accumulators for grt_decode_masks_kernel.
extern "C" __global__ void grt_phrase_logits_kernel(
    const float* __restrict__ pixel_embed, int D, int h, int w, int rows, int cols,
    const float* __restrict__ mask_embed, int Q, const unsigned char* __restrict__ selected, int P,
    float* __restrict__ logits, StatsAcc* acc) {
  const int p = blockIdx.y;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= P) return;
  if (blockIdx.x == 0 && threadIdx.x == 0) groundrt::stats_reset(acc[p]);
  if (i >= rows * cols) return;
  const int y = i / cols;
  const int x = i - y * cols;
  logits[(size_t)p * rows * cols + i] =
      groundrt::phrase_logit(selected + (size_t)p * Q, mask_embed, Q, D,
                             pixel_embed + (size_t)y * w + x, (ptrdiff_t)h * w);
}

// masks [P, H, W] bytes, or [P, H, ceil(W / 8)] packed bits, and the stats accumulators, from
// logits [P, rows, cols]. scale_y = crop_h / H, scale_x = crop_w / W.
extern "C" __global__ void __launch_bounds__(kDecodeBlock)
    grt_decode_masks_kernel(const float* __restrict__ logits, int rows, int cols, double scale_y,
                     double scale_x, int H, int W, float threshold, int packed,
                     int rows_per_block, unsigned char* __restrict__ masks, StatsAcc* acc) {
  __shared__ Tap ytaps[kMaxRowsPerBlock];
  if (rows_per_block > kMaxRowsPerBlock) return;  // a bad launch (writes nothing)
  const int p = blockIdx.z;
  const int X = blockIdx.x * kDecodeBlock + threadIdx.x;
  const int y_begin = blockIdx.y * rows_per_block;
  const int y_end = min(H, y_begin + rows_per_block);
  for (int i = threadIdx.x; i < y_end - y_begin; i += blockDim.x) {
    ytaps[i] = groundrt::make_tap(y_begin + i, scale_y, rows);
  }
  __syncthreads();

  const bool inside = X < W;
  const Tap tx = groundrt::make_tap(inside ? X : W - 1, scale_x, cols);
  const float* map = logits + (size_t)p * rows * cols;
  const size_t row_bytes = packed ? (size_t)(W + 7) / 8 : (size_t)W;
  unsigned char* out = masks + (size_t)p * H * row_bytes;
  const int lane = threadIdx.x & 31;
  // This thread's column of at most 64 rows: 32-bit sums suffice (64 * 2^24 <= 2^30).
  unsigned count = 0, sum_y = 0, score = 0;
  int y_first = -1, y_last = -1;
  for (int Y = y_begin; Y < y_end; ++Y) {
    const float v = groundrt::bilinear(map, cols, ytaps[Y - y_begin], tx);
    const bool on = inside && groundrt::mask_on(v, threshold);
    if (packed) {
      // Warps start at multiples of 32 pixels: lanes 8g..8g+7 own byte X / 8, MSB first.
      const unsigned reversed = __brev(__ballot_sync(kFullWarp, on));
      if (inside && (lane & 7) == 0) {
        out[(size_t)Y * row_bytes + (X >> 3)] = (unsigned char)(reversed >> (24 - lane));
      }
    } else if (inside) {
      out[(size_t)Y * row_bytes + X] = on ? 1 : 0;
    }
    if (on) {
      ++count;
      sum_y += (unsigned)Y;
      score += (unsigned)groundrt::score_fixed(v);
      y_first = y_first < 0 ? Y : y_first;
      y_last = Y;
    }
  }
  StatsAcc a;
  groundrt::stats_reset(a);
  groundrt::stats_add_column(a, X, count, sum_y, score, y_first, y_last);
  block_commit(a, acc + p);
}

// stats [P] (grt_phrase_stats) from the accumulators.
extern "C" __global__ void grt_finalize_stats_kernel(const StatsAcc* __restrict__ acc, int P,
                                                     grt_phrase_stats* __restrict__ stats) {
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p < P) stats[p] = groundrt::stats_finalize(acc[p]);
}
