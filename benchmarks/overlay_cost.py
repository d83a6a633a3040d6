"""What an annotated frame costs: `groundrt run`'s overlay (masks, outlines, labels, the FPS /
latency strip) at 640 x 480 with 8 phrases.

    python benchmarks/overlay_cost.py [--runs 200]

Two results, each drawn by `sinks.annotate` (what --save, --show and the live view call per
frame), median and p90 of `--runs` calls after 5 untimed ones:
* `sample scene`: the shipped model's result for the first committed sample scene and the
  benchmark's 8-phrase caption (two plurals; phrases it does not find are not drawn). Each call
  decodes the plurals' instances again (`PhraseResult.instances` is lazy), as a stream does;
* `8 found`: 8 hand-made masks, all found (two sky/grass regions, six things, two of them
  plurals of 2 and 3 instances), the scores changing every call as they do from frame to frame.
`first call` is one call with the label caches empty (fonts loaded, glyphs looked up, text
drawn). The script runs on any checkout (it also timed the overlay that came before it).
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
from timing import median, percentile, timed

import groundrt
from groundrt.runtime.bench import DEFAULT_CAPTION, sample_image
from groundrt.runtime.results import GroundingResult, PhraseResult
from groundrt.runtime.sinks import annotate
from groundrt.runtime.sources import Frame

HEIGHT, WIDTH = 480, 640


def made_up_result() -> GroundingResult:
    """8 found phrases: the sky and the grass, four things, two plurals."""
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    horizon = 180 + 20 * np.sin(xx / 60)
    disc = [((xx - cx) ** 2 + (yy - cy) ** 2 < r * r) for cx, cy, r in
            ((120, 300, 40), (300, 260, 30), (470, 330, 35), (560, 400, 25),
             (80, 420, 20), (200, 420, 22), (380, 420, 24), (520, 240, 18), (600, 300, 16))]
    masks = [(yy < horizon), (yy >= horizon) & ~np.logical_or.reduce(disc)]
    texts = ["the sky", "the grass", "a red circle", "a blue star", "a green square",
             "an orange ring", "two yellow triangles", "three white hexagons"]
    groups = [[d] for d in disc[:4]] + [disc[4:6], disc[6:9]]
    phrases = []
    for k, (text, mask) in enumerate(zip(texts, masks + [np.logical_or.reduce(g)
                                                         for g in groups], strict=True)):
        ys, xs = np.nonzero(mask)
        instances = groups[k - 2] if k >= 2 else [mask]
        phrases.append(PhraseResult(
            text=text, span=None, plural=len(instances) > 1, mask=mask, score=0.9,
            area=int(mask.sum()), box=(int(xs.min()), int(ys.min()), int(xs.max()) + 1,
                                       int(ys.max()) + 1),
            centroid=(float(xs.mean()), float(ys.mean())),
            queries=list(range(len(instances))), _instances=lambda i=instances: list(i)))
    return GroundingResult((HEIGHT, WIDTH), None, phrases)


def clear_label_caches() -> bool:
    """Empty the label caches; False where this checkout has none."""
    from groundrt.runtime import fonts  # before it: the font folder only, no module

    if not hasattr(fonts, "text_box"):
        return False
    for cached in (fonts.text_box, fonts.face_for, fonts._face, fonts._missing_signature):
        cached.cache_clear()
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    image = sample_image(WIDTH, HEIGHT)
    real = groundrt.Grounder().ground(image, DEFAULT_CAPTION)
    cases = {"sample scene": real, "8 found": made_up_result()}
    print(f"overlay per frame at {WIDTH}x{HEIGHT}, {args.runs} runs, ms")
    print(f"{'result':<14}{'phrases drawn':>14}{'first call':>12}{'median':>9}{'p90':>9}")
    for name, result in cases.items():
        frame = Frame(0, 0.0, image, "frame 0")
        scores = itertools.cycle(np.linspace(0.5, 0.99, 50))

        def draw(result=result, frame=frame, scores=scores) -> None:
            for phrase in result.phrases:  # a new score every frame, as in a stream
                phrase.score = float(next(scores))
            annotate(frame, result, 10.0)

        first = "n/a"
        if clear_label_caches():
            first = f"{timed(draw, 1, warmup=0)[0]:.2f}"
        times = timed(draw, args.runs)
        drawn = sum(1 for p in result.phrases if p.area)
        print(f"{name:<14}{drawn:>14}{first:>12}{median(times):>9.2f}"
              f"{percentile(times, 0.9):>9.2f}")


if __name__ == "__main__":
    main()
