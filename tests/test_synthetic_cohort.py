"""The built-in synthetic cohort through the harness: generated on first use, checked, run, shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.testing import run_cli


@pytest.fixture(scope="module")
def data_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("synthetic")
    return {"BENCH_DATA_DIR": str(root / "data"), "BENCH_CACHE_DIR": str(root / "cache")}


def test_tiny_cohort_is_generated_checked_and_run(data_env: dict, tmp_path: Path) -> None:
    check = run_cli("data", "check", "synthetic_mm_tiny", "--quiet", env=data_env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ok (" in check.stdout
    assert (Path(data_env["BENCH_DATA_DIR"]) / "synthetic_mm-tiny-seed0" / "manifest.yaml").exists()

    out = tmp_path / "out.json"
    result = run_cli(
        "run", "--dataset", "synthetic_mm_tiny", "--extractor", "clinical", "oracle", "--model", "coxph",
        "--bootstrap", "200", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--output-json", str(out), "--quiet",
        env=data_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    results = {r["extractor"]: r["metrics"]["c_index"]["mean"] for r in json.loads(out.read_text())["results"]}
    assert results["oracle"] > results["clinical"], "the true risk beats the clinical covariates"


def test_oracle_refuses_a_cohort_without_truth(tmp_path: Path) -> None:
    result = run_cli(
        "run", "--dataset", "veterans", "--extractor", "oracle", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"
    )
    assert result.returncode == 2 and "truth table" in result.stderr


def test_show_writes_projections_with_roi_outlines(data_env: dict, tmp_path: Path) -> None:
    png = tmp_path / "show.png"
    result = run_cli("data", "show", "MM0001", "--dataset", "synthetic_mm_tiny", "--out", str(png), env=data_env)
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    masks = list((Path(data_env["BENCH_CACHE_DIR"]) / "masks").glob("*.nii.gz"))
    assert len(masks) == 2, "skeleton and spine_dilated computed from CT and cached"
    again = run_cli("data", "show", "NOPE", "--dataset", "synthetic_mm_tiny", "--out", str(png), env=data_env)
    assert again.returncode == 2 and "no patient 'NOPE'" in again.stderr
