"""`groundrt info`: a package's manifest, and what this machine can run it with."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from groundrt.package import input_shape, read_manifest


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_info(folder: str | Path) -> dict:
    """The manifest's essentials (hashes verified by read_manifest)."""
    manifest = read_manifest(Path(folder))
    info = {key: manifest[key] for key in ("precision", "input", "graphs", "engines", "accuracy",
                                           "grounding") if key in manifest}
    info["name"] = manifest.get("model", {}).get("name")
    info["folder"] = str(folder)
    return info


def cuda_driver() -> str:
    """The CUDA driver's version through pycuda, or why there is none."""
    if importlib.util.find_spec("pycuda") is None:
        return "unknown (pycuda not installed: pip install 'groundrt[gpu]')"
    try:
        import pycuda.driver as cuda

        cuda.init()
        major, minor = divmod(cuda.get_driver_version() // 10, 100)
        devices = [cuda.Device(i) for i in range(cuda.Device.count())]
        names = ", ".join(f"{d.name()} (sm_{''.join(map(str, d.compute_capability()))})"
                          for d in devices)
        return f"{major}.{minor}; devices: {names or 'none'}"
    except Exception as exc:  # noqa: BLE001 (any driver failure is the answer)
        return f"unavailable ({exc})"


def environment() -> dict:
    """Runtimes and native parts available here."""
    env: dict = {"groundrt": _version("groundrt")}
    try:
        import onnxruntime as ort

        env["onnxruntime"] = f"{ort.__version__}; providers: " + ", ".join(
            ort.get_available_providers())
    except ImportError:
        env["onnxruntime"] = "not installed"
    env["tensorrt"] = _version("tensorrt") or _version("tensorrt-lean") or \
        "not installed (pip install 'groundrt[gpu]' on the device)"
    env["pycuda"] = _version("pycuda") or "not installed"
    env["cuda driver"] = cuda_driver()
    env["torch"] = _version("torch") or "not installed (backend 'torch' needs groundrt[export])"
    env["opencv"] = _version("opencv-python") or _version("opencv-python-headless") or "?"
    env["cpu kernels"] = cpu_kernels_state()
    env["cuda kernels"] = cuda_kernels_state()
    return env


def cpu_kernels_state() -> str:
    """"built (path)", or "not built: why and how to get them" (missing or not loadable)."""
    from groundrt.kernels import cpu

    problem = cpu.problem()
    return f"built ({cpu.library_path()})" if problem is None else f"not built: {problem}"


def cuda_kernels_state() -> str:
    from groundrt.kernels import cuda

    fatbin = cuda.fatbin_path()
    return f"built ({fatbin})" if fatbin.is_file() else f"not built: {cuda.FATBIN_HINT}"


def format_engine(record: dict) -> str:
    """One engine record of the manifest: file (graph, precision, TensorRT, GPU, check)."""
    parts = [record.get("graph", "?"), record.get("precision", "?"),
             f"TensorRT {record.get('tensorrt', '?')}",
             f"{record.get('gpu', '?')} (compute {record.get('compute_capability', '?')})"]
    error = record.get("max_abs_error")
    if isinstance(error, dict):
        parts.append("max |plan - onnx| " + ", ".join(f"{name} {value:.3g}"
                                                       for name, value in error.items()))
    return f"{record.get('file', '?')} ({', '.join(parts)})"


def format_info(package: dict, env: dict) -> str:
    lines = [f"package: {package.get('name')} ({package.get('folder')}, hashes verified)"]
    size = package.get("input", {}).get("size")
    height, width = input_shape(package) if size is not None else (size, size)
    crop = "" if (height, width) == (size, size) else f" (a crop of the trained {size}x{size})"
    lines.append(f"  input: {height}x{width}{crop}, default precision "
                 f"{package.get('precision')}")
    for kind, graphs in package.get("graphs", {}).items():
        lines.append(f"  {kind} graphs: " + ", ".join(f"{p} ({f})" for p, f in graphs.items()))
    engines = package.get("engines") or []
    lines.append("  TensorRT engines: " + ("; ".join(map(format_engine, engines)) if engines else
                                          "none (groundrt export engine on the device)"))
    for precision, row in (package.get("accuracy") or {}).items():
        if isinstance(row, dict) and "overall" in row:
            lines.append(f"  accuracy {precision}: AR overall {row['overall']:.4f}, things "
                         f"{row.get('things', float('nan')):.4f}, stuff "
                         f"{row.get('stuff', float('nan')):.4f} ({row.get('narratives')} "
                         "val narratives)" + _presence_text(row))
    gate = package.get("grounding") or {}
    if "presence_threshold" in gate:
        how = "presence head and mask" if "presence_weights" in gate else "presence head"
        lines.append(f"  presence gate: {how}, found above {gate['presence_threshold']}")
    if gate.get("singular_margin") is not None:
        lines.append("  singulars: keep the parts of the mask within "
                     f"{gate['singular_margin']} of the surest part's mean probability")
    lines.append("this machine:")
    lines += [f"  {key}: {value}" for key, value in env.items()]
    return "\n".join(lines)


def _presence_text(row: dict) -> str:
    """"; target / no-target accuracy 0.98 / 0.69, instance AR 0.67" for a v2 package."""
    parts = []
    if row.get("target_acc") is not None and row.get("no_target_acc") is not None:
        parts.append(f"target / no-target accuracy {row['target_acc']:.2f} / "
                     f"{row['no_target_acc']:.2f}")
    if row.get("instance_ar") is not None:
        parts.append(f"instance AR {row['instance_ar']:.2f}")
    return "; " + ", ".join(parts) if parts else ""
