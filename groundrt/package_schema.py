"""The schema of a package's `manifest.json`, checked before anything in the package is used.

A package may come from anywhere, so its manifest is untrusted input: every field the runtime
reads must have its type and range (numbers finite), precisions and graph names must be known,
and every file it names must be a plain relative path that stays inside the package folder (no
"..", no absolute path, no symlink that leads out). `check_manifest` raises PackageError naming
the field and what is wrong.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from groundrt.errors import GroundrtError

# the graphs a package may hold: the image and text engines, and the version-2 phrase decoder
GRAPHS = ("image", "text", "phrase")
PRECISIONS = ("fp32", "fp16", "int8-cpu", "int8-trt")  # ONNX graphs
ENGINE_PRECISIONS = ("fp32", "fp16", "int8")  # TensorRT plans
TENSOR_DTYPES = ("float32", "float16", "bfloat16", "int64", "int32", "int8", "uint8", "bool")
SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_SIDE = 8192  # pixels of the image graph's input side
MAX_TOKENS = 1 << 16


class PackageError(GroundrtError):
    """A model package is missing, malformed, or its files do not match the manifest."""


class _Checker:
    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, field: str, problem: str) -> None:
        raise PackageError(f"{self.where}: {field} {problem}: re-export the package or restore "
                           "its manifest")

    def dict(self, value: Any, field: str) -> dict:
        if not isinstance(value, dict):
            self.fail(field, f"must be an object, not {_kind(value)}")
        return value

    def list(self, value: Any, field: str) -> list:
        if not isinstance(value, list):
            self.fail(field, f"must be a list, not {_kind(value)}")
        return value

    def str(self, value: Any, field: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str) or not value:
            self.fail(field, f"must be a non-empty string, not {_kind(value)}")
        if choices is not None and value not in choices:
            self.fail(field, f"is {value!r}, not one of {', '.join(choices)}")
        return value

    def int(self, value: Any, field: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, f"must be an integer, not {_kind(value)}")
        if not low <= value <= high:
            self.fail(field, f"is {value}, outside [{low}, {high}]")
        return value

    def number(self, value: Any, field: str, low: float = -math.inf, high: float = math.inf,
               open_low: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(field, f"must be a number, not {_kind(value)}")
        if not math.isfinite(value):
            self.fail(field, f"is {value}, not a finite number")
        if value < low or value > high or (open_low and value == low):
            self.fail(field, f"is {value}, outside {'(' if open_low else '['}{low}, {high}]")
        return float(value)

    def numbers(self, value: Any, field: str, count: int, **bounds: Any) -> None:
        items = self.list(value, field)
        if len(items) != count:
            self.fail(field, f"must hold {count} numbers, not {len(items)}")
        for i, item in enumerate(items):
            self.number(item, f"{field}[{i}]", **bounds)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def check_member(folder: Path, name: Any, field: str) -> Path:
    """folder / name, for a `name` from the manifest that must stay inside `folder`."""
    where = _Checker(f"package {folder}")
    where.str(name, field)
    if "\\" in name or "\0" in name or PureWindowsPath(name).drive:
        where.fail(field, f"{name!r} is not a plain relative path")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or name.strip() != name:
        where.fail(field, f"{name!r} points outside the package folder (absolute or '..')")
    path = folder / pure
    root = os.path.realpath(folder)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        where.fail(field, f"{name!r} is a symlink that leads outside the package folder")
    return path


def check_manifest(manifest: Any, folder: Path) -> dict:
    """`manifest` when it follows the schema and names only files inside `folder`."""
    c = _Checker(f"{folder / 'manifest.json'}")
    m = c.dict(manifest, "the manifest")
    for key in ("producer",):
        if key in m:
            c.str(m[key], key)
    if "model" in m:
        model = c.dict(m["model"], "model")
        if model.get("name") is not None:
            c.str(model["name"], "model.name")
        if "config" in model:
            c.dict(model["config"], "model.config")

    entry = c.dict(m.get("input"), "input")
    size = c.int(entry.get("size"), "input.size", 1, MAX_SIDE)
    for side in ("height", "width"):
        if side in entry:
            c.int(entry[side], f"input.{side}", 1, size)
    c.int(entry.get("pad_value", 114), "input.pad_value", 0, 255)
    c.numbers(entry.get("mean", [0.0] * 3), "input.mean", 3, low=0.0, high=255.0)
    c.numbers(entry.get("std", [1.0] * 3), "input.std", 3, low=0.0, high=255.0, open_low=True)
    for key, choices in (("color", ("RGB", "BGR")), ("layout", ("NCHW",)),
                         ("letterbox", ("top-left",)), ("dtype", ("float32", "float16"))):
        if key in entry:
            c.str(entry[key], f"input.{key}", choices)

    g = c.dict(m.get("grounding"), "grounding")
    c.number(g.get("logit_scale"), "grounding.logit_scale", 0.0, 1e4, open_low=True)
    c.number(g.get("affinity_bias"), "grounding.affinity_bias", -1e4, 1e4)
    c.number(g.get("plural_threshold"), "grounding.plural_threshold", 0.0, 1.0)
    c.int(g.get("pixel_stride"), "grounding.pixel_stride", 1, 64)
    if "presence_threshold" in g:  # network v2
        c.number(g["presence_threshold"], "grounding.presence_threshold", 0.0, 1.0)
    if "singular_margin" in g:  # network v2: a singular keeps its parts this close to its surest
        c.number(g["singular_margin"], "grounding.singular_margin", 0.0, 1.0)
    if "presence_weights" in g:  # w_logit, w_score, w_log_area, bias (runtime.reference)
        c.numbers(g["presence_weights"], "grounding.presence_weights", 4, low=-1e4, high=1e4)

    t = c.dict(m.get("tokenizer"), "tokenizer")
    check_member(folder, t.get("file"), "tokenizer.file")
    for key in ("pad_id", "bos_id", "eos_id"):
        if key in t:
            c.int(t[key], f"tokenizer.{key}", -1, MAX_TOKENS * 16)
    if t.get("max_tokens") is not None:
        c.int(t["max_tokens"], "tokenizer.max_tokens", 2, MAX_TOKENS)

    graphs = c.dict(m.get("graphs"), "graphs")
    for name in ("image", "text"):
        if name not in graphs:
            c.fail("graphs", f"has no {name!r} graph")
    for name, by_precision in graphs.items():
        c.str(name, "a graph name", GRAPHS)
        if not c.dict(by_precision, f"graphs.{name}"):
            c.fail(f"graphs.{name}", "names no file")
        for precision, file in by_precision.items():
            c.str(precision, f"a precision of graphs.{name}", PRECISIONS)
            check_member(folder, file, f"graphs.{name}.{precision}")
    precision = c.str(m.get("precision"), "precision", PRECISIONS)
    if precision not in graphs["image"]:
        c.fail("precision", f"is {precision!r}, which graphs.image does not hold")

    for name, spec in c.dict(m.get("io", {}), "io").items():
        c.str(name, "a graph name in io", GRAPHS)
        for side in ("inputs", "outputs"):
            for i, tensor in enumerate(c.list(c.dict(spec, f"io.{name}").get(side, []),
                                              f"io.{name}.{side}")):
                field = f"io.{name}.{side}[{i}]"
                c.str(c.dict(tensor, field).get("name"), f"{field}.name")
                c.str(tensor.get("dtype"), f"{field}.dtype", TENSOR_DTYPES)
                for j, axis in enumerate(c.list(tensor.get("shape"), f"{field}.shape")):
                    if not isinstance(axis, str):
                        c.int(axis, f"{field}.shape[{j}]", 0, 1 << 31)

    for i, engine in enumerate(c.list(m.get("engines", []), "engines")):
        field = f"engines[{i}]"
        check_member(folder, c.dict(engine, field).get("file"), f"{field}.file")
        c.str(engine.get("graph"), f"{field}.graph", GRAPHS)
        c.str(engine.get("precision"), f"{field}.precision", ENGINE_PRECISIONS)
        for key in ("tensorrt", "gpu"):
            if key in engine:
                c.str(engine[key], f"{field}.{key}")

    if m.get("calibration") is not None:
        c.dict(m["calibration"], "calibration")
    for precision, scores in c.dict(m.get("accuracy", {}), "accuracy").items():
        for key, value in c.dict(scores, f"accuracy.{precision}").items():
            if isinstance(value, float):
                c.number(value, f"accuracy.{precision}.{key}")

    for name, entry in c.dict(m.get("files"), "files").items():
        check_member(folder, name, f"files[{name!r}]")
        entry = c.dict(entry, f"files[{name!r}]")
        digest = entry.get("sha256")
        if not isinstance(digest, str) or not SHA256.fullmatch(digest):
            c.fail(f"files[{name!r}].sha256", "is not 64 lowercase hex digits")
        c.int(entry.get("bytes"), f"files[{name!r}].bytes", 0, 1 << 40)
    return m
