"""Robust features (``min_icc=X``): chosen on each fold's training patients only, named in the row label, compared
with the same extractor without it on the same replicates; test-retest ICCs on the synthetic retest preset; a grid
config's ``robustness:`` block."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from bench.data.cohort import ColumnSpec
from bench.plugins.labels import PluginLabel
from bench.protocol.grid import load_config
from bench.protocol.preprocessing import FoldPreprocessor
from bench.protocol.robustness_run import RobustnessRequest, measure
from bench.testing import run_cli
from feature_extractors.base import FeatureBlock

ROBUST, NOISY = ["a", "b", "c"], ["x", "y", "z"]


def _block(rng: np.random.Generator, n: int = 40, k: int = 5) -> FeatureBlock:
    """Three columns whose versions move by 5 % of their spread (ICC about 0.998) and three whose versions are new
    draws (ICC about 0): the ground truth the selection must find."""
    base = rng.normal(size=(n, 6))
    versions = np.repeat(base[:, None, :], k + 1, axis=1)
    versions[:, 1:, :3] += rng.normal(0, 0.05, (n, k, 3))
    versions[:, 1:, 3:] = rng.normal(size=(n, k, 3))
    frame = pd.DataFrame(base, columns=ROBUST + NOISY, index=[f"s{i}" for i in range(n)])
    block = FeatureBlock("toy", frame, {c: ColumnSpec("numeric") for c in frame.columns})
    block.versions, block.min_icc = versions, 0.9
    return block


def _kept(block: FeatureBlock, train: np.ndarray) -> list[str]:
    pre = FoldPreprocessor([block])
    X = pre.fit_transform(train)
    assert X.shape[1] == len(pre.feature_names)
    return pre.feature_names


def test_min_icc_is_chosen_on_the_training_patients_only() -> None:
    rng = np.random.default_rng(0)
    block = _block(rng)
    train, test = np.arange(30), np.arange(30, 40)
    assert _kept(block, train) == ROBUST
    block.versions[test] = rng.normal(size=block.versions[test].shape)  # the test patients' versions: now noise
    block.versions[test, :, 3:] = block.versions[test, :1, 3:]  # and the noisy columns perfectly stable there
    assert _kept(block, train) == ROBUST, "what the test patients' versions do never changes the selection"
    block.versions[train, 1:, 0] = rng.normal(size=(30, 5))  # column a: unstable on the training patients
    assert _kept(block, train) == ROBUST[1:], "the training patients' versions decide"


def test_the_label_names_min_icc_and_round_trips() -> None:
    label = PluginLabel.parse("radiomics[roi=tumour,min_icc=0.9]")
    assert label.min_icc == 0.9 and label.options == (("roi", "tumour"),)
    assert str(label) == "radiomics[roi=tumour,min_icc=0.9]"


def test_rows_with_and_without_min_icc_compare_on_the_same_replicates(tmp_path: Path, synthetic_data: Path) -> None:
    env = {"BENCH_DATA_DIR": str(synthetic_data), "BENCH_CACHE_DIR": str(tmp_path / "cache")}
    plain = "suv_stats:roi=spine_dilated"
    result = run_cli(
        "run", "--dataset", "synthetic_mm_tiny", "--extractor", plain, f"{plain},min_icc=0.9", "--model", "coxph",
        "--bootstrap", "50", "--baseline", plain, "--robust-perturb", "volume:+-1vox", "--robust-repeats", "3",
        "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--quiet", "--results", str(tmp_path / "r.json"),
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "min_icc=0.9]" in line)
    assert "suv_stats[roi=spine_dilated,min_icc=0.9] | coxph" in row
    difference = row.split("|")[6].strip()  # vs baseline [95 % CI]: a paired difference, replicate by replicate
    assert difference[0] in "+-" and "[" in difference, row
    bad = run_cli("run", "--dataset", "synthetic_mm_tiny", "--extractor", f"{plain},min_icc=1.5", env=env)
    assert bad.returncode == 2 and "min_icc=1.5 is not an ICC threshold in (0, 1]" in bad.stderr


def test_retest_iccs_favour_the_true_prognostic_feature_over_texture(tmp_path: Path, monkeypatch,
                                                                     synthetic_retest_data: Path) -> None:  # fmt: skip
    monkeypatch.setenv("BENCH_DATA_DIR", str(synthetic_retest_data))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    specs = ("suv_stats:roi=skeleton", "radiomics:roi=skeleton,feature_classes=glcm")
    cohort, (suv, texture) = measure(RobustnessRequest("synthetic_mm_retest", specs, retest=True))
    assert suv.versions.values.shape[:2] == (24, 2), "24 patients, two scans each"
    # The generator's marrow uptake is its true imaging prognostic factor; the skeleton's mean SUV measures it.
    truth = cohort.truth.loc[suv.versions.units, "marrow_suv"].to_numpy()
    mean_suv = suv.versions.values[:, 0, suv.versions.names.index("suv_mean")]
    assert spearmanr(truth, mean_suv).statistic > 0.8
    icc = {f.name: f.icc for f in suv.iccs}
    glcm = [f.icc for f in texture.iccs]
    # The simulation moves each rescan by new noise, 2-4 mm and a global uptake change within 5 %: a mean over the
    # whole skeleton averages the noise away, co-occurrence texture is made of it.
    assert icc["suv_mean"] > np.median(glcm), (icc, sorted(glcm))
    assert icc["suv_mean"] > 0.9


def test_a_grid_config_robustness_block(tmp_path: Path) -> None:
    config = tmp_path / "grid.yaml"
    config.write_text(
        "dataset: synthetic_mm_tiny\nextractors: {suv: 'suv_stats:roi=spine'}\nmodels: [coxph]\n"
        "rows: [clinical, suv, 'suv_stats:roi=spine,min_icc=0.8', 'radiomics:roi=spine+clinical']\n"
        "robustness: {perturb: 'volume:+1mm,noise:0.1', repeats: 3}\n"
    )
    loaded = load_config(config)
    assert loaded.robustness.extractors == ("suv_stats:roi=spine", "radiomics:roi=spine")
    assert (loaded.request.robust_perturbation, loaded.request.robust_repeats) == ("volume:+1mm,noise:0.1", 3)
    config.write_text(config.read_text().replace("repeats: 3", "repeat: 3"))
    with pytest.raises(Exception, match="unknown robustness key 'repeat'"):
        load_config(config)
