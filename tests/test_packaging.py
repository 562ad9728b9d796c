"""Packaging: the declared dependencies match requirements.txt without TensorFlow in the base, the version
check names what is wrong in one line, and the built wheel installs into a fresh venv that already has
TensorFlow without replacing anything in it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from carclf import requirements_check
from carclf.requirements_check import version_problem

REPO_ROOT = Path(__file__).resolve().parents[1]
# What the library leaves to the environment (or to the [cpu]/[gpu] extras).
FRAMEWORKS = {"tensorflow", "tensorflow-cpu", "keras"}
# One pip step (TensorFlow is ~250 MB) on a shared 2-core machine.
PIP_TIMEOUT_S = 900


def _name(requirement: Requirement) -> str:
    return requirement.name.lower().replace("_", "-")


def requirements_file(name: str) -> list[Requirement]:
    lines = (REPO_ROOT / name).read_text().splitlines()
    return [Requirement(line.split(" #")[0]) for line in lines
            if line.strip() and not line.startswith(("#", "-"))]


@pytest.fixture(scope="module")
def project() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def test_base_needs_no_tensorflow_and_pins_follow_requirements_txt(project: dict) -> None:
    base = {_name(r): r for r in map(Requirement, project["dependencies"])}
    extras = {extra: {_name(r): r for r in map(Requirement, reqs)}
              for extra, reqs in project["optional-dependencies"].items()}
    assert not FRAMEWORKS & set(base) and not FRAMEWORKS & set(extras["app"])
    tensorflow_floor = SpecifierSet(">=" + ".".join(map(str, requirements_check.MIN_TENSORFLOW)))
    keras_range = SpecifierSet(f">={'.'.join(map(str, requirements_check.MIN_KERAS))},"
                               f"<{'.'.join(map(str, requirements_check.KERAS_BEFORE))}")
    for requirement in requirements_file("requirements.txt"):
        name = _name(requirement)
        if name == "tensorflow-cpu":  # the app's exact pin lies in the extras' range, whose floor the check enforces
            pinned = next(iter(requirement.specifier)).version
            for extra, dist in (("cpu", "tensorflow-cpu"), ("gpu", "tensorflow")):
                assert extras[extra][dist].specifier == tensorflow_floor and tensorflow_floor.contains(pinned)
        elif name == "keras":
            assert extras["cpu"]["keras"].specifier == extras["gpu"]["keras"].specifier == requirement.specifier
            assert requirement.specifier == keras_range
        else:
            declared = base.get(name) or extras["app"].get(name)
            assert declared is not None, f"{name} in requirements.txt is not declared in pyproject.toml"
            assert declared.specifier == requirement.specifier, name
    assert "and-cuda" in extras["gpu"]["tensorflow"].extras


def test_gpu_requirements_bring_one_tensorflow() -> None:
    """tensorflow-cpu beside tensorflow[and-cuda] would write over the same files: the GPU file must not pull it."""
    lines = [line for line in (REPO_ROOT / "requirements-gpu.txt").read_text().splitlines() if not line.startswith("#")]
    assert not any("requirements.txt" in line or "tensorflow-cpu" in line for line in lines)
    pinned = {_name(r): r for r in requirements_file("requirements.txt")}
    gpu = {_name(r): r for r in requirements_file("requirements-gpu.txt")}
    assert gpu["tensorflow"].specifier == pinned["tensorflow-cpu"].specifier and "and-cuda" in gpu["tensorflow"].extras


@pytest.mark.parametrize(
    "tensorflow, keras, need, expected",
    [
        ("2.21.0", "3.15.1", False, ""),
        ("2.16.1", "3.10.0", True, ""),
        ("2.22.0rc1", "3.16.0.dev2026", True, ""),
        (None, None, False, ""),  # at import: a missing TensorFlow is reported when it is needed
        (None, None, True, "this Python has no TensorFlow: install one: pip install \"carclf[cpu]\""),
        ("2.21.0", None, True, "this Python has no Keras"),
        ("2.15.0", "2.15.0", False, 'TensorFlow 2.15.0: pip install -U "tensorflow>=2.16"'),
        ("2.19.0", "3.8.0", False, 'Keras 3.8.0: pip install -U "keras>=3.10,<4" (TensorFlow stays as it is)'),
        ("2.21.0", "4.0.0", False, "Keras 4.0.0"),
    ],
)
def test_version_problem(tensorflow, keras, need, expected) -> None:
    problem = version_problem(tensorflow, keras, need)
    assert (expected in problem and problem.startswith("carclf needs TensorFlow >= 2.16 with Keras 3")) if expected \
        else problem == ""
    assert "\n" not in problem


def _fake_distribution(folder: Path, name: str, version: str) -> Path:
    """A dist-info with only METADATA: put first on sys.path, it is what importlib.metadata reports."""
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return folder


def _python(code: str, cwd: Path, pythonpath: list) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath))}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name, version, message", [
    ("keras", "2.15.0", 'this Python has Keras 2.15.0: pip install -U "keras>=3.10,<4" (TensorFlow stays as it is).'),
    ("tensorflow", "2.15.1", 'this Python has TensorFlow 2.15.1: pip install -U "tensorflow>=2.16".'),
])
def test_import_names_a_too_old_framework_in_one_line(tmp_path: Path, name, version, message) -> None:
    fake = _fake_distribution(tmp_path / "site", name, version)
    result = _python("import carclf", tmp_path, [fake, REPO_ROOT])
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: carclf needs TensorFlow >= 2.16") and last.endswith(message)
    assert result.stderr.count('File "') <= 3  # raised by carclf's own import, not from deep inside Keras


def test_missing_tensorflow_is_named_when_the_api_needs_it(monkeypatch) -> None:
    import carclf

    monkeypatch.setattr(requirements_check, "installed", lambda distributions: (None, None))
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # find_spec("tensorflow") is None: as if not installed
    assert carclf.scan_dataset.__name__ == "scan_dataset"  # needs no TensorFlow
    for name in ("load_model", "evaluate", "start_run"):
        with pytest.raises(ImportError) as caught:
            getattr(carclf, name)
        assert str(caught.value) == requirements_check.missing_message("TensorFlow")


def _run(command: list, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=env,
                            timeout=PIP_TIMEOUT_S, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, command))}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _installed(python: Path) -> dict:
    listing = _run([python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"]).stdout
    return {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(listing)}


def _tensorflow_files(python: Path) -> dict:
    """TensorFlow's dist-info (name, RECORD bytes) and its package files' identities: a reinstall changes them."""
    code = ("import importlib.metadata as m, json, os; d = m.distribution('tensorflow-cpu'); "
            "files = [str(d.locate_file(f)) for f in d.files if str(f).startswith('tensorflow/')][:200]; "
            "print(json.dumps({'info': str(d._path), 'record': d.read_text('RECORD'), "
            "'stat': {f: [os.stat(f).st_ino, os.stat(f).st_mtime_ns] for f in files}}))")
    return json.loads(_run([python, "-c", code]).stdout)


@pytest.mark.slow
def test_wheel_installs_beside_tensorflow_without_replacing_it(tmp_path: Path) -> None:
    """A fresh venv with only TensorFlow (requirements.txt's version): the wheel installs, nothing it had changes."""
    pin = next(r for r in requirements_file("requirements.txt") if _name(r) == "tensorflow-cpu")
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "carclf", source / "carclf", ignore=shutil.ignore_patterns("__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--disable-pip-version-check",
          "--wheel-dir", tmp_path / "dist", source])
    wheel = next((tmp_path / "dist").glob("carclf-*.whl"))

    _run([sys.executable, "-m", "venv", tmp_path / "venv"])
    python = tmp_path / "venv" / "bin" / "python"
    pip = [python, "-m", "pip", "install", "--quiet", "--no-compile", "--disable-pip-version-check"]
    _run(pip + [f"tensorflow-cpu{pin.specifier}"])
    before, tensorflow = _installed(python), _tensorflow_files(python)

    _run(pip + [wheel])
    after = _installed(python)
    changed = {name: (version, after.get(name)) for name, version in before.items() if after.get(name) != version}
    assert changed == {}, f"installing carclf changed packages that were there: {changed}"
    assert _tensorflow_files(python) == tensorflow  # same dist-info, same files, not reinstalled
    assert after["carclf"] == __import__("carclf").__version__ and after["albumentations"] == "2.0.8"
    _run([python, "-m", "pip", "check", "--disable-pip-version-check"])

    code = ("import carclf, carclf.model, keras, tensorflow as tf; from carclf.config import load_config; "
            "load_config(preset='full'); print(carclf.__file__, tf.__version__, keras.__version__)")
    where, tf_version, _ = _run([python, "-c", code], cwd=tmp_path).stdout.split()
    assert Path(where).is_relative_to(tmp_path / "venv") and tf_version == before["tensorflow-cpu"]


def test_cli_without_tensorflow_says_what_to_install(tmp_path: Path) -> None:
    """``python -m carclf train`` where TensorFlow cannot be imported: one line naming the install, no traceback."""
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.abc, sys\n"
        "class NoTensorFlow(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'tensorflow':\n"
        "            raise ModuleNotFoundError(f\"No module named '{name}'\", name=name)\n"
        "sys.meta_path.insert(0, NoTensorFlow())\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_ROOT}"}
    done = subprocess.run([sys.executable, "-m", "carclf", "train", "--data", str(tmp_path)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == "error: " + requirements_check.missing_message("TensorFlow")


def test_the_app_router_imports_no_tensorflow(tmp_path: Path) -> None:
    """app.py's imports run before st.navigation replaces Streamlit's old pages/ menu on a server's first
    run (carclf.ui.navigation): TensorFlow there would keep that wrong menu on screen for seconds."""
    code = "import sys, carclf.ui.navigation; print(sorted({'tensorflow', 'keras'} & set(sys.modules)))"
    result = _python(code, tmp_path, [REPO_ROOT])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
