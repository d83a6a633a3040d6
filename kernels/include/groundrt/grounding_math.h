// groundrt: the per-element arithmetic of the grounding kernels, shared by the CPU library
// (kernels/src/grounding_cpu.cpp, g++) and the CUDA kernels (kernels/src/grounding.cu, nvcc).
//
// Every function here is what both back ends execute for one element, so the CPU tests exercise
// the GPU's arithmetic. Both builds turn off floating-point contraction (g++ -ffp-contract=off,
// nvcc -fmad=false): a + w * (b - a) is then rounded the same way on both, and the CPU and GPU
// logits, masks, selections and statistics agree bit for bit.
//
//   affinity   score(p, q) = logit_scale * <p, q> / (max(|p|, 1e-12) * max(|q|, 1e-12)) + bias
//   selection  the first maximum of a row, and for a plural every q with sigmoid(score) > t
//   logits     l_p(y, x) = max over selected q of <mask_q, pixel(:, y, x)>  (float, d ascending)
//   sampling   output pixel i -> source (i + 0.5) * crop / n_out - 0.5 (double), two clamped taps
//              and a float weight; bilinear = lerp over y at both x taps, then lerp over x
//   sigmoid    1 / (1 + e^-x) with our own branch-free e^x (exp_approx), the same bits everywhere
//   stats      integer sums (area, sum x, sum y, bounding box) and sigmoid in fixed point
//              (2^-24 units, truncated), so any summation order gives the same result
#ifndef GROUNDRT_GROUNDING_MATH_H
#define GROUNDRT_GROUNDING_MATH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "groundrt/kernels_c.h"

#if defined(__CUDACC__)
#define GRT_HD __host__ __device__ __forceinline__
#else
#define GRT_HD inline
#endif

namespace groundrt {

constexpr float kNormEps = 1e-12f;   // F.normalize's eps
constexpr float kNoLogit = -1e30f;  // logit of a phrase with no selected query (finite: 0 * it = 0)
constexpr float kScoreUnit = 16777216.0f;  // 2^24: sigmoid in fixed point (exact above 0.5)

// ---- affinity and selection -------------------------------------------------------------------

// One step of every dot product: acc + a * b, rounded twice (no fused multiply-add).
GRT_HD float madd(float acc, float a, float b) { return acc + a * b; }

// sum_i a[i] * b[i * b_stride], accumulated in float in ascending i.
GRT_HD float dot(const float* a, const float* b, int n, ptrdiff_t b_stride) {
  float acc = 0.0f;
  for (int i = 0; i < n; ++i) acc = madd(acc, a[i], b[i * b_stride]);
  return acc;
}

GRT_HD float norm(const float* a, int n) { return sqrtf(dot(a, a, n, 1)); }

GRT_HD float affinity_score(float dot_pq, float norm_p, float norm_q, float logit_scale,
                            float bias) {
  const float denom = fmaxf(norm_p, kNormEps) * fmaxf(norm_q, kNormEps);
  return logit_scale * (dot_pq / denom) + bias;
}

// The float with these bits (a builtin the host compilers vectorize; an intrinsic on the device).
GRT_HD float float_from_bits(int32_t bits) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(bits);
#else
  return __builtin_bit_cast(float, bits);
#endif
}

// e^x, Cephes' expf (Cody-Waite reduction, degree-6 polynomial; ~1 ulp) on x clamped to
// [-87, 88]. Our own rather than libm's or CUDA's so that both back ends get the same bits, and
// branch-free so that the CPU loops over a row vectorize.
GRT_HD float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : x;  // selects, not fminf/fmaxf: these vectorize
  x = x > 88.0f ? 88.0f : x;
  const float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
  float r = x - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  return p * float_from_bits(((int32_t)k + 127) << 23);
}

GRT_HD float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

// numpy's argmax: index of the first maximum (the first NaN wins, as in numpy); 0 when n == 0.
GRT_HD int argmax_first(const float* s, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i) {
    const float b = s[best];
    if (b != b) break;
    if (s[i] > b || s[i] != s[i]) best = i;
  }
  return best;
}

GRT_HD bool is_selected(int q, int best, bool plural, float score, float threshold) {
  return q == best || (plural && sigmoid(score) > threshold);
}

// ---- low-res phrase logits --------------------------------------------------------------------

GRT_HD float max_logit(float m, float v) { return v > m ? v : m; }

// l_p at one low-res pixel: `pixel` points at pixel_embed[0, y, x], `plane` = h * w.
GRT_HD float phrase_logit(const uint8_t* selected_row, const float* mask_embed, int Q, int D,
                          const float* pixel, ptrdiff_t plane) {
  float m = kNoLogit;
  bool any = false;
  for (int q = 0; q < Q; ++q) {
    if (!selected_row[q]) continue;
    const float v = dot(mask_embed + (ptrdiff_t)q * D, pixel, D, plane);
    m = any ? max_logit(m, v) : v;
    any = true;
  }
  return m;
}

// ---- upsampling: coordinate mapping and clamped bilinear sample -------------------------------

struct Tap {
  int i0;   // lower source index, clamped to [0, n)
  int i1;   // upper source index (i0 + 1 before clamping)
  float w;  // weight of i1
};

// Source extent of the image region in a low-res map of `n` cells: min(n, ceil(crop)).
GRT_HD int region_extent(double crop, int n) {
  const int c = (int)ceil(crop);
  return c < n ? c : n;
}

// Source coordinate of output pixel i (pixel centres aligned): (i + 0.5) * crop / n_out - 0.5.
GRT_HD double source_coord(int i, double scale) { return (i + 0.5) * scale - 0.5; }

GRT_HD int clamp_index(int i, int n) { return i < 0 ? 0 : (i >= n ? n - 1 : i); }

// The two taps and weight of output pixel i; `scale` = crop / n_out, `n` = region extent (>= 1).
GRT_HD Tap make_tap(int i, double scale, int n) {
  const double c = source_coord(i, scale);
  const double f = floor(c);
  Tap t;
  t.i0 = clamp_index((int)f, n);
  t.i1 = clamp_index((int)f + 1, n);
  t.w = (float)(c - f);
  return t;
}

GRT_HD float lerp(float a, float b, float w) { return a + w * (b - a); }

// Bilinear sample of a map with row stride `stride`: lerp over y at both x taps, then over x.
GRT_HD float bilinear(const float* map, ptrdiff_t stride, Tap ty, Tap tx) {
  const float* r0 = map + ty.i0 * stride;
  const float* r1 = map + ty.i1 * stride;
  const float left = lerp(r0[tx.i0], r1[tx.i0], ty.w);
  const float right = lerp(r0[tx.i1], r1[tx.i1], ty.w);
  return lerp(left, right, tx.w);
}

GRT_HD bool mask_on(float logit, float threshold) { return logit > threshold; }

// Bit of pixel x in its packed byte (numpy.packbits, bitorder big: first pixel in the MSB).
GRT_HD uint8_t packed_bit(int x) { return (uint8_t)(0x80u >> (x & 7)); }

// ---- per-phrase statistics --------------------------------------------------------------------

// Exact accumulator: every field is an integer, so partial sums merge in any order.
struct StatsAcc {
  unsigned long long area;
  unsigned long long sum_x;
  unsigned long long sum_y;
  unsigned long long score;  // sum of sigmoid(logit) in units of 2^-24
  int x_min, y_min, x_max, y_max;  // inclusive; INT32_MAX / -1 while empty
};

GRT_HD void stats_reset(StatsAcc& a) {
  a.area = a.sum_x = a.sum_y = a.score = 0;
  a.x_min = a.y_min = INT32_MAX;
  a.x_max = a.y_max = -1;
}

// sigmoid(logit) in [0, 1] as an integer number of 2^-24, truncated: exact for a probability of
// at least 0.5 (float's resolution there), off by less than 6e-8 below.
GRT_HD int32_t score_fixed(float logit) { return (int32_t)(sigmoid(logit) * kScoreUnit); }

GRT_HD void stats_add_pixel(StatsAcc& a, int x, int y, float logit) {
  a.area += 1;
  a.sum_x += (unsigned long long)x;
  a.sum_y += (unsigned long long)y;
  a.score += (unsigned long long)score_fixed(logit);
  a.x_min = x < a.x_min ? x : a.x_min;
  a.x_max = x > a.x_max ? x : a.x_max;
  a.y_min = y < a.y_min ? y : a.y_min;
  a.y_max = y > a.y_max ? y : a.y_max;
}

// A whole row's contribution: `count` pixels of row y between x_first and x_last.
GRT_HD void stats_add_row(StatsAcc& a, int y, unsigned long long count, unsigned long long sum_x,
                          unsigned long long score, int x_first, int x_last) {
  if (count == 0) return;
  a.area += count;
  a.sum_x += sum_x;
  a.sum_y += count * (unsigned long long)y;
  a.score += score;
  a.x_min = x_first < a.x_min ? x_first : a.x_min;
  a.x_max = x_last > a.x_max ? x_last : a.x_max;
  a.y_min = y < a.y_min ? y : a.y_min;
  a.y_max = y > a.y_max ? y : a.y_max;
}

// A whole column's contribution: `count` pixels of column x between rows y_first and y_last.
GRT_HD void stats_add_column(StatsAcc& a, int x, unsigned long long count,
                             unsigned long long sum_y, unsigned long long score, int y_first,
                             int y_last) {
  if (count == 0) return;
  a.area += count;
  a.sum_x += count * (unsigned long long)x;
  a.sum_y += sum_y;
  a.score += score;
  a.x_min = x < a.x_min ? x : a.x_min;
  a.x_max = x > a.x_max ? x : a.x_max;
  a.y_min = y_first < a.y_min ? y_first : a.y_min;
  a.y_max = y_last > a.y_max ? y_last : a.y_max;
}

GRT_HD void stats_merge(StatsAcc& a, const StatsAcc& b) {
  a.area += b.area;
  a.sum_x += b.sum_x;
  a.sum_y += b.sum_y;
  a.score += b.score;
  a.x_min = b.x_min < a.x_min ? b.x_min : a.x_min;
  a.x_max = b.x_max > a.x_max ? b.x_max : a.x_max;
  a.y_min = b.y_min < a.y_min ? b.y_min : a.y_min;
  a.y_max = b.y_max > a.y_max ? b.y_max : a.y_max;
}

GRT_HD grt_phrase_stats stats_finalize(const StatsAcc& a) {
  grt_phrase_stats s;
  if (a.area == 0) {
    s.area = 0;
    s.box[0] = s.box[1] = s.box[2] = s.box[3] = 0;
    s.centroid[0] = s.centroid[1] = 0.0;
    s.score = 0.0;
    return s;
  }
  const double n = (double)a.area;
  s.area = (int64_t)a.area;
  s.box[0] = a.x_min;
  s.box[1] = a.y_min;
  s.box[2] = a.x_max + 1;
  s.box[3] = a.y_max + 1;
  s.centroid[0] = (double)a.sum_x / n;
  s.centroid[1] = (double)a.sum_y / n;
  s.score = (double)a.score / (double)kScoreUnit / n;
  return s;
}

}  // namespace groundrt

#endif  // GROUNDRT_GROUNDING_MATH_H
