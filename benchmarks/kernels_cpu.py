"""CPU grounding kernels vs the straightforward numpy/OpenCV decoding, side by side.

    python benchmarks/kernels_cpu.py [--runs 50] [--phrases 8]

One image: a 640 x 480 original letterboxed into 640 x 640 at stride 16 (a 40 x 40 pixel_embed,
D = 48), Q = 24 queries, 8 phrases (half plural). Timed: affinity + selection + mask decoding +
per-phrase stats (area, box, centroid, mean probability). The numpy/OpenCV version computes the
low-res logits with matmuls, then per phrase cv2.resize of the logit crop, sigmoid, threshold and
np.nonzero. Prints the median of `--runs` calls of each and the ratio.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
from timing import median, percentile, timed

from groundrt.kernels import cpu
from groundrt.preprocess import Letterbox
from groundrt.runtime import reference

HEIGHT, WIDTH, STRIDE, SIZE = 480, 640, 16, 640
DIM, QUERIES = 48, 24
LOGIT_SCALE, BIAS, THRESHOLD = 10.0, -2.0, 0.5


def inputs(num_phrases: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    cells = SIZE // STRIDE
    return {
        "phrase": rng.standard_normal((num_phrases, DIM)).astype(np.float32),
        "masks": rng.standard_normal((QUERIES, DIM)).astype(np.float32),
        "pixel": rng.standard_normal((DIM, cells, cells)).astype(np.float32),
        "plural": np.arange(num_phrases) % 2 == 1,
    }


def numpy_opencv(x: dict, crop: tuple[float, float]) -> list[tuple]:
    """The plain version: numpy logits, then cv2.resize + sigmoid + np.nonzero per phrase."""
    scores = reference.affinity(x["phrase"], x["masks"], LOGIT_SCALE, BIAS)
    selected = reference.select_queries(scores, x["plural"], THRESHOLD)
    low = reference.phrase_logits(selected, x["masks"], x["pixel"])
    rows, cols = int(np.ceil(crop[0])), int(np.ceil(crop[1]))
    out = []
    for logits in low:
        up = cv2.resize(logits[:rows, :cols], (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
        prob = 1.0 / (1.0 + np.exp(-up))
        mask = up > 0.0
        ys, xs = np.nonzero(mask)
        if len(xs):
            box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            out.append((mask, len(xs), box, (xs.mean(), ys.mean()), prob[mask].mean()))
        else:
            out.append((mask, 0, (0, 0, 0, 0), (0.0, 0.0), 0.0))
    return out


def kernels(x: dict, crop: tuple[float, float], out: tuple) -> tuple:
    _, selected = cpu.affinity(x["phrase"], x["masks"], LOGIT_SCALE, BIAS, x["plural"],
                               THRESHOLD, out=out[0])
    return cpu.decode_masks(x["pixel"], x["masks"], selected, crop[0], crop[1], HEIGHT, WIDTH,
                            out=out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--phrases", type=int, default=8)
    args = parser.parse_args()

    x = inputs(args.phrases)
    crop = Letterbox(SIZE, HEIGHT, WIDTH).crop_region(STRIDE)
    shape = (args.phrases, QUERIES)
    out = ((np.empty(shape, np.float32), np.empty(shape, np.uint8)),
           (np.empty((args.phrases, HEIGHT, WIDTH), np.uint8),
            np.empty(args.phrases, cpu.STATS_DTYPE)))
    masks, stats = kernels(x, crop, out)
    plain = numpy_opencv(x, crop)
    agree = np.mean([(m.astype(bool) == p[0]).mean() for m, p in zip(masks, plain, strict=True)])

    native = timed(lambda: kernels(x, crop, out), args.runs)
    numpy_ms = timed(lambda: numpy_opencv(x, crop), args.runs)
    print(f"{args.phrases} phrases, {WIDTH}x{HEIGHT} from a {x['pixel'].shape[1]}x"
          f"{x['pixel'].shape[2]} pixel_embed, D={DIM}, Q={QUERIES}; median (p90) of "
          f"{args.runs} runs; mask agreement {agree:.5f} (cv2 weights are 1/32-pixel)")
    print(f"  C++ kernels (libgroundrt_kernels): {median(native):8.3f} ms "
          f"({percentile(native, 0.9):.3f})")
    print(f"  numpy + OpenCV:                    {median(numpy_ms):8.3f} ms "
          f"({percentile(numpy_ms, 0.9):.3f})")
    print(f"  ratio numpy/C++: {median(numpy_ms) / median(native):.2f}x")


if __name__ == "__main__":
    main()
