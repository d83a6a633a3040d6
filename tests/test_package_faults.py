"""Untrusted packages: the manifest is checked against its schema, every path stays inside the
package folder, and hashes are checked before any file is parsed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import groundrt
from groundrt.package import PackageError, read_manifest, sha256_of
from groundrt.runtime import DEFAULT_MODEL
from groundrt.runtime.cli import main


@pytest.fixture
def package(tmp_path) -> Path:
    folder = tmp_path / "pkg"
    shutil.copytree(DEFAULT_MODEL, folder)
    return folder


def edit(package: Path, change) -> None:
    manifest = json.loads((package / "manifest.json").read_text())
    change(manifest)
    (package / "manifest.json").write_text(json.dumps(manifest))


def name_file(manifest: dict, precision: str, name: str, path: Path) -> None:
    """Points graphs.image[precision] at `name` with `path`'s true hash (a forged manifest)."""
    manifest["graphs"]["image"][precision] = name
    manifest["files"][name] = {"sha256": sha256_of(path), "bytes": path.stat().st_size}


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_a_file_outside_the_package_is_never_read(package, tmp_path, capsys, kind):
    outside = tmp_path / "outside"
    outside.mkdir()
    graph = outside / "image.int8.cpu.onnx"
    shutil.copy(package / "image.int8.cpu.onnx", graph)
    if kind == "symlink":
        (package / "image.int8.cpu.onnx").unlink()
        (package / "image.int8.cpu.onnx").symlink_to(graph)
        message = "symlink that leads outside"
    else:
        name = "../outside/image.int8.cpu.onnx" if kind == "dotdot" else str(graph)
        edit(package, lambda m: name_file(m, "int8-cpu", name, graph))
        message = "points outside the package folder"
    with pytest.raises(PackageError, match=message):
        read_manifest(package)
    with pytest.raises(PackageError, match=message):
        groundrt.Grounder(package)
    assert main(["info", "--model", str(package)]) == 1
    captured = capsys.readouterr()
    assert "hashes verified" not in captured.out and message in captured.err


def test_a_symlink_inside_the_package_is_fine(package):
    (package / "renamed.onnx").write_bytes((package / "image.int8.cpu.onnx").read_bytes())
    (package / "image.int8.cpu.onnx").unlink()
    (package / "image.int8.cpu.onnx").symlink_to("renamed.onnx")
    read_manifest(package)


def setter(*keys_and_value):
    *keys, value = keys_and_value

    def change(manifest: dict) -> None:
        target = manifest
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return change


@pytest.mark.parametrize(("change", "message"), [
    (setter("tokenizer", "file", "../tokenizer.model"), "tokenizer.file .* outside"),
    (setter("tokenizer", "file", "/etc/passwd"), "tokenizer.file .* outside"),
    (setter("tokenizer", "file", "sub\\..\\..\\x"), "not a plain relative path"),
    (setter("tokenizer", "file", "C:x.model"), "not a plain relative path"),
    (setter("engines", [{"file": "../../x.engine", "graph": "image", "precision": "int8"}]),
     r"engines\[0\].file .* outside"),
    (setter("engines", [{"file": "x.engine", "graph": "vision", "precision": "int8"}]),
     r"engines\[0\].graph is 'vision', not one of"),
    (setter("input", "size", "192"), "input.size must be an integer, not str"),
    (setter("input", "size", True), "input.size must be an integer, not bool"),
    (setter("input", "size", -1), r"input.size is -1, outside \[1, 8192\]"),
    (setter("input", "size", 10 ** 6), "input.size is 1000000"),
    (setter("input", "height", 400), "input.height is 400"),
    (setter("input", "std", [0.0, 1.0, 1.0]), r"input.std\[0\] is 0.0"),
    (setter("input", "mean", [1.0, 2.0]), "input.mean must hold 3 numbers"),
    (setter("input", "color", "CMYK"), "input.color is 'CMYK'"),
    (setter("grounding", "plural_threshold", 2.0), "grounding.plural_threshold is 2.0"),
    (setter("grounding", "logit_scale", None), "grounding.logit_scale must be a number"),
    (setter("grounding", "pixel_stride", 0), "grounding.pixel_stride is 0"),
    (setter("grounding", "singular_margin", 1.5), "grounding.singular_margin is 1.5"),
    (setter("tokenizer", "max_tokens", 1), "tokenizer.max_tokens is 1"),
    (setter("precision", "int4"), "precision is 'int4', not one of"),
    (setter("precision", "fp16"), "graphs.image does not hold"),
    (setter("graphs", "evil", {"fp32": "image.onnx"}), "a graph name is 'evil'"),
    (setter("graphs", "image", {"fp64": "image.onnx"}), "a precision of graphs.image"),
    (setter("graphs", "image", {}), "graphs.image names no file"),
    (setter("graphs", "text", "text.onnx"), "graphs.text must be an object"),
    (setter("io", "image", "inputs", [{"name": "x", "dtype": "float128", "shape": [1]}]),
     r"io.image.inputs\[0\].dtype"),
    (setter("files", "text.onnx", "sha256", "abc"), "sha256 is not 64 lowercase hex"),
    (setter("files", "text.onnx", "bytes", -5), "bytes is -5"),
    (lambda m: m.pop("grounding"), "grounding must be an object, not null"),
])
def test_a_manifest_against_the_schema_is_refused_by_field(package, change, message):
    edit(package, change)
    with pytest.raises(PackageError, match=message):
        read_manifest(package)


@pytest.mark.parametrize(("text", "message"), [
    ('"grounding": {"logit_scale": NaN', "NaN, not a finite number"),
    ('"grounding": {"logit_scale": Infinity', "Infinity, not a finite number"),
    ('"grounding": {"logit_scale": 1e999', "1e999, beyond the range"),
])
def test_non_finite_numbers_are_refused(package, text, message):
    path = package / "manifest.json"
    raw = json.dumps(json.loads(path.read_text()))
    start = raw.index('"grounding": {"logit_scale": ')
    end = raw.index(",", start)
    path.write_text(raw[:start] + text + raw[end:])
    with pytest.raises(PackageError, match=message):
        read_manifest(package)


def test_malformed_manifests_are_package_errors(package):
    path = package / "manifest.json"
    for text, message in (("[" * 100_000 + "]" * 100_000, "not valid JSON|not a groundrt"),
                          ("[1, 2]", "not a groundrt package manifest"),
                          ("\xff\xfe", "not valid JSON"), ("", "not valid JSON")):
        path.write_bytes(text.encode("latin-1"))
        with pytest.raises(PackageError, match=message):
            read_manifest(package)
    path.write_bytes(b" " * (17 << 20))
    with pytest.raises(PackageError, match="more than a manifest can be"):
        read_manifest(package)


def test_hashes_are_checked_before_any_file_is_parsed(package):
    """A corrupt tokenizer or graph is named by its hash, not by the parser that would choke."""
    for name in ("tokenizer.model", "text.onnx"):
        path = package / name
        original = path.read_bytes()
        path.write_bytes(b"garbage that no parser would accept")
        with pytest.raises(PackageError, match=f"{name} does not match its SHA-256"):
            groundrt.Grounder(package)
        path.write_bytes(original)
    groundrt.Grounder(package)  # restored: loads


def test_the_tokenizer_parses_the_bytes_it_verified(package, tmp_path):
    """A tokenizer swapped after the package's hashes were checked is still refused."""
    from groundrt.text import Tokenizer, TokenizerError

    manifest = read_manifest(package)
    digest = manifest["files"]["tokenizer.model"]["sha256"]
    Tokenizer(package / "tokenizer.model", sha256=digest)  # the verified file: loads
    other = tmp_path / "other.model"
    shutil.copy(package / "tokenizer.model", other)
    with other.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(TokenizerError, match="does not match its SHA-256"):
        Tokenizer(other, sha256=digest)


def test_the_graphs_are_built_from_the_bytes_verified(package):
    """A graph changed after the package's hashes were checked is refused, not run."""
    from groundrt.runtime.onnx_graphs import OnnxGraphs

    manifest = read_manifest(package)  # checked here ...
    graph = package / manifest["graphs"]["image"][manifest["precision"]]
    graph.write_bytes(graph.read_bytes() + b"\0")  # ... changed after
    with pytest.raises(PackageError, match="does not match its SHA-256"):
        OnnxGraphs(package, manifest=manifest)
