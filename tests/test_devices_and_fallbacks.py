"""Where the Grounder runs and what it does when its first choice cannot: ONNX Runtime's provider
selection, backend="auto"'s fallbacks, the native-kernel fallback, `groundrt info` on a package
with engines, thread safety, and the fp16 graph TensorRT builds from. On this CPU machine the
GPU choices are exercised up to where they need a GPU (they must fail with the documented
error or fall back with the documented warning); benchmarks/gpu_checks.sh runs them on one.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import run_in_threads

import groundrt
from groundrt.kernels import cpu
from groundrt.kernels.device_buffers import DeviceTensor
from groundrt.package import read_manifest, write_manifest
from groundrt.runtime import DEFAULT_MODEL, postprocess
from groundrt.runtime.backends import (
    BackendFallbackWarning,
    BackendUnavailableError,
    auto_choices,
    ort_providers,
    parse_device,
)
from groundrt.runtime.bench import DEFAULT_CAPTION, sample_image
from groundrt.runtime.cli import main
from groundrt.runtime.info import environment, format_info, package_info

CUDA_EP = "CUDAExecutionProvider"
HAS_CUDA_EP = CUDA_EP in ort.get_available_providers()
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def package_with_engines(folder: Path) -> Path:
    """The shipped package plus an engine record per graph (plan files of placeholder bytes:
    nothing here deserializes them), written through write_manifest so the hashes verify."""
    shutil.copytree(DEFAULT_MODEL, folder)
    manifest = read_manifest(folder)
    engines = []
    for graph, precision in (("image", "int8"), ("text", "fp16")):
        name = f"{graph}.{precision}.engine"
        (folder / name).write_bytes(b"plan bytes for " + name.encode())
        engines.append({"file": name, "graph": graph, "precision": precision,
                        "tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7",
                        "max_abs_error": {"out": 0.0012}, "checked_against": "x.onnx"})
    own = ("format", "format_version", "producer", "files")
    write_manifest(folder, {**{k: v for k, v in manifest.items() if k not in own},
                            "engines": engines})
    return folder


def same_results(a, b) -> bool:
    return [p.text for p in a.phrases] == [p.text for p in b.phrases] and all(
        (p.mask == q.mask).all() and p.score == q.score and p.box == q.box
        for p, q in zip(a.phrases, b.phrases, strict=True))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return sample_image(320, 240)


# ---- devices and ONNX Runtime's providers ----------------------------------------------------


def test_device_names():
    assert parse_device("cpu") is None and parse_device("cuda") == 0
    assert parse_device("CUDA:1") == 1
    for bad in ("gpu", "cuda:", "cuda:x", "cuda1"):
        with pytest.raises(ValueError, match="cpu, cuda or cuda:N"):
            parse_device(bad)


def test_provider_lists(tmp_path):
    assert ort_providers("cpu") == ["CPUExecutionProvider"]
    assert ort_providers("cuda:1") == [(CUDA_EP, {"device_id": 1}), "CPUExecutionProvider"]
    trt, cuda, last = ort_providers("cuda", "tensorrt", tmp_path)
    assert trt[0] == "TensorrtExecutionProvider" and trt[1]["device_id"] == 0
    assert trt[1]["trt_engine_cache_enable"] and trt[1]["trt_engine_cache_path"] == str(tmp_path)
    assert cuda == (CUDA_EP, {"device_id": 0}) and last == "CPUExecutionProvider"
    with pytest.raises(ValueError, match="needs a GPU device"):
        ort_providers("cpu", "tensorrt")
    with pytest.raises(ValueError, match="unknown ort_provider"):
        ort_providers("cuda", "openvino")


@pytest.mark.skipif(HAS_CUDA_EP, reason="this ONNX Runtime has the CUDA provider")
def test_onnxruntime_on_cuda_without_onnxruntime_gpu_says_what_to_install():
    with pytest.raises(BackendUnavailableError, match=f"no {CUDA_EP}.*onnxruntime-gpu"):
        groundrt.Grounder(backend="onnxruntime", device="cuda")
    with pytest.raises(BackendUnavailableError, match="TensorrtExecutionProvider"):
        groundrt.Grounder(backend="onnxruntime", device="cuda", ort_provider="tensorrt")
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--device", "gpu0"])
    assert exit_info.value.code == 2


# ---- backend="auto" ----------------------------------------------------------------------------


def test_auto_order():
    assert auto_choices({"engines": [{}]}, "cpu") == [("tensorrt", "cuda"),
                                                      ("onnxruntime", "cpu")]
    assert auto_choices({}, "cuda:1") == [("onnxruntime", "cuda:1"), ("onnxruntime", "cpu")]
    assert auto_choices({}, "cpu") == [("onnxruntime", "cpu")]


@pytest.mark.skipif(HAS_CUDA_EP, reason="this ONNX Runtime has the CUDA provider")
def test_auto_on_cuda_falls_back_to_the_cpu_with_one_warning(image):
    with pytest.warns(BackendFallbackWarning, match=f"onnxruntime on cuda.*{CUDA_EP}") as caught:
        g = groundrt.Grounder(backend="auto", device="cuda")
    assert len([w for w in caught if w.category is BackendFallbackWarning]) == 1
    assert g.backend.name == "onnxruntime" and g.backend.device == "cpu"
    assert not g.postprocess.on_gpu
    assert same_results(g.ground(image, DEFAULT_CAPTION),
                        groundrt.Grounder().ground(image, DEFAULT_CAPTION))


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_auto_with_engines_but_no_tensorrt_runs_onnxruntime(tmp_path, image):
    package = package_with_engines(tmp_path / "pkg")
    with pytest.warns(BackendFallbackWarning, match=r"tensorrt on cuda .*groundrt\[gpu\]"):
        g = groundrt.Grounder(package)
    assert g.backend.name == "onnxruntime"
    assert same_results(g.ground(image, DEFAULT_CAPTION),
                        groundrt.Grounder().ground(image, DEFAULT_CAPTION))
    with pytest.raises(BackendUnavailableError, match=r"groundrt\[gpu\]"):
        groundrt.Grounder(package, backend="tensorrt")


# ---- groundrt info ----------------------------------------------------------------------------


def test_info_lists_the_engines_of_a_package(tmp_path, capsys):
    package = package_with_engines(tmp_path / "pkg")
    text = format_info(package_info(package), environment())
    assert ("TensorRT engines: image.int8.engine (image, int8, TensorRT 10.3.0, Orin (compute "
            "8.7), max |plan - onnx| out 0.0012); text.fp16.engine (text, fp16") in text
    assert main(["info", "--model", str(package)]) == 0
    assert "image.int8.engine (image, int8" in capsys.readouterr().out
    assert main(["info", "--model", str(package), "--json"]) == 0
    assert '"file": "text.fp16.engine"' in capsys.readouterr().out


def test_info_says_whether_the_kernels_are_built(monkeypatch, tmp_path):
    state = environment()["cpu kernels"]
    assert state.startswith("built (") == cpu.is_usable()
    monkeypatch.setenv(cpu.LIB_ENV, str(tmp_path / cpu.LIB_NAME))
    assert environment()["cpu kernels"].startswith("not built: ")
    assert "pip install" in environment()["cpu kernels"]


# ---- the native kernels' fallback ---------------------------------------------------------------


def test_a_library_that_does_not_load_falls_back_with_one_warning(monkeypatch, tmp_path, caplog,
                                                                  image):
    bad = tmp_path / cpu.LIB_NAME
    bad.write_bytes(b"\x7fELF" + bytes(60))  # as an .so built for another architecture
    monkeypatch.setenv(cpu.LIB_ENV, str(bad))
    monkeypatch.setattr(postprocess, "_warned", set())
    with caplog.at_level(logging.WARNING, logger=postprocess.__name__):
        first = groundrt.Grounder()
        second = groundrt.Grounder()
    warnings = [r for r in caplog.records if "cannot be loaded" in r.getMessage()]
    assert len(warnings) == 1 and str(bad) in warnings[0].getMessage()
    assert not first.postprocess.native and not first.native_letterbox
    result = second.ground(image, DEFAULT_CAPTION)
    assert result.phrases and all(p.mask.shape == image.shape[:2] for p in result.phrases)


# ---- thread safety -------------------------------------------------------------------------------


def test_threads_sharing_a_grounder_get_the_results_of_one_thread(image):
    g = groundrt.Grounder(kernel_threads=2)
    captions = [DEFAULT_CAPTION, "A red circle on the grass under the sky.",
                "Two blue squares and a yellow star."]
    images = [image, image[::-1].copy(), np.ascontiguousarray(image[:, ::-1])]
    jobs = [(i, c) for i in range(len(images)) for c in range(len(captions))]
    expected = {job: g.ground(images[job[0]], captions[job[1]]) for job in jobs}
    g._text_cache.clear()  # the threads race to fill the caption cache too
    got: dict = {}
    errors: list = []
    barrier = threading.Barrier(6)

    def work(offset: int) -> None:
        try:
            barrier.wait()
            for n in range(3 * len(jobs)):
                job = jobs[(n + offset) % len(jobs)]
                got.setdefault(job, []).append(g.ground(images[job[0]], captions[job[1]]))
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    run_in_threads(work, 6)
    assert not errors, errors
    assert sum(map(len, got.values())) == 6 * 3 * len(jobs)
    for job, results in got.items():
        assert all(same_results(r, expected[job]) for r in results), job


# ---- device tensors (the GPU hand-off's bookkeeping) ----------------------------------------


def test_device_tensor_views_address_their_slice():
    parent = DeviceTensor(0x7F0000000000, (2, 48, 24, 24), np.float32)
    second = parent[1]
    assert second.shape == (48, 24, 24) and second.dtype == np.float32
    assert second.ptr == parent.ptr + 48 * 24 * 24 * 4 and parent[-1].ptr == second.ptr
    with pytest.raises(IndexError):
        parent[2]
    with pytest.raises(IndexError):
        parent[0:1]


# ---- the fp16 graph TensorRT builds from ------------------------------------------------------


def test_fp16_graph_keeps_fp32_io_and_the_outputs(tmp_path):
    onnx = pytest.importorskip("onnx", reason="the fp16 conversion needs onnx ([export])")
    from groundrt.export.engine import fp16_graph, max_abs_errors, sample_feeds

    manifest = read_manifest(DEFAULT_MODEL)
    for graph in ("image", "text"):
        source = DEFAULT_MODEL / manifest["graphs"][graph]["fp32"]
        converted = fp16_graph(source, tmp_path / f"{graph}.fp16.onnx")
        model = onnx.load(str(converted))
        io = list(model.graph.input) + list(model.graph.output)
        assert all(t.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16 for t in io)
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
        feeds = sample_feeds(DEFAULT_MODEL, manifest, graph)
        runs = []
        for path in (source, converted):
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            runs.append(dict(zip(names, session.run(names, feeds), strict=True)))
        errors = max_abs_errors(runs[1], runs[0])
        scale = max(float(np.abs(v).max()) for v in runs[0].values())
        assert set(errors) == set(runs[0]) and max(errors.values()) < 0.02 * scale, errors


# ---- on a GPU (benchmarks/gpu_checks.sh runs these; skipped on a CPU machine) ------------------


def mean_iou(a, b) -> float:
    ious = []
    for p, q in zip(a.phrases, b.phrases, strict=True):
        union = (p.mask | q.mask).sum()
        ious.append(1.0 if union == 0 else (p.mask & q.mask).sum() / union)
    return float(np.mean(ious))


@pytest.mark.skipif(not HAS_CUDA_EP, reason="ONNX Runtime has no CUDA provider here "
                    "(onnxruntime-gpu and a GPU are needed)")
def test_onnxruntime_on_cuda_matches_the_cpu(image):
    gpu = groundrt.Grounder(backend="onnxruntime", device="cuda", precision="fp32")
    assert gpu.backend.graphs.image_session.get_providers()[0] == CUDA_EP
    cpu_path = groundrt.Grounder(backend="onnxruntime", precision="fp32")
    for picture in (image, image[::-1].copy()):
        assert mean_iou(gpu.ground(picture, DEFAULT_CAPTION),
                        cpu_path.ground(picture, DEFAULT_CAPTION)) >= 0.99
    # shared by threads on the GPU: the results of one thread
    expected = gpu.ground(image, DEFAULT_CAPTION)
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(gpu.ground(image, DEFAULT_CAPTION)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(same_results(r, expected) for r in results)
    print(f"mask decoding on the GPU: {gpu.postprocess.on_gpu}")
