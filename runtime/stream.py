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
Every frame read is either processed (written to every sink) or counted as dropped (live policy,
or a frame that did not decode). Ctrl-C stops capture; the frames in flight are finished and the
sinks flushed. `run(pipelined=False)` runs the same stages one frame at a time (the baseline of
benchmarks/stream_throughput.py).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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


@dataclass
class StreamReport:
    read: int = 0  # frames the source delivered or failed to decode
    processed: int = 0
    dropped_live: int = 0
    corrupt: int = 0
    reconnects: int = 0
    caption_changes: int = 0
    wall_s: float = 0.0
    interrupted: bool = False
    latencies_ms: list[float] = field(default_factory=list)  # preprocess start -> written
    stage_ms: dict[str, float] = field(default_factory=dict)  # mean busy time per frame

    @property
    def dropped(self) -> int:
        return self.dropped_live + self.corrupt

    @property
    def fps(self) -> float:
        return self.processed / self.wall_s if self.wall_s > 0 else 0.0

    def latency(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q * 100)) if self.latencies_ms else 0.0

    def summary(self) -> str:
        return (f"frames: read {self.read}, processed {self.processed}, dropped {self.dropped} "
                f"(live {self.dropped_live}, corrupt {self.corrupt}); latency p50 "
                f"{self.latency(0.5):.1f} ms, p99 {self.latency(0.99):.1f} ms; "
                f"{self.fps:.1f} FPS" + (f"; reconnects {self.reconnects}" if self.reconnects
                                         else "") + (" (interrupted)" if self.interrupted else ""))


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

    def stop(self) -> None:
        """Stop reading frames; those already read are finished (thread-safe)."""
        self._stop.set()

    # ------------------------------------------------------------------------- the stages

    def _frames(self) -> Iterator[tuple[Frame, Prompt]]:
        """Capture: frames with the prompt current when each was read."""
        frames = iter(self.source)
        while not self._stop.is_set():
            if self.max_frames is not None and self.source.read >= self.max_frames:
                return
            tick = time.perf_counter()
            frame = next(frames, None)
            self._busy["capture"] += time.perf_counter() - tick
            if frame is None:
                return
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
        """Overlay (with the FPS counter) and each sink's rendering."""
        frame, result = item
        window = self._fps_window
        window.append(time.perf_counter())
        fps = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 1 else None
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
        self.report.latencies_ms.append((time.perf_counter() - frame.started) * 1e3)
        if self.progress is not None:
            self.progress()

    def _stage_functions(self) -> list[tuple[str, Callable[[tuple], Any]]]:
        return [("preprocess", self._preprocess), ("inference", self._infer),
                ("decode", self._decode), ("render", self._render), ("write", self._write)]

    def _apply(self, name: str, function: Callable[[tuple], Any], item: tuple) -> Any:
        """One stage on one frame; None when the frame is dropped (it did not decode)."""
        tick = time.perf_counter()
        try:
            return function(item)
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
        finally:
            self.report.wall_s = time.perf_counter() - start
            for sink in self.sinks:
                sink.close()
            self.source.close()
        report = self.report
        report.read = self.source.read + self.source.corrupt
        report.corrupt += self.source.corrupt
        report.reconnects = self.source.reconnects
        report.caption_changes = self.captions.changes
        frames = max(report.processed, 1)
        report.stage_ms = {name: busy * 1e3 / frames for name, busy in self._busy.items()}
        return report

    def _run_sequential(self) -> None:
        for item in self._frames():
            for name, function in self._stage_functions():
                item = self._apply(name, function, item)
                if item is None:
                    break

    def _run_pipelined(self) -> None:
        functions = dict(self._stage_functions())
        stages = [[(name, functions[name]) for name in names] for names in PIPELINE_THREADS]
        first: LatestSlot | queue.Queue = (LatestSlot() if self.live
                                           else queue.Queue(self.queue_size))
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
                if failed:
                    continue  # drain, so that the stages before this one can finish
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
