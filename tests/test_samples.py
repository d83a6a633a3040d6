"""The committed sample set is what the generator makes from its recorded seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from groundrt.data import PNGDataset
from groundrt.synth.dataset import synthesize

SAMPLES = Path(__file__).resolve().parents[1] / "runtime" / "samples" / "png"


def test_samples_regenerate_from_their_seed(tmp_path):
    info = json.loads((SAMPLES / "synth_val2017.json").read_text())
    synthesize(tmp_path, "val", info["count"], info["seed"], info["size"], workers=1,
               progress=False)
    for name in ("png_coco_val2017.json", "panoptic_val2017.json"):
        assert json.loads((SAMPLES / name).read_text()) == json.loads((tmp_path / name).read_text())
    shipped, fresh = PNGDataset(SAMPLES, "val"), PNGDataset(tmp_path, "val")
    assert not shipped.excluded and len(shipped.phrases) > 50
    for image_id in shipped.panoptic.images:
        np.testing.assert_array_equal(shipped.read_panoptic(image_id),
                                      fresh.read_panoptic(image_id))
        # JPEG decoding may differ by a grey level across CPUs; the scene must not
        diff = np.abs(shipped.read_image(image_id).astype(int) - fresh.read_image(image_id))
        assert diff.mean() < 0.5
