"""Frames handed in by a subscription callback (the node's `image` topic), for a Stream.

    source = TopicSource("image")
    source.push(msg.height, msg.width, msg.encoding, msg.step, msg.data, header)  # callback
    Stream(grounder, source, captions, sinks, live=True).run()                   # a worker

`push` never blocks the executor's callback thread: it only keeps the newest message (the live
policy's LatestSlot; a message it replaces is dropped and counted in `dropped`). Conversion to
BGR happens in the stream's capture thread; a message of an unsupported encoding or a wrong
size is logged (once per kind of fault) and counted as corrupt. `close` ends the iteration.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from groundrt.ros.messages import image_to_bgr, stamp_ns
from groundrt.runtime.images import ImageError
from groundrt.runtime.sources import Frame, FrameSource
from groundrt.runtime.stream import END, LatestSlot

log = logging.getLogger(__name__)


class TopicSource(FrameSource):
    kind = "topic"
    live = True

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._slot = LatestSlot()
        self._closed = False
        self._faults: set[str] = set()  # logged once each

    @property
    def dropped(self) -> int:
        """Messages replaced by a newer one before the stream took them."""
        return self._slot.dropped

    def push(self, height: int, width: int, encoding: str, step: int, data,
             head: dict) -> None:
        """Hand in one sensor_msgs/Image's fields and its header (a dict: messages.header)."""
        if not self._closed:
            self._slot.put((height, width, encoding, step, data, head))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._slot.put(END)

    def __iter__(self) -> Iterator[Frame]:
        while (item := self._slot.get()) is not END:
            *fields, head = item
            try:
                image = image_to_bgr(*fields)
            except ImageError as exc:
                self.corrupt += 1
                fault = str(exc)
                if fault not in self._faults:
                    self._faults.add(fault)
                    log.error("dropping images of topic %s: %s", self.name, exc)
                continue
            stamp = stamp_ns(head)
            yield Frame(self.read, stamp / 1e9 if stamp else time.time(), image,
                        f"frame {self.read}", meta=head)
            self.read += 1
