// Hand-computed cases through the C ABI of libgroundrt_kernels (run by ctest).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <initializer_list>

#include "groundrt/grounding_math.h"
#include "groundrt/kernels_c.h"

static int failures = 0;

#define CHECK(cond)                                                  \
  do {                                                               \
    if (!(cond)) {                                                   \
      std::fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                    \
    }                                                                \
  } while (0)

static bool near(double a, double b, double tol) { return std::fabs(a - b) <= tol; }

static void test_affinity() {
  // phrases (1, 0) singular and (0, 2) plural; masks (1, 0), (0, 1), (1, 1)
  const float phrase[] = {1, 0, 0, 2};
  const float mask[] = {1, 0, 0, 1, 1, 1};
  const uint8_t plural[] = {0, 1};
  float scores[6];
  uint8_t selected[6];
  std::memset(selected, 0xAB, sizeof selected);
  CHECK(grt_affinity(phrase, mask, 2, 3, 2, 10.0f, -5.0f, plural, 0.5f, scores, selected) ==
        GRT_OK);
  const double diag = 10.0 / std::sqrt(2.0) - 5.0;
  const double expected[] = {5, -5, diag, -5, 5, diag};
  for (int i = 0; i < 6; ++i) CHECK(near(scores[i], expected[i], 1e-5));
  const uint8_t expected_selected[] = {1, 0, 0, 0, 1, 1};
  for (int i = 0; i < 6; ++i) CHECK(selected[i] == expected_selected[i]);
  CHECK(grt_affinity(phrase, mask, -1, 3, 2, 1.0f, 0.0f, plural, 0.5f, scores, selected) ==
        GRT_ERROR_ARGUMENT);
}

static void test_decode(int packed, int threads) {
  // D = 1, one query of weight 1: the logit map is the pixel map 2y + x on a 2 x 2 grid; the
  // 4 x 4 output samples it at 0, 1/4, 3/4, 1 along each axis (clamped at the edges).
  const float pixel[] = {0, 1, 2, 3};
  const float mask[] = {1};
  const uint8_t selected[] = {1, 0};  // phrase 1 selects nothing: empty mask
  uint8_t masks[2 * 4 * 4];
  grt_phrase_stats stats[2];
  std::memset(masks, 0xAB, sizeof masks);
  std::memset(stats, 0xAB, sizeof stats);
  CHECK(grt_decode_masks(pixel, 1, 2, 2, mask, 1, selected, 2, 2.0, 2.0, 4, 4, 1.6f, packed,
                         threads, masks, stats) == GRT_OK);
  const uint8_t expected[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1};
  if (packed) {
    const uint8_t expected_bits[] = {0x00, 0x00, 0x70, 0xF0, 0, 0, 0, 0};
    for (int i = 0; i < 8; ++i) CHECK(masks[i] == expected_bits[i]);
  } else {
    for (int i = 0; i < 16; ++i) CHECK(masks[i] == expected[i]);
    for (int i = 16; i < 32; ++i) CHECK(masks[i] == 0);
  }
  CHECK(stats[0].area == 7);
  CHECK(stats[0].box[0] == 0 && stats[0].box[1] == 2 && stats[0].box[2] == 4 &&
        stats[0].box[3] == 4);
  CHECK(near(stats[0].centroid[0], 12.0 / 7.0, 1e-12));
  CHECK(near(stats[0].centroid[1], 18.0 / 7.0, 1e-12));
  const double logits[] = {1.75, 2.25, 2.5, 2.0, 2.25, 2.75, 3.0};
  double score = 0;
  for (double v : logits) score += 1.0 / (1.0 + std::exp(-v)) / 7.0;
  CHECK(near(stats[0].score, score, 1e-6));
  CHECK(stats[1].area == 0 && stats[1].box[2] == 0 && stats[1].score == 0.0);
  CHECK(stats[1].centroid[0] == 0.0 && stats[1].centroid[1] == 0.0);
}

// The shared per-element functions the C ABI does not reach (the GPU's column statistics).
static void test_shared_math() {
  double worst = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.001953125f) {
    const double exact = std::exp((double)x);
    worst = std::fmax(worst, std::fabs(groundrt::exp_approx(x) - exact) / exact);
  }
  CHECK(worst < 1.2e-7);  // 1 ulp
  CHECK(groundrt::score_fixed(groundrt::kNoLogit) == 0 && groundrt::sigmoid(1e30f) == 1.0f);
  CHECK(groundrt::score_fixed(0.0f) == (1 << 23));  // sigmoid(0) = 1/2 exactly

  const groundrt::Tap t = groundrt::make_tap(0, 0.5, 2);  // source -0.25: clamped, weight 0.75
  CHECK(t.i0 == 0 && t.i1 == 0 && t.w == 0.75f);
  CHECK(groundrt::lerp(3.0f, 3.0f, 0.3f) == 3.0f);

  // pixels (x, y, logit) of a 3 x 4 mask, accumulated per pixel, per row and per column
  const int xs[] = {0, 2, 2, 1, 2};
  const int ys[] = {1, 1, 2, 3, 3};
  const float vs[] = {0.5f, 1.0f, 2.0f, 3.0f, 4.0f};
  groundrt::StatsAcc pixels, rows, columns;
  groundrt::stats_reset(pixels);
  groundrt::stats_reset(rows);
  groundrt::stats_reset(columns);
  for (int i = 0; i < 5; ++i) groundrt::stats_add_pixel(pixels, xs[i], ys[i], vs[i]);
  for (int y = 0; y < 4; ++y) {
    unsigned long long n = 0, sum_x = 0, score = 0;
    int first = -1, last = -1;
    for (int i = 0; i < 5; ++i) {
      if (ys[i] != y) continue;
      ++n, sum_x += xs[i], score += groundrt::score_fixed(vs[i]);
      first = first < 0 ? xs[i] : first, last = xs[i];
    }
    groundrt::stats_add_row(rows, y, n, sum_x, score, first, last);
  }
  for (int x = 0; x < 3; ++x) {
    unsigned long long n = 0, sum_y = 0, score = 0;
    int first = -1, last = -1;
    for (int i = 0; i < 5; ++i) {
      if (xs[i] != x) continue;
      ++n, sum_y += ys[i], score += groundrt::score_fixed(vs[i]);
      first = first < 0 ? ys[i] : first, last = ys[i];
    }
    groundrt::stats_add_column(columns, x, n, sum_y, score, first, last);
  }
  const grt_phrase_stats a = groundrt::stats_finalize(pixels);
  const grt_phrase_stats b = groundrt::stats_finalize(rows);
  const grt_phrase_stats c = groundrt::stats_finalize(columns);
  CHECK(std::memcmp(&a, &b, sizeof a) == 0 && std::memcmp(&a, &c, sizeof a) == 0);
  CHECK(a.area == 5 && a.box[0] == 0 && a.box[1] == 1 && a.box[2] == 3 && a.box[3] == 4);
}

static void test_letterbox() {
  // a 2 x 3 BGR image -> a 2 x 3 input (not square), inner 1 x 2: ratio 2 over rows, 1.5 over columns, so output x = 0
  // averages columns 0 and half of 1, x = 1 half of 1 and 2 (weights 2/3, 1/3 and 1/3, 2/3)
  const uint8_t image[2 * 3 * 3] = {
      0, 10, 100, 30, 40, 130, 60, 70, 160,   // row 0: B, G, R of three pixels
      0, 20, 200, 30, 50, 230, 90, 80, 190};  // row 1
  float table[3 * 256];
  for (int c = 0; c < 3; ++c) {
    for (int v = 0; v < 256; ++v) table[c * 256 + v] = 1000.0f * c + v;  // RGB channel c
  }
  float out[3 * 2 * 3];
  CHECK(grt_letterbox(image, 2, 3, 9, 2, 3, 1, 2, 7, table, 2, out) == GRT_OK);
  // BGR channel b of output x: rounded average over the two rows and the column taps
  auto expect = [&](int b, int x) {
    const double rows[3] = {(image[b] + image[9 + b]) / 2.0, (image[3 + b] + image[12 + b]) / 2.0,
                            (image[6 + b] + image[15 + b]) / 2.0};
    const double v = x == 0 ? (rows[0] + 0.5 * rows[1]) / 1.5 : (0.5 * rows[1] + rows[2]) / 1.5;
    return 1000.0 * (2 - b) + std::nearbyint(v);
  };
  for (int b = 0; b < 3; ++b) {
    const float* plane = out + (2 - b) * 6;  // RGB plane of BGR channel b
    CHECK(plane[0] == expect(b, 0) && plane[1] == expect(b, 1));
    CHECK(plane[2] == 1000.0f * (2 - b) + 7);  // padding column
    for (int i = 3; i < 6; ++i) CHECK(plane[i] == 1000.0f * (2 - b) + 7);  // padding row
  }
  // enlarging and a row stride shorter than a row are refused
  CHECK(grt_letterbox(image, 2, 3, 9, 3, 3, 3, 3, 7, table, 1, out) == GRT_ERROR_ARGUMENT);
  CHECK(grt_letterbox(image, 2, 3, 8, 2, 3, 1, 2, 7, table, 1, out) == GRT_ERROR_ARGUMENT);
  // an inner size beyond the input is refused
  CHECK(grt_letterbox(image, 2, 3, 9, 1, 1, 1, 2, 7, table, 1, out) == GRT_ERROR_ARGUMENT);
}

// A 4 x 8 map holding a sure part (logit 4, columns 0-1) and a less sure one (logit 1, columns
// 5-6), decoded at 8 x 16 for two phrases (two workers with 2 threads): with margin 0.05 the less
// sure part goes and the result is the decoding of the map without it, stats included; with
// margin 0.5 both stay; a negative margin leaves its phrase as decoded.
static void test_keep_surest_parts(int threads) {
  float map[32], without[32];
  for (int i = 0; i < 32; ++i) {
    const int x = i % 8;
    map[i] = x < 2 ? 4.0f : (x == 5 || x == 6 ? 1.0f : -6.0f);
    without[i] = map[i] == 1.0f ? -6.0f : map[i];
  }
  const float one[] = {1};
  const uint8_t selected[] = {1, 1};
  uint8_t masks[2 * 128], whole[2 * 128], expected[2 * 128];
  grt_phrase_stats stats[2], whole_stats[2], expected_stats[2];
  CHECK(grt_decode_masks(without, 1, 4, 8, one, 1, selected, 2, 4.0, 8.0, 8, 16, 0.0f, 0, 1,
                         expected, expected_stats) == GRT_OK);
  CHECK(grt_decode_masks(map, 1, 4, 8, one, 1, selected, 2, 4.0, 8.0, 8, 16, 0.0f, 0, 1, whole,
                         whole_stats) == GRT_OK);
  CHECK(whole_stats[0].area > expected_stats[0].area);
  for (double margin : {0.05, 0.5, -1.0}) {
    std::memcpy(masks, whole, sizeof masks);
    std::memcpy(stats, whole_stats, sizeof stats);
    const double margins[] = {margin, margin};
    CHECK(grt_keep_surest_parts(map, 1, 4, 8, one, 1, selected, 2, 4.0, 8.0, 8, 16, 0.0f,
                                margins, threads, masks, stats) == GRT_OK);
    const bool trimmed = margin >= 0.0 && margin < 0.1;
    CHECK(std::memcmp(masks, trimmed ? expected : whole, sizeof masks) == 0);
    CHECK(std::memcmp(stats, trimmed ? expected_stats : whole_stats, sizeof stats) == 0);
  }
  CHECK(grt_keep_surest_parts(map, 1, 4, 8, one, 1, selected, 2, 4.0, 8.0, 8, 16, 0.0f, nullptr,
                              threads, masks, stats) == GRT_ERROR_ARGUMENT);
  const double none[] = {-1.0, -1.0};
  CHECK(grt_keep_surest_parts(map, 1, 4, 8, one, 1, selected, 2, 0.0, 8.0, 8, 16, 0.0f, none,
                              threads, masks, stats) == GRT_ERROR_ARGUMENT);
}

int main() {
  CHECK(grt_abi_version() == GRT_ABI_VERSION);
  test_shared_math();
  test_affinity();
  test_decode(0, 1);
  test_decode(0, 2);
  test_decode(1, 1);
  test_decode(1, 2);
  test_keep_surest_parts(1);
  test_keep_surest_parts(2);
  test_letterbox();
  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::puts("groundrt CPU kernels: all checks passed");
  return 0;
}
