"""A short sample video of the procedural world: shapes moving over grass under a sky.

    groundrt data video --out pred/sample.mp4

The stuff textures and shape rasterizer are the scene generator's; things move on straight lines
that bounce off the frame's edges and rotate slowly. The same seed gives the same frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from groundrt.synth.shapes import paint, rasterize
from groundrt.synth.textures import stuff_texture
from groundrt.vocabulary import load_vocabulary

# What the video shows, and the caption that names it.
SAMPLE_CAPTION = ("In this picture we can see a red circle, two blue squares and a yellow star "
                  "on the grass under the sky.")
THINGS = (("circle", "red"), ("square", "blue"), ("square", "blue"), ("star", "yellow"))


@dataclass
class MovingThing:
    shape: str
    rgb: np.ndarray
    radius: float
    position: np.ndarray  # (x, y) centre, pixels
    velocity: np.ndarray  # pixels per frame
    angle: float
    spin: float  # radians per frame


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Sky above a wavy horizon, grass below: [H, W, 3] float32 RGB."""
    xs = np.arange(width, dtype=np.float32)
    horizon = height * (0.42 + 0.04 * np.sin(xs / width * 2 * np.pi * rng.uniform(0.7, 1.5)
                                              + rng.uniform(0, 2 * np.pi)))
    sky = np.arange(height, dtype=np.float32)[:, None] < horizon[None, :]
    image = stuff_texture("grass", rng, height, width)
    np.copyto(image, stuff_texture("sky", rng, height, width), where=sky[..., None])
    return image


def _things(rng: np.random.Generator, width: int, height: int) -> list[MovingThing]:
    colours = load_vocabulary().colors
    things = []
    for i, (shape, colour) in enumerate(THINGS):
        radius = float(rng.uniform(0.07, 0.1) * min(width, height))
        x = width * (0.15 + 0.7 * i / (len(THINGS) - 1))
        y = height * rng.uniform(0.6, 0.85)  # on the grass
        speed = rng.uniform(0.004, 0.01) * width
        heading = rng.uniform(0, 2 * np.pi)
        things.append(MovingThing(shape, np.asarray(colours[colour], np.float32), radius,
                                  np.array([x, y]), speed * np.array([np.cos(heading),
                                                                      0.4 * np.sin(heading)]),
                                  float(rng.uniform(0, np.pi)), float(rng.uniform(-0.05, 0.05))))
    return things


def _step(thing: MovingThing, width: int, height: int) -> None:
    thing.position += thing.velocity
    thing.angle += thing.spin
    low = np.array([thing.radius, height * 0.55])  # things stay on the grass
    high = np.array([width - thing.radius, height - thing.radius])
    for axis in range(2):
        if not low[axis] <= thing.position[axis] <= high[axis]:
            thing.velocity[axis] = -thing.velocity[axis]
            thing.position[axis] = np.clip(thing.position[axis], low[axis], high[axis])


def render_frames(seconds: float = 4.0, fps: float = 10.0, size: tuple[int, int] = (640, 480),
                  seed: int = 7) -> list[np.ndarray]:
    """The sample video's frames: [H, W, 3] uint8 BGR."""
    width, height = size
    rng = np.random.default_rng(seed)
    background = _background(rng, width, height)
    things = _things(rng, width, height)
    frames = []
    for _ in range(round(seconds * fps)):
        image = background.copy()
        for thing in things:
            x, y = thing.position
            mask = rasterize(thing.shape, x, y, thing.radius, thing.angle, width, height)
            h, w = mask.mask.shape
            region = image[mask.y0:mask.y0 + h, mask.x0:mask.x0 + w]
            colour = paint(mask, x, y, thing.radius, thing.rgb, "plain", rng)
            np.copyto(region, colour, where=mask.mask[..., None])
            _step(thing, width, height)
        frames.append(cv2.cvtColor(np.clip(image, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    return frames


def write_video(path: str | Path, seconds: float = 4.0, fps: float = 10.0,
                size: tuple[int, int] = (640, 480), seed: int = 7) -> Path:
    """Render the sample video to `path` (.mp4, MPEG-4 Part 2)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write an mp4v video to {path}")
    for frame in render_frames(seconds, fps, size, seed):
        writer.write(frame)
    writer.release()
    return path
