"""Layout and packaging: imports under groundrt.* only, no torch in the core, CI = README."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import groundrt
from groundrt.kernels import cpu
from groundrt.vocabulary import load_vocabulary

ROOT = Path(__file__).resolve().parents[1]
SHARED_VOCABULARY = ROOT.parent / "shared" / "vocabulary.json"


def all_modules() -> list[str]:
    names = []
    for package in ("groundrt", "groundrt.export", "groundrt.runtime", "groundrt.kernels",
                    "groundrt.ros"):
        module = importlib.import_module(package)
        names.append(package)
        names += [m.name for m in pkgutil.walk_packages(module.__path__, package + ".")]
    return sorted(set(names))


def test_every_module_imports():
    modules = all_modules()
    assert "groundrt.runtime.cli" in modules and "groundrt.metric.evaluate" in modules
    assert "groundrt.ros.node" in modules  # imports without rclpy (it is imported when run)
    for name in modules:
        importlib.import_module(name)


def test_runtime_core_imports_without_torch():
    code = ("import sys, groundrt.runtime.cli, groundrt.data, groundrt.metric, groundrt.synth; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_shipped_vocabulary_is_the_shared_one():
    if not SHARED_VOCABULARY.is_file():
        pytest.skip(f"{SHARED_VOCABULARY} not present beside this checkout")
    shipped = Path(groundrt.__file__).with_name("vocabulary.json")
    assert json.loads(shipped.read_text()) == json.loads(SHARED_VOCABULARY.read_text())
    vocab = load_vocabulary()
    assert [c.name for c in vocab.things][:2] == ["circle", "square"]
    assert vocab.category("sky").id == 101 and not vocab.category("sky").isthing
    assert vocab.lookalikes("red") == {"orange", "pink"}


def build_wheel(out: Path, *options: str, env: dict | None = None) -> zipfile.ZipFile:
    """`pip wheel .` (scikit-build-core from this environment; the fatbin left out: nvcc takes
    long and its build is tested by tests/test_kernels.py)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), "-Ccmake.define.GROUNDRT_WITH_CUDA=OFF", *options,
                    str(ROOT)], check=True, capture_output=True, env=env)
    (wheel,) = out.glob("groundrt-*.whl")
    return zipfile.ZipFile(wheel)


def test_wheel_holds_only_groundrt_and_the_native_library(tmp_path):
    wheel = build_wheel(tmp_path)
    name = Path(wheel.filename).name
    names = wheel.namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"groundrt", name.split("-")[0] + "-" + name.split("-")[1] + ".dist-info"}
    for expected in ("groundrt/runtime/cli.py", "groundrt/export/__init__.py",
                     "groundrt/kernels/__init__.py", "groundrt/vocabulary.json",
                     "groundrt/data/__init__.py", "groundrt/runtime/models/default/manifest.json",
                     "groundrt/runtime/fonts/DejaVuSans-Bold.ttf",
                     "groundrt/runtime/fonts/LICENSE", "groundrt/kernels/lib/" + cpu.LIB_NAME,
                     "groundrt/ros/node.py", "groundrt/ros/launch/groundrt.launch.py"):
        assert expected in names
    # the colcon package's own files stay in the checkout
    assert not any(n.startswith(("groundrt/ros/package.xml", "groundrt/ros/setup.",
                                 "groundrt/ros/resource/")) for n in names)
    # ctypes, no Python C API: any CPython 3, but only this platform (it holds an .so)
    python_tag, abi_tag, platform_tag = name.removesuffix(".whl").split("-")[-3:]
    assert (python_tag, abi_tag) == ("py3", "none") and platform_tag != "any", name
    assert not any(n.startswith("groundrt/kernels/src/") for n in names)


def test_wheel_without_a_compiler_still_installs_the_python_parts(tmp_path):
    env = {**os.environ, "CXX": str(tmp_path / "no-such-c++")}
    names = build_wheel(tmp_path, env=env).namelist()
    assert "groundrt/runtime/grounder.py" in names
    assert not any(n.startswith("groundrt/kernels/lib/") for n in names)


def test_sdist_holds_every_source(tmp_path):
    from scikit_build_core.build import build_sdist

    cwd = os.getcwd()
    try:
        os.chdir(ROOT)
        sdist = tmp_path / build_sdist(str(tmp_path))
    finally:
        os.chdir(cwd)
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    sources = [n for n in tracked if n.split("/")[0] in ("groundrt", "export", "runtime",
                                                           "kernels", "ros", "tests")
               or n in ("CMakeLists.txt", "pyproject.toml", "README.md")]
    assert "kernels/src/grounding.cu" in sources
    assert [n for n in sources if n not in names] == []
    assert not any(n.startswith(("runs/", "kernels/lib/")) for n in names)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line.strip() for line in readme.split("```bash")[1].split("```")[0].splitlines()
                if line.strip() and not line.startswith("#")]
    assert len(commands) == 2, "the README opens with two commands: main job, tests"
    assert commands[1] in ci
    assert "pytest" in commands[1]
