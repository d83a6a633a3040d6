"""`groundrt run` and the stream pipeline: images, folders and videos end to end, the live policy,
reconnecting sources, caption changes, Ctrl-C, and the other runtime commands."""

from __future__ import annotations

import _thread
import json
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from groundrt.runtime.captions import CaptionSource, Prompt
from groundrt.runtime.cli import main
from groundrt.runtime.grounder import Grounder
from groundrt.runtime.sinks import JsonlSink, Sink
from groundrt.runtime.sources import Reconnect, VideoSource, open_source
from groundrt.runtime.stream import Stream
from groundrt.synth.video import SAMPLE_CAPTION, render_frames, write_video

SIZE = (320, 240)
FRAMES = 20  # 2 s at 10 FPS


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "sample.mp4", seconds=2.0, fps=10.0,
                       size=SIZE)


@pytest.fixture(scope="module")
def grounder() -> Grounder:
    return Grounder()


def decoded_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def summary_counts(out: str) -> dict[str, int]:
    line = next(x for x in out.splitlines() if x.startswith("frames: "))
    words = line.replace(",", "").replace("(", "").replace(")", "").replace(";", "").split()
    return {key: int(words[words.index(key) + 1]) for key in ("read", "processed", "dropped",
                                                              "live", "corrupt")}


def test_sample_video_is_deterministic(video):
    frames = decoded_frames(video)
    assert len(frames) == FRAMES and frames[0].shape == (SIZE[1], SIZE[0], 3)
    a, b = render_frames(0.3, 10.0, SIZE), render_frames(0.3, 10.0, SIZE)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], a[2])  # things move


def test_run_on_a_video_matches_the_grounder(tmp_path, video, grounder, capsys):
    out_video, out_json = tmp_path / "out" / "annotated.mp4", tmp_path / "out" / "frames.jsonl"
    code = main(["run", "--source", str(video), "--caption", SAMPLE_CAPTION, "--save",
                 str(out_video), "--json", str(out_json), "--quiet"])
    assert code == 0
    counts = summary_counts(capsys.readouterr().out)
    assert counts == {"read": FRAMES, "processed": FRAMES, "dropped": 0, "live": 0, "corrupt": 0}
    assert len(decoded_frames(out_video)) == FRAMES

    records = read_jsonl(out_json)
    frames = decoded_frames(video)
    assert [r["frame"] for r in records] == list(range(FRAMES))
    for record in records[::6]:
        expected = grounder.ground(frames[record["frame"]], SAMPLE_CAPTION)
        assert record["image_size"] == [SIZE[1], SIZE[0]]
        assert [p["text"] for p in record["phrases"]] == [p.text for p in expected.phrases]
        for got, want in zip(record["phrases"], expected.phrases, strict=True):
            assert got["area"] == want.area and got["box"] == list(want.box)
            rle = dict(got["mask"], counts=got["mask"]["counts"].encode())
            np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), want.mask)
    # the shipped model finds the sky and the grass in the sample video
    stuff = {p["text"]: p["area"] for p in records[0]["phrases"]}
    assert min(stuff["the sky"], stuff["the grass"]) > 0.2 * SIZE[0] * SIZE[1]


def test_run_on_a_folder_skips_and_counts_a_corrupt_image(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, frame in enumerate(render_frames(0.3, 10.0, SIZE)):
        cv2.imwrite(str(folder / f"shot{i}.png"), frame)
    (folder / "shot9.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "annotated"
    code = main(["run", "--source", str(folder), "--phrases", "the sky; a red circle", "--save",
                 str(out), "--json", str(tmp_path / "f.jsonl"), "--quiet"])
    assert code == 0
    counts = summary_counts(capsys.readouterr().out)
    assert counts["read"] == 4 and counts["processed"] == 3 and counts["corrupt"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["shot0.jpg", "shot1.jpg", "shot2.jpg"]
    records = read_jsonl(tmp_path / "f.jsonl")
    assert [r["name"] for r in records] == ["shot0.png", "shot1.png", "shot2.png"]
    assert [p["text"] for p in records[0]["phrases"]] == ["the sky", "a red circle"]

    glob_code = main(["run", "--source", str(folder / "shot1.*"), "--phrases", "the sky",
                      "--json", str(tmp_path / "g.jsonl"), "--quiet"])
    assert glob_code == 0 and len(read_jsonl(tmp_path / "g.jsonl")) == 1


def test_unwritable_output_fails_before_reading(tmp_path, video, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code = main(["run", "--source", str(video), "--caption", SAMPLE_CAPTION, "--json",
                 str(blocker / "out.jsonl")])
    captured = capsys.readouterr()
    assert code == 1 and "cannot write output" in captured.err
    assert "frames:" not in captured.out


def test_run_usage_and_source_errors(tmp_path, video, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--source", str(video)])  # no caption
    assert exit_info.value.code == 2
    assert main(["run", "--source", str(tmp_path / "missing.mp4"), "--caption", "the sky"]) == 1
    assert "not a file, a folder" in capsys.readouterr().err
    assert main(["run", "--source", str(video), "--caption", "nothing here"]) == 1
    assert "noun phrase" in capsys.readouterr().err


class SlowSink(Sink):
    """A consumer slower than the source: writes after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.frames: list[int] = []

    def render(self, frame, result, annotated):
        return frame.index

    def write(self, rendered) -> None:
        time.sleep(self.delay)
        self.frames.append(rendered)


def test_live_policy_drops_frames_and_the_counts_add_up(video, grounder):
    sink = SlowSink(0.05)
    stream = Stream(grounder, open_source(str(video)), CaptionSource(Prompt.parse(
        SAMPLE_CAPTION)), [sink], live=True)
    report = stream.run()
    assert report.dropped_live > 0 and report.corrupt == 0
    assert report.read == FRAMES == report.processed + report.dropped
    assert sink.frames == sorted(sink.frames) and len(sink.frames) == report.processed

    lossless = Stream(grounder, open_source(str(video)), CaptionSource(Prompt.parse(
        SAMPLE_CAPTION)), [SlowSink(0.01)], live=False).run()
    assert lossless.processed == FRAMES and lossless.dropped == 0


class DroppingCapture:
    """A real capture of the video that stops delivering after `fail_after` frames, as a
    camera whose cable is pulled."""

    def __init__(self, path: Path, fail_after: int | None) -> None:
        self.capture = cv2.VideoCapture(str(path))
        self.fail_after = fail_after
        self.delivered = 0

    def isOpened(self) -> bool:  # noqa: N802
        return self.capture.isOpened()

    def read(self):
        if self.fail_after is not None and self.delivered >= self.fail_after:
            return False, None
        self.delivered += 1
        return self.capture.read()

    def grab(self) -> bool:
        return self.capture.grab()

    def get(self, prop: int) -> float:
        return self.capture.get(prop)

    def release(self) -> None:
        self.capture.release()


def test_live_source_is_reopened_then_gives_up(video, grounder, caplog):
    opened: list[DroppingCapture] = []

    def open_capture():
        if len(opened) >= 2:  # the camera is gone for good after the first reconnect
            capture = DroppingCapture(video, 0)
            capture.capture.release()  # closed: isOpened() is False
            return capture
        opened.append(DroppingCapture(video, 7 if not opened else 5))
        return opened[-1]

    source = VideoSource(open_capture, "flaky camera", "camera", live=True,
                         reconnect=Reconnect(attempts=3, first_delay=0.01))
    sink = SlowSink(0.0)
    stream = Stream(grounder, source, CaptionSource(Prompt.parse(SAMPLE_CAPTION)), [sink],
                    live=False)
    report = stream.run()  # the error stops the stream; the report says why
    assert "did not come back after 3 attempts" in report.error
    assert report.read == report.processed == 12
    assert source.reconnects == 1
    assert sink.frames == list(range(12))  # 7 before the drop, 5 after reopening
    assert "reopening in" in caplog.text


def test_caption_change_takes_effect_on_a_later_frame(tmp_path, video, grounder):
    caption_file = tmp_path / "caption.txt"
    caption_file.write_text("the sky")

    class ChangingSink(SlowSink):
        def write(self, rendered) -> None:
            super().write(rendered)
            if rendered == 4:
                caption_file.write_text("A red circle and two blue squares on the grass.")

    jsonl = JsonlSink(tmp_path / "frames.jsonl")
    captions = CaptionSource(Prompt.parse("the sky"),
                             lambda p: grounder.encode_text(p.caption, p.phrases),
                             watch=caption_file, settle_s=0.0)
    report = Stream(grounder, open_source(str(video)), captions, [jsonl, ChangingSink(0.0)],
                    live=False).run()
    assert report.processed == FRAMES and captions.changes == 1
    used = [r["caption"] for r in read_jsonl(tmp_path / "frames.jsonl")]
    switch = used.index("A red circle and two blue squares on the grass.")
    assert 4 < switch < FRAMES and set(used[:switch]) == {"the sky"}
    assert set(used[switch:]) == {"A red circle and two blue squares on the grass."}

    assert not captions.set(Prompt.parse("nothing to see"))  # refused, the old one kept
    assert captions.current().caption == "A red circle and two blue squares on the grass."


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler during the test: a process started in the background by a
    non-interactive shell (`nohup pytest &`) inherits SIGINT ignored, and interrupt_main()
    then does nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_finishes_frames_in_flight_and_flushes(tmp_path, video, grounder, python_sigint):
    class InterruptingSink(SlowSink):
        def write(self, rendered) -> None:
            super().write(rendered)
            if rendered == 3:
                _thread.interrupt_main()  # what Ctrl-C does

    jsonl = JsonlSink(tmp_path / "frames.jsonl")
    report = Stream(grounder, open_source(str(video)), CaptionSource(Prompt.parse(
        SAMPLE_CAPTION)), [jsonl, InterruptingSink(0.05)], live=False).run()
    assert report.interrupted and 4 <= report.processed < FRAMES
    assert report.read == report.processed + report.dropped
    records = read_jsonl(tmp_path / "frames.jsonl")  # every line complete
    assert [r["frame"] for r in records] == list(range(report.processed))


def test_info_bench_and_data_video_commands(tmp_path, capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "package: groundrt-student" in out and "onnxruntime:" in out
    assert "hashes verified" in out
    assert main(["bench", "--runs", "3", "--size", "320", "240"]) == 0
    out = capsys.readouterr().out
    assert "| default auto default precision | ok | onnxruntime | int8-cpu |" in out
    assert "total p50 ms" in out and "| default, numpy post-processing | ok |" in out
    assert main(["data", "video", "--out", str(tmp_path / "v.mp4"), "--seconds", "0.5",
                 "--size", "160", "120"]) == 0
    assert len(decoded_frames(tmp_path / "v.mp4")) == 5


def test_compare_runs_scores_two_jsonl_outputs(tmp_path):
    """benchmarks/compare_runs.py (the GPU check's masks-against-CPU step) on two runs that
    differ in one phrase mask."""
    import importlib.util

    from groundrt.metric.predictions import encode_rle

    spec = importlib.util.spec_from_file_location(
        "compare_runs", Path(__file__).resolve().parents[1] / "benchmarks" / "compare_runs.py")
    compare_runs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare_runs)
    square = np.zeros((8, 8), np.uint8)
    square[2:6, 2:6] = 1  # 16 pixels
    shifted = np.roll(square, 1, axis=1)  # IoU 12 / 20
    for name, second in (("a", square), ("b", shifted)):
        lines = [json.dumps({"frame": f, "phrases": [
            {"text": "the sky", "mask": encode_rle(np.zeros((8, 8), np.uint8))},
            {"text": "a square", "mask": encode_rle(square if f == 0 else second)}]})
            for f in range(2)]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    a, b = compare_runs.read_frames(tmp_path / "a.jsonl"), compare_runs.read_frames(
        tmp_path / "b.jsonl")
    assert compare_runs.mask_ious(a, a) == [1.0] * 4
    assert compare_runs.mask_ious(a, b) == [1.0, 1.0, 1.0, 0.6]
    assert compare_runs.main([str(tmp_path / "a.jsonl"), str(tmp_path / "a.jsonl")]) == 0
    assert compare_runs.main([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]) == 1
    assert compare_runs.main([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"),
                              "--min-mean-iou", "0.85"]) == 0
