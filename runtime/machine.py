"""The machine a benchmark ran on: CPU model, cores, ISA flags, memory; GPU, driver, CUDA and
TensorRT versions where present (`groundrt bench` puts it at the top of every report)."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

from groundrt.runtime.info import _version

# the flags that decide which kernels ONNX Runtime and the C++ kernels can use
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw",
             "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve")


def cpu_description(cpuinfo: str | None = None) -> dict:
    """Model, logical / physical / usable cores and the ISA flags of /proc/cpuinfo."""
    text = cpuinfo if cpuinfo is not None else _read("/proc/cpuinfo")
    model = re.search(r"^(model name|Model|Hardware)\s*:\s*(.+)$", text, re.M)
    flags_line = re.search(r"^(flags|Features)\s*:\s*(.+)$", text, re.M)
    flags = set(flags_line.group(2).split()) if flags_line else set()
    cores = {(m.group(1), m.group(2)) for m in re.finditer(
        r"physical id\s*:\s*(\d+).*?core id\s*:\s*(\d+)", text, re.S)}
    return {
        "model": model.group(2).strip() if model else platform.processor() or "unknown",
        "logical_cores": os.cpu_count(),
        "physical_cores": len(cores) or None,
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "isa": [f for f in ISA_FLAGS if f in flags],
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _run(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=True)
    except (subprocess.SubprocessError, OSError):
        return None
    return done.stdout.strip()


def gpu_description() -> dict:
    """nvidia-smi's GPUs and driver, the CUDA version (driver's, and nvcc's), TensorRT's."""
    gpus = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                 "--format=csv,noheader"])
    header = _run(["nvidia-smi"]) or ""
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", header)
    nvcc = re.search(r"release ([\d.]+)", _run(["nvcc", "--version"]) or "")
    return {
        "gpus": [line.strip() for line in gpus.splitlines()] if gpus else [],
        "cuda_driver": cuda.group(1) if cuda else None,
        "nvcc": nvcc.group(1) if nvcc else None,
        "tensorrt": _version("tensorrt") or _version("tensorrt-lean"),
        "onnxruntime_gpu": _version("onnxruntime-gpu"),
    }


def describe_machine() -> dict:
    """CPU, memory, GPU and the versions of what runs the graphs."""
    memory = re.search(r"MemTotal:\s*(\d+) kB", _read("/proc/meminfo"))
    return {
        "cpu": cpu_description(),
        "memory_gib": round(int(memory.group(1)) / 2**20, 1) if memory else None,
        # whether something else was running (a shared machine): 1, 5, 15 minute averages
        "load_average": _read("/proc/loadavg").split()[:3],
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "torch": _version("torch"),
        "gpu": gpu_description(),
    }


def format_machine(machine: dict) -> str:
    cpu, gpu = machine["cpu"], machine["gpu"]
    lines = [f"CPU: {cpu['model']}, {cpu['logical_cores']} logical cores"
             + (f" ({cpu['physical_cores']} physical)" if cpu["physical_cores"] else "")
             + f", {cpu['usable_cores']} usable by this process; ISA: "
             + (", ".join(cpu["isa"]) or "none of the listed"),
             f"memory {machine['memory_gib']} GiB; load average at the start "
             f"{' '.join(machine['load_average']) or '-'}; {machine['os']}; "
             f"Python {machine['python']}, "
             f"numpy {machine['numpy']}, ONNX Runtime {machine['onnxruntime']}, "
             f"torch {machine['torch'] or 'not installed'}",
             "GPU: " + ("; ".join(gpu["gpus"]) if gpu["gpus"] else "none found (nvidia-smi)")
             + f"; CUDA driver {gpu['cuda_driver'] or '-'}, nvcc {gpu['nvcc'] or '-'}, "
             f"TensorRT {gpu['tensorrt'] or 'not installed'}"]
    return "\n".join(lines)
