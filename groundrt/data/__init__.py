"""PNG-format data: narratives, panoptic ground truth, reading and writing splits."""

from groundrt.data.dataset import Exclusion, GroundedPhrase, PNGDataset
from groundrt.data.layout import SplitLayout, split_dirname
from groundrt.data.narratives import Narrative, Utterance
from groundrt.data.panoptic import ids_to_rgb, rgb_to_ids

__all__ = [
    "Exclusion", "GroundedPhrase", "Narrative", "PNGDataset", "SplitLayout", "Utterance",
    "ids_to_rgb", "rgb_to_ids", "split_dirname",
]
