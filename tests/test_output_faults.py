"""Nothing lost: a failing `groundrt run` leaves existing outputs as they were, outputs never
overwrite inputs, the summary's counts add up however a stream stops, the exit code says whether
anything was processed, and a full disk stops the stream with its summary and whole frames."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from groundrt.runtime.captions import CaptionSource, Prompt
from groundrt.runtime.cli import main
from groundrt.runtime.grounder import Grounder
from groundrt.runtime.sinks import OutputError, Sink
from groundrt.runtime.sources import open_source
from groundrt.runtime.stream import LatencyHistogram, Stream
from groundrt.synth.video import SAMPLE_CAPTION, write_video

FRAMES = 20
PRECIOUS = b"results of yesterday's run\n"


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "sample.mp4", seconds=2.0, fps=10.0,
                       size=(320, 240))


@pytest.fixture(scope="module")
def grounder() -> Grounder:
    return Grounder()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = tmp_path / "shots"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        cv2.imwrite(str(folder / f"shot{i}.jpg"), rng.integers(0, 255, (60, 80, 3), np.uint8))
    return folder


def run(*args: str) -> int:
    return main(["run", *args, "--quiet"])


def counts(report) -> tuple[int, int]:
    return report.read, report.processed + report.dropped


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


# --- existing outputs and inputs ---------------------------------------------------------------

def test_a_run_that_fails_before_its_first_frame_leaves_existing_outputs(tmp_path, video, shots,
                                                                        capsys):
    out = tmp_path / "out.jsonl"
    saved = tmp_path / "out.mp4"
    for path in (out, saved):
        path.write_bytes(PRECIOUS)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "a.jpg").write_bytes(b"not a jpeg")
    failing = [
        ["--source", str(tmp_path / "missing.mp4"), "--caption", SAMPLE_CAPTION],
        ["--source", str(video), "--caption", "nothing to see here"],
        ["--source", str(video), "--caption", "a red \udcff circle"],
        ["--source", str(corrupt), "--caption", SAMPLE_CAPTION],  # no frame decodes
    ]
    for args in failing:
        assert run(*args, "--json", str(out), "--save", str(saved)) == 1, args
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("groundrt: error: ") and "Traceback" not in "".join(err)
        assert out.read_bytes() == PRECIOUS and saved.read_bytes() == PRECIOUS, args
        assert leftovers(tmp_path) == []
    # a run that processes frames replaces them
    assert run("--source", str(video), "--caption", SAMPLE_CAPTION, "--json", str(out),
               "--max-frames", "3") == 0
    assert [json.loads(line)["frame"] for line in out.read_text().splitlines()] == [0, 1, 2]
    assert leftovers(tmp_path) == []


def test_outputs_never_overwrite_inputs(tmp_path, video, shots, capsys):
    before = {p.name: p.read_bytes() for p in shots.iterdir()}
    caption_file = tmp_path / "caption.txt"
    caption_file.write_text(SAMPLE_CAPTION)
    link = tmp_path / "link.jsonl"
    link.symlink_to(shots / "shot1.jpg")
    cases = [
        ["--source", str(shots), "--caption", SAMPLE_CAPTION, "--save", str(shots)],
        ["--source", str(shots / "*.jpg"), "--caption", SAMPLE_CAPTION, "--save",
         str(shots / "." / "")],
        ["--source", str(shots), "--caption", SAMPLE_CAPTION, "--json", str(shots / "shot0.jpg")],
        ["--source", str(shots), "--caption", SAMPLE_CAPTION, "--json", str(link)],
        ["--source", str(video), "--caption", SAMPLE_CAPTION, "--save", str(video)],
        ["--source", str(video), "--caption-file", str(caption_file), "--json",
         str(caption_file)],
    ]
    for args in cases:
        assert run(*args) == 1, args
        assert "is one of the inputs" in capsys.readouterr().err, args
    assert {p.name: p.read_bytes() for p in shots.iterdir()} == before
    assert caption_file.read_text() == SAMPLE_CAPTION
    # another folder is fine, and its annotated images are whole JPEGs
    assert run("--source", str(shots), "--caption", SAMPLE_CAPTION, "--save",
               str(tmp_path / "annotated")) == 0
    written = sorted((tmp_path / "annotated").iterdir())
    assert [p.name for p in written] == ["shot0.jpg", "shot1.jpg", "shot2.jpg"]
    assert all(cv2.imread(str(p)) is not None for p in written)


def test_a_new_output_gets_the_permissions_of_a_plain_file(tmp_path, video):
    out = tmp_path / "new.jsonl"
    assert run("--source", str(video), "--caption", SAMPLE_CAPTION, "--json", str(out),
               "--max-frames", "1") == 0
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


# --- counts and exit codes ----------------------------------------------------------------------

class FailingSink(Sink):
    """Fails to write frame `at` (as a full disk would)."""

    def __init__(self, at: int) -> None:
        self.at, self.written = at, 0

    def render(self, frame, result, annotated):
        return frame.index

    def write(self, index: int) -> None:
        if index == self.at:
            raise OutputError("cannot write output x.jsonl: No space left on device")
        self.written += 1


@pytest.mark.parametrize("pipelined", [True, False])
def test_the_counts_add_up_however_the_stream_stops(tmp_path, video, grounder, pipelined):
    def stream(sinks, **kwargs) -> Stream:
        return Stream(grounder, open_source(str(video)),
                      CaptionSource(Prompt.parse(SAMPLE_CAPTION)), sinks, **kwargs)

    report = stream([], live=False).run(pipelined)  # end of file
    assert counts(report) == (FRAMES, FRAMES) and report.processed == FRAMES
    report = stream([], live=False, max_frames=3).run(pipelined)
    assert counts(report) == (3, 3) and report.processed == 3
    report = stream([], live=True).run(pipelined)  # live policy: drops are counted
    assert counts(report) == (FRAMES, FRAMES)
    sink = FailingSink(at=5)
    report = stream([sink], live=False).run(pipelined)  # an error
    assert "No space left on device" in report.error
    assert report.processed == sink.written == 5 and report.failed >= 1
    assert counts(report) == (report.read, report.read)
    assert "failed" in report.summary() and "stopped by an error" in report.summary()


def test_exit_codes_say_whether_anything_was_processed(tmp_path, shots, capsys):
    assert run("--source", str(shots), "--caption", SAMPLE_CAPTION) == 0
    for p in shots.iterdir():
        p.write_bytes(b"broken")
    assert run("--source", str(shots), "--caption", SAMPLE_CAPTION) == 1
    captured = capsys.readouterr()
    assert "frames: read 3, processed 0, dropped 3" in captured.out
    assert "no frame of" in captured.err


def test_latency_statistics_take_bounded_memory():
    histogram = LatencyHistogram()
    size = histogram.counts.nbytes
    values = np.random.default_rng(0).lognormal(3, 1, 100_000)
    for v in values:
        histogram.add(float(v))
    assert histogram.counts.nbytes == size < 32_000 and histogram.count == len(values)
    for q in (0.5, 0.9, 0.99):
        exact = float(np.quantile(values, q))
        assert abs(histogram.percentile(q) - exact) <= 0.011 * exact
    assert histogram.percentile(0.0) == values.min() and histogram.percentile(1.0) == values.max()
    assert LatencyHistogram().percentile(0.5) == 0.0


# --- a full disk --------------------------------------------------------------------------------

def check_full_disk_run(completed: subprocess.CompletedProcess, out: Path) -> None:
    """Exit 1 with the summary then one error line; the output holds whole frames only."""
    assert completed.returncode == 1, completed.stderr
    summary = [x for x in completed.stdout.splitlines() if x.startswith("frames: ")]
    assert len(summary) == 1 and "stopped by an error" in summary[0]
    errors = [x for x in completed.stderr.splitlines() if "No space" in x or "too large" in x]
    assert len(errors) == 1 and errors[0].startswith("groundrt: error: ")
    assert "Traceback" not in completed.stderr
    processed = int(summary[0].split("processed ")[1].split(",")[0])
    read = int(summary[0].split("read ")[1].split(",")[0])
    dropped = int(summary[0].split("dropped ")[1].split(" ")[0])
    assert read == processed + dropped and 0 < processed < FRAMES
    lines = out.read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == list(range(processed))
    assert leftovers(out.parent) == []


def groundrt_run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "groundrt.runtime.cli", "run", *args, "--quiet"],
                          capture_output=True, text=True, timeout=300, **kwargs)


def test_a_file_size_limit_stops_the_stream_cleanly(tmp_path, video):
    """The same write failure a full disk gives (EFBIG instead of ENOSPC), without privileges:
    the run's files may not grow beyond 40 KB (it writes about 77 KB)."""
    out = tmp_path / "out.jsonl"

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error from write(), not a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, resource.RLIM_INFINITY))

    completed = groundrt_run(["--source", str(video), "--caption", SAMPLE_CAPTION, "--json",
                              str(out)], preexec_fn=limit)
    check_full_disk_run(completed, out)
    assert "File too large" in completed.stderr


def test_a_full_disk_stops_the_stream_cleanly(tmp_path, video):
    """A real full disk: a 48 KB tmpfs, the run writes about 77 KB (needs the privilege to
    mount one; skipped otherwise)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        out = disk / "out.jsonl"
        completed = groundrt_run(["--source", str(video), "--caption", SAMPLE_CAPTION,
                                  "--json", str(out)])
        check_full_disk_run(completed, out)
        assert "No space left on device" in completed.stderr
    finally:
        subprocess.run(["umount", str(disk)], check=True)
