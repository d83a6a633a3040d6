"""A Triton Inference Server model repository from a model package (`groundrt export triton`).

    REPO/
      groundrt_image/   config.pbtxt, 1/model.onnx (or 1/model.plan: a TensorRT engine)
      groundrt_text/    config.pbtxt, 1/model.onnx
      groundrt_phrase/  config.pbtxt, 1/model.onnx          (network v2 packages)
      groundrt/         config.pbtxt, 1/model.py, 1/package/ (manifest.json, tokenizer.model)

The graph models run in Triton's ONNX Runtime backend (instances on the CPU or the GPU) or, for
a graph the package has a TensorRT engine of, its TensorRT backend (`tensorrt_plan`). Their
inputs and outputs are the manifest's `io`: a graph whose tensors all start with the dynamic
axis "batch" (the image graph; the v2 phrase graph) gets `max_batch_size` and dynamic batching
(Triton batches requests of the same shape: the same phrase count and phrase length for the
phrase graph); the text graph's batch axis is a fixed 1 (it runs once per caption), so it has
`max_batch_size: 0` and full dims.

`groundrt` is a Python-backend BLS model (groundrt/runtime/triton_bls.py, which needs
`pip install groundrt` in the server's Python): `image` (UINT8, the encoded JPEG / PNG bytes),
`caption` (BYTES) and the optional `phrases` (BYTES, explicit phrases instead of the caption's
noun phrases) in, `result` (BYTES: one JSON document, a line of `groundrt run --json`) out. It
runs the package's Grounder with the graphs above as its backend (BLS requests), so decoding,
presence gating and the JSON are the in-process runtime's.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from groundrt.errors import GroundrtError
from groundrt.package import read_manifest
from groundrt.runtime.backends import default_gpu_precision
from groundrt.runtime.serving import DEFAULT_MAX_BATCH, MODEL_NAME, QUEUE_DELAY_US

GRAPH_MODEL = "groundrt_{graph}"  # groundrt_image, groundrt_text, groundrt_phrase
VERSION = "1"
PACKAGE_FOLDER = "package"  # in groundrt/1/: what the BLS model's Grounder reads
DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int32": "TYPE_INT32",
          "int64": "TYPE_INT64", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
BATCH_AXIS = "batch"

BLS_MODEL_PY = '''"""groundrt's Triton Python-backend model (from `groundrt export triton`)."""

from groundrt.runtime.triton_bls import TritonPythonModel  # noqa: F401
'''


class TritonExportError(GroundrtError):
    """A model repository cannot be written from this package with these options."""


@dataclass(frozen=True)
class RepoOptions:
    """device: "cpu" or "gpu" (the instance groups' kind); instances: instances per graph model;
    precision: the image graph (default: the package's on the CPU, fp32 on a GPU);
    tensorrt: use the package's TensorRT engines where it has them; max_batch: the image and
    phrase graphs' max_batch_size (a TensorRT engine's batch profile must reach it: build the
    engines with `groundrt export engine --max-batch N`)."""

    device: str = "cpu"
    instances: int = 1
    precision: str | None = None
    tensorrt: bool = True
    max_batch: int = DEFAULT_MAX_BATCH
    bls_instances: int = 2


def _dims(shape: list, batched: bool) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in (shape[1:] if batched else shape)]


def _tensor_block(tensor: dict, batched: bool) -> str:
    dtype = DTYPES.get(tensor["dtype"])
    if dtype is None:
        raise TritonExportError(f"tensor {tensor['name']} has dtype {tensor['dtype']}, which "
                                f"this exporter does not map (known: {', '.join(DTYPES)})")
    dims = ", ".join(map(str, _dims(tensor["shape"], batched)))
    return (f"  {{\n    name: \"{tensor['name']}\"\n    data_type: {dtype}\n"
            f"    dims: [ {dims} ]\n  }}")


def is_batched(io: dict) -> bool:
    """Every input and output starts with the dynamic "batch" axis."""
    return all(t["shape"] and t["shape"][0] == BATCH_AXIS
               for t in io["inputs"] + io["outputs"])


def _instance_group(kind: str, count: int) -> str:
    return f"instance_group [\n  {{\n    count: {count}\n    kind: {kind}\n  }}\n]\n"


def graph_config(name: str, io: dict, platform: str, options: RepoOptions) -> str:
    """config.pbtxt of one graph model (`platform`: "onnxruntime_onnx" or "tensorrt_plan")."""
    batched = is_batched(io)
    lines = [f'name: "{name}"']
    if platform == "onnxruntime_onnx":
        lines += ['backend: "onnxruntime"', 'default_model_filename: "model.onnx"']
    else:
        lines += ['platform: "tensorrt_plan"', 'default_model_filename: "model.plan"']
    lines.append(f"max_batch_size: {options.max_batch if batched else 0}")
    text = "\n".join(lines) + "\n"
    text += "input [\n" + ",\n".join(_tensor_block(t, batched)
                                     for t in io["inputs"]) + "\n]\n"
    text += "output [\n" + ",\n".join(_tensor_block(t, batched)
                                      for t in io["outputs"]) + "\n]\n"
    if batched:
        text += (f"dynamic_batching {{\n  max_queue_delay_microseconds: {QUEUE_DELAY_US}\n}}\n")
    kind = "KIND_GPU" if options.device == "gpu" or platform == "tensorrt_plan" else "KIND_CPU"
    return text + _instance_group(kind, options.instances)


def bls_config(options: RepoOptions, phrase_graph: bool) -> str:
    """config.pbtxt of the `groundrt` BLS model. Encoded images differ in length: ragged
    batching lets the dynamic batcher gather them (the model handles each request on its own
    and sends one image-graph request for all the images of one caption)."""
    return f'''name: "{MODEL_NAME}"
backend: "python"
max_batch_size: {options.max_batch}
input [
  {{
    name: "image"
    data_type: TYPE_UINT8
    dims: [ -1 ]
    allow_ragged_batch: true
  }},
  {{
    name: "caption"
    data_type: TYPE_STRING
    dims: [ 1 ]
    optional: true
  }},
  {{
    name: "phrases"
    data_type: TYPE_STRING
    dims: [ -1 ]
    optional: true
    allow_ragged_batch: true
  }}
]
output [
  {{
    name: "result"
    data_type: TYPE_STRING
    dims: [ 1 ]
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: {QUEUE_DELAY_US}
}}
parameters: {{
  key: "package"
  value: {{ string_value: "{PACKAGE_FOLDER}" }}
}}
parameters: {{
  key: "phrase_graph"
  value: {{ string_value: "{GRAPH_MODEL.format(graph="phrase") if phrase_graph else ""}" }}
}}
''' + _instance_group("KIND_CPU", options.bls_instances)


def _graph_file(package: Path, manifest: dict, graph: str, precision: str | None,
                tensorrt: bool) -> tuple[Path, str]:
    """The file a graph model serves and its platform."""
    if tensorrt:
        engines = [e for e in manifest.get("engines", []) if e.get("graph") == graph]
        if engines:
            return package / engines[0]["file"], "tensorrt_plan"
    by_precision = manifest["graphs"][graph]
    if graph == "image":
        if precision not in by_precision:
            raise TritonExportError(f"the package has no {precision} image graph (it has "
                                    f"{', '.join(sorted(by_precision))})")
        return package / by_precision[precision], "onnxruntime_onnx"
    return package / by_precision.get("fp32", next(iter(by_precision.values()))), \
        "onnxruntime_onnx"


def export_triton_repo(package: str | Path, out: str | Path,
                       options: RepoOptions | None = None) -> dict[str, Path]:
    """Writes the model repository; returns {model name: its config.pbtxt}."""
    options = options or RepoOptions()
    if options.device not in ("cpu", "gpu"):
        raise TritonExportError(f"device must be cpu or gpu, not {options.device!r}")
    if options.max_batch < 1 or options.instances < 1 or options.bls_instances < 1:
        raise TritonExportError("max_batch, instances and bls_instances must be at least 1")
    package, out = Path(package), Path(out)
    manifest = read_manifest(package)  # verifies every file's hash
    if out.exists() and any(out.iterdir()):
        raise TritonExportError(f"{out} is not empty: give a new folder for the repository")
    precision = options.precision or (default_gpu_precision(manifest, None)
                                      if options.device == "gpu" else manifest["precision"])
    configs = {}
    graphs = [g for g in ("image", "text", "phrase") if g in manifest["graphs"]]
    for graph in graphs:
        name = GRAPH_MODEL.format(graph=graph)
        source, platform = _graph_file(package, manifest, graph, precision, options.tensorrt)
        folder = out / name / VERSION
        folder.mkdir(parents=True)
        shutil.copyfile(source, folder / ("model.onnx" if platform == "onnxruntime_onnx"
                                          else "model.plan"))
        configs[name] = out / name / "config.pbtxt"
        configs[name].write_text(graph_config(name, manifest["io"][graph], platform, options))
    bls = out / MODEL_NAME / VERSION
    (bls / PACKAGE_FOLDER).mkdir(parents=True)
    (bls / "model.py").write_text(BLS_MODEL_PY)
    for name in ("manifest.json", manifest["tokenizer"]["file"]):
        shutil.copyfile(package / name, bls / PACKAGE_FOLDER / name)
    configs[MODEL_NAME] = out / MODEL_NAME / "config.pbtxt"
    configs[MODEL_NAME].write_text(bls_config(options, "phrase" in graphs))
    return configs
