// groundrt CPU preprocessing: letterbox (area shrink into the top-left corner, pad the rest) and
// normalization by a per-channel table, in one pass (C ABI, kernels_c.h).
//
// Why not cv2.resize(INTER_AREA)? For non-integer ratios (640x480 -> 192x144 is 10/3) OpenCV
// takes its generic area path: about 1 ms on one core for a VGA frame, the largest stage of a
// grounding call. The same averages computed rows first (a contiguous, vectorizable blend of the
// ~4 source rows of an output row), then columns over that single blended row, take a fraction.
// The taps and weights are OpenCV's (computeResizeAreaTabs); only the summation order differs,
// so a value that lands on a rounding tie may come out 1 apart (the tests bound how often).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <vector>

#include "groundrt/cpu_clones.h"
#include "groundrt/cpu_workers.h"
#include "groundrt/kernels_c.h"

namespace {

constexpr int kChannels = 3;

// Source taps of each output position along one axis: output i averages the source interval
// [i * scale, (i + 1) * scale), scale = src / dst; a partly covered source cell gets its overlap.
// Tiny slivers (< 1e-3 of a cell) are dropped, as OpenCV does. Every output has `width` taps
// (the most any has), starting at first[i]; unused ones weigh 0 and point inside the source.
struct AreaTaps {
  int32_t width = 0;
  std::vector<int32_t> first;  // [dst]
  std::vector<float> weight;   // [dst, width]: the shares of one output sum to 1
};

AreaTaps area_taps(int32_t src, int32_t dst) {
  std::vector<std::vector<std::pair<int32_t, float>>> lists(dst);
  const double scale = (double)src / dst;
  for (int32_t i = 0; i < dst; ++i) {
    auto& taps = lists[i];
    const double lo = i * scale, hi = lo + scale;
    const double cell = std::min(scale, src - lo);
    int32_t first = (int32_t)std::ceil(lo), last = (int32_t)std::floor(hi);
    last = std::min(last, src - 1);
    first = std::min(first, last);
    if (first - lo > 1e-3) taps.emplace_back(first - 1, (float)((first - lo) / cell));
    for (int32_t k = first; k < last; ++k) taps.emplace_back(k, (float)(1.0 / cell));
    if (hi - last > 1e-3) {
      taps.emplace_back(last, (float)(std::min(std::min(hi - last, 1.0), cell) / cell));
    }
  }
  AreaTaps out;
  for (const auto& taps : lists) out.width = std::max(out.width, (int32_t)taps.size());
  out.first.resize(dst);
  out.weight.assign((size_t)dst * out.width, 0.0f);
  for (int32_t i = 0; i < dst; ++i) {
    // shift the window left where it would run past the source's end
    const int32_t first = std::min(lists[i].front().first, src - out.width);
    out.first[i] = first;
    for (const auto& [k, w] : lists[i]) out.weight[(size_t)i * out.width + (k - first)] = w;
  }
  return out;
}

// blended[v] += w * src[v] for v < n: the bulk of the row pass.
GRT_AVX2_CLONES
void blend_row(float* __restrict blended, const uint8_t* __restrict src, float w, int32_t n) {
  for (int32_t v = 0; v < n; ++v) blended[v] += w * (float)src[v];
}

// Output rows [y0, y1) of the letterbox (the shrunk image and its right-hand padding);
// `blended` holds W x 3 floats.
void letterbox_rows(const uint8_t* image, int64_t row_stride, int32_t W, const AreaTaps& rows,
                    const AreaTaps& cols, int32_t y0, int32_t y1, int32_t out_h, int32_t out_w,
                    uint8_t pad, const float* table, float* __restrict blended, float* out) {
  const size_t plane = (size_t)out_h * out_w;
  const int32_t row_values = W * kChannels;
  const int32_t inner_w = (int32_t)cols.first.size();
  for (int32_t y = y0; y < y1; ++y) {
    // rows first: blended = sum over the row taps of weight * source row (all W x 3 values)
    std::fill(blended, blended + row_values, 0.0f);
    for (int32_t t = 0; t < rows.width; ++t) {
      const float w = rows.weight[(size_t)y * rows.width + t];
      if (w == 0.0f) continue;
      blend_row(blended, image + (rows.first[y] + t) * row_stride, w, row_values);
    }
    // then columns, rounded to uint8 as cv2.resize rounds (to nearest, ties to even), and
    // normalized by the table; BGR channel c is RGB channel 2 - c
    float* dst[kChannels];
    for (int c = 0; c < kChannels; ++c) dst[c] = out + (2 - c) * plane + (size_t)y * out_w;
    for (int32_t x = 0; x < inner_w; ++x) {
      const float* px = blended + cols.first[x] * kChannels;
      const float* w = cols.weight.data() + (size_t)x * cols.width;
      float sum[kChannels] = {0.0f, 0.0f, 0.0f};
      for (int32_t t = 0; t < cols.width; ++t) {
        for (int c = 0; c < kChannels; ++c) sum[c] += w[t] * px[t * kChannels + c];
      }
      for (int c = 0; c < kChannels; ++c) {
        const long value = std::clamp(std::lrint(sum[c]), 0L, 255L);
        dst[c][x] = table[(2 - c) * 256 + value];
      }
    }
    for (int c = 0; c < kChannels; ++c) {
      std::fill(dst[c] + inner_w, dst[c] + out_w, table[(2 - c) * 256 + pad]);
    }
  }
}

}  // namespace

extern "C" GRT_API int grt_letterbox(const uint8_t* image, int32_t H, int32_t W,
                                     int64_t row_stride, int32_t out_h, int32_t out_w,
                                     int32_t inner_h, int32_t inner_w, uint8_t pad,
                                     const float* table, int32_t threads, float* out) {
  if (!image || !table || !out || H < 1 || W < 1 || inner_h < 1 || inner_w < 1 ||
      inner_h > out_h || inner_w > out_w || inner_h > H || inner_w > W ||
      row_stride < (int64_t)W * 3) {
    return GRT_ERROR_ARGUMENT;
  }
  try {
    const AreaTaps rows = area_taps(H, inner_h), cols = area_taps(W, inner_w);
    // output rows are independent: each worker takes a contiguous band
    const int workers = std::max(1, std::min<int>(threads, inner_h));
    std::vector<std::vector<float>> blended(workers, std::vector<float>((size_t)W * kChannels));
    groundrt::run_workers(workers, [&](int worker) {
      const int32_t y0 = (int32_t)((int64_t)inner_h * worker / workers);
      const int32_t y1 = (int32_t)((int64_t)inner_h * (worker + 1) / workers);
      letterbox_rows(image, row_stride, W, rows, cols, y0, y1, out_h, out_w, pad, table,
                     blended[worker].data(), out);
    });
    const size_t plane = (size_t)out_h * out_w;
    for (int c = 0; c < kChannels; ++c) {
      std::fill(out + c * plane + (size_t)inner_h * out_w, out + (c + 1) * plane,
                table[c * 256 + pad]);
    }
  } catch (const std::bad_alloc&) {
    return GRT_ERROR_MEMORY;
  }
  return GRT_OK;
}
