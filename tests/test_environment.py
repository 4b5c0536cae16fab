"""The environment is the lock: `make install` builds exactly requirements/lock.txt, and the package runs without
its extras (everything a plugin's extra brings is imported on demand, never by the core)."""

from __future__ import annotations

import importlib.metadata as metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"
OURS = {"prognosis-bench", "bench-example-plugin", "bench-suv-plugin"}  # editable from this checkout, not the lock
# Modules that only the extras (and the test tools) bring: none may be importable in the install without extras.
EXTRAS_ONLY = ("torch", "torchvision", "sam2", "timm", "radiomics", "pywt", "lifelines", "playwright", "pytest")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", LOCK.read_text(), flags=re.MULTILINE)
    return {_normalise(name): version for name, version in pins}


def _installed() -> dict[str, str]:
    found = {_normalise(d.metadata["Name"]): d.version for d in metadata.distributions()}
    return {name: version for name, version in found.items() if name not in OURS}


def test_the_lock_pins_every_requirement_with_hashes() -> None:
    text = LOCK.read_text()
    pins = _locked()
    assert len(pins) > 100, "the lock resolves the whole environment, extras and test tools included"
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text[text.index("\n", text.index("make lock")) :].strip())
    unhashed = [block.split()[0] for block in blocks if "==" in block and "--hash=sha256:" not in block]
    assert unhashed == [], f"requirements without a hash: {unhashed}"
    declared = [Requirement(r) for r in metadata.requires("prognosis-bench") or []]
    missing = sorted({_normalise(r.name) for r in declared} - set(pins))
    assert missing == [], f"requirements of pyproject.toml (extras included) not in the lock: {missing}"
    for name in ("torch", "torchvision", "sam2", "pip-tools", "setuptools", "pip"):
        assert name in pins, f"{name} is part of the locked environment"


def test_the_environment_is_exactly_the_lock() -> None:
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip("not running in the environment make install built (.venv)")
    locked, installed = _locked(), _installed()
    extra = {name: installed[name] for name in sorted(set(installed) - set(locked))}
    absent = sorted(set(locked) - set(installed))
    differ = {name: (installed[name], locked[name]) for name in sorted(set(locked) & set(installed))
              if installed[name] != locked[name]}  # fmt: skip
    assert (extra, absent, differ) == ({}, [], {}), "pip freeze differs from requirements/lock.txt (make install)"


def _runtime_closure() -> list[metadata.Distribution]:
    """prognosis-bench's distributions without any extra, followed through their own requirements (no extras)."""
    by_name = {_normalise(d.metadata["Name"]): d for d in metadata.distributions()}
    todo = [(_normalise("prognosis-bench"), frozenset())]
    seen: dict[str, metadata.Distribution] = {}
    followed: set[tuple[str, frozenset]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in followed:
            continue
        followed.add((name, extras))
        dist = seen[name] = by_name[name]
        for line in dist.requires or []:
            requirement = Requirement(line)
            wanted = extras or {""}
            if requirement.marker and not any(requirement.marker.evaluate({"extra": e}) for e in wanted):
                continue
            todo.append((_normalise(requirement.name), frozenset(requirement.extras)))
    del seen[_normalise("prognosis-bench")]
    return list(seen.values())


@pytest.fixture(scope="module")
def without_extras(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding the runtime requirements only and prognosis-bench installed from the
    checkout (not editable), without extras: the locked files of each runtime distribution are linked in."""
    venv = tmp_path_factory.mktemp("no-extras") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    for dist in _runtime_closure():
        root = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            if (root / top).exists() and not (site / top).exists():
                (site / top).symlink_to(root / top)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-compile",
         "--target", str(site), str(REPO)],
        check=True, capture_output=True, text=True, cwd=tmp_path_factory.mktemp("build"),
    )  # fmt: skip
    return venv


def test_the_package_runs_without_its_extras(without_extras: Path, tmp_path: Path) -> None:
    python = str(without_extras / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([python, *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)

    probe = run("-c", "import importlib.util as u, bench; print(bench.__file__); "
                f"print([m for m in {EXTRAS_ONLY!r} if u.find_spec(m)])")  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    where, importable = probe.stdout.splitlines()
    assert where.startswith(str(without_extras)), "the check must run the copy installed without extras"
    assert importable == "[]", f"the environment without extras still has {importable}"

    listed = run("-m", "bench", "list", "extractors")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^medsam2_memory\b.*\[medsam2\]", listed.stdout, flags=re.MULTILINE), listed.stdout
    ran = run("-m", "bench", "run", "--dataset", "gbsg2", "--extractor", "clinical", "--model", "coxph",
              "--bootstrap", "20", "--quiet", "--output-json", "run.json")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "run.json").is_file() and (tmp_path / "mlflow.db").is_file()
    refused = run("-m", "bench", "run", "--dataset", "gbsg2", "--model", "deepsurv", "--quiet")
    assert refused.returncode == 2, refused.stderr
    assert "[deep]" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
