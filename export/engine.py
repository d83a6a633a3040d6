"""TensorRT engines: build plans from a package's ONNX graphs, and check a plan fits the machine.

Written against the TensorRT 10.x and 11.x Python APIs:

* INT8 is explicit quantization only: the S8S8 Q/DQ graph (`*.int8.trt.onnx`) is built as a
  strongly typed network, which takes every precision from the graph (no INT8 builder flag,
  no calibrator: TensorRT 11 removed both).
* FP16: TensorRT 11 removed `BuilderFlag.FP16` (weak typing is gone), so FP16 comes from a
  graph that holds fp16 tensors: `fp16_graph` converts a package's fp32 graph (ONNX Runtime's
  float16 converter, inputs and outputs kept fp32) into `<stem>.fp16.onnx`, named in the
  manifest, and every network is built strongly typed (TensorRT 10 opts in; 11 always is).
  One path for both versions.
* Each plan is checked at build time against the ONNX graph it came from (the fp32 graph for
  an fp16 plan), both run on one sample scene and caption (ONNX Runtime on the CPU for the
  graph): the largest absolute difference per output goes into the engine record
  (`max_abs_error`, with `checked_against`).
* A plan runs only under the TensorRT version and on the GPU that built it: the manifest
  records both (`tensorrt`, `gpu`, `compute_capability`), `check_engine_record` compares them.

`tensorrt` (and cuda-python or pycuda, for the GPU's name) are imported inside the functions,
so this module imports on a machine without them.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from groundrt.errors import GroundrtError
from groundrt.package import input_shape, read_manifest, write_manifest

PRECISIONS = ("int8", "fp16", "fp32")
TIMING_CACHE_FILE = "timing.cache"
MAX_PHRASES, PHRASES_OPT, PHRASE_TOKENS_OPT = 64, 8, 4  # v2 phrase graph
TOKENS_OPT = 32
MANIFEST_OWN_KEYS = ("format", "format_version", "producer", "files")

Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


class EngineBuildError(GroundrtError, RuntimeError):
    """TensorRT could not parse a graph or build a plan from it."""


class EngineMismatchError(GroundrtError, RuntimeError):
    """A TensorRT plan was built with another TensorRT version or for another GPU."""


def rebuild_command(package: str | Path | None, precision: str) -> str:
    return f"groundrt export engine --package {package or 'PKG'} --precision {precision}"


# ---------------------------------------------------------------------------------------------
# the platform: TensorRT version, GPU name, compute capability


def gpu_properties(device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor"), via cuda-python, else pycuda."""
    cudart = None
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            cudart = None
    if cudart is not None:
        err, prop = cudart.cudaGetDeviceProperties(device)
        if err != cudart.cudaError_t.cudaSuccess:
            raise EngineBuildError(f"cannot query CUDA device {device}: {err} (no GPU, or the "
                                   "NVIDIA driver is not loaded)")
        name = prop.name
        if isinstance(name, bytes):
            name = name.split(b"\0", 1)[0].decode(errors="replace")
        return str(name).strip(), f"{prop.major}.{prop.minor}"
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise ModuleNotFoundError(
            "neither cuda-python nor pycuda is installed, so the GPU cannot be identified: "
            "pip install 'groundrt[gpu]'", name="pycuda") from exc
    try:
        cuda.init()
        gpu = cuda.Device(device)
        major, minor = gpu.compute_capability()
        return gpu.name().strip(), f"{major}.{minor}"
    except cuda.Error as exc:
        raise EngineBuildError(f"cannot query CUDA device {device}: {exc} (no GPU, or the NVIDIA "
                               "driver is not loaded)") from exc


def current_platform() -> dict:
    """{"tensorrt", "gpu", "compute_capability"} of this machine (needs TensorRT and a GPU)."""
    import tensorrt as trt

    gpu, capability = gpu_properties()
    return {"tensorrt": trt.__version__, "gpu": gpu, "compute_capability": capability}


def _version_triple(version: Any) -> tuple[int, ...] | None:
    numbers = re.findall(r"\d+", str(version or ""))
    return tuple(int(n) for n in numbers[:3]) if numbers else None


def check_engine_record(record: dict, platform: dict, package: str | Path | None = None) -> None:
    """Raises EngineMismatchError unless the plan of `record` was built by this platform's
    TensorRT (major.minor.patch) for this GPU (name and compute capability)."""
    problems = []
    built_trt, here_trt = record.get("tensorrt"), platform.get("tensorrt")
    built_version, here_version = _version_triple(built_trt), _version_triple(here_trt)
    if built_version is None or built_version != here_version:
        problems.append(f"it was built with TensorRT {built_trt or 'unknown'}, this machine has "
                        f"TensorRT {here_trt}")
    built_cc, here_cc = record.get("compute_capability"), platform.get("compute_capability")
    if str(built_cc) != str(here_cc):
        problems.append(f"it was built for compute capability {built_cc or 'unknown'}, this GPU "
                        f"has {here_cc}")
    built_gpu, here_gpu = record.get("gpu"), platform.get("gpu")
    if str(built_gpu or "").strip().casefold() != str(here_gpu or "").strip().casefold():
        problems.append(f"it was built on GPU '{built_gpu or 'unknown'}', this one is "
                        f"'{here_gpu}'")
    if problems:
        precision = record.get("precision", "int8")
        raise EngineMismatchError(
            f"TensorRT plan {record.get('file', '?')} does not fit this machine: "
            + "; ".join(problems) + ". TensorRT plans run only with the TensorRT version and "
            f"GPU that built them: rebuild it with `{rebuild_command(package, precision)}`")


# ---------------------------------------------------------------------------------------------
# building one plan


def _network_flags(trt: Any) -> int:
    """Strongly typed: every precision comes from the graph's own types."""
    creation = trt.NetworkDefinitionCreationFlag
    if hasattr(creation, "STRONGLY_TYPED"):
        # TensorRT 10: opt in; TensorRT 11: deprecated and ignored (always strongly typed)
        return 1 << int(creation.STRONGLY_TYPED)
    return 0


def fp16_graph(fp32_path: str | Path, out_path: str | Path) -> Path:
    """An fp16 copy of an fp32 ONNX graph whose inputs and outputs stay fp32 (so the runtime and
    the mask kernels see the same tensors), written atomically: what a strongly typed TensorRT
    network builds in FP16. Needs onnx (ONNX Runtime ships the converter)."""
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ModuleNotFoundError as exc:
        raise EngineBuildError(f"an fp16 engine is built from an fp16 graph, and converting "
                               f"{Path(fp32_path).name} needs {exc.name}: pip install "
                               "'groundrt[gpu]' (or pip install onnx)") from exc

    out_path = Path(out_path)
    model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, out_path)
    return out_path


def _parser_errors(parser: Any) -> list[str]:
    errors = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        where = ""
        node_name = getattr(error, "node_name", None)
        operator = getattr(error, "node_operator", None)
        if callable(node_name) and node_name():
            where = f" (node '{node_name()}'"
            where += f", op {operator()})" if callable(operator) and operator() else ")"
        elif callable(getattr(error, "node", None)) and error.node() >= 0:
            where = f" (node #{error.node()})"
        errors.append(f"{error.desc()}{where}")
    return errors


def _network_has_fp16(trt: Any, network: Any) -> bool:
    for i in range(network.num_inputs):
        if network.get_input(i).dtype == trt.float16:
            return True
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype == trt.float16:
                return True
    return False


def _check_profile(name: str, dims: tuple[int, ...], given: Any) -> None:
    try:
        lo, opt, hi = (tuple(int(d) for d in s) for s in given)
    except (TypeError, ValueError) as exc:
        raise EngineBuildError(f"profile of input '{name}' must be (min, opt, max) shapes, got "
                               f"{given!r}") from exc
    for label, shape in (("min", lo), ("opt", opt), ("max", hi)):
        if len(shape) != len(dims):
            raise EngineBuildError(f"input '{name}' has {len(dims)} axes {list(dims)}; its {label} "
                                   f"shape {list(shape)} has {len(shape)}")
    for axis, dim in enumerate(dims):
        if dim >= 0 and not lo[axis] == opt[axis] == hi[axis] == dim:
            raise EngineBuildError(f"input '{name}' axis {axis} is fixed at {dim}; the profile "
                                   f"gives {lo[axis]}/{opt[axis]}/{hi[axis]}")
        if not 1 <= lo[axis] <= opt[axis] <= hi[axis]:
            raise EngineBuildError(f"input '{name}' axis {axis}: the profile needs "
                                   f"1 <= min <= opt <= max, got {lo[axis]}/{opt[axis]}/{hi[axis]}")


def _write_atomically(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _attach_timing_cache(config: Any, path: Path | None) -> Any:
    """A timing cache read from `path` (when it exists and fits this TensorRT/GPU) or a new one."""
    blob = path.read_bytes() if path is not None and path.is_file() else b""
    if blob:
        try:
            cache = config.create_timing_cache(blob)
            if cache is not None and config.set_timing_cache(cache, False):
                return cache
        except (RuntimeError, TypeError, ValueError):
            pass
        warnings.warn(f"timing cache {path} does not fit this TensorRT/GPU: starting a new one",
                      stacklevel=3)
    cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, False)
    return cache


def build_engine(onnx_path: str | Path, plan_path: str | Path, precision: str,
                 workspace_mb: int = 1024, timing_cache: Path | None = None,
                 shapes: Shapes | None = None, logger: Any = None) -> dict:
    """Builds a TensorRT plan from an ONNX graph and writes it atomically.

    `precision` "int8" wants an S8S8 Q/DQ graph (built strongly typed); "fp16"/"fp32" a float
    graph. `shapes` maps each dynamic input to its (min, opt, max) shapes. `timing_cache` is
    read if present and rewritten after the build. Returns the engine record
    {"file", "precision", "tensorrt", "gpu", "compute_capability"}.
    """
    if precision not in PRECISIONS:
        raise EngineBuildError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if not onnx_path.is_file():
        raise EngineBuildError(f"ONNX graph {onnx_path} does not exist")
    if workspace_mb < 1:
        raise EngineBuildError(f"workspace_mb must be at least 1, got {workspace_mb}")
    shapes = dict(shapes or {})
    if precision == "int8":
        _check_qdq_rules(onnx_path)

    import tensorrt as trt

    logger = logger or trt.Logger(trt.Logger.WARNING)
    gpu, capability = gpu_properties()
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        listed = "\n".join(f"  - {e}" for e in _parser_errors(parser)) or "  (no parser errors)"
        raise EngineBuildError(f"TensorRT {trt.__version__} cannot parse {onnx_path}:\n{listed}")
    if precision == "fp16" and not _network_has_fp16(trt, network):
        raise EngineBuildError(
            f"groundrt builds strongly typed networks (TensorRT 11 has no other kind), and "
            f"{onnx_path.name} holds no fp16 tensors: convert it first "
            "(groundrt.export.engine.fp16_graph) or build fp32")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)

    profile, dynamic = builder.create_optimization_profile(), False
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = tuple(int(d) for d in tensor.shape)
        if all(d >= 0 for d in dims):
            continue
        if tensor.name not in shapes:
            raise EngineBuildError(
                f"input '{tensor.name}' of {onnx_path.name} has dynamic shape {list(dims)} but no "
                "(min, opt, max) shapes were given for it")
        _check_profile(tensor.name, dims, shapes[tensor.name])
        lo, opt, hi = (tuple(int(d) for d in s) for s in shapes[tensor.name])
        profile.set_shape(tensor.name, lo, opt, hi)
        dynamic = True
    if dynamic:
        config.add_optimization_profile(profile)

    cache = _attach_timing_cache(config, timing_cache)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"TensorRT {trt.__version__} failed to build a {precision} plan "
                               f"from {onnx_path} (see the TensorRT log above)")
    if trt.Runtime(logger).deserialize_cuda_engine(plan) is None:
        raise EngineBuildError(f"the plan TensorRT built from {onnx_path} does not deserialize")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(plan_path, plan)
    if timing_cache is not None:
        _write_atomically(Path(timing_cache), (config.get_timing_cache() or cache).serialize())
    return {"file": plan_path.name, "precision": precision, "tensorrt": trt.__version__,
            "gpu": gpu, "compute_capability": capability}


def _check_qdq_rules(onnx_path: Path) -> None:
    """The static Q/DQ check, where onnx is installed (a Jetson may build without it)."""
    try:
        from groundrt.export.trt_rules import assert_trt_qdq
    except ModuleNotFoundError:
        warnings.warn("onnx is not installed: skipping the static check of TensorRT's Q/DQ "
                      "rules before the int8 build", stacklevel=3)
        return
    assert_trt_qdq(onnx_path)


# ---------------------------------------------------------------------------------------------
# a package's engines


def profile_shapes(manifest: dict, graph: str, max_batch: int = 1) -> Shapes:
    """(min, opt, max) shapes for each input of `graph` with dynamic axes: "batch" runs
    1..max_batch (opt 1), "tokens" 1..tokenizer max_tokens (opt 32 or less); the v2 phrase
    graph's "phrases" 1..MAX_PHRASES (the Grounder's default limit; opt 8) and
    "phrase_tokens" 1..max_tokens (opt 4)."""
    if max_batch < 1:
        raise EngineBuildError(f"max_batch must be at least 1, got {max_batch}")
    max_tokens = int(manifest.get("tokenizer", {}).get("max_tokens", 0) or 0)
    ranges = {"batch": (1, 1, max_batch)}
    if max_tokens >= 1:
        ranges["tokens"] = (1, min(TOKENS_OPT, max_tokens), max_tokens)
        ranges["phrase_tokens"] = (1, min(PHRASE_TOKENS_OPT, max_tokens), max_tokens)
    ranges["phrases"] = (1, PHRASES_OPT, MAX_PHRASES)
    shapes: Shapes = {}
    for tensor in manifest["io"][graph]["inputs"]:
        if all(isinstance(d, int) for d in tensor["shape"]):
            continue
        lo, opt, hi = [], [], []
        for axis in tensor["shape"]:
            if isinstance(axis, int):
                a = b = c = axis
            elif axis in ranges:
                a, b, c = ranges[axis]
            else:
                raise EngineBuildError(f"input '{tensor['name']}' of the {graph} graph has "
                                       f"dynamic axis '{axis}' with no profile rule (known: "
                                       f"{', '.join(ranges)})")
            lo.append(a)
            opt.append(b)
            hi.append(c)
        shapes[tensor["name"]] = (tuple(lo), tuple(opt), tuple(hi))
    return shapes


def _pick_graph(graphs: dict, graph: str, precision: str) -> tuple[str, str]:
    """(ONNX file, engine precision) for one graph of a package built at `precision`; an fp16
    engine starts from the fp32 file (converted by fp16_graph before the build)."""
    files = graphs[graph]
    if precision == "int8" and "int8-trt" in files:
        return files["int8-trt"], "int8"
    if precision == "int8" and graph == "image":
        raise EngineBuildError("the package has no 'int8-trt' image graph (S8S8 Q/DQ): "
                               "re-export it with INT8 quantization, or build fp16")
    if "fp32" not in files:
        raise EngineBuildError(f"the package has no fp32 {graph} graph to build from "
                               f"(it has {', '.join(files) or 'none'})")
    return files["fp32"], "fp16" if precision in ("int8", "fp16") else "fp32"


def sample_feeds(folder: Path, manifest: dict, graph: str) -> dict[str, np.ndarray]:
    """One input per graph: for a model package (its manifest has an `input` entry) the first
    committed sample scene letterboxed (image) and the bench caption tokenized (text); for a
    bare graph seeded random values at the profile's opt shape (ids 0..7)."""
    if "input" in manifest and graph == "image":
        from groundrt.preprocess import Letterbox, letterbox_input
        from groundrt.runtime.bench import sample_image

        image = sample_image()
        box = Letterbox(input_shape(manifest), *image.shape[:2])
        return {"image": letterbox_input(image, box, False)[None]}
    if "input" in manifest and graph == "text":
        from groundrt.runtime.bench import DEFAULT_CAPTION
        from groundrt.text.tokenizer import Tokenizer

        tokenizer = manifest["tokenizer"]
        ids = Tokenizer(folder / tokenizer["file"], tokenizer["max_tokens"]).encode(
            DEFAULT_CAPTION).ids
        (spec,) = manifest["io"]["text"]["inputs"]
        return {spec["name"]: np.asarray(ids, dtype=spec["dtype"])[None]}
    rng = np.random.default_rng(0)
    shapes = profile_shapes(manifest, graph)
    feeds = {}
    for spec in manifest["io"][graph]["inputs"]:
        name, dtype = spec["name"], np.dtype(spec["dtype"])
        shape = shapes[name][1] if name in shapes else tuple(spec["shape"])
        feeds[name] = (rng.integers(0, 8, shape).astype(dtype) if dtype.kind in "iu"
                       else rng.standard_normal(shape).astype(dtype))
    return feeds


def max_abs_errors(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> dict[str, float]:
    """Per output name: max |got - want| (float64; inf where the shapes differ)."""
    errors = {}
    for name, expected in want.items():
        actual = np.asarray(got[name], dtype=np.float64)
        expected = np.asarray(expected, dtype=np.float64)
        errors[name] = (float(np.abs(actual - expected).max()) if actual.shape == expected.shape
                        else float("inf"))
    return errors


def check_plan(plan: Path, onnx_path: Path, feeds: dict[str, np.ndarray]) -> dict[str, float]:
    """The plan and its ONNX graph (ONNX Runtime, CPU) on the same inputs: max abs error per
    output."""
    import onnxruntime as ort
    import tensorrt as trt

    from groundrt.runtime.tensorrt_backend import TrtEngine

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    want = dict(zip(names, session.run(names, feeds), strict=True))
    return max_abs_errors(TrtEngine(plan, trt)(feeds), want)


def build_package_engines(package_dir: str | Path, precision: str = "int8",
                          workspace_mb: int = 1024, max_batch: int = 1) -> list[dict]:
    """Builds one plan per graph of the package, `{graph}.{precision}.engine`, checks each
    against its ONNX graph (`max_abs_error` in its record) and rewrites the manifest with
    their records (replacing earlier engines of the same graphs).

    int8: the image graph from its "int8-trt" Q/DQ file, the text graph (fp32 only) as fp16;
    fp16: both from fp16 graphs converted from the fp32 ones (`{stem}.fp16.onnx`, named in the
    manifest's graphs as "fp16"); fp32: both fp32. A timing cache `timing.cache` is kept in the
    package folder (not named in the manifest) and shared by the builds.
    """
    if precision not in PRECISIONS:
        raise EngineBuildError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    folder = Path(package_dir)
    manifest = read_manifest(folder)
    graphs = {graph: dict(files) for graph, files in manifest["graphs"].items()}
    plans = [(graph, profile_shapes(manifest, graph, max_batch)) for graph in graphs]

    records = []
    for graph, shapes in plans:
        onnx_file, engine_precision = _pick_graph(graphs, graph, precision)
        reference = folder / onnx_file
        if engine_precision == "fp16":
            fp16_name = onnx_file.removesuffix(".onnx") + ".fp16.onnx"
            fp16_graph(reference, folder / fp16_name)
            graphs[graph]["fp16"] = onnx_file = fp16_name
        plan_name = f"{graph}.{engine_precision}.engine"
        record = build_engine(folder / onnx_file, folder / plan_name, engine_precision,
                              workspace_mb=workspace_mb, timing_cache=folder / TIMING_CACHE_FILE,
                              shapes=shapes)
        errors = check_plan(folder / plan_name, reference, sample_feeds(folder, manifest, graph))
        records.append({"file": record["file"], "graph": graph,
                        **{k: v for k, v in record.items() if k != "file"},
                        "max_abs_error": errors, "checked_against": reference.name})

    built = {r["graph"] for r in records}
    new_files = {r["file"] for r in records}
    kept, replaced = [], []
    for engine in manifest.get("engines", []):
        (replaced if engine.get("graph") in built else kept).append(engine)
    updated = {k: v for k, v in manifest.items() if k not in MANIFEST_OWN_KEYS}
    updated["graphs"] = graphs
    updated["engines"] = kept + records
    write_manifest(folder, updated)
    still_named = new_files | {e["file"] for e in kept}
    for engine in replaced:  # plans no longer named by the manifest
        if engine["file"] not in still_named:
            (folder / engine["file"]).unlink(missing_ok=True)
    return records
