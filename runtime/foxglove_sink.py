"""`groundrt run --foxglove [PORT]`: a live view of the stream on a local Foxglove WebSocket
server (Foxglove's SDK, the [robot] extra): open Foxglove, "Open connection", ws://HOST:PORT.

The channels are runtime/foxglove_frame.py's (the image, the label mask, the masks' outlines
and labels as image annotations, the overlay, a JSON record with the per-stage timings). A
client that falls behind loses the oldest messages (the SDK's per-client backlog); the stream
never waits for a viewer.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from groundrt.runtime.results import GroundingResult
from groundrt.runtime.sinks import OutputError, Sink
from groundrt.runtime.sources import Frame

DEFAULT_PORT = 8765  # Foxglove's


class FoxgloveServerSink(Sink):
    """Serves every frame on ws://`host`:`port` (port 0: a free one, see `.port`)."""

    needs_overlay = True

    def __init__(self, port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> None:
        import foxglove

        from groundrt.runtime.foxglove_frame import FoxgloveChannels

        self.context = foxglove.Context()
        self.channels = FoxgloveChannels(self.context)
        try:
            self.server = foxglove.start_server(name="groundrt", host=host, port=port,
                                                context=self.context)
        except Exception as exc:  # the SDK raises its own error types (a port in use)
            raise OutputError(f"cannot start the Foxglove server on {host}:{port}: "
                              f"{exc}") from exc
        self.host = host
        self.port = self.server.port  # the bound one (port 0: a free one)
        self.start_ns = time.time_ns()
        self.closed = False

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def render(self, frame: Frame, result: GroundingResult, annotated: np.ndarray | None) -> Any:
        time_ns = self.start_ns + round(frame.timestamp * 1e9)
        return time_ns, self.channels.messages(frame, result, annotated, time_ns)

    def write(self, rendered: Any) -> None:
        time_ns, messages = rendered
        self.channels.log(messages, time_ns)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.server.stop()
