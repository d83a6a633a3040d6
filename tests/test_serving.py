"""The server model's request handling (runtime/serving.py) without a server: items checked one
by one, results the in-process Grounder's, the JSON a line of `groundrt run --json`; and the
BackendGrounder the Triton BLS model runs, over a real ONNX Runtime backend."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from groundrt.package import read_manifest
from groundrt.runtime import DEFAULT_MODEL
from groundrt.runtime.grounder import Grounder
from groundrt.runtime.images import ImageError
from groundrt.runtime.serving import (
    MAX_IMAGE_BYTES,
    BackendGrounder,
    RequestError,
    RequestHandler,
    parse_inputs,
    result_record,
)
from groundrt.runtime.sinks import JsonlSink
from groundrt.runtime.sources import Frame

CAPTION = "Two blue squares and a red circle on the grass under the sky."
FRAMES = [np.random.default_rng(s).integers(0, 256, (90, 120, 3), dtype=np.uint8)
          for s in range(3)]


def png(image: np.ndarray) -> np.ndarray:
    return cv2.imencode(".png", image)[1].reshape(-1)


def caption(text: str) -> np.ndarray:
    return np.array([text.encode()], dtype=np.object_)


@pytest.fixture(scope="module")
def grounder() -> Grounder:
    return Grounder(backend="onnxruntime")


def phrases_of(record: dict) -> list:
    return record["phrases"]


def test_items_are_checked_one_by_one_and_grounded_as_in_process(grounder):
    images = np.stack([png(FRAMES[0]), png(FRAMES[0])])  # a batch of two rows
    items = parse_inputs(images, np.stack([caption(CAPTION)] * 2), None, batched=True)
    items += parse_inputs(np.frombuffer(b"not an image", np.uint8), caption(CAPTION), None,
                          batched=False)
    items += parse_inputs(png(FRAMES[1]), caption("  "), None, batched=False)
    items += parse_inputs(png(FRAMES[2]), None, np.array([b"the sky", b"a red circle"],
                                                          dtype=np.object_), batched=False)
    answers = RequestHandler(grounder).handle(items)
    assert isinstance(items[3], RequestError) and "caption is empty" in str(items[3])
    assert isinstance(answers[2], ImageError)
    first, second, listed = (json.loads(answers[i]) for i in (0, 1, 4))
    expected = grounder.ground(FRAMES[0], CAPTION).to_json()
    assert phrases_of(first) == phrases_of(second) == expected["phrases"]
    assert first["frame"] != second["frame"]
    assert [p["text"] for p in listed["phrases"]] == ["the sky", "a red circle"]


def test_too_large_and_wrongly_typed_inputs_are_refused():
    huge = np.zeros(MAX_IMAGE_BYTES + 1, np.uint8)
    assert "over the server's limit" in str(parse_inputs(huge, caption(CAPTION), None,
                                                         False)[0])
    assert "UINT8" in str(parse_inputs(np.zeros(4, np.float32), caption(CAPTION), None,
                                       False)[0])
    assert "no image" in str(parse_inputs(None, caption(CAPTION), None, False)[0])
    bad = np.array([b"\xff\xfe"], dtype=np.object_)
    assert "UTF-8" in str(parse_inputs(png(FRAMES[0]), bad, None, False)[0])


def test_a_caption_without_noun_phrases_fails_only_its_items(grounder):
    items = (parse_inputs(png(FRAMES[0]), caption("and of the"), None, False)
             + parse_inputs(png(FRAMES[0]), caption(CAPTION), None, False))
    answers = RequestHandler(grounder).handle(items)
    assert isinstance(answers[0], ValueError) and isinstance(answers[1], str)


def test_the_record_is_a_line_of_groundrt_run_json(grounder, tmp_path):
    result = grounder.ground(FRAMES[0], CAPTION)
    sink = JsonlSink(tmp_path / "o.jsonl")
    frame = Frame(image=FRAMES[0], index=7, timestamp=1.25, name="shot.png")
    line = sink.render(frame, result, None)
    sink.close()
    assert json.loads(line) == result_record(result, 7, 1.25, "shot.png")


def test_a_backend_grounder_grounds_as_the_grounder(grounder, tmp_path):
    """The BLS model's Grounder: the manifest and tokenizer only, the graphs behind a backend
    (here the package's own ONNX Runtime sessions in place of BLS requests)."""
    folder = tmp_path / "package"
    folder.mkdir()
    manifest = read_manifest(DEFAULT_MODEL)
    for name in ("manifest.json", manifest["tokenizer"]["file"]):
        shutil.copyfile(DEFAULT_MODEL / name, folder / name)
    remote = BackendGrounder(folder, grounder.backend, kernel_threads=grounder.kernel_threads)
    # every attribute Grounder sets is set (a new one in Grounder.__init__ shows up here)
    assert set(vars(grounder)) <= set(vars(remote))
    ours, theirs = remote.ground(FRAMES[1], CAPTION), grounder.ground(FRAMES[1], CAPTION)
    assert ours.to_json()["phrases"] == theirs.to_json()["phrases"]
