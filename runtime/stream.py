"""Grounding a stream of frames: capture, preprocessing, inference, decoding and writing overlap.

    report = Stream(grounder, source, captions, sinks).run()
    print(report.summary())

Capture runs in one thread, then preprocessing + inference, decoding + rendering and writing in
one thread each (PIPELINE_THREADS); bounded queues connect them, so a stream runs at the pace
of its slowest thread rather than the sum of all (OpenCV, ONNX Runtime, the native kernels and
numpy release the GIL while they work). Two policies for frames the pipeline cannot take yet:
* lossless (files by default): capture waits; every frame is processed, in order;
* live (cameras and streams by default): only the newest captured frame waits; the one it
  replaces is dropped and counted.
Every frame read is either processed (written to every sink) or counted as dropped: by the live
policy, because it did not decode (corrupt), or because the stream stopped on an error while it
was in flight (failed); read = processed + dropped however the stream stops. Ctrl-C stops
capture; the frames in flight are finished and the sinks flushed. An error (a full disk, a
source that does not come back) stops the stream the same way: `run` returns the report with
the error's message in `report.error`. `run(pipelined=False)` runs the same stages one frame at
a time (the baseline of benchmarks/stream_throughput.py). Per-frame statistics take bounded
memory (a latency histogram), however long the stream runs.
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from groundrt.errors import GroundrtError
from groundrt.runtime.captions import CaptionSource, Prompt
from groundrt.runtime.grounder import Grounder
from groundrt.runtime.images import ImageError
from groundrt.runtime.sinks import Sink, annotate
from groundrt.runtime.sources import Frame, FrameSource

log = logging.getLogger(__name__)

END = object()  # flows through the queues after the last frame
STAGES = ("capture", "preprocess", "inference", "decode", "render", "write")
# The stages each pipeline thread runs after the capture thread: on a 2-core machine four
# threads beat one per stage (measured by benchmarks/stream_throughput.py: fewer hand-offs and
# less contention for the cores and the GIL).
PIPELINE_THREADS = (("preprocess", "inference"), ("decode", "render"), ("write",))


class LatestSlot:
    """The live policy's queue: it holds at most one frame; a new one replaces it (dropped)."""

    def __init__(self) -> None:
        self._items: collections.deque = collections.deque()
        self._ready = threading.Condition()
        self.dropped = 0

    def put(self, item: Any) -> None:
        with self._ready:
            if item is not END and self._items:
                self.dropped += len(self._items)
                self._items.clear()
            self._items.append(item)
            self._ready.notify()

    def get(self) -> Any:
        with self._ready:
            while not self._items:
                self._ready.wait()
            return self._items.popleft()


class LatencyHistogram:
    """Latencies in bounded memory for a 24/7 stream: counts in buckets 1% wide (relative, from
    1 us to 1,000 s), so a percentile is within 1% of the exact one; min and max are exact."""

    LOW_MS, HIGH_MS, RATIO = 1e-3, 1e6, 1.01

    def __init__(self) -> None:
        self.buckets = math.ceil(math.log(self.HIGH_MS / self.LOW_MS, self.RATIO)) + 1
        self.counts = np.zeros(self.buckets, dtype=np.int64)
        self.count = 0
        self.min = math.inf
        self.max = -math.inf

    def add(self, ms: float) -> None:
        ratio = max(ms, self.LOW_MS) / self.LOW_MS
        index = min(int(math.log(ratio, self.RATIO)), self.buckets - 1)
        self.counts[index] += 1
        self.count += 1
        self.min, self.max = min(self.min, ms), max(self.max, ms)

    def percentile(self, q: float) -> float:
        """The q-quantile (0..1): the middle of its bucket, within [min, max]; 0 when empty."""
        if not self.count:
            return 0.0
        if q <= 0 or q >= 1:
            return float(self.min if q <= 0 else self.max)
        rank = q * (self.count - 1)
        index = int(np.searchsorted(np.cumsum(self.counts), math.floor(rank) + 1))
        middle = self.LOW_MS * self.RATIO ** (index + 0.5)
        return float(min(max(middle, self.min), self.max))


@dataclass
class StreamReport:
    read: int = 0  # frames the source delivered or failed to decode
    processed: int = 0
    dropped_live: int = 0
    corrupt: int = 0
    failed: int = 0  # read, then lost because the stream stopped on an error
    reconnects: int = 0
    caption_changes: int = 0
    wall_s: float = 0.0
    interrupted: bool = False
    error: str | None = None  # what stopped the stream, when an error did
    latencies_ms: LatencyHistogram = field(default_factory=LatencyHistogram)  # start -> written
    stage_ms: dict[str, float] = field(default_factory=dict)  # mean busy time per frame

    @property
    def dropped(self) -> int:
        return self.dropped_live + self.corrupt + self.failed

    @property
    def fps(self) -> float:
        return self.processed / self.wall_s if self.wall_s > 0 else 0.0

    def latency(self, q: float) -> float:
        return self.latencies_ms.percentile(q)

    def summary(self) -> str:
        return (f"frames: read {self.read}, processed {self.processed}, dropped {self.dropped} "
                f"(live {self.dropped_live}, corrupt {self.corrupt}, failed {self.failed}); "
                f"latency p50 {self.latency(0.5):.1f} ms, p99 {self.latency(0.99):.1f} ms; "
                f"{self.fps:.1f} FPS" + (f"; reconnects {self.reconnects}" if self.reconnects
                                         else "") + (" (interrupted)" if self.interrupted else "")
                + (" (stopped by an error)" if self.error else ""))


class Stream:
    """Grounds every frame of `source` with the caption `captions` holds when it is read."""

    def __init__(self, grounder: Grounder, source: FrameSource, captions: CaptionSource,
                 sinks: list[Sink], live: bool | None = None, max_frames: int | None = None,
                 queue_size: int = 1, progress: Callable[[], None] | None = None) -> None:
        self.grounder = grounder
        self.source = source
        self.captions = captions
        self.sinks = sinks
        self.live = source.live if live is None else live
        self.max_frames = max_frames
        self.queue_size = queue_size
        self.progress = progress
        self.report = StreamReport()
        self._stop = threading.Event()
        self._busy = dict.fromkeys(STAGES, 0.0)
        self._count_lock = threading.Lock()
        self._fps_window: collections.deque[float] = collections.deque(maxlen=30)
        self._taken = 0  # frames capture took from the source
        self._first: LatestSlot | queue.Queue | None = None  # capture's outbox, while running

    def stop(self) -> None:
        """Stop reading frames; those already read are finished (thread-safe)."""
        self._stop.set()

    @property
    def live_drops(self) -> int:
        """Frames the live policy has dropped so far (while the stream runs; afterwards
        `report.dropped_live`)."""
        return getattr(self._first, "dropped", 0)

    # ------------------------------------------------------------------------- the stages

    def _frames(self) -> Iterator[tuple[Frame, Prompt]]:
        """Capture: frames with the prompt current when each was read (counted here: a source
        counts a frame only when the next one is asked for)."""
        frames = iter(self.source)
        while not self._stop.is_set():
            if self.max_frames is not None and self._taken >= self.max_frames:
                return
            tick = time.perf_counter()
            frame = next(frames, None)
            self._busy["capture"] += time.perf_counter() - tick
            if frame is None:
                return
            self._taken += 1
            yield frame, self.captions.current()

    def _preprocess(self, item: tuple) -> tuple:
        frame, prompt = item
        frame.started = time.perf_counter()
        return frame, prompt, self.grounder.prepare(frame.image)

    def _infer(self, item: tuple) -> tuple:
        frame, prompt, prepared = item
        embeddings = self.grounder.infer(prepared.input[None])
        return frame, prompt, prepared.box, embeddings.item(0)

    def _decode(self, item: tuple) -> tuple:
        frame, prompt, box, embeddings = item
        text = self.grounder.encode_text(prompt.caption, prompt.phrases)
        return frame, self.grounder.decode(text, box, embeddings)

    def _render(self, item: tuple) -> tuple:
        """The frame's stage timings into its result, overlay (with the FPS and latency strip)
        and each sink's rendering."""
        frame, result = item
        # total: the latency so far, from preprocessing to this overlay (the write comes after)
        result.timings_ms.update(preprocess=frame.stage_ms["preprocess"],
                                 image=frame.stage_ms["inference"],
                                 total=(time.perf_counter() - frame.started) * 1e3)
        window = self._fps_window
        window.append(time.perf_counter())
        fps = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 1 else None
        frame.fps = fps
        annotated = (annotate(frame, result, fps) if any(s.needs_overlay for s in self.sinks)
                     else None)
        return frame, [sink.render(frame, result, annotated) for sink in self.sinks]

    def _write(self, item: tuple) -> None:
        frame, rendered = item
        for sink, payload in zip(self.sinks, rendered, strict=True):
            sink.write(payload)
            if getattr(sink, "stop_requested", False):
                self.stop()
        self.report.processed += 1
        self.report.latencies_ms.add((time.perf_counter() - frame.started) * 1e3)
        if self.progress is not None:
            self.progress()

    def _stage_functions(self) -> list[tuple[str, Callable[[tuple], Any]]]:
        return [("preprocess", self._preprocess), ("inference", self._infer),
                ("decode", self._decode), ("render", self._render), ("write", self._write)]

    def _apply(self, name: str, function: Callable[[tuple], Any], item: tuple) -> Any:
        """One stage on one frame; None when the frame is dropped (it did not decode)."""
        tick = time.perf_counter()
        try:
            out = function(item)
            item[0].stage_ms[name] = (time.perf_counter() - tick) * 1e3
            return out
        except ImageError as exc:
            with self._count_lock:
                self.report.corrupt += 1
            log.warning("dropping frame %d: %s", item[0].index, exc)
            return None
        finally:
            self._busy[name] += time.perf_counter() - tick

    # --------------------------------------------------------------------------- running

    def run(self, pipelined: bool = True) -> StreamReport:
        """Process the stream to its end (or max_frames, or stop()); close sinks and source."""
        start = time.perf_counter()
        try:
            if pipelined:
                self._run_pipelined()
            else:
                self._run_sequential()
        except KeyboardInterrupt:
            self.report.interrupted = True
        except (GroundrtError, OSError) as exc:  # a full disk, a source that did not come back
            log.info("stream stopped: %s", exc)  # the caller reports report.error
            self.report.error = str(exc)
        finally:
            self.report.wall_s = time.perf_counter() - start
            self._close()
        report = self.report
        report.read = self._taken + self.source.corrupt
        report.corrupt += self.source.corrupt
        report.reconnects = self.source.reconnects
        report.caption_changes = self.captions.changes
        frames = max(report.processed, 1)
        report.stage_ms = {name: busy * 1e3 / frames for name, busy in self._busy.items()}
        return report

    def _close(self) -> None:
        """Close every sink and the source, each even when another fails."""
        errors = []
        for closable in [*self.sinks, self.source]:
            try:
                closable.close()
            except (GroundrtError, OSError) as exc:
                log.error("closing %s: %s", type(closable).__name__, exc)
                errors.append(exc)
        if errors and self.report.error is None:
            self.report.error = str(errors[0])

    def _run_sequential(self) -> None:
        for item in self._frames():
            try:
                for name, function in self._stage_functions():
                    item = self._apply(name, function, item)
                    if item is None:
                        break
            except BaseException:
                self.report.failed += 1  # this frame was read and will not be written
                raise

    def _run_pipelined(self) -> None:
        functions = dict(self._stage_functions())
        stages = [[(name, functions[name]) for name in names] for names in PIPELINE_THREADS]
        first: LatestSlot | queue.Queue = (LatestSlot() if self.live
                                           else queue.Queue(self.queue_size))
        self._first = first
        queues = [first] + [queue.Queue(self.queue_size) for _ in stages[1:]]
        failures: list[BaseException] = []

        def capture() -> None:
            try:
                for item in self._frames():
                    queues[0].put(item)
            except BaseException as exc:  # noqa: BLE001 (re-raised in the calling thread)
                failures.append(exc)
            finally:
                queues[0].put(END)

        def stage(index: int) -> None:
            group = stages[index]
            inbox = queues[index]
            outbox = queues[index + 1] if index + 1 < len(queues) else None
            failed = False
            while (item := inbox.get()) is not END:
                if failed:  # drain, so that the stages before this one can finish
                    with self._count_lock:
                        self.report.failed += 1
                    continue
                try:
                    out = item
                    for name, function in group:
                        out = self._apply(name, function, out)
                        if out is None:
                            break
                except BaseException as exc:  # noqa: BLE001
                    failures.append(exc)
                    self.stop()
                    failed = True
                    with self._count_lock:
                        self.report.failed += 1
                    continue
                if out is not None and outbox is not None:
                    outbox.put(out)
            if outbox is not None:
                outbox.put(END)

        def last_stage() -> None:
            try:
                stage(len(stages) - 1)
            finally:
                finished.set()

        # The main thread waits on an Event, not Thread.join: a Ctrl-C that lands in join() can
        # leave the thread marked finished while it still runs (CPython < 3.13).
        finished = threading.Event()
        threads = [threading.Thread(target=capture, name="capture", daemon=True)]
        threads += [threading.Thread(target=stage, args=(i,), name=stages[i][0][0], daemon=True)
                    for i in range(len(stages) - 1)]
        threads.append(threading.Thread(target=last_stage, name=stages[-1][0][0], daemon=True))
        for thread in threads:
            thread.start()
        while True:
            try:
                while not finished.wait(timeout=0.1):
                    pass
                break
            except KeyboardInterrupt:  # stop reading; the frames in flight still finish
                self.report.interrupted = True
                self.stop()
        for thread in threads:  # every stage has passed END on: they are returning
            thread.join()
        if isinstance(first, LatestSlot):
            self.report.dropped_live += first.dropped
        if failures:
            raise failures[0]
