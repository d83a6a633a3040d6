"""`groundrt serve` (PyTriton's bundled tritonserver, loopback only): health, readiness and
/metrics; HTTP and gRPC answers equal the in-process Grounder's; malformed requests get errors
and the server keeps serving; `groundrt run --server` writes what `groundrt run` writes.

Needs the [serve] extra (nvidia-pytriton pins numpy<2: .ci/run runs this file in a venv of its
own, .venv-serve)."""

from __future__ import annotations

import json
import urllib.request

import cv2
import numpy as np
import pytest
from conftest import free_ports

pytest.importorskip("pytriton", reason="groundrt serve needs the [serve] extra "
                    "(pip install 'groundrt[serve]'; .ci/run installs it in .venv-serve)")
pytest.importorskip("tritonclient.http", reason="the client needs tritonclient[http,grpc]")

from groundrt.runtime.cli import main  # noqa: E402
from groundrt.runtime.client import GroundrtClient, ServerError  # noqa: E402
from groundrt.runtime.grounder import Grounder  # noqa: E402
from groundrt.runtime.serve import ServeOptions, start  # noqa: E402
from groundrt.runtime.serving import MAX_IMAGE_BYTES  # noqa: E402

CAPTION = "Two blue squares and a red circle on the grass under the sky."
FRAME = np.random.default_rng(3).integers(0, 256, (96, 128, 3), dtype=np.uint8)
THREADS = 2  # the server's Grounder and the in-process one run alike


@pytest.fixture(scope="module")
def server():
    http, grpc, metrics = free_ports(3)
    triton = start(ServeOptions(http_port=http, grpc_port=grpc, metrics_port=metrics,
                                threads=THREADS))
    yield {"http": f"http://127.0.0.1:{http}", "grpc": f"grpc://127.0.0.1:{grpc}",
           "metrics": f"http://127.0.0.1:{metrics}/metrics"}
    triton.stop()


@pytest.fixture(scope="module")
def grounder() -> Grounder:
    return Grounder(backend="onnxruntime", threads=THREADS)


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def test_health_readiness_and_metrics(server):
    assert get(server["http"] + "/v2/health/live")[0] == 200
    assert get(server["http"] + "/v2/health/ready")[0] == 200
    assert GroundrtClient(server["grpc"]).ready()
    GroundrtClient(server["http"]).ground(png(FRAME), CAPTION)
    status, text = get(server["metrics"])
    assert status == 200
    counts = [line for line in text.splitlines()
              if line.startswith("nv_inference_request_success{") and 'model="groundrt' in line]
    assert counts and float(counts[0].rsplit(" ", 1)[1]) >= 1


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_answers_equal_the_in_process_grounder(server, grounder, protocol):
    client = GroundrtClient(server[protocol], timeout_s=30)
    record = client.ground(png(FRAME), CAPTION)
    expected = grounder.ground(FRAME, CAPTION).to_json()
    assert record["phrases"] == expected["phrases"]
    assert record["image_size"] == expected["image_size"] and record["caption"] == CAPTION
    assert {"frame", "timestamp", "name", "timings_ms"} <= set(record)
    listed = client.ground(png(FRAME), phrases=["the sky", "two blue squares"])
    assert listed["phrases"] == grounder.ground(
        FRAME, phrases=["the sky", "two blue squares"]).to_json()["phrases"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_malformed_requests_get_errors_and_the_server_keeps_serving(server, grounder, protocol):
    client = GroundrtClient(server[protocol], timeout_s=60)
    with pytest.raises(ServerError, match="not a readable image"):
        client.ground(b"this is not an image", CAPTION)
    with pytest.raises(ServerError, match="caption is empty"):
        client.ground(png(FRAME), "")
    with pytest.raises(ServerError, match="no noun phrase"):
        client.ground(png(FRAME), "and of the")
    with pytest.raises(ServerError, match="limit|size|large|exceed"):
        client.ground(b"\x00" * (MAX_IMAGE_BYTES + 1), CAPTION)
    record = client.ground(png(FRAME), CAPTION)
    assert record["phrases"] == grounder.ground(FRAME, CAPTION).to_json()["phrases"]


def test_run_through_a_server_writes_what_run_writes(server, tmp_path):
    image = tmp_path / "shot.png"
    cv2.imwrite(str(image), FRAME)
    common = ["run", "--source", str(image), "--caption", CAPTION, "--quiet"]
    assert main([*common, "--threads", str(THREADS), "--json", str(tmp_path / "local.jsonl"),
                 "--save", str(tmp_path / "local")]) == 0
    assert main([*common, "--server", server["grpc"], "--json", str(tmp_path / "remote.jsonl"),
                 "--save", str(tmp_path / "remote")]) == 0
    local, remote = (json.loads((tmp_path / f"{n}.jsonl").read_text())
                     for n in ("local", "remote"))
    for record in (local, remote):  # an image's timestamp: seconds since the source opened
        record.pop("timings_ms"), record.pop("timestamp")
    assert remote == local
    assert (tmp_path / "remote" / "shot.jpg").is_file()  # masks came back for the overlay
