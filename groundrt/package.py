"""Model packages: a folder with `manifest.json` and the files it names, each with its SHA-256.

The manifest (format version 2) holds:

    format, format_version, producer       "groundrt-package", 2, "groundrt 0.1.0"
    model        {"name", "config"}         the ModelConfig the graphs were exported from
    input        {"size", "height", "width", "letterbox", "pad_value", "color", "mean", "std",
                  "layout"}: the image graph's input is height x width, the trained size x size
                  square or a top-left crop of it (packages without height and width: square)
    grounding    {"logit_scale", "affinity_bias", "plural_threshold", "pixel_stride",
                  "presence_threshold", "presence_weights", "singular_margin" (network v2)}
    tokenizer    {"file", "pad_id", "bos_id", "eos_id", "max_tokens"}
    graphs       {"image": {precision: file}, "text": {precision: file},
                  "phrase": {precision: file} (network v2: the phrase decoder)}
                 precisions: "fp32", "int8-cpu" (U8S8 Q/DQ), "int8-trt" (S8S8 Q/DQ)
    io           {"image": {"inputs": [...], "outputs": [...]}, "text": {...}, "phrase": {...}}
                 each tensor {"name", "dtype", "shape"} (a str in shape is a dynamic axis)
    precision    the default precision of the package
    calibration  {"images", "split", "method", "float_nodes": {node: reason}} or null
    accuracy     {precision: {"overall", "things", "stuff", "singulars", "plurals", ...}}
    engines      [{"file", "graph", "precision", "tensorrt", "gpu", "compute_capability"}]
    files        {file: {"sha256", "bytes"}} for every file named above

The runtime loads only the files the manifest names and checks their hashes first: the
manifest is read (at most MAX_MANIFEST_BYTES, no NaN or infinite numbers) and checked against
its schema (groundrt/package_schema.py: types, ranges, known precisions and graph names, every
path inside the package folder), then every named file is hashed, before any of them is parsed.
Version 2 added the phrase graph (network v2); version 1 packages (network v1) load unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

from groundrt import __version__
from groundrt.package_schema import PackageError, check_manifest, check_member

MANIFEST_FILE = "manifest.json"
FORMAT = "groundrt-package"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: network v1 packages, written before the phrase graph existed
MAX_MANIFEST_BYTES = 16 << 20

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST_FILE", "PackageError", "input_shape",
           "named_files", "read_manifest", "read_verified", "sha256_of", "verify_files",
           "write_manifest"]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_shape(manifest: dict) -> tuple[int, int]:
    """(h, w) of the package's image graph input."""
    entry = manifest["input"]
    return int(entry.get("height", entry["size"])), int(entry.get("width", entry["size"]))


def named_files(manifest: dict) -> list[str]:
    """Every file the manifest refers to (tokenizer, graphs, engines), in a stable order."""
    names = [manifest["tokenizer"]["file"]]
    for by_precision in manifest.get("graphs", {}).values():
        names.extend(by_precision.values())
    names.extend(engine["file"] for engine in manifest.get("engines", []))
    return sorted(set(names))


def write_manifest(folder: str | Path, manifest: dict) -> Path:
    """Hashes every named file and writes `manifest.json` atomically; returns its path."""
    folder = Path(folder)
    files = {}
    for name in named_files(manifest):
        path = folder / name
        if not path.is_file():
            raise PackageError(f"package {folder}: {name} is named in the manifest but missing")
        files[name] = {"sha256": sha256_of(path), "bytes": path.stat().st_size}
    full = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "producer": f"groundrt {__version__}", **manifest, "files": files}
    target = folder / MANIFEST_FILE
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(full, indent=2))
    os.replace(tmp, target)
    return target


def read_manifest(folder: str | Path, verify: bool = True) -> dict:
    """The package's manifest; with `verify`, every named file must exist and match its hash."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise PackageError(f"{folder} is not a model package: {MANIFEST_FILE} is missing")
    check_member(folder, MANIFEST_FILE, "the manifest")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise PackageError(f"{path} is {path.stat().st_size} bytes, more than a manifest can be "
                           f"({MAX_MANIFEST_BYTES})")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_no_constant,
                              parse_float=_finite_float)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise PackageError(f"{path} is not valid JSON: {exc}") from exc
    except ValueError as exc:  # NaN, Infinity, a float beyond double range
        raise PackageError(f"{path}: {exc}: re-export the package") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PackageError(f"{path} is not a groundrt package manifest")
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS:
        raise PackageError(f"{path} has format version {version}; this groundrt reads versions "
                           f"{', '.join(map(str, READABLE_VERSIONS))}: re-export the package "
                           "with this version (groundrt export package)")
    check_manifest(manifest, folder)
    if verify:
        verify_files(folder, manifest)
    return manifest


def _no_constant(name: str) -> float:
    raise ValueError(f"the manifest holds {name}, not a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the manifest holds {text}, beyond the range of a float")
    return value


def read_verified(folder: str | Path, manifest: dict, name: str) -> bytes:
    """The bytes of the package file `name`, checked against the manifest's SHA-256: what a
    parser is handed, so that the file parsed is the file verified."""
    folder = Path(folder)
    entry = manifest.get("files", {}).get(name)
    if entry is None:
        raise PackageError(f"package {folder}: {name} has no hash in the manifest")
    data = check_member(folder, name, f"file {name!r}").read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise PackageError(f"package {folder}: {name} does not match its SHA-256 in the "
                           "manifest (modified or corrupt): re-export the package or "
                           "restore the file")
    return data


def verify_files(folder: Path, manifest: dict) -> None:
    listed = manifest.get("files", {})
    for name in named_files(manifest):
        entry = listed.get(name)
        if entry is None:
            raise PackageError(f"package {folder}: {name} has no hash in the manifest "
                               "(the manifest was edited by hand?)")
        path = check_member(folder, name, f"file {name!r}")
        if not path.is_file():
            raise PackageError(f"package {folder}: {name} is missing")
        if path.stat().st_size != entry["bytes"] or sha256_of(path) != entry["sha256"]:
            raise PackageError(f"package {folder}: {name} does not match its SHA-256 in the "
                               "manifest (modified or corrupt): re-export the package or "
                               "restore the file")


def has_phrase_decoder(manifest: dict) -> bool:
    """Network v2: the package (or run) decodes phrases as queries of their own."""
    return int(manifest["model"]["config"].get("phrase_layers", 0)) > 0
