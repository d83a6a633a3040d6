"""`groundrt run --mcap` (both profiles, read back by the mcap reader and by rosbags) and
`--foxglove` (a live Foxglove WebSocket server, talked to by a real websocket client)."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("foxglove", reason="the [robot] extra (foxglove-sdk) is not installed")
pytest.importorskip("mcap_ros2", reason="the [robot] extra (mcap-ros2-support) is not installed")
pytest.importorskip("rosbags", reason="the [robot] extra (rosbags) is not installed")

from conftest import free_ports  # noqa: E402
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: E402
from mcap.reader import make_reader  # noqa: E402

from groundrt.ros import definitions  # noqa: E402
from groundrt.ros.messages import label_mask, stamp_ns  # noqa: E402
from groundrt.runtime.cli import main  # noqa: E402
from groundrt.runtime.foxglove_frame import TOPICS  # noqa: E402
from groundrt.runtime.foxglove_sink import FoxgloveServerSink  # noqa: E402
from groundrt.runtime.grounder import Grounder  # noqa: E402
from groundrt.runtime.sources import Frame  # noqa: E402
from groundrt.synth.video import SAMPLE_CAPTION, write_video  # noqa: E402

FRAMES = 6
PROTOCOLS = ["foxglove.sdk.v1", "foxglove.websocket.v1"]
SIZE = (320, 240)
ROS2_TOPICS = {"/image": definitions.IMAGE, "/caption": definitions.STRING,
               "/detections": definitions.DETECTIONS, "/mask": definitions.IMAGE,
               "/annotated": definitions.IMAGE}


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "sample.mp4", seconds=FRAMES / 10,
                       fps=10.0, size=SIZE)


@pytest.fixture(scope="module")
def grounder() -> Grounder:
    return Grounder()


@pytest.fixture(scope="module")
def video_frames(video) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    frames = []
    while (read := capture.read())[0]:
        frames.append(read[1])
    capture.release()
    assert len(frames) == FRAMES
    return frames


def record(video: Path, out: Path, *options: str) -> None:
    assert main(["run", "--source", str(video), "--caption", SAMPLE_CAPTION, "--mcap", str(out),
                 "--quiet", *options]) == 0
    assert out.is_file() and not list(out.parent.glob(f".{out.name}.partial-*"))


def protobuf_class(schema):
    """The message class of an MCAP protobuf schema (its FileDescriptorSet)."""
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(schema.data).file:
        pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(schema.name))


def test_mcap_foxglove_profile_has_one_message_per_frame_on_each_channel(tmp_path, video,
                                                                           grounder,
                                                                           video_frames):
    out = tmp_path / "run.mcap"
    record(video, out)
    with open(out, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        channels = {c.id: c for c in summary.channels.values()}
        assert sorted(c.topic for c in channels.values()) == sorted(TOPICS)
        assert summary.statistics.channel_message_counts == dict.fromkeys(channels, FRAMES)
        messages: dict[str, list] = {topic: [] for topic in TOPICS}
        classes = {}
        for schema, channel, message in reader.iter_messages(log_time_order=True):
            if channel.message_encoding == "protobuf":
                classes.setdefault(schema.name, protobuf_class(schema))
                messages[channel.topic].append(classes[schema.name].FromString(message.data))
            else:
                assert channel.message_encoding == "json"
                messages[channel.topic].append(json.loads(message.data))
    assert {schema.name for schema in summary.schemas.values()} >= {
        "foxglove.CompressedImage", "foxglove.ImageAnnotations"}

    records = messages["/groundrt/result"]
    assert [r["frame"] for r in records] == list(range(FRAMES))
    assert all(r["caption"] == SAMPLE_CAPTION and "total" in r["timings_ms"] for r in records)
    for i in (0, FRAMES - 1):
        want = grounder.ground(video_frames[i], SAMPLE_CAPTION)
        image = messages["/groundrt/image"][i]
        assert image.format == "jpeg"
        assert cv2.imdecode(np.frombuffer(image.data, np.uint8), 1).shape == (240, 320, 3)
        mask = messages["/groundrt/mask"][i]
        assert mask.format == "png"  # lossless: the label values exactly
        np.testing.assert_array_equal(
            cv2.imdecode(np.frombuffer(mask.data, np.uint8), cv2.IMREAD_UNCHANGED),
            label_mask(want))
        annotations = messages["/groundrt/annotations"][i]
        found = [p for p in want.phrases if p.area]
        labels = [t.text for t in annotations.texts]
        assert labels[:-1] == [f"{p.text} {p.score:.2f}" for p in found]
        assert labels[-1].endswith("FPS") or " ms" in labels[-1]  # the timings line
        assert len(annotations.points) >= len(found)  # an outline per mask (more for plurals)
        assert records[i]["phrases"][0]["text"] == want.phrases[0].text


def test_mcap_ros2_profile_is_read_by_rosbags(tmp_path, video, grounder, video_frames):
    from rosbags.highlevel import AnyReader

    out = tmp_path / "run-ros2.mcap"
    record(video, out, "--mcap-profile", "ros2")
    with open(out, "rb") as f:
        reader = make_reader(f)
        assert reader.get_header().profile == "ros2"
        summary = reader.get_summary()
        assert {c.topic: summary.schemas[c.schema_id].name
                for c in summary.channels.values()} == ROS2_TOPICS
        assert set(summary.statistics.channel_message_counts.values()) == {FRAMES}

    with AnyReader([out], default_typestore=definitions.typestore()) as bag:
        assert {t: info.msgcount for t, info in bag.topics.items()} == dict.fromkeys(
            ROS2_TOPICS, FRAMES)
        by_topic: dict[str, list] = {topic: [] for topic in ROS2_TOPICS}
        for connection, time_ns, raw in bag.messages():
            message = bag.deserialize(raw, connection.msgtype)
            by_topic[connection.topic].append((time_ns, message))
    for i in (0, FRAMES - 1):
        want = grounder.ground(video_frames[i], SAMPLE_CAPTION)
        time_ns, image = by_topic["/image"][i]
        assert (image.encoding, image.width, image.height, image.step) == ("bgr8", 320, 240, 960)
        assert bytes(image.data) == video_frames[i].tobytes()
        assert stamp_ns({"stamp": {"sec": image.header.stamp.sec,
                                   "nanosec": image.header.stamp.nanosec}}) == time_ns
        _, detections = by_topic["/detections"][i]
        assert [d.results[0].hypothesis.class_id for d in detections.detections] == [
            p.text for p in want.phrases if p.area]
        assert detections.header == image.header  # one header per frame, on every topic
        _, mask = by_topic["/mask"][i]
        np.testing.assert_array_equal(np.asarray(mask.data).reshape(240, 320), label_mask(want))
        assert by_topic["/caption"][i][1].data == SAMPLE_CAPTION
        _, annotated = by_topic["/annotated"][i]
        assert annotated.encoding == "bgr8" and len(annotated.data) == 240 * 960
    stamps = [t for t, _ in by_topic["/image"]]
    assert stamps == sorted(stamps) and stamps[1] - stamps[0] == pytest.approx(1e8, rel=0.01)


def test_mcap_output_fails_cleanly(tmp_path, video, monkeypatch, capsys):
    existing = tmp_path / "keep.mcap"
    existing.write_bytes(b"old")
    # a run that fails before its first frame leaves an existing recording as it was
    code = main(["run", "--source", str(tmp_path / "missing.mp4"), "--caption", SAMPLE_CAPTION,
                 "--mcap", str(existing), "--quiet"])
    assert code == 1 and existing.read_bytes() == b"old"
    assert not list(tmp_path.glob(".keep.mcap.partial-*"))
    # the recording may not overwrite the video it records
    assert main(["run", "--source", str(video), "--caption", SAMPLE_CAPTION, "--mcap",
                 str(video), "--quiet"]) == 1
    assert "is one of the inputs" in capsys.readouterr().err
    # a profile needs a recording; a port in use is an error naming it
    with pytest.raises(SystemExit):
        main(["run", "--source", str(video), "--caption", SAMPLE_CAPTION, "--mcap-profile",
              "ros2"])
    assert "--mcap-profile needs --mcap OUT.mcap" in capsys.readouterr().err
    busy = FoxgloveServerSink(0)
    try:
        assert main(["run", "--source", str(video), "--caption", SAMPLE_CAPTION, "--foxglove",
                     str(busy.port), "--quiet"]) == 1
        assert f"cannot start the Foxglove server on 127.0.0.1:{busy.port}" in (
            capsys.readouterr().err)
    finally:
        busy.close()
    # without the extra, the error names it
    monkeypatch.setitem(sys.modules, "foxglove", None)
    assert main(["run", "--source", str(video), "--caption", SAMPLE_CAPTION, "--mcap",
                 str(tmp_path / "x.mcap"), "--quiet"]) == 1
    assert "foxglove is not installed: pip install 'groundrt[robot]'" in capsys.readouterr().err


def test_foxglove_server_advertises_the_channels_and_streams_frames(grounder, video_frames):
    from websockets.sync.client import connect

    port = free_ports(1)[0]
    sink = FoxgloveServerSink(port)
    try:
        assert sink.port == port and sink.url == f"ws://127.0.0.1:{port}"
        # foxglove-sdk 0.30 speaks "foxglove.sdk.v1"; older servers "foxglove.websocket.v1"
        with connect(sink.url, subprotocols=PROTOCOLS, proxy=None,
                     open_timeout=30) as client:
            assert client.subprotocol in PROTOCOLS
            advertised = {}
            while len(advertised) < len(TOPICS):
                op = json.loads(client.recv(timeout=30))
                if op["op"] == "advertise":
                    advertised.update({c["topic"]: c for c in op["channels"]})
            assert sorted(advertised) == sorted(TOPICS)
            assert advertised["/groundrt/annotations"]["schemaName"] == (
                "foxglove.ImageAnnotations")
            result_channel = advertised["/groundrt/result"]["id"]
            client.send(json.dumps({"op": "subscribe",
                                    "subscriptions": [{"id": 7, "channelId": result_channel}]}))
            result = grounder.ground(video_frames[0], SAMPLE_CAPTION)
            frame = Frame(0, 0.0, video_frames[0], "frame 0", fps=12.5)
            # the subscription reaches the server asynchronously: log frames until one arrives
            for _ in range(100):
                sink.write(sink.render(frame, result, result.overlay(video_frames[0])))
                try:
                    data = client.recv(timeout=0.1)
                except TimeoutError:
                    continue
                if isinstance(data, bytes):
                    break
            else:
                pytest.fail("no message reached the subscribed client")
            opcode, subscription, _log_time = struct.unpack_from("<BIQ", data)
            assert (opcode, subscription) == (1, 7)  # MessageData, our subscription id
            payload = json.loads(data[13:])
            assert payload["caption"] == SAMPLE_CAPTION and payload["fps"] == 12.5
            assert [p["text"] for p in payload["phrases"]] == [p.text for p in result.phrases]
            assert payload["timings_ms"]["total"] > 0
    finally:
        sink.close()


def test_run_with_foxglove_serves_while_it_streams(tmp_path, video, capsys):
    port = free_ports(1)[0]
    assert main(["run", "--source", str(video), "--caption", SAMPLE_CAPTION, "--foxglove",
                 str(port), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert f"Foxglove live view: open connection ws://127.0.0.1:{port}" in captured.err
    assert f"processed {FRAMES}" in captured.out
