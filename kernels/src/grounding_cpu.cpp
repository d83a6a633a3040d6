// groundrt CPU kernels: mask-phrase affinity and mask decoding (C ABI, kernels_c.h).
//
// Phrases are decoded in parallel by `threads` workers (each phrase by one, so results do not
// depend on the thread count). The per-element arithmetic is groundrt/grounding_math.h (shared
// with the CUDA kernels); this file only arranges the loops for a CPU:
//   * low-res logits: each query used by some phrase is computed once over the image region,
//     d-outer so the inner loop runs over pixels (the same madd sequence as `dot`), then every
//     phrase takes the max over its selected queries;
//   * decoding: taps are precomputed per output row and column; only the output rows and columns
//     whose taps reach a low-res cell above the threshold are sampled (the rest are off, which
//     bilinear sampling guarantees: see active_cells); each sampled row first blends the two
//     source rows (lerp over y), then gathers the two x taps (lerp over x), thresholds, packs and
//     accumulates the row's statistics;
//   * surest parts: the parts of a phrase's low-res map are labelled by a flood fill over its
//     cells; one pass over the mask's box sums each part's statistics, a second over the box of
//     the parts that go clears their pixels.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <new>
#include <vector>

#include "groundrt/cpu_clones.h"
#include "groundrt/cpu_workers.h"
#include "groundrt/grounding_math.h"
#include "groundrt/kernels_c.h"

namespace {

// Low-res logits of every phrase over the region rows x cols -> out [P, rows, cols].
void region_logits(const float* pixel_embed, int D, int h, int w, int rows, int cols,
                   const float* mask_embed, int Q, const uint8_t* selected, int P,
                   std::vector<float>& out) {
  const size_t area = (size_t)rows * cols;
  const ptrdiff_t plane = (ptrdiff_t)h * w;
  std::vector<int> slot(Q, -1);
  int used = 0;
  for (int q = 0; q < Q; ++q) {
    for (int p = 0; p < P; ++p) {
      if (selected[(size_t)p * Q + q]) {
        slot[q] = used++;
        break;
      }
    }
  }
  std::vector<float> query_logits((size_t)used * area);
  for (int q = 0; q < Q; ++q) {
    if (slot[q] < 0) continue;
    const float* m = mask_embed + (size_t)q * D;
    float* dst = query_logits.data() + (size_t)slot[q] * area;
    for (int y = 0; y < rows; ++y) {
      float* acc = dst + (size_t)y * cols;
      std::fill(acc, acc + cols, 0.0f);
      for (int d = 0; d < D; ++d) {
        const float* src = pixel_embed + d * plane + (ptrdiff_t)y * w;
        const float md = m[d];
        for (int x = 0; x < cols; ++x) acc[x] = groundrt::madd(acc[x], md, src[x]);
      }
    }
  }
  out.resize((size_t)P * area);
  for (int p = 0; p < P; ++p) {
    float* logits = out.data() + (size_t)p * area;
    bool any = false;
    for (int q = 0; q < Q; ++q) {
      if (!selected[(size_t)p * Q + q]) continue;
      const float* src = query_logits.data() + (size_t)slot[q] * area;
      if (!any) {
        std::copy(src, src + area, logits);
      } else {
        for (size_t i = 0; i < area; ++i) logits[i] = groundrt::max_logit(logits[i], src[i]);
      }
      any = true;
    }
    if (!any) std::fill(logits, logits + area, groundrt::kNoLogit);
  }
}

// Sampling taps of every output pixel along one axis: indices i0, i1 and the weight w of i1.
// Taps are monotonic in the output index, so the outputs sharing one (i0, i1) pair form a run:
// run k covers outputs [run_start[k], run_start[k + 1]).
struct AxisTaps {
  std::vector<int> i0, i1;
  std::vector<float> w;
  std::vector<int> run_start;

  AxisTaps(int n_out, double crop, int n_src) : i0(n_out), i1(n_out), w(n_out) {
    for (int i = 0; i < n_out; ++i) {
      const groundrt::Tap t = groundrt::make_tap(i, crop / n_out, n_src);
      i0[i] = t.i0, i1[i] = t.i1, w[i] = t.w;
      if (i == 0 || i0[i] != i0[i - 1] || i1[i] != i1[i - 1]) run_start.push_back(i);
    }
    run_start.push_back(n_out);
  }
};

// values[X] = lerp(row[i0[X]], row[i1[X]], w[X]) for X in [first, last], run by run: within a
// run both taps are fixed, so the loop over X is contiguous (it vectorizes; a gather per pixel
// did not) and computes lerp's a + w * (b - a) with the same operations: the same bits.
GRT_AVX2_CLONES
void lerp_columns(const float* row, const AxisTaps& t, int first, int last, float* values) {
  const float* __restrict w = t.w.data();
  float* __restrict out = values;
  auto run = std::upper_bound(t.run_start.begin(), t.run_start.end(), first) - 1;
  for (; *run <= last; ++run) {
    const int begin = std::max(*run, first), end = std::min(*(run + 1), last + 1);
    const float a = row[t.i0[begin]], b_minus_a = row[t.i1[begin]] - a;
    for (int X = begin; X < end; ++X) out[X] = a + w[X] * b_minus_a;
  }
}

// The taps of every output row and column (shared, read-only, by the worker threads).
struct Taps {
  AxisTaps y, x;
};

// Per-thread row buffers: `cols` low-res cells, W output pixels.
struct RowBuffers {
  std::vector<float> blend, values;
  std::vector<uint8_t> on;
  std::vector<int32_t> probability;
  RowBuffers(int cols, int W) : blend(cols), values(W), on(W), probability(W) {}
};

// 0/1 bytes -> bits, numpy.packbits order (first pixel in the MSB), padding bits zero.
void pack_row(const uint8_t* on, int W, uint8_t* out) {
  const int full = W / 8;
  for (int j = 0; j < full; ++j) {
    const uint8_t* b = on + 8 * j;
    out[j] = (uint8_t)(b[0] << 7 | b[1] << 6 | b[2] << 5 | b[3] << 4 | b[4] << 3 | b[5] << 2 |
                       b[6] << 1 | b[7]);
  }
  if (full * 8 < W) {
    uint8_t byte = 0;
    for (int X = full * 8; X < W; ++X) byte |= on[X] ? groundrt::packed_bit(X) : 0;
    out[full] = byte;
  }
}

// Inclusive range [first, last] of the outputs whose two taps are not both outside the source
// range [lo, hi] (taps are monotonic in the output index); first > last when there is none.
void output_range(int n, const int* i0, const int* i1, int lo, int hi, int& first, int& last) {
  first = 0;
  while (first < n && i1[first] < lo) ++first;
  last = n - 1;
  while (last >= first && i0[last] > hi) --last;
}

// The low-res rows and columns that may turn output pixels on: cells above threshold - margin.
// A bilinear sample is a convex combination of four cells, so when all four are at most
// `threshold` the exact sample is too; float rounding can lift the computed sample above the
// exact one by less than 2e-6 of the largest |logit| (two lerps, a few roundings each), which
// the margin covers. Output pixels outside the range are off without being sampled.
struct ActiveCells {
  int row_lo, row_hi, col_lo, col_hi;  // inclusive; row_lo > row_hi when none
};

ActiveCells active_cells(const float* logits, int rows, int cols, float threshold) {
  float largest = 0.0f;
  for (size_t i = 0; i < (size_t)rows * cols; ++i) largest = std::max(largest, std::fabs(logits[i]));
  const float limit = threshold - 4e-6f * largest;
  ActiveCells a{rows, -1, cols, -1};
  for (int y = 0; y < rows; ++y) {
    const float* row = logits + (size_t)y * cols;
    for (int x = 0; x < cols; ++x) {
      if (row[x] > limit) {
        a.row_lo = std::min(a.row_lo, y);
        a.row_hi = y;
        a.col_lo = std::min(a.col_lo, x);
        a.col_hi = std::max(a.col_hi, x);
      }
    }
  }
  return a;
}

// Adds row Y's mask pixels in [begin, end) (on: 0/1 bytes, values: their logits, probability:
// scratch) to acc: their probabilities over the span between the first and last pixel (every
// pixel: a branch-free loop), then the sums in chunks of 128 pixels so that 32-bit lanes hold
// them (128 * 2^24 <= 2^31); every loop but the search for the span vectorizes.
GRT_AVX2_CLONES
void add_row_span(groundrt::StatsAcc& acc, int Y, const uint8_t* on, const float* values,
                  int32_t* probability, int begin, int end) {
  int first = begin, last = end - 1;
  while (first <= last && !on[first]) ++first;
  while (last >= first && !on[last]) --last;
  if (first > last) return;
  for (int X = first; X <= last; ++X) probability[X] = groundrt::score_fixed(values[X]);
  unsigned long long count = 0, sum_x = 0, score = 0;
  for (int start = first; start <= last; start += 128) {
    const int stop = std::min(last + 1, start + 128);
    uint32_t chunk_count = 0, chunk_x = 0, chunk_score = 0;
    for (int X = start; X < stop; ++X) {
      const uint32_t keep = 0u - (uint32_t)on[X];  // all ones for a mask pixel
      chunk_count += on[X];
      chunk_x += (uint32_t)(X - start) & keep;
      chunk_score += (uint32_t)probability[X] & keep;
    }
    count += chunk_count;
    sum_x += (unsigned long long)chunk_x + (unsigned long long)start * chunk_count;
    score += chunk_score;
  }
  groundrt::stats_add_row(acc, Y, count, sum_x, score, first, last);
}

// One phrase: masks [H, W] or [H, ceil(W / 8)] and its statistics.
GRT_AVX2_CLONES
void decode_phrase(const float* logits, int rows, int cols, const Taps& t, RowBuffers& b, int H,
                   int W, float threshold, bool packed, uint8_t* masks, grt_phrase_stats* stats) {
  groundrt::StatsAcc acc;
  groundrt::stats_reset(acc);
  const size_t row_bytes = packed ? (size_t)(W + 7) / 8 : (size_t)W;
  const int* __restrict x0 = t.x.i0.data();
  const int* __restrict x1 = t.x.i1.data();
  float* __restrict blend = b.blend.data();
  float* __restrict values = b.values.data();

  // Only the output rows and columns whose taps reach an active cell are sampled.
  const ActiveCells cells = active_cells(logits, rows, cols, threshold);
  int Y_first = 0, Y_last = -1, X_first = 0, X_last = -1;
  if (cells.row_lo <= cells.row_hi) {
    output_range(H, t.y.i0.data(), t.y.i1.data(), cells.row_lo, cells.row_hi, Y_first, Y_last);
    output_range(W, x0, x1, cells.col_lo, cells.col_hi, X_first, X_last);
  }
  if (Y_first > Y_last || X_first > X_last) {
    std::memset(masks, 0, (size_t)H * row_bytes);
    *stats = groundrt::stats_finalize(acc);
    return;
  }
  std::memset(masks, 0, (size_t)Y_first * row_bytes);
  std::memset(masks + (size_t)(Y_last + 1) * row_bytes, 0, (size_t)(H - 1 - Y_last) * row_bytes);
  const int c_first = x0[X_first], c_last = x1[X_last];

  for (int Y = Y_first; Y <= Y_last; ++Y) {
    const float* r0 = logits + (size_t)t.y.i0[Y] * cols;
    const float* r1 = logits + (size_t)t.y.i1[Y] * cols;
    const float wy = t.y.w[Y];
    for (int c = c_first; c <= c_last; ++c) blend[c] = groundrt::lerp(r0[c], r1[c], wy);
    lerp_columns(blend, t.x, X_first, X_last, values);

    // 0/1 of every pixel (the packed form packs these), then the row's statistics
    uint8_t* __restrict on = packed ? b.on.data() : masks + (size_t)Y * row_bytes;
    std::memset(on, 0, (size_t)X_first);
    std::memset(on + X_last + 1, 0, (size_t)(W - 1 - X_last));
    unsigned count = 0;
    for (int X = X_first; X <= X_last; ++X) {
      on[X] = groundrt::mask_on(values[X], threshold) ? 1 : 0;
      count += on[X];
    }
    if (packed) pack_row(on, W, masks + (size_t)Y * row_bytes);
    if (count > 0) add_row_span(acc, Y, on, values, b.probability.data(), X_first, X_last + 1);
  }
  *stats = groundrt::stats_finalize(acc);
}

constexpr double kSpeckShare = 0.01;  // a part with fewer of the map's cells is a speck

// Per-thread scratch of keep_surest.
struct PartBuffers {
  std::vector<int32_t> labels;  // [rows * cols]: 0, or the 1-based part of a cell > threshold
  std::vector<int32_t> stack;
  std::vector<long long> cells;  // [parts + 1]: cells of each part
  std::vector<groundrt::StatsAcc> parts;  // [parts + 1]: statistics of each part's mask pixels
  std::vector<uint8_t> keep;  // [parts + 1]
  std::vector<int32_t> row_labels;  // [cols]: the larger label of the two rows a row samples
  RowBuffers row;
  PartBuffers(int cols, int W) : row_labels(cols), row(cols, W) {}
};

// Labels the 8-connected parts of the cells > threshold; returns how many there are.
int label_parts(const float* logits, int rows, int cols, float threshold, PartBuffers& b) {
  b.labels.assign((size_t)rows * cols, 0);
  b.cells.assign(1, 0);
  int parts = 0;
  for (int start = 0; start < rows * cols; ++start) {
    if (b.labels[start] || !groundrt::mask_on(logits[start], threshold)) continue;
    b.labels[start] = ++parts;
    b.stack.assign(1, start);
    long long size = 0;
    while (!b.stack.empty()) {
      const int i = b.stack.back();
      b.stack.pop_back();
      ++size;
      const int y = i / cols, x = i % cols;
      for (int yy = std::max(0, y - 1); yy <= std::min(rows - 1, y + 1); ++yy) {
        for (int xx = std::max(0, x - 1); xx <= std::min(cols - 1, x + 1); ++xx) {
          const int j = yy * cols + xx;
          if (!b.labels[j] && groundrt::mask_on(logits[j], threshold)) {
            b.labels[j] = parts;
            b.stack.push_back(j);
          }
        }
      }
    }
    b.cells.push_back(size);
  }
  return parts;
}

// Calls visit(begin, end, part) for the spans of output columns [first, last] of row Y whose
// pixels all sample the cells of one part (or of none: 0): the runs of fixed taps, neighbours of
// the same part joined.
template <typename Visit>
void visit_parts(const int32_t* labels, int cols, const Taps& t, int Y, int first, int last,
                 PartBuffers& b, Visit&& visit) {
  const int32_t* l0 = labels + (size_t)t.y.i0[Y] * cols;
  const int32_t* l1 = labels + (size_t)t.y.i1[Y] * cols;
  for (int c = t.x.i0[first]; c <= t.x.i1[last]; ++c) b.row_labels[c] = std::max(l0[c], l1[c]);
  auto run = std::upper_bound(t.x.run_start.begin(), t.x.run_start.end(), first) - 1;
  int span = first, part = -1;
  for (; *run <= last; ++run) {
    const int begin = std::max(*run, first);
    const int k = std::max(b.row_labels[t.x.i0[begin]], b.row_labels[t.x.i1[begin]]);
    if (k != part) {
      if (part >= 0) visit(span, begin, part);
      span = begin, part = k;
    }
  }
  visit(span, last + 1, part);
}

// One phrase's mask [H, W] and stats rewritten without its less sure parts (kernels_c.h): the
// statistics of each part's pixels in one pass over the mask's box, then the pixels of the parts
// that go cleared; the kept parts' statistics merged are the mask's.
GRT_AVX2_CLONES
void keep_surest(const float* logits, int rows, int cols, const Taps& t, PartBuffers& b, int H,
                 int W, float threshold, double margin, uint8_t* mask,
                 grt_phrase_stats* stats) {
  if (stats->area == 0) return;
  const int parts = label_parts(logits, rows, cols, threshold, b);
  long long total = 0;
  for (int k = 1; k <= parts; ++k) total += b.cells[k];
  auto counts = [&](int k) { return b.cells[k] >= kSpeckShare * (double)total; };
  int candidates = 0;
  for (int k = 1; k <= parts; ++k) candidates += counts(k);
  if (candidates < 2) return;  // one part and specks at most: nothing to choose between

  const int x_lo = std::max(0, stats->box[0]), x_hi = std::min(W, stats->box[2]) - 1;
  const int y_lo = std::max(0, stats->box[1]), y_hi = std::min(H, stats->box[3]) - 1;
  if (x_lo > x_hi || y_lo > y_hi) return;
  b.parts.resize(parts + 1);
  for (groundrt::StatsAcc& acc : b.parts) groundrt::stats_reset(acc);
  for (int Y = y_lo; Y <= y_hi; ++Y) {
    const float* r0 = logits + (size_t)t.y.i0[Y] * cols;
    const float* r1 = logits + (size_t)t.y.i1[Y] * cols;
    for (int c = t.x.i0[x_lo]; c <= t.x.i1[x_hi]; ++c) {
      b.row.blend[c] = groundrt::lerp(r0[c], r1[c], t.y.w[Y]);
    }
    lerp_columns(b.row.blend.data(), t.x, x_lo, x_hi, b.row.values.data());
    const uint8_t* on = mask + (size_t)Y * W;
    visit_parts(b.labels.data(), cols, t, Y, x_lo, x_hi, b, [&](int begin, int end, int k) {
      add_row_span(b.parts[k], Y, on, b.row.values.data(), b.row.probability.data(), begin, end);
    });
  }
  // the parts' mean probabilities (a part without mask pixels counts as a speck); the surest
  // part's minus the margin is the bar
  auto competes = [&](int k) { return counts(k) && b.parts[k].area > 0; };
  auto mean = [&](int k) {
    return (double)b.parts[k].score / (double)b.parts[k].area / groundrt::kScoreUnit;
  };
  double best = -1.0;
  for (int k = 1; k <= parts; ++k) {
    if (competes(k)) best = std::max(best, mean(k));
  }
  if (best < 0.0) return;
  b.keep.assign(parts + 1, 1);  // 0: pixels lifted above the threshold by rounding alone stay
  groundrt::StatsAcc kept, gone;
  groundrt::stats_reset(kept);
  groundrt::stats_reset(gone);
  for (int k = 0; k <= parts; ++k) {
    b.keep[k] = k == 0 || (competes(k) && mean(k) >= best - margin);
    groundrt::stats_merge(b.keep[k] ? kept : gone, b.parts[k]);
  }
  if (gone.area == 0) return;
  for (int Y = gone.y_min; Y <= gone.y_max; ++Y) {  // only where the parts that go have pixels
    uint8_t* on = mask + (size_t)Y * W;
    visit_parts(b.labels.data(), cols, t, Y, gone.x_min, gone.x_max, b,
               [&](int begin, int end, int k) {
                 if (!b.keep[k]) std::memset(on + begin, 0, (size_t)(end - begin));
               });
  }
  *stats = groundrt::stats_finalize(kept);
}

}  // namespace

extern "C" {

GRT_API int grt_abi_version(void) { return GRT_ABI_VERSION; }

GRT_API int grt_affinity(const float* phrase_embed, const float* mask_embed, int32_t P, int32_t Q,
                         int32_t D, float logit_scale, float bias, const uint8_t* plural,
                         float threshold, float* scores, uint8_t* selected) {
  if (P < 0 || Q < 0 || D < 0) return GRT_ERROR_ARGUMENT;
  if (P == 0 || Q == 0) return GRT_OK;
  if (!phrase_embed || !mask_embed || !plural || !scores || !selected) return GRT_ERROR_ARGUMENT;
  try {
    std::vector<float> mask_norm(Q);
    for (int q = 0; q < Q; ++q) mask_norm[q] = groundrt::norm(mask_embed + (size_t)q * D, D);
    for (int p = 0; p < P; ++p) {
      const float* phrase = phrase_embed + (size_t)p * D;
      const float phrase_norm = groundrt::norm(phrase, D);
      float* row = scores + (size_t)p * Q;
      for (int q = 0; q < Q; ++q) {
        const float d = groundrt::dot(phrase, mask_embed + (size_t)q * D, D, 1);
        row[q] = groundrt::affinity_score(d, phrase_norm, mask_norm[q], logit_scale, bias);
      }
      const int best = groundrt::argmax_first(row, Q);
      uint8_t* sel = selected + (size_t)p * Q;
      for (int q = 0; q < Q; ++q) {
        sel[q] = groundrt::is_selected(q, best, plural[p] != 0, row[q], threshold) ? 1 : 0;
      }
    }
  } catch (const std::bad_alloc&) {
    return GRT_ERROR_MEMORY;
  }
  return GRT_OK;
}

GRT_API int grt_decode_masks(const float* pixel_embed, int32_t D, int32_t h, int32_t w,
                             const float* mask_embed, int32_t Q, const uint8_t* selected,
                             int32_t P, double crop_h, double crop_w, int32_t H, int32_t W,
                             float threshold, int32_t packed, int32_t threads,
                             uint8_t* masks, grt_phrase_stats* stats) {
  if (D < 0 || h < 1 || w < 1 || Q < 0 || P < 0 || H < 0 || W < 0) return GRT_ERROR_ARGUMENT;
  if (!(crop_h > 0.0) || !(crop_w > 0.0)) return GRT_ERROR_ARGUMENT;
  if (P == 0) return GRT_OK;
  if ((D > 0 && !pixel_embed) || !masks || !stats) return GRT_ERROR_ARGUMENT;
  if (Q > 0 && (!mask_embed || !selected)) return GRT_ERROR_ARGUMENT;
  try {
    const int rows = groundrt::region_extent(crop_h, h);
    const int cols = groundrt::region_extent(crop_w, w);
    std::vector<float> logits;
    region_logits(pixel_embed, D, h, w, rows, cols, mask_embed, Q, selected, P, logits);

    const Taps taps{AxisTaps(H, crop_h, rows), AxisTaps(W, crop_w, cols)};
    // Phrases are independent: `threads` workers take the next phrase from a shared counter.
    const int workers = std::max(1, std::min<int>(threads, P));
    std::vector<RowBuffers> buffers(workers, RowBuffers(cols, W));
    const size_t row_bytes = packed ? (size_t)(W + 7) / 8 : (size_t)W;
    const size_t area = (size_t)rows * cols;
    std::atomic<int> next{0};
    groundrt::run_workers(workers, [&](int worker) {  // decode_phrase allocates nothing
      for (int p = next++; p < P; p = next++) {
        decode_phrase(logits.data() + p * area, rows, cols, taps, buffers[worker], H, W,
                      threshold, packed != 0, masks + (size_t)p * H * row_bytes, stats + p);
      }
    });
  } catch (const std::bad_alloc&) {
    return GRT_ERROR_MEMORY;
  }
  return GRT_OK;
}

GRT_API int grt_keep_surest_parts(const float* pixel_embed, int32_t D, int32_t h, int32_t w,
                                  const float* mask_embed, int32_t Q, const uint8_t* selected,
                                  int32_t P, double crop_h, double crop_w, int32_t H, int32_t W,
                                  float threshold, const double* margins, int32_t threads,
                                  uint8_t* masks, grt_phrase_stats* stats) {
  if (D < 0 || h < 1 || w < 1 || Q < 0 || P < 0 || H < 0 || W < 0) return GRT_ERROR_ARGUMENT;
  if (!(crop_h > 0.0) || !(crop_w > 0.0)) return GRT_ERROR_ARGUMENT;
  if (P == 0) return GRT_OK;
  if ((D > 0 && !pixel_embed) || !margins || !masks || !stats) return GRT_ERROR_ARGUMENT;
  if (Q > 0 && (!mask_embed || !selected)) return GRT_ERROR_ARGUMENT;
  try {
    // the low-res maps of the phrases that keep their surest parts only
    std::vector<int> phrases;
    std::vector<uint8_t> chosen((size_t)P * Q, 0);
    for (int p = 0; p < P; ++p) {
      if (!(margins[p] >= 0.0) || stats[p].area == 0) continue;
      phrases.push_back(p);
      std::copy(selected + (size_t)p * Q, selected + (size_t)(p + 1) * Q,
                chosen.data() + (size_t)p * Q);
    }
    if (phrases.empty()) return GRT_OK;
    const int rows = groundrt::region_extent(crop_h, h);
    const int cols = groundrt::region_extent(crop_w, w);
    std::vector<float> logits;
    region_logits(pixel_embed, D, h, w, rows, cols, mask_embed, Q, chosen.data(), P, logits);

    const Taps taps{AxisTaps(H, crop_h, rows), AxisTaps(W, crop_w, cols)};
    const int count = (int)phrases.size();
    const int workers = std::max(1, std::min<int>(threads, count));
    std::vector<PartBuffers> buffers(workers, PartBuffers(cols, W));
    const size_t area = (size_t)rows * cols;
    std::atomic<int> next{0};
    std::atomic<bool> out_of_memory{false};
    groundrt::run_workers(workers, [&](int worker) {
      try {
        for (int i = next++; i < count; i = next++) {
          const int p = phrases[i];
          keep_surest(logits.data() + p * area, rows, cols, taps, buffers[worker], H, W,
                      threshold, margins[p], masks + (size_t)p * H * W, stats + p);
        }
      } catch (const std::bad_alloc&) {
        out_of_memory = true;
      }
    });
    if (out_of_memory) return GRT_ERROR_MEMORY;
  } catch (const std::bad_alloc&) {
    return GRT_ERROR_MEMORY;
  }
  return GRT_OK;
}

}  // extern "C"
