/* groundrt kernels: the C ABI of the CPU library (libgroundrt_kernels.so).
 *
 * Every array is dense, row-major (C order), in host memory. Functions return GRT_OK or an error
 * code and never keep a pointer after they return. Both functions are reentrant.
 *
 *   grt_affinity      phrase/mask affinity and the query selection of every phrase
 *   grt_decode_masks  phrase masks at the original image size plus per-phrase statistics
 *   grt_keep_surest_parts  a decoded mask without the parts of it the network is less sure of
 *   grt_letterbox     the model's input from a BGR image: area shrink, pad, normalize (CPU only)
 *
 * The per-element arithmetic of the first two is groundrt/grounding_math.h, shared with the CUDA
 * kernels (grt_keep_surest_parts runs on the CPU, after either back end's decoding).
 */
#ifndef GROUNDRT_KERNELS_C_H
#define GROUNDRT_KERNELS_C_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define GRT_API __declspec(dllexport)
#else
#define GRT_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define GRT_ABI_VERSION 6

enum grt_status {
  GRT_OK = 0,
  GRT_ERROR_ARGUMENT = 1, /* a null pointer, a negative size or a non-positive crop */
  GRT_ERROR_MEMORY = 2    /* scratch memory could not be allocated */
};

/* Statistics of one phrase mask; 48 bytes, the layout of the numpy dtype in kernels/cpu.py and
 * of what the CUDA kernel grt_finalize_stats writes. An empty mask has every field zero. */
typedef struct grt_phrase_stats {
  int64_t area;       /* number of mask pixels */
  int32_t box[4];     /* x0, y0, x1, y1; x1 and y1 exclusive */
  double centroid[2]; /* mean x, mean y of the mask pixels (pixel index units) */
  double score;       /* mean of sigmoid(logit) over the mask pixels */
} grt_phrase_stats;

/* Version of this ABI (GRT_ABI_VERSION of the library that was built). */
GRT_API int grt_abi_version(void);

/* phrase_embed [P, D], mask_embed [Q, D], plural [P] (0/1)
 *   -> scores [P, Q] = logit_scale * cos(phrase_p, mask_q) + bias (norms clamped at 1e-12),
 *      selected [P, Q] (0/1): the first maximum of each row, and for a plural phrase also every q
 *      with sigmoid(score) > threshold. */
GRT_API int grt_affinity(const float* phrase_embed, const float* mask_embed, int32_t P, int32_t Q,
                         int32_t D, float logit_scale, float bias, const uint8_t* plural,
                         float threshold, float* scores, uint8_t* selected);

/* pixel_embed [D, h, w], mask_embed [Q, D], selected [P, Q] (non-zero = selected)
 *   -> masks: [P, H, W] 0/1 bytes, or when `packed` is non-zero [P, H, (W + 7) / 8] bits in
 *      numpy.packbits order (first pixel in the most significant bit, padding bits zero);
 *      stats [P].
 * The low-res logit of phrase p is the max over its selected queries of <mask_q, pixel(y, x)>
 * (a phrase with no selected query has logit -1e30 everywhere: an empty mask). Output pixel
 * (Y, X) samples it bilinearly at ((X + 0.5) * crop_w / W - 0.5, (Y + 0.5) * crop_h / H - 0.5)
 * inside the region rows = min(h, ceil(crop_h)), cols = min(w, ceil(crop_w)), coordinates
 * clamped to the region's edge; the pixel is on when the sampled logit > threshold.
 * Up to `threads` threads decode phrases in parallel (1: the calling thread only); the results
 * do not depend on it. */
GRT_API int grt_decode_masks(const float* pixel_embed, int32_t D, int32_t h, int32_t w,
                             const float* mask_embed, int32_t Q, const uint8_t* selected,
                             int32_t P, double crop_h, double crop_w, int32_t H, int32_t W,
                             float threshold, int32_t packed, int32_t threads,
                             uint8_t* masks, grt_phrase_stats* stats);

/* A mask keeps the parts of it the network is surest of (network v2's singulars: a network unsure
 * which of two look-alikes a phrase names covers both, less surely the wrong one).
 * masks [P, H, W] 0/1 bytes and stats [P], as grt_decode_masks wrote them for the same
 * arguments (or the CUDA kernels: the same bits), are rewritten in place for every phrase with
 * margins[p] >= 0 (the others are left as they are). Its parts are the 8-connected sets of the
 * region's low-res cells with logit > threshold; a part holding under 1% of those cells is a
 * speck. A mask pixel belongs to the part of its bilinear taps' cells (two parts never share a
 * pixel's taps: they would be 8-connected). With at least two parts that are not specks, a part
 * is kept when the mean of sigmoid(logit) over its mask pixels (in 2^-24 units, as the stats'
 * score) is at least the largest such mean minus margins[p]; the pixels of the other parts and
 * of the specks are cleared and stats[p] describes what is left (a part without mask pixels
 * counts as a speck; a pixel none of whose taps is above the threshold, on by rounding alone,
 * stays). With fewer, the mask stays whole. On GRT_ERROR_MEMORY some phrases may already have
 * been rewritten (each phrase is rewritten whole or not at all). Up to `threads` threads take
 * phrases in parallel; the results do not depend on it. */
GRT_API int grt_keep_surest_parts(const float* pixel_embed, int32_t D, int32_t h, int32_t w,
                                  const float* mask_embed, int32_t Q, const uint8_t* selected,
                                  int32_t P, double crop_h, double crop_w, int32_t H, int32_t W,
                                  float threshold, const double* margins, int32_t threads,
                                  uint8_t* masks, grt_phrase_stats* stats);

/* image [H, W, 3] uint8 BGR, rows `row_stride` bytes apart (>= 3 W)
 *   -> out [3, out_h, out_w] float32, RGB planes: the image shrunk by area averaging to
 *      inner_h x inner_w (what cv2.resize with INTER_AREA computes, rounded to uint8 the same
 *      way; a value on a rounding tie may differ by 1) in the top-left corner, `pad` everywhere
 *      else, and every uint8 value v of RGB channel c replaced by table[c * 256 + v] (the
 *      normalization).
 * Shrinking only: inner_h <= H, inner_w <= W (and <= out_h, out_w); anything else is
 * GRT_ERROR_ARGUMENT. Up to `threads` threads shrink bands of rows (1: the calling thread
 * only); the values do not depend on it. */
GRT_API int grt_letterbox(const uint8_t* image, int32_t H, int32_t W, int64_t row_stride,
                          int32_t out_h, int32_t out_w, int32_t inner_h, int32_t inner_w,
                          uint8_t pad, const float* table, int32_t threads, float* out);

#ifdef __cplusplus
}
#endif

#endif /* GROUNDRT_KERNELS_C_H */
