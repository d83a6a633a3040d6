"""Reading and writing the PNG format: phrases, spans, exclusions, masks, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import IMAGE_ID, NARRATIVES, panoptic_ids, write_release

from groundrt.data import Narrative, PNGDataset, SplitLayout, ids_to_rgb, rgb_to_ids
from groundrt.data.narratives import basic_words, utterance_words
from groundrt.data.writer import SplitWriter, annotation_record, image_record, write_image_files
from groundrt.errors import DataFormatError


def test_release_layout_phrases_and_exclusions(release):
    ds = PNGDataset(release, "val")
    assert ds.name == "val2017"
    assert len(ds.narratives) == 5
    assert ds.exclusion_counts() == {"words_mismatch": 1, "no_grounded_phrase": 1,
                                     "unknown_segment": 1}
    assert [(p.annotator_id, p.text) for p in ds.phrases] == [
        (3, "two red circles"), (3, "the grass"), (3, "the sky"), (7, "the grass")]
    circles, grass, sky, grass2 = ds.phrases
    assert circles.is_plural and circles.plural_flag and circles.is_thing
    assert not grass.is_plural and not grass.is_thing
    # thing/stuff by the LAST segment: [circle 1, sky] is stuff
    assert sky.segment_ids == (1, 300000) and not sky.is_thing and sky.is_plural
    assert circles.key == ("139", 3, 3)


def test_char_and_word_spans_point_into_the_caption(release):
    ds = PNGDataset(release, "val")
    for phrase in ds.phrases:
        caption = ds.narratives[phrase.narrative_index].caption
        start, end = phrase.char_span
        assert caption[start:end] == phrase.text
        words = [w.text for w in basic_words(caption)][slice(*phrase.word_span)]
        assert words == [w.text for w in basic_words(phrase.text)]


def test_contraction_counts_as_the_official_preprocessing_does():
    assert utterance_words("n't any water,") == ["'", "t", "any", "water", ","]
    assert [w.text for w in basic_words("There isn't")] == ["there", "isn", "'", "t"]
    narrative = Narrative.from_json(NARRATIVES[4])
    assert narrative.utterance_word_spans() is not None


def test_ground_truth_mask_is_the_union_of_segments(release):
    ds = PNGDataset(release, "val")
    ids = ds.read_panoptic(IMAGE_ID)
    np.testing.assert_array_equal(ids, panoptic_ids())
    circles = ds.phrases[0]
    assert ds.gt_mask(ids, circles).sum() == 8
    np.testing.assert_array_equal(ds.gt_mask(ids, ds.phrases[2]),
                                  (ids == 1) | (ids == 300000))


def test_id_encoding_round_trip():
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 300000, 256**3 - 1]], dtype=np.int32)
    rgb = ids_to_rgb(ids)
    assert rgb[1, 2].tolist() == [300000 % 256, 300000 // 256 % 256, 300000 // 65536]
    np.testing.assert_array_equal(rgb_to_ids(rgb), ids)
    with pytest.raises(ValueError):
        ids_to_rgb(np.array([[256**3]]))


def test_writer_round_trip(tmp_path, release):
    source = PNGDataset(release, "val")
    writer = SplitWriter(tmp_path / "flat", "val", json.loads(
        source.layout.panoptic_json.read_text())["categories"])
    write_image_files(writer.layout, IMAGE_ID, np.zeros((6, 8, 3), np.uint8), 90, panoptic_ids())
    info = source.panoptic.images[IMAGE_ID]
    writer.add(image_record(IMAGE_ID, 6, 8),
               annotation_record(IMAGE_ID, list(info.segments.values())), source.narratives)
    writer.close()
    copy = PNGDataset(tmp_path / "flat", "val2017")
    assert copy.layout == SplitLayout.flat(tmp_path / "flat", "val")
    assert copy.narratives == source.narratives
    assert copy.phrases == source.phrases
    assert copy.excluded == source.excluded
    np.testing.assert_array_equal(copy.read_panoptic(IMAGE_ID), panoptic_ids())
    assert copy.read_image(IMAGE_ID).shape == (6, 8, 3)


def test_narrative_json_round_trip_keeps_extra_phenomena():
    raw = dict(NARRATIVES[0])
    raw["segments"] = [dict(s) for s in raw["segments"]]
    raw["segments"][3]["phenomena"] = ["position", "small"]
    narrative = Narrative.from_json(raw)
    assert narrative.utterances[3].phenomena == ("position", "small")
    assert Narrative.from_json(narrative.to_json()) == narrative


def test_missing_png_names_the_file(release):
    ds = PNGDataset(release, "val")
    png = ds.layout.panoptic_dir / f"{IMAGE_ID:012d}.png"
    png.unlink()
    with pytest.raises(DataFormatError, match="panoptic PNG missing: .*000000000139.png"):
        ds.read_panoptic(IMAGE_ID)


def test_corrupt_png_and_image_name_the_file(release):
    ds = PNGDataset(release, "val")
    (ds.layout.panoptic_dir / f"{IMAGE_ID:012d}.png").write_bytes(b"not a png")
    with pytest.raises(DataFormatError, match="unreadable"):
        ds.read_panoptic(IMAGE_ID)
    ds.image_path(IMAGE_ID).write_bytes(b"\xff\xd8 broken")
    with pytest.raises(DataFormatError, match="unreadable"):
        ds.read_image(IMAGE_ID)


def test_missing_split_lists_where_it_looked(tmp_path, release):
    with pytest.raises(DataFormatError, match="narratives of split 'train2017' not found"):
        PNGDataset(release, "train")
    with pytest.raises(DataFormatError, match="does not exist"):
        PNGDataset(tmp_path / "nowhere", "val")
    with pytest.raises(DataFormatError, match="bad split name"):
        PNGDataset(release, "../val")


def test_malformed_json_is_a_clear_error(tmp_path):
    root = write_release(tmp_path / "a", narratives=[{"image_id": "139"}])
    with pytest.raises(DataFormatError, match="narrative 0 is malformed"):
        PNGDataset(root, "val")
    root = write_release(tmp_path / "b")
    (root / "annotations" / "panoptic_val2017.json").write_text("{not json")
    with pytest.raises(DataFormatError, match="not valid JSON"):
        PNGDataset(root, "val")


def test_unknown_image_is_excluded_and_counted(tmp_path):
    narrative = dict(NARRATIVES[0], image_id="42")
    ds = PNGDataset(write_release(tmp_path / "c", narratives=[narrative]), "val")
    assert ds.exclusion_counts() == {"unknown_image": 1}
    assert ds.phrases == []
