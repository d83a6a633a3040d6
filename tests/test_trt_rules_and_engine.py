"""TensorRT's Q/DQ rules on hand-built ONNX graphs; engine records; TensorRT builds (GPU only)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from groundrt.errors import GroundrtError
from groundrt.export.engine import (
    EngineBuildError,
    EngineMismatchError,
    build_engine,
    build_package_engines,
    check_engine_record,
    profile_shapes,
)
from groundrt.export.trt_rules import (
    TensorRTRulesError,
    assert_trt_qdq,
    check_trt_qdq,
    qdq_summary,
)
from groundrt.runtime import DEFAULT_MODEL

RNG = np.random.default_rng(0)
CONV_W = RNG.integers(-127, 128, size=(4, 3, 3, 3), dtype=np.int8)
MATMUL_W = RNG.integers(-127, 128, size=(8, 5), dtype=np.int8)


def qdq_model(act_zp_dtype=np.int8, act_zp_value=0, conv_scale_shape=(4,), conv_axis=0,
              matmul_axis=1, opset=17, extra_nodes=(), extra_opsets=(), act_zp=True):
    """x[1,3,8,8] -> Q/DQ -> Conv(DQ weight) -> Relu -> Q/DQ -> MatMul(DQ weight [8,5])."""
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "act_scale"),
        numpy_helper.from_array(np.array(act_zp_value, act_zp_dtype), "act_zp"),
        numpy_helper.from_array(CONV_W, "conv_w_q"),
        numpy_helper.from_array(np.full(conv_scale_shape, 0.01, np.float32), "conv_w_scale"),
        numpy_helper.from_array(np.zeros(conv_scale_shape, np.int8), "conv_w_zp"),
        numpy_helper.from_array(MATMUL_W, "mm_w_q"),
        numpy_helper.from_array(np.full((5,), 0.01, np.float32), "mm_w_scale"),
        numpy_helper.from_array(np.zeros((5,), np.int8), "mm_w_zp"),
    ]
    zp = ["act_zp"] if act_zp else []
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "act_scale", *zp], ["x_q"], name="q_in"),
        helper.make_node("DequantizeLinear", ["x_q", "act_scale", *zp], ["x_dq"], name="dq_in"),
        helper.make_node("DequantizeLinear", ["conv_w_q", "conv_w_scale", "conv_w_zp"],
                         ["conv_w"], name="dq_conv_w", axis=conv_axis),
        helper.make_node("Conv", ["x_dq", "conv_w"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("QuantizeLinear", ["relu", "act_scale", *zp], ["r_q"], name="q_relu"),
        helper.make_node("DequantizeLinear", ["r_q", "act_scale", *zp], ["r_dq"], name="dq_relu"),
        helper.make_node("DequantizeLinear", ["mm_w_q", "mm_w_scale", "mm_w_zp"], ["mm_w"],
                         name="dq_mm_w", axis=matmul_axis),
        helper.make_node("MatMul", ["r_dq", "mm_w"], ["y"], name="matmul"),
        *extra_nodes,
    ]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 5])], inits)
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def test_the_shipped_trt_graph_follows_the_rules() -> None:
    """The default package's INT8-TRT graph passes; its ONNX Runtime (uint8) twin does not."""
    assert check_trt_qdq(DEFAULT_MODEL / "image.int8.trt.onnx") == []
    assert check_trt_qdq(DEFAULT_MODEL / "image.int8.cpu.onnx")


def test_symmetric_graph_passes_and_runs_in_onnxruntime():
    model = qdq_model()
    onnx.checker.check_model(model)
    assert check_trt_qdq(model) == []
    assert_trt_qdq(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    (y,) = session.run(None, {"x": x})
    assert y.shape == (1, 4, 8, 5) and np.isfinite(y).all()


def test_model_is_read_from_a_path(tmp_path):
    path = tmp_path / "g.onnx"
    onnx.save(qdq_model(act_zp_dtype=np.uint8, act_zp_value=128), str(path))
    assert len(check_trt_qdq(path)) == 4
    with pytest.raises(TensorRTRulesError) as info:
        assert_trt_qdq(str(path))
    assert isinstance(info.value, GroundrtError)
    assert str(path) in str(info.value) and "q_in" in str(info.value)


def one(violations, *needles):
    hits = [v for v in violations if all(n in v for n in needles)]
    assert hits, f"no violation with {needles} in {violations}"
    return hits


def test_uint8_activations_are_caught():
    violations = check_trt_qdq(qdq_model(act_zp_dtype=np.uint8, act_zp_value=128))
    assert len(violations) == 4  # q_in, dq_in, q_relu, dq_relu
    one(violations, "QuantizeLinear node 'q_in'", "uint8")
    one(violations, "DequantizeLinear node 'dq_relu'", "uint8")


def test_asymmetric_zero_point_is_caught():
    violations = check_trt_qdq(qdq_model(act_zp_value=3))
    one(violations, "'q_relu'", "asymmetric", "[3]")
    assert len(violations) == 4


def test_absent_zero_point_means_uint8():
    violations = check_trt_qdq(qdq_model(act_zp=False))
    one(violations, "'dq_in'", "no zero point", "uint8")
    assert len(violations) == 4


def test_per_tensor_conv_weight_is_caught():
    violations = check_trt_qdq(qdq_model(conv_scale_shape=()))
    assert violations == one(violations, "'dq_conv_w'", "per-tensor", "Conv 'conv'",
                             "per-channel")


def test_wrong_axes_are_caught():
    conv = check_trt_qdq(qdq_model(conv_axis=1))
    one(conv, "'dq_conv_w'", "axis 1", "wants axis 0")
    matmul = check_trt_qdq(qdq_model(matmul_axis=0))
    one(matmul, "'dq_mm_w'", "MatMul 'matmul'", "axis 0", "wants axis 1")


def test_per_tensor_matmul_weight_and_fake_quant_weights_pass():
    model = qdq_model()
    inits = {t.name: t for t in model.graph.initializer}
    inits["mm_w_scale"].CopyFrom(numpy_helper.from_array(np.array(0.01, np.float32),
                                                         "mm_w_scale"))
    inits["mm_w_zp"].CopyFrom(numpy_helper.from_array(np.array(0, np.int8), "mm_w_zp"))
    for node in model.graph.node:
        if node.name == "dq_mm_w":
            del node.attribute[:]
    assert check_trt_qdq(model) == []

    # Q(float constant) -> DQ, per channel on axis 0: a weight quantizer, not an activation
    w = numpy_helper.from_array(RNG.standard_normal((6, 5)).astype(np.float32), "g_w")
    s = numpy_helper.from_array(np.full((6,), 0.02, np.float32), "g_s")
    z = numpy_helper.from_array(np.zeros((6,), np.int8), "g_z")
    model.graph.initializer.extend([w, s, z])
    model.graph.node.extend([
        helper.make_node("QuantizeLinear", ["g_w", "g_s", "g_z"], ["g_q"], name="q_gw", axis=0),
        helper.make_node("DequantizeLinear", ["g_q", "g_s", "g_z"], ["g_dq"], name="dq_gw",
                         axis=0),
        helper.make_node("Gemm", ["a", "g_dq"], ["g_out"], name="gemm", transB=1),
    ])
    assert check_trt_qdq(model) == []
    model.graph.node[-1].attribute[0].i = 0  # transB=0: B is [K, N], per-channel on axis 1
    one(check_trt_qdq(model), "'dq_gw'", "Gemm 'gemm'", "wants axis 1")


def test_per_channel_activation_is_caught():
    model = qdq_model()
    for t in model.graph.initializer:
        if t.name == "act_scale":
            t.CopyFrom(numpy_helper.from_array(np.full((3,), 0.02, np.float32), "act_scale"))
        if t.name == "act_zp":
            t.CopyFrom(numpy_helper.from_array(np.zeros((3,), np.int8), "act_zp"))
    one(check_trt_qdq(model), "'q_in'", "per-tensor activation")


def test_bad_scale_is_caught():
    model = qdq_model()
    for t in model.graph.initializer:
        if t.name == "conv_w_scale":
            t.CopyFrom(numpy_helper.from_array(np.array([0.1, 0.0, 0.1, -1], np.float32),
                                               "conv_w_scale"))
    one(check_trt_qdq(model), "'dq_conv_w'", "not positive")


def test_quantized_bias_is_caught():
    bias = [numpy_helper.from_array(np.zeros((4,), np.int32), "b_q"),
            numpy_helper.from_array(np.full((4,), 2e-4, np.float32), "b_scale"),
            numpy_helper.from_array(np.zeros((4,), np.int32), "b_zp")]
    model = qdq_model(extra_nodes=[helper.make_node(
        "DequantizeLinear", ["b_q", "b_scale", "b_zp"], ["b"], name="dq_bias", axis=0)])
    model.graph.initializer.extend(bias)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    conv.input.append("b")
    violations = check_trt_qdq(model)
    assert violations == one(violations, "'dq_bias'", "int32", "QuantizeBias=False")


def test_custom_domain_op_is_caught():
    gelu = helper.make_node("Gelu", ["y"], ["z"], name="ms_gelu", domain="com.microsoft")
    model = qdq_model(extra_nodes=[gelu], extra_opsets=[helper.make_opsetid("com.microsoft", 1)])
    violations = check_trt_qdq(model)
    assert violations == one(violations, "com.microsoft::Gelu node 'ms_gelu'", "custom domain")


def test_unsupported_ops_are_caught():
    model = qdq_model(extra_nodes=[helper.make_node("NonZero", ["y"], ["nz"], name="nz"),
                                  helper.make_node("Det", ["y"], ["det"])])
    violations = check_trt_qdq(model)
    one(violations, "NonZero node 'nz'", "not supported")
    one(violations, "Det node '#10'", "not in the list")


def test_old_opset_is_caught():
    violations = check_trt_qdq(qdq_model(opset=12))
    assert violations == one(violations, "opset 12", ">= 13")


def test_constant_node_scales_are_read():
    model = qdq_model()
    keep = [t for t in model.graph.initializer if t.name not in ("act_scale", "act_zp")]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    constants = [
        helper.make_node("Constant", [], ["act_scale"], value_float=0.02),
        helper.make_node("Constant", [], ["act_zp"],
                         value=numpy_helper.from_array(np.array(0, np.int8))),
    ]
    for node in reversed(constants):
        model.graph.node.insert(0, node)
    assert check_trt_qdq(model) == []


def test_qdq_summary_counts():
    summary = qdq_summary(qdq_model(extra_nodes=[helper.make_node("Sigmoid", ["y"], ["s"])]))
    assert summary == {
        "quantize_linear": 2, "dequantize_linear": 4, "weight_dq": 2,
        "per_channel_weight_dq": 2,
        "quantized_nodes": {"Conv": 1, "MatMul": 1},
        "float_nodes": {"Relu": 1, "Sigmoid": 1},
    }
    json.dumps(summary)  # goes into manifests


# ---------------------------------------------------------------------------------------------
# engine records (pure Python)

RECORD = {"file": "image.int8.engine", "graph": "image", "precision": "int8",
          "tensorrt": "10.3.0.30", "gpu": "Orin", "compute_capability": "8.7"}
ORIN = {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"}


def test_matching_record_passes():
    check_engine_record(RECORD, ORIN)
    check_engine_record(RECORD, {**ORIN, "tensorrt": "10.3.0.26"})  # build number ignored


def test_other_tensorrt_version_is_a_mismatch():
    with pytest.raises(EngineMismatchError) as info:
        check_engine_record(RECORD, {**ORIN, "tensorrt": "11.0.0"}, package="pkgs/student")
    message = str(info.value)
    assert isinstance(info.value, GroundrtError)
    assert "TensorRT 10.3.0.30" in message and "TensorRT 11.0.0" in message
    assert "image.int8.engine" in message
    assert "groundrt export engine --package pkgs/student --precision int8" in message


def test_other_gpu_is_a_mismatch():
    desktop = {"tensorrt": "10.3.0", "gpu": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"}
    with pytest.raises(EngineMismatchError) as info:
        check_engine_record({**RECORD, "precision": "fp16"}, desktop)
    message = str(info.value)
    assert "compute capability 8.7" in message and "8.9" in message and "RTX 4090" in message
    assert "groundrt export engine --package PKG --precision fp16" in message
    with pytest.raises(EngineMismatchError, match="GPU 'Orin'"):
        check_engine_record(RECORD, {**ORIN, "gpu": "Orin Nano"})


def test_record_without_versions_is_a_mismatch():
    with pytest.raises(EngineMismatchError, match="unknown"):
        check_engine_record({"file": "x.engine"}, ORIN)


def test_profile_shapes_from_the_manifest():
    manifest = {
        "tokenizer": {"max_tokens": 64},
        "io": {
            "image": {"inputs": [{"name": "image", "dtype": "float32",
                                  "shape": ["batch", 3, 320, 320]}]},
            "text": {"inputs": [{"name": "token_ids", "dtype": "int64",
                                 "shape": ["batch", "tokens"]},
                                {"name": "fixed", "dtype": "int64", "shape": [1, 4]}]},
        },
    }
    assert profile_shapes(manifest, "image", max_batch=4) == {
        "image": ((1, 3, 320, 320), (1, 3, 320, 320), (4, 3, 320, 320))}
    assert profile_shapes(manifest, "text") == {"token_ids": ((1, 1), (1, 32), (1, 64))}
    manifest["io"]["text"]["inputs"][0]["shape"] = ["batch", "words"]
    with pytest.raises(EngineBuildError, match="'token_ids'.*'words'"):
        profile_shapes(manifest, "text")


def test_build_engine_checks_its_arguments_before_tensorrt(tmp_path):
    with pytest.raises(EngineBuildError, match="'int4'"):
        build_engine(tmp_path / "g.onnx", tmp_path / "g.engine", "int4")
    with pytest.raises(EngineBuildError, match="does not exist"):
        build_engine(tmp_path / "g.onnx", tmp_path / "g.engine", "fp32")
    bad = tmp_path / "bad.onnx"
    onnx.save(qdq_model(act_zp_value=3), str(bad))
    with pytest.raises(TensorRTRulesError, match="asymmetric"):
        build_engine(bad, tmp_path / "bad.engine", "int8")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="TensorRT is installed here")
def test_build_engine_without_tensorrt_names_the_module(tmp_path):
    path = tmp_path / "g.onnx"
    onnx.save(qdq_model(), str(path))
    with pytest.raises(ModuleNotFoundError) as info:
        build_engine(path, tmp_path / "g.engine", "int8")
    assert info.value.name == "tensorrt"


# ---------------------------------------------------------------------------------------------
# TensorRT builds: only where TensorRT and a GPU are present


@pytest.fixture
def gpu_platform():
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install "
                                           "'groundrt[gpu]' on a machine with an NVIDIA GPU)")
    from groundrt.export.engine import current_platform

    try:
        return current_platform()
    except (GroundrtError, ModuleNotFoundError) as exc:
        pytest.skip(f"no usable GPU: {exc}")


def float_text_model():
    """token_ids [batch, tokens] int64 -> Gather (embedding) -> MatMul -> features."""
    table = numpy_helper.from_array(RNG.standard_normal((50, 16)).astype(np.float32), "table")
    proj = numpy_helper.from_array(RNG.standard_normal((16, 8)).astype(np.float32), "proj")
    nodes = [helper.make_node("Gather", ["table", "token_ids"], ["emb"], name="embed"),
             helper.make_node("MatMul", ["emb", "proj"], ["features"], name="proj")]
    graph = helper.make_graph(
        nodes, "text",
        [helper.make_tensor_value_info("token_ids", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", "tokens", 8])],
        [table, proj])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def small_package(folder):
    """A package of the two hand-built graphs, with a stale engine entry to be replaced."""
    from groundrt.package import write_manifest

    onnx.save(qdq_model(), str(folder / "image.int8.trt.onnx"))
    onnx.save(float_text_model(), str(folder / "text.onnx"))
    (folder / "tokenizer.model").write_bytes(b"not read by the engine builder")
    (folder / "old.engine").write_bytes(b"stale plan")
    write_manifest(folder, {
        "input": {"size": 8},
        "grounding": {"logit_scale": 10.0, "affinity_bias": 0.0, "plural_threshold": 0.5,
                      "pixel_stride": 4},
        "precision": "int8-trt",
        "tokenizer": {"file": "tokenizer.model", "max_tokens": 64},
        "graphs": {"image": {"int8-trt": "image.int8.trt.onnx"}, "text": {"fp32": "text.onnx"}},
        "io": {"image": {"inputs": [{"name": "x", "dtype": "float32", "shape": [1, 3, 8, 8]}]},
               "text": {"inputs": [{"name": "token_ids", "dtype": "int64",
                                    "shape": ["batch", "tokens"]}]}},
        "engines": [{"file": "old.engine", "graph": "image", "precision": "int8"}],
    })


def test_tensorrt_builds_the_int8_graph(tmp_path, gpu_platform):
    path = tmp_path / "image.int8.trt.onnx"
    onnx.save(qdq_model(), str(path))
    cache = tmp_path / "timing.cache"
    record = build_engine(path, tmp_path / "image.int8.engine", "int8", workspace_mb=256,
                          timing_cache=cache)
    assert (tmp_path / "image.int8.engine").stat().st_size > 0 and cache.stat().st_size > 0
    assert record["file"] == "image.int8.engine" and record["precision"] == "int8"
    check_engine_record(record, gpu_platform)
    build_engine(path, tmp_path / "again.engine", "int8", timing_cache=cache)  # cache reused


def test_tensorrt_needs_shapes_for_dynamic_inputs(tmp_path, gpu_platform):
    path = tmp_path / "text.onnx"
    onnx.save(float_text_model(), str(path))
    with pytest.raises(EngineBuildError, match="'token_ids'"):
        build_engine(path, tmp_path / "text.engine", "fp32")
    shapes = {"token_ids": ((1, 1), (1, 32), (2, 64))}
    record = build_engine(path, tmp_path / "text.engine", "fp32", shapes=shapes)
    assert record["precision"] == "fp32"


def test_tensorrt_builds_a_package(tmp_path, gpu_platform):
    from groundrt.package import read_manifest

    small_package(tmp_path)
    records = build_package_engines(tmp_path, "int8", workspace_mb=256)
    manifest = read_manifest(tmp_path)
    assert manifest["engines"] == records
    assert [r["file"] for r in records][0] == "image.int8.engine"
    assert records[1]["file"] == "text.fp16.engine"  # from text.fp16.onnx, strongly typed
    assert manifest["graphs"]["text"]["fp16"] == "text.fp16.onnx"
    for record in records:  # checked against the graph each came from
        assert set(record["max_abs_error"]) and all(
            0 <= e < float("inf") for e in record["max_abs_error"].values()), record
    assert "timing.cache" not in manifest["files"] and (tmp_path / "timing.cache").is_file()
    assert not (tmp_path / "old.engine").exists()
    for record in records:
        check_engine_record(record, gpu_platform)
