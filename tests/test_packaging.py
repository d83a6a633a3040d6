"""Layout and packaging: imports under groundrt.* only, no torch in the core, CI = README."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import groundrt
from groundrt.vocabulary import load_vocabulary

ROOT = Path(__file__).resolve().parents[1]
SHARED_VOCABULARY = ROOT.parent / "shared" / "vocabulary.json"


def all_modules() -> list[str]:
    names = []
    for package in ("groundrt", "groundrt.export", "groundrt.runtime", "groundrt.kernels"):
        module = importlib.import_module(package)
        names.append(package)
        names += [m.name for m in pkgutil.walk_packages(module.__path__, package + ".")]
    return sorted(set(names))


def test_every_module_imports():
    modules = all_modules()
    assert "groundrt.runtime.cli" in modules and "groundrt.metric.evaluate" in modules
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


def test_wheel_holds_only_groundrt(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("groundrt-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"groundrt", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
                    + ".dist-info"}
    for expected in ("groundrt/runtime/cli.py", "groundrt/export/__init__.py",
                     "groundrt/kernels/__init__.py", "groundrt/vocabulary.json"):
        assert expected in names


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line.strip() for line in readme.split("```bash")[1].split("```")[0].splitlines()
                if line.strip() and not line.startswith("#")]
    assert len(commands) == 2, "the README opens with two commands: main job, tests"
    assert commands[1] in ci
    assert "pytest" in commands[1]
