"""CPU grounding kernels vs the straightforward numpy/OpenCV decoding, side by side.

    python benchmarks/kernels_cpu.py [--runs 50]

Timed: affinity + selection + mask decoding + per-phrase stats (area, box, centroid, mean
probability) of 8 phrases at 640 x 480 from a 40 x 40 pixel_embed (D = 48, Q = 24). Two inputs:
* `random`: standard normal embeddings, about half of every mask on (the kernels' worst case:
  nothing to skip);
* `sample scene`: the shipped model's embeddings of a sample scene and an 8-phrase caption
  (things and stuff; the kernels sample only near cells above the threshold).
The numpy/OpenCV version computes the low-res logits with matmuls, then per phrase cv2.resize of
the logit crop, sigmoid, threshold and np.nonzero. Median (p90) of `--runs` calls of each, the
kernels on 1 and 2 threads, and the ratios.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
from timing import median, percentile, timed

import groundrt
from groundrt.kernels import cpu
from groundrt.preprocess import Letterbox
from groundrt.runtime import reference
from groundrt.runtime.bench import DEFAULT_CAPTION, sample_image

HEIGHT, WIDTH = 480, 640
DIM, QUERIES, PHRASES = 48, 24, 8


def random_inputs(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "phrase": rng.standard_normal((PHRASES, DIM)).astype(np.float32),
        "masks": rng.standard_normal((QUERIES, DIM)).astype(np.float32),
        "pixel": rng.standard_normal((DIM, 40, 40)).astype(np.float32),
        "plural": np.arange(PHRASES) % 2 == 1,
        "crop": Letterbox((640, 640), HEIGHT, WIDTH).crop_region(16),
        "logit_scale": 10.0, "bias": -2.0, "threshold": 0.5,
    }


def scene_inputs() -> dict:
    """The shipped package's embeddings of a sample scene resized to 640 x 480."""
    image = sample_image(WIDTH, HEIGHT)
    grounder = groundrt.Grounder()
    text = grounder.encode_text(DEFAULT_CAPTION)
    prepared = grounder.prepare(image)
    embeddings = grounder.infer(prepared.input[None]).item(0)
    g = grounder.grounding
    return {"phrase": text.phrase_embed, "masks": embeddings.mask_embed,
            "pixel": embeddings.pixel_embed,
            "plural": text.plural, "crop": prepared.box.crop_region(g["pixel_stride"]),
            "logit_scale": g["logit_scale"], "bias": g["affinity_bias"],
            "threshold": g["plural_threshold"]}


def numpy_opencv(x: dict) -> list[tuple]:
    """The plain version: numpy logits, then cv2.resize + sigmoid + np.nonzero per phrase."""
    scores = reference.affinity(x["phrase"], x["masks"], x["logit_scale"], x["bias"])
    selected = reference.select_queries(scores, x["plural"], x["threshold"])
    crop = x["crop"]
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


def kernels(x: dict, out: tuple, threads: int) -> tuple:
    _, selected = cpu.affinity(x["phrase"], x["masks"], x["logit_scale"], x["bias"],
                               x["plural"], x["threshold"], out=out[0])
    return cpu.decode_masks(x["pixel"], x["masks"], selected, *x["crop"], HEIGHT, WIDTH,
                            out=out[1], threads=threads)


def compare(name: str, x: dict, runs: int) -> None:
    phrases = len(x["phrase"])
    out = ((np.empty((phrases, QUERIES), np.float32), np.empty((phrases, QUERIES), np.uint8)),
           (np.empty((phrases, HEIGHT, WIDTH), np.uint8), np.empty(phrases, cpu.STATS_DTYPE)))
    masks, _ = kernels(x, out, 1)
    plain = numpy_opencv(x)
    agree = np.mean([(m.astype(bool) == p[0]).mean() for m, p in zip(masks, plain, strict=True)])
    coverage = np.mean([p[0].mean() for p in plain])
    rows = {f"C++ kernels, {t} thread{'s' if t > 1 else ''}":
            timed(lambda t=t: kernels(x, out, t), runs) for t in (1, 2)}
    rows["numpy + OpenCV"] = timed(lambda: numpy_opencv(x), runs)
    print(f"{name}: {phrases} phrases, {WIDTH}x{HEIGHT}, masks cover {coverage:.1%} of the "
          f"image; mask agreement {agree:.5f} (cv2 weights are 1/32-pixel)")
    for row, times in rows.items():
        print(f"  {row:<26} {median(times):8.3f} ms ({percentile(times, 0.9):.3f})")
    plain_ms = median(rows["numpy + OpenCV"])
    for threads in (1, 2):
        key = next(k for k in rows if k.startswith(f"C++ kernels, {threads} "))
        print(f"  ratio numpy/C++ ({threads} thread{'s' if threads > 1 else ''}): "
              f"{plain_ms / median(rows[key]):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    print(f"median (p90) of {args.runs} runs")
    compare("random", random_inputs(), args.runs)
    compare("sample scene", scene_inputs(), args.runs)


if __name__ == "__main__":
    main()
