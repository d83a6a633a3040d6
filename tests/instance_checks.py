"""Checks shared by the tests of network v2's instances (imported by the test modules)."""

from __future__ import annotations

import cv2
import numpy as np


def assert_instances_are_parts(phrase) -> None:
    """A v2 phrase's instances: a plural's the connected parts of its mask, largest first and
    disjoint, none a speck, covering nearly all of it; a singular's its whole mask."""
    instances = phrase.instances
    if not phrase.area:
        assert instances == []
        return
    if not phrase.plural:
        assert len(instances) == 1 and (instances[0] == phrase.mask).all()
        return
    count, labels = cv2.connectedComponents(phrase.mask.astype(np.uint8), connectivity=8)
    assert 1 <= len(instances) <= count - 1
    areas = [int(m.sum()) for m in instances]
    assert areas == sorted(areas, reverse=True) and min(areas) >= 0.01 * phrase.area
    assert int(np.sum(instances, axis=0).max()) == 1  # disjoint
    assert not (np.logical_or.reduce(instances) & ~phrase.mask).any()
    for m in instances:  # each one whole part: one label, all of its pixels
        label = np.unique(labels[m])
        assert len(label) == 1 and (labels == label[0]).sum() == m.sum()
