"""The Triton repository's `groundrt` BLS model (runtime/triton_bls.py, its generated config and
model.py) in a real tritonserver: the one PyTriton's wheel bundles, with its Python backend.

That wheel has no ONNX Runtime backend, so here each graph model (groundrt_image, groundrt_text)
runs its repository's own model.onnx in ONNX Runtime inside a Python-backend model with the
generated config's inputs, outputs and batching (only `backend` changed): a stand-in for
Triton's ONNX Runtime backend, the same files in the same runtime. The BLS model, its
config.pbtxt and everything it does (BLS requests, ragged batching, per-request errors) are the
exported ones. Needs the [serve] extra (.ci/run: .venv-serve); bounded by START_TIMEOUT_S.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import free_ports

distribution = pytest.importorskip(
    "pytriton.utils.distribution", reason="the bundled tritonserver comes with the [serve] "
    "extra (nvidia-pytriton; .ci/run installs it in .venv-serve)")

from groundrt.export.triton_repo import export_triton_repo  # noqa: E402
from groundrt.runtime import DEFAULT_MODEL  # noqa: E402
from groundrt.runtime.client import GroundrtClient, ServerError  # noqa: E402
from groundrt.runtime.grounder import Grounder  # noqa: E402

START_TIMEOUT_S = 90
CAPTION = "Two blue squares and a red circle on the grass under the sky."
FRAME = np.random.default_rng(4).integers(0, 256, (96, 128, 3), dtype=np.uint8)

ONNX_MODEL_PY = '''"""A stand-in for Triton's ONNX Runtime backend: model.onnx in ONNX Runtime."""
import json
from pathlib import Path

import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        folder = Path(args["model_repository"]) / args["model_version"]
        self.session = ort.InferenceSession(str(folder / "model.onnx"),
                                            providers=["CPUExecutionProvider"])
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            feeds = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy()
                     for n in self.inputs}
            outs = self.session.run(self.outputs, feeds)
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor(n, a) for n, a in zip(self.outputs, outs)]))
        return responses
'''


def python_backend_repository(repo: Path) -> None:
    """The graph models' backend onnxruntime -> python (a model.py running model.onnx)."""
    for config in repo.glob("groundrt_*/config.pbtxt"):
        text = config.read_text().replace('backend: "onnxruntime"', 'backend: "python"')
        config.write_text(text.replace('default_model_filename: "model.onnx"\n', ""))
        (config.parent / "1" / "model.py").write_text(ONNX_MODEL_PY)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("triton")
    repo = root / "repo"
    export_triton_repo(DEFAULT_MODEL, repo)
    python_backend_repository(repo)
    dist = distribution.get_root_module_path() / "tritonserver"
    server_dir = root / "tritonserver"
    shutil.copytree(dist, server_dir, ignore=shutil.ignore_patterns("python_backend_stubs"))
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    shutil.copy(distribution.get_stub_path(version),
                server_dir / "backends" / "python" / "triton_python_backend_stub")
    http, grpc, metrics = free_ports(3)
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [
        sysconfig.get_config_var("LIBDIR"), str(distribution.get_libs_path()),
        env.get("LD_LIBRARY_PATH", "")]))
    # the stub's Python finds this venv (groundrt, onnxruntime) from the python3 on PATH
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    log = open(root / "tritonserver.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [str(server_dir / "bin" / "tritonserver"), f"--model-repository={repo}",
         f"--backend-directory={server_dir / 'backends'}", f"--http-port={http}",
         f"--grpc-port={grpc}", f"--metrics-port={metrics}", "--http-address=127.0.0.1",
         "--grpc-address=127.0.0.1", "--allow-gpu-metrics=false"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    client = GroundrtClient(f"grpc://127.0.0.1:{grpc}")
    deadline = time.monotonic() + START_TIMEOUT_S
    while not client.ready():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log.close()
            pytest.fail("tritonserver did not get ready:\n"
                        + (root / "tritonserver.log").read_text()[-4000:])
        time.sleep(0.5)
    yield {"http": f"http://127.0.0.1:{http}", "grpc": f"grpc://127.0.0.1:{grpc}"}
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_bls_model_grounds_as_the_grounder(server, protocol):
    client = GroundrtClient(server[protocol], timeout_s=60)
    assert client.batched()  # the generated config: max_batch_size 8, ragged image bytes
    record = client.ground(png(FRAME), CAPTION)
    grounder = Grounder(backend="onnxruntime")
    assert record["phrases"] == grounder.ground(FRAME, CAPTION).to_json()["phrases"]
    listed = client.ground(png(FRAME), phrases=["the sky", "a red circle"])
    assert [p["text"] for p in listed["phrases"]] == ["the sky", "a red circle"]


def test_the_bls_model_answers_bad_requests_with_errors_and_keeps_serving(server):
    client = GroundrtClient(server["grpc"], timeout_s=60)
    with pytest.raises(ServerError, match="not a readable image"):
        client.ground(b"not an image", CAPTION)
    with pytest.raises(ServerError, match="caption is empty"):
        client.ground(png(FRAME), " ")
    assert client.ground(png(FRAME), CAPTION)["phrases"]
