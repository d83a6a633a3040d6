"""The ROS 2 side without ROS: results as real ROS 2 messages (CDR through mcap-ros2-support,
read back by it and by rosbags), images of every supported encoding as frames, and the node's
frame source and sink driving a live Stream."""

from __future__ import annotations

import io
import threading
import time

import cv2
import numpy as np
import pytest

pytest.importorskip("mcap_ros2", reason="the [robot] extra (mcap-ros2-support) is not installed")
pytest.importorskip("rosbags", reason="the [robot] extra (rosbags) is not installed")

from mcap.reader import make_reader  # noqa: E402
from mcap_ros2.decoder import DecoderFactory  # noqa: E402
from mcap_ros2.writer import Writer  # noqa: E402

from groundrt.ros import definitions  # noqa: E402
from groundrt.ros.messages import (  # noqa: E402
    ENCODINGS,
    header,
    image_message,
    image_to_bgr,
    label_mask,
    result_messages,
)
from groundrt.ros.sink import MessageSink  # noqa: E402
from groundrt.ros.source import TopicSource  # noqa: E402
from groundrt.runtime.captions import CaptionSource, Prompt  # noqa: E402
from groundrt.runtime.grounder import Grounder  # noqa: E402
from groundrt.runtime.images import ImageError  # noqa: E402
from groundrt.runtime.results import GroundingResult, PhraseResult  # noqa: E402
from groundrt.runtime.stream import Stream  # noqa: E402
from groundrt.synth.video import SAMPLE_CAPTION, render_frames  # noqa: E402

TYPES = {"detections": definitions.DETECTIONS, "mask": definitions.IMAGE,
         "annotated": definitions.IMAGE}


@pytest.fixture(scope="module")
def grounder() -> Grounder:
    return Grounder()


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return list(render_frames(seconds=0.6, fps=10.0, size=(320, 240)))


def cdr_round_trip(messages: dict[str, dict]) -> tuple[dict, dict, dict]:
    """Each message encoded to CDR in an MCAP file, then decoded by mcap-ros2-support and by
    rosbags: (topic -> decoded by each, topic -> CDR bytes)."""
    buffer = io.BytesIO()
    writer = Writer(buffer)
    for topic, message in messages.items():
        schema = writer.register_msgdef(TYPES[topic], definitions.msgdef(TYPES[topic]))
        writer.write_message(topic, schema, message, log_time=1)
    writer.finish()
    buffer.seek(0)
    decoded, raw = {}, {}
    for _, channel, message, ros_msg in make_reader(
            buffer, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
        decoded[channel.topic], raw[channel.topic] = ros_msg, message.data
    store = definitions.typestore()
    by_rosbags = {topic: store.deserialize_cdr(data, TYPES[topic]) for topic, data in raw.items()}
    return decoded, by_rosbags, raw


def phrase(text: str, mask: np.ndarray, score: float = 0.5) -> PhraseResult:
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else (
        0, 0, 0, 0)
    return PhraseResult(text, None, False, mask, score, int(mask.sum()), box,
                        (float(xs.mean()) if len(xs) else 0.0, 0.0), [])


def test_result_messages_round_trip_through_cdr(grounder, frames):
    image = frames[0]
    result = grounder.ground(image, SAMPLE_CAPTION)
    found = [p for p in result.phrases if p.area]
    assert len(found) >= 4  # the sample video's shapes, the grass and the sky
    annotated = result.overlay(image)
    head = header(1_764_633_600, 123_456_789, "camera_optical")
    decoded, by_rosbags, raw = cdr_round_trip(result_messages(result, annotated, head))

    for detections in (decoded["detections"], by_rosbags["detections"]):
        assert (detections.header.stamp.sec, detections.header.stamp.nanosec,
                detections.header.frame_id) == (1_764_633_600, 123_456_789, "camera_optical")
        assert [d.results[0].hypothesis.class_id for d in detections.detections] == [
            p.text for p in found]
        for d, p in zip(detections.detections, found, strict=True):
            x0, y0, x1, y1 = p.box
            assert d.header.frame_id == "camera_optical"
            assert d.results[0].hypothesis.score == pytest.approx(p.score, abs=1e-12)
            assert (d.bbox.center.position.x, d.bbox.center.position.y) == ((x0 + x1) / 2,
                                                                             (y0 + y1) / 2)
            assert (d.bbox.size_x, d.bbox.size_y) == (x1 - x0, y1 - y0)
            assert d.id == str(result.phrases.index(p) + 1)
            assert d.results[0].pose.pose.orientation.w == 1.0

    labels = label_mask(result)
    for mask in (decoded["mask"], by_rosbags["mask"]):
        assert (mask.encoding, mask.height, mask.width, mask.step) == ("mono8", 240, 320, 320)
        values = np.frombuffer(bytes(mask.data), np.uint8).reshape(240, 320)
        np.testing.assert_array_equal(values, labels)
    # every phrase's pixels carry its value unless a smaller mask covers them
    for i, p in enumerate(result.phrases):
        if p.area:
            assert (labels[p.mask] == i + 1).mean() > 0.5, p.text
    assert set(np.unique(labels)) <= {0, *range(1, len(result.phrases) + 1)}

    for out in (decoded["annotated"], by_rosbags["annotated"]):
        assert (out.encoding, out.step, out.is_bigendian) == ("bgr8", 320 * 3, 0)
        assert bytes(out.data) == annotated.tobytes()
    # the standard types' CDR is rosbags' own: it serializes the decoded message to the same
    store = definitions.typestore()
    assert bytes(store.serialize_cdr(by_rosbags["mask"], definitions.IMAGE)) == raw["mask"]
    assert bytes(store.serialize_cdr(by_rosbags["detections"], definitions.DETECTIONS)) == raw[
        "detections"]


def test_label_mask_lets_the_smaller_mask_win_and_empty_phrases_publish_nothing():
    big = np.zeros((4, 6), bool)
    big[:, :4] = True
    small = np.zeros((4, 6), bool)
    small[1:3, 2:5] = True
    twin = np.zeros((4, 6), bool)
    twin[1:3, 2:5] = True
    empty = np.zeros((4, 6), bool)
    result = GroundingResult((4, 6), None, [phrase("the grass", big), phrase("a star", small),
                                            phrase("the star", twin), phrase("a moon", empty)])
    labels = label_mask(result)
    expected = np.zeros((4, 6), np.uint8)
    expected[:, :4] = 1
    expected[1:3, 2:5] = 2  # smaller than the grass; equal to its twin: the earlier phrase
    np.testing.assert_array_equal(labels, expected)
    detections = result_messages(result, None, header(0, 0))["detections"]["detections"]
    assert [d["results"][0]["hypothesis"]["class_id"] for d in detections] == [
        "the grass", "a star", "the star"]
    assert "annotated" not in result_messages(result, None, header(0, 0))
    too_many = GroundingResult((1, 1), None, [phrase("x", empty[:1, :1])] * 256)
    with pytest.raises(ValueError, match="at most 255"):
        label_mask(too_many)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_images_of_each_encoding_become_the_same_bgr_frame(encoding):
    rng = np.random.default_rng(3)
    bgr = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    if encoding == "mono8":
        bgr = cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    pixels = {"bgr8": bgr, "rgb8": bgr[..., ::-1], "mono8": bgr[..., 0],
              "bgra8": np.dstack([bgr, np.full((5, 7), 9, np.uint8)]),
              "rgba8": np.dstack([bgr[..., ::-1], np.full((5, 7), 9, np.uint8)])}[encoding]
    message = image_message(pixels, encoding, header(0, 0))
    np.testing.assert_array_equal(image_to_bgr(5, 7, encoding, message["step"],
                                               message["data"]), bgr)
    np.testing.assert_array_equal(image_to_bgr(5, 7, encoding, message["step"],
                                               list(message["data"])), bgr)  # a list of ints
    # rows padded to a larger step (as some drivers send them)
    rows = pixels.reshape(5, -1)
    padded = np.hstack([rows, np.zeros((5, 3), np.uint8)])
    np.testing.assert_array_equal(
        image_to_bgr(5, 7, encoding, padded.shape[1], padded.tobytes()), bgr)


def test_unsupported_or_short_images_are_refused_by_name():
    with pytest.raises(ImageError, match="'16UC1' is not supported: use one of bgr8"):
        image_to_bgr(2, 2, "16UC1", 4, bytes(8))
    with pytest.raises(ImageError, match="needs 18 bytes, got 17"):
        image_to_bgr(2, 3, "bgr8", 9, bytes(17))
    with pytest.raises(ImageError, match="step must be at least 9"):
        image_to_bgr(2, 3, "bgr8", 8, bytes(18))


def test_the_topic_source_feeds_a_live_stream_newest_frame_first(grounder, frames):
    """What the node does, without rclpy: a callback pushes images, a worker grounds them
    under the live policy, the sink publishes each frame's messages with the image's header."""
    source = TopicSource("image")
    published: list[dict] = []
    captions = CaptionSource(Prompt.parse(SAMPLE_CAPTION),
                             lambda p: grounder.encode_text(p.caption, p.phrases))
    stream = Stream(grounder, source, captions, [MessageSink(published.append)], live=True)
    worker = threading.Thread(target=stream.run)
    worker.start()
    pushed = 0
    for round_ in range(4):
        for i, image in enumerate(frames):
            rgb = np.ascontiguousarray(image[..., ::-1])
            source.push(240, 320, "rgb8", 320 * 3, rgb.tobytes(), header(round_, i, "cam"))
            pushed += 1
    source.push(2, 2, "32FC1", 16, bytes(64), header(9, 9))  # refused: counted as corrupt
    deadline = time.monotonic() + 60
    while source.corrupt + source.dropped < pushed + 1 - source.read and (
            time.monotonic() < deadline):
        time.sleep(0.01)  # until capture has taken it (or a newer push would replace it)
    last = np.ascontiguousarray(frames[-1][..., ::-1])
    source.push(240, 320, "rgb8", 320 * 3, last.tobytes(), header(10, 0, "cam"))
    pushed += 2
    source.close()
    worker.join(timeout=120)
    assert not worker.is_alive()
    report = stream.report
    assert report.error is None and report.corrupt == 1 and source.corrupt == 1
    assert report.processed == len(published) >= 1
    assert report.processed + report.dropped_live + source.dropped + report.corrupt == pushed
    # the newest image always wins: the last one pushed is grounded, with its own header
    assert published[-1]["detections"]["header"] == header(10, 0, "cam")
    stamps = [(m["mask"]["header"]["stamp"]["sec"], m["mask"]["header"]["stamp"]["nanosec"])
              for m in published]
    assert stamps == sorted(stamps)
    want = grounder.ground(frames[-1], SAMPLE_CAPTION)
    got = published[-1]["detections"]["detections"]
    assert [d["results"][0]["hypothesis"]["class_id"] for d in got] == [
        p.text for p in want.phrases if p.area]
    assert set(published[-1]) == {"detections", "mask", "annotated"}
