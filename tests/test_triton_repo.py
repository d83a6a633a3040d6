"""`groundrt export triton`: the repository's layout, every config.pbtxt parsed by Triton's own
protobuf classes, and the ONNX models' inputs and outputs against the package's graphs (the
default v1 package; a tiny v2 package with a phrase graph where torch is installed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from groundrt.export.triton_repo import (
    MODEL_NAME,
    RepoOptions,
    TritonExportError,
    export_triton_repo,
)
from groundrt.package import read_manifest, sha256_of
from groundrt.runtime import DEFAULT_MODEL
from groundrt.runtime.cli import main

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2",
    reason="parsing config.pbtxt needs tritonclient (pip install 'groundrt[serve]')")
text_format = pytest.importorskip("google.protobuf.text_format")

ONNX_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(int32)": "TYPE_INT32",
              "tensor(int64)": "TYPE_INT64"}


def parse(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def check_repository(repo: Path, package: Path, device: str) -> dict:
    """Every model's config parses; each graph model serves the package's file with the
    manifest's tensors, which its ONNX session reads the same. Returns {name: config}."""
    manifest = read_manifest(package)
    configs = {p.parent.name: parse(p) for p in repo.glob("*/config.pbtxt")}
    graphs = [g for g in ("image", "text", "phrase") if g in manifest["graphs"]]
    assert set(configs) == {MODEL_NAME, *(f"groundrt_{g}" for g in graphs)}
    kind = model_config_pb2.ModelInstanceGroup.Kind
    for graph in graphs:
        name = f"groundrt_{graph}"
        config, onnx_file = configs[name], repo / name / "1" / "model.onnx"
        assert config.name == name and config.backend == "onnxruntime"
        assert config.instance_group[0].kind == (kind.KIND_GPU if device == "gpu"
                                                 else kind.KIND_CPU)
        served = {sha256_of(package / f) for f in manifest["graphs"][graph].values()}
        assert sha256_of(onnx_file) in served
        io = manifest["io"][graph]
        batched = config.max_batch_size > 0
        assert batched == (graph != "text")  # the text graph's batch axis is a fixed 1
        assert config.HasField("dynamic_batching") == batched
        session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        for declared, tensors, actual in ((config.input, io["inputs"], session.get_inputs()),
                                          (config.output, io["outputs"],
                                           session.get_outputs())):
            assert [t.name for t in declared] == [t["name"] for t in tensors]
            by_name = {a.name: a for a in actual}
            assert set(by_name) == {t.name for t in declared}
            for t in declared:
                shape = list(by_name[t.name].shape)
                dims = ([-1] if batched else []) + list(t.dims)
                assert len(dims) == len(shape), (name, t.name)
                for want, got in zip(dims, shape, strict=True):
                    assert want == (got if isinstance(got, int) else -1), (name, t.name)
                assert model_config_pb2.DataType.Name(t.data_type) == \
                    ONNX_TYPES[by_name[t.name].type]
    bls = configs[MODEL_NAME]
    assert bls.backend == "python" and bls.max_batch_size > 0
    assert {t.name: model_config_pb2.DataType.Name(t.data_type) for t in bls.input} == {
        "image": "TYPE_UINT8", "caption": "TYPE_STRING", "phrases": "TYPE_STRING"}
    assert [t.name for t in bls.output] == ["result"]
    assert [t.optional for t in bls.input] == [False, True, True]
    assert (repo / MODEL_NAME / "1" / "model.py").is_file()
    copied = repo / MODEL_NAME / "1" / bls.parameters["package"].string_value
    assert json.loads((copied / "manifest.json").read_text()) == manifest
    assert (copied / manifest["tokenizer"]["file"]).read_bytes() == \
        (package / manifest["tokenizer"]["file"]).read_bytes()
    return configs


def test_the_default_package_on_the_cpu(tmp_path):
    assert main(["export", "triton", "--model", str(DEFAULT_MODEL), "--out",
                 str(tmp_path / "repo")]) == 0
    configs = check_repository(tmp_path / "repo", DEFAULT_MODEL, "cpu")
    image = read_manifest(DEFAULT_MODEL)["graphs"]["image"]
    # the CPU's default precision: the package's own (INT8 U8S8)
    assert sha256_of(tmp_path / "repo" / "groundrt_image" / "1" / "model.onnx") == \
        sha256_of(DEFAULT_MODEL / image[read_manifest(DEFAULT_MODEL)["precision"]])
    assert configs["groundrt_image"].max_batch_size == 8


def test_on_a_gpu_the_image_graph_is_fp32_and_instances_are_gpu_ones(tmp_path):
    export_triton_repo(DEFAULT_MODEL, tmp_path / "repo",
                       RepoOptions(device="gpu", instances=2, max_batch=4))
    configs = check_repository(tmp_path / "repo", DEFAULT_MODEL, "gpu")
    assert configs["groundrt_image"].instance_group[0].count == 2
    assert configs["groundrt_image"].max_batch_size == 4
    image = read_manifest(DEFAULT_MODEL)["graphs"]["image"]
    assert sha256_of(tmp_path / "repo" / "groundrt_image" / "1" / "model.onnx") == \
        sha256_of(DEFAULT_MODEL / image["fp32"])


def test_bad_options_and_a_used_folder_are_refused(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    with pytest.raises(TritonExportError, match="not empty"):
        export_triton_repo(DEFAULT_MODEL, tmp_path / "used")
    with pytest.raises(TritonExportError, match="device"):
        export_triton_repo(DEFAULT_MODEL, tmp_path / "a", RepoOptions(device="tpu"))
    with pytest.raises(TritonExportError, match="no fp16 image graph"):
        export_triton_repo(DEFAULT_MODEL, tmp_path / "b", RepoOptions(precision="fp16"))


def test_a_v2_package_gets_a_phrase_model(tmp_path):
    pytest.importorskip("torch", reason="building a v2 package needs the [export] extra")
    from dataclasses import replace

    import torch

    from groundrt.data import PNGDataset
    from groundrt.export.package_builder import build_package
    from groundrt.model.checkpoint import save_model
    from groundrt.model.config import PRESETS
    from groundrt.model.network import GroundingNet
    from groundrt.synth.dataset import synthesize
    from groundrt.text import Tokenizer, train_tokenizer

    data = tmp_path / "synth"
    synthesize(data, "train", 6, seed=5, size=(128, 96), workers=1, progress=False)
    synthesize(data, "val", 2, seed=6, size=(120, 90), workers=1, progress=False)
    run = tmp_path / "run"
    tokenizer = Tokenizer(train_tokenizer(
        (n.caption for n in PNGDataset(data, "train").narratives), run))
    torch.manual_seed(0)
    save_model(run, GroundingNet(replace(PRESETS["tiny-v2"], vocab_size=tokenizer.vocab_size)))
    package = tmp_path / "pkg"
    build_package(run, data, package, calibration_count=2, progress=False)
    export_triton_repo(package, tmp_path / "repo")
    configs = check_repository(tmp_path / "repo", package, "cpu")
    phrase = configs["groundrt_phrase"]
    assert [t.name for t in phrase.output] == ["kernels", "presence", "phrase_embed"]
    assert configs[MODEL_NAME].parameters["phrase_graph"].string_value == "groundrt_phrase"
    assert np.all([d == -1 for d in phrase.input[0].dims[:1]])  # any number of phrases
