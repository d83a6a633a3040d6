"""Where things go: sizes, centres and rotations, with occlusion and position rules enforced.

Things are stacked in placement order (later ones on top). A placement is rejected when it
would hide more than MAX_HIDDEN of an earlier thing's own area, leave it fewer than MIN_VISIBLE
pixels, or break the left/right (top/bottom) order of a position-named group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from groundrt.synth.plan import ThingPlan, ThingSpec
from groundrt.synth.shapes import STYLES, ThingMask, rasterize

MAX_HIDDEN = 0.6  # share of a thing's own area that later things may cover
MIN_VISIBLE = 24  # visible pixels every thing keeps (phrases need ≥ 20)
MIN_GAP = 0.25  # position groups: centroid gap along the axis, as a share of the image extent
MAX_CROSS = 0.5  # ... and the cross-axis offset, as a share of the gap along the axis
P_OVERLAP_SCENE = 0.45  # scenes that put one or two things on top of another on purpose
P_OVERLAP_THING = 0.1  # any other thing doing so
POSITION_WORDS = {("x", 2): ("on the left", "on the right"),
                  ("x", 3): ("on the left", "in the middle", "on the right"),
                  ("y", 2): ("at the top", "at the bottom"),
                  ("y", 3): ("at the top", "in the middle", "at the bottom")}


@dataclass
class PlacedThing:
    spec: ThingSpec
    cx: float
    cy: float
    radius: float
    angle: float
    style: str
    shape_mask: ThingMask
    full_area: int
    visible_area: int
    sum_x: float  # of visible pixels' x, for the visible centroid
    sum_y: float
    position: str | None = None  # position words of a position-named member

    @property
    def centroid(self) -> tuple[float, float]:
        return self.sum_x / self.visible_area, self.sum_y / self.visible_area

    @property
    def hidden_fraction(self) -> float:
        return 1.0 - self.visible_area / self.full_area


@dataclass
class Placement:
    """Placed things (index = stacking order) and `owner` [H, W] int16: index of the thing seen
    at each pixel, -1 where stuff shows. `groups[g]` lists the placed members of plan group g."""

    things: list[PlacedThing]
    owner: np.ndarray
    groups: list[list[int]]
    position_groups: list[int]  # plan groups still told apart by position


def draw_radius(rng: np.random.Generator, size: str, w: int, h: int) -> float:
    """Half the size across: small 10..0.12·min(W, H) px, large 0.16..0.3·min(W, H) px."""
    m = min(w, h)
    if size == "small":
        return rng.uniform(10.0, max(10.5, 0.12 * m)) / 2
    return rng.uniform(max(11.0, 0.16 * m), max(12.0, 0.3 * m)) / 2


def position_order_ok(centroids: list[tuple[float, float]], axis: str, w: int, h: int,
                      gap: float = MIN_GAP, cross: float = MAX_CROSS) -> bool:
    """Whether centroids (x, y), in their named order, are unambiguously ordered along `axis`."""
    a, extent = (0, w) if axis == "x" else (1, h)
    for i in range(len(centroids)):
        for j in range(i + 1, len(centroids)):
            d_along = centroids[j][a] - centroids[i][a]
            if d_along < gap * extent * (j - i) or abs(
                    centroids[j][1 - a] - centroids[i][1 - a]) > cross * d_along:
                return False
    return True


class _Stack:
    def __init__(self, w: int, h: int) -> None:
        self.w, self.h = w, h
        self.owner = np.full((h, w), -1, np.int16)
        self.things: list[PlacedThing] = []
        self.position_members: list[tuple[list[int], str]] = []

    def candidate(self, rng: np.random.Generator, spec: ThingSpec, radius: float, cx: float,
                  cy: float) -> PlacedThing:
        angle = rng.uniform(0, 2 * np.pi)
        tm = rasterize(spec.shape, cx, cy, radius, angle, self.w, self.h)
        return PlacedThing(spec, cx, cy, radius, angle, STYLES[int(rng.integers(len(STYLES)))],
                           tm, tm.area, 0, 0.0, 0.0)

    def push(self, t: PlacedThing, free_only: bool) -> bool:
        """Put `t` on top if every rule still holds (and, if `free_only`, it covers nothing)."""
        if t.full_area < MIN_VISIBLE:
            return False
        tm = t.shape_mask
        h, w = tm.mask.shape
        crop = self.owner[tm.y0:tm.y0 + h, tm.x0:tm.x0 + w]
        ys, xs = np.nonzero(tm.mask)
        under = crop[ys, xs].astype(np.intp)
        hit = under >= 0
        if hit.any():
            if free_only:
                return False
            ids, n = under[hit], len(self.things)
            count = np.bincount(ids, minlength=n)
            sx = np.bincount(ids, weights=xs[hit] + tm.x0, minlength=n)
            sy = np.bincount(ids, weights=ys[hit] + tm.y0, minlength=n)
            for j in np.flatnonzero(count):
                o = self.things[j]
                left = o.visible_area - int(count[j])
                if left < MIN_VISIBLE or left < (1.0 - MAX_HIDDEN) * o.full_area:
                    return False
            for members, axis in self.position_members:
                if count[members].any():
                    cents = [((self.things[m].sum_x - sx[m]) / (self.things[m].visible_area
                                                                - count[m]),
                              (self.things[m].sum_y - sy[m]) / (self.things[m].visible_area
                                                                - count[m])) for m in members]
                    if not position_order_ok(cents, axis, self.w, self.h):
                        return False
            for j in np.flatnonzero(count):
                o = self.things[j]
                o.visible_area -= int(count[j])
                o.sum_x -= float(sx[j])
                o.sum_y -= float(sy[j])
        crop[ys, xs] = len(self.things)
        t.visible_area = len(ys)
        t.sum_x = float(xs.sum() + tm.x0 * len(xs))
        t.sum_y = float(ys.sum() + tm.y0 * len(ys))
        self.things.append(t)
        return True

    def random_centre(self, rng: np.random.Generator, radius: float) -> tuple[float, float]:
        return (rng.uniform(radius + 1, max(radius + 1.5, self.w - radius - 2)),
                rng.uniform(radius + 1, max(radius + 1.5, self.h - radius - 2)))

    def overlapping_centre(self, rng: np.random.Generator, radius: float) -> tuple[float, float]:
        """A centre that overlaps a random earlier thing."""
        o = self.things[int(rng.integers(len(self.things)))]
        a = rng.uniform(0, 2 * np.pi)
        d = rng.uniform(0.3, 0.8) * (o.radius + radius)
        cx = float(np.clip(o.cx + d * np.cos(a), radius + 1, self.w - radius - 2))
        cy = float(np.clip(o.cy + d * np.sin(a), radius + 1, self.h - radius - 2))
        return cx, cy


def _place_position_group(stack: _Stack, rng: np.random.Generator, specs: list[ThingSpec],
                          axis: str) -> list[int] | None:
    """Place a position group on the empty stack; its members' indices in named order."""
    w, h = stack.w, stack.h
    a, extent, other = (0, w, h) if axis == "x" else (1, h, w)
    for _ in range(40):
        radii = [draw_radius(rng, s.size, w, h) for s in specs]
        if any(2 * r + 2 >= min(w, h) for r in radii):
            continue
        along = [rng.uniform(r + 1, extent - r - 2) for r in radii]
        c0 = rng.uniform(0.15, 0.85) * other
        cross = [float(np.clip(c0 + rng.uniform(-0.08, 0.08) * extent, r + 1, other - r - 2))
                 for r in radii]
        order = np.argsort(along, kind="stable")
        centres = [(along[i], cross[i]) if a == 0 else (cross[i], along[i]) for i in order]
        if not position_order_ok(centres, axis, w, h, MIN_GAP + 0.03, MAX_CROSS * 0.8):
            continue
        stack.owner.fill(-1)
        stack.things.clear()
        placed = [stack.push(stack.candidate(rng, specs[i], radii[i], *c), False)
                  for i, c in zip(order, centres, strict=True)]
        members = list(range(len(specs)))
        if all(placed) and position_order_ok([stack.things[m].centroid for m in members],
                                             axis, w, h):
            return members
    stack.owner.fill(-1)
    stack.things.clear()
    return None


def place_things(rng: np.random.Generator, plan: ThingPlan, w: int, h: int) -> Placement:
    """Place the planned things on a `w` x `h` image; things that find no room are left out."""
    stack = _Stack(w, h)
    groups: list[list[int]] = [[] for _ in plan.groups]
    position_groups: list[int] = []
    rest = list(range(len(plan.things)))
    for gi, g in enumerate(plan.groups):
        if g.kind != "position":
            continue
        idx = [i for i in rest if plan.things[i].group == gi]
        members = _place_position_group(stack, rng, [plan.things[i] for i in idx], g.axis or "x")
        if members is not None:
            words = POSITION_WORDS[(g.axis or "x", len(members))]
            for m, word in zip(members, words, strict=True):
                stack.things[m].position = word
            groups[gi] = members
            stack.position_members.append((members, g.axis or "x"))
            position_groups.append(gi)
            rest = [i for i in rest if i not in idx]
        break  # at most one position group per scene

    order = [rest[i] for i in rng.permutation(len(rest))]
    if not stack.things:  # the bottom thing is a mentioned one: it always finds room
        first = next((k for k, i in enumerate(order) if plan.things[i].group >= 0), 0)
        order.insert(0, order.pop(first))
    overlap = set()
    if rng.random() < P_OVERLAP_SCENE and len(order) > 1:
        k = 1 + int(rng.random() < 0.3)
        overlap = set(rng.choice(np.arange(1, len(order)), size=min(k, len(order) - 1),
                                 replace=False).tolist())
    for k, i in enumerate(order):
        spec = plan.things[i]
        radius = draw_radius(rng, spec.size, w, h)
        wants_overlap = k in overlap or rng.random() < P_OVERLAP_THING
        attempts = (["overlap"] * 15 if wants_overlap and stack.things else []) + \
            ["free"] * 12 + ["any"] * 12
        for mode in attempts:
            centre = (stack.overlapping_centre(rng, radius) if mode == "overlap"
                      else stack.random_centre(rng, radius))
            if stack.push(stack.candidate(rng, spec, radius, *centre), mode == "free"):
                if spec.group >= 0:
                    groups[spec.group].append(len(stack.things) - 1)
                break
    return Placement(stack.things, stack.owner, groups, position_groups)
