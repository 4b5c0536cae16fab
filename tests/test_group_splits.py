"""Splits by site: leave one site out, held-out sites, results per site, and a site too small refused.

The cohort is simulated here with a known truth: three sites of 150 patients with hazard exp(x); at sites A and B
x ~ N(0, 1), at site C x ~ N(0, 0.3). Site C's risks are spread three times less, so any model ranks its patients
worse: its C-index is the lowest (about 0.58 against 0.74 in the population).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.meta_analysis import combine_effects

from bench.data.datasets import load_cohort
from bench.protocol.splits import load_split
from bench.stats.meta import random_effects
from bench.testing import run_cli

SPREAD = {"A": 1.0, "B": 1.0, "C": 0.3}


def _cohort(folder: Path, tiny_site: bool = False) -> Path:
    rng = np.random.default_rng(7)
    frames = []
    for site, sd in SPREAD.items():
        x = rng.normal(0.0, sd, 150)
        t = rng.exponential(365.0 / np.exp(x))
        c = rng.uniform(100, 1500, 150)
        frames.append(pd.DataFrame({"x": x, "noise": rng.normal(size=150), "site": site,
                                    "time": np.minimum(t, c).round(1), "event": (t <= c).astype(int)}))  # fmt: skip
    if tiny_site:
        frames.append(pd.DataFrame({"x": [0.1, 0.2, 0.3, 0.4], "noise": 0.0, "site": "D", "time": [100.0, 200, 300, 400],
                                    "event": [1, 0, 0, 0]}))  # fmt: skip
    table = pd.concat(frames, ignore_index=True)
    table.insert(0, "patient_id", [f"p{i:04d}" for i in range(len(table))])
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "sites.csv", index=False)
    (folder / "manifest.yaml").write_text(
        "format: 1\nname: three_sites\ntable: sites.csv\nhorizons: [180, 365, 730]\ntau: 730\nsplits: splits/\n"
        "columns: {x: numeric, noise: numeric, site: {kind: group}}\n"
    )
    return folder / "manifest.yaml"


def test_leave_one_site_out_gives_each_site_once_and_the_page_shows_them(tmp_path: Path) -> None:
    manifest = _cohort(tmp_path / "c")
    made = run_cli("splits", "make", "--dataset", str(manifest), "--name", "by_site", "--by", "site", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    cohort = load_cohort(str(manifest))
    assert "site" not in cohort.clinical.columns and set(cohort.columns) == {"x", "noise"}, "never a feature"
    split = load_split(cohort, "by_site")
    site = dict(zip(cohort.patient_ids, cohort.groups["site"]))
    folds = split.folds(cohort)
    assert len(folds) == 3
    for fold, name in zip(folds, ["A", "B", "C"]):
        assert {site[p] for p in cohort.patient_ids[fold.test]} == {name}, "each site once, whole"
        assert name not in {site[p] for p in cohort.patient_ids[fold.train]}, "no patient crosses"
    verified = run_cli("splits", "verify", "--dataset", str(manifest), "--name", "by_site", cwd=tmp_path)
    assert verified.returncode == 0, verified.stderr

    results = tmp_path / "results.json"
    ran = run_cli("run", "--dataset", str(manifest), "--split", "by_site", "--model", "coxph", "--bootstrap", "200",
                  "--tracking-uri", f"sqlite:///{tmp_path / 'runs.db'}", "--results", str(results), "--quiet",
                  cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    (row,) = json.loads(results.read_text())["rows"]
    per_site = row["per_group"]
    c = {s: per_site[s]["c_index"]["mean"] for s in SPREAD}
    assert c["C"] < min(c["A"], c["B"]) - 0.05, c  # the narrower site ranks worse, as simulated
    for s in SPREAD:
        assert per_site[s]["n"] == 150 and per_site[s]["c_index"]["ci_low"] < c[s] < per_site[s]["c_index"]["ci_high"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs.db'}")
    runs = client.search_runs([client.get_experiment_by_name("three_sites").experiment_id])
    (tracked,) = [r.data.metrics for r in runs if "c_index/site/A" in r.data.metrics]
    assert [tracked[f"c_index/site/{s}"] for s in SPREAD] == pytest.approx([c[s] for s in SPREAD], abs=1e-9)
    assert tracked["c_index/site/C_ci_low"] == pytest.approx(per_site["C"]["c_index"]["ci_low"], abs=1e-9)
    shown = run_cli("leaderboard", "--from", str(results), "--out", str(tmp_path / "b.md"), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    page = (tmp_path / "b.md").read_text()
    assert "## Results per test site" in page and "| rank | extractor | model | site A | site B | site C | range |" in page
    summary = random_effects([c[s] for s in SPREAD], [per_site[s]["c_index"]["se"] ** 2 for s in SPREAD])
    assert f"{summary.estimate:.3f} [{summary.ci_low:.3f}, {summary.ci_high:.3f}]" in page


def test_held_out_sites_train_on_the_others(tmp_path: Path) -> None:
    manifest = _cohort(tmp_path / "c")
    made = run_cli("splits", "make", "--dataset", str(manifest), "--name", "ext", "--by", "site", "--test-groups",
                   "B,C", cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    cohort = load_cohort(str(manifest))
    (fold,) = load_split(cohort, "ext").folds(cohort)
    site = cohort.groups["site"]
    assert set(site[fold.test]) == {"B", "C"} and set(site[fold.train]) == {"A"}


def test_a_site_too_small_is_refused_with_its_counts(tmp_path: Path) -> None:
    manifest = _cohort(tmp_path / "c", tiny_site=True)
    made = run_cli("splits", "make", "--dataset", str(manifest), "--name", "by_site", "--by", "site", cwd=tmp_path)
    assert made.returncode != 0
    assert made.stderr.strip().splitlines()[-1].endswith(
        "site 'D' has 4 patients (1 events); a test site needs at least 10 patients and 2 events: merge it with "
        "another or leave it out of --test-groups"
    ), made.stderr
    ok = run_cli("splits", "make", "--dataset", str(manifest), "--name", "ext", "--by", "site", "--test-groups", "C",
                 cwd=tmp_path)  # fmt: skip
    assert ok.returncode == 0, "D trains, it is never tested"


@pytest.mark.parametrize("estimates, variances", [([0.71, 0.65, 0.58], [9e-4, 1.2e-3, 1.6e-3]),
                                                  ([0.6, 0.61, 0.62, 0.6], [1e-3, 2e-3, 1e-3, 4e-3])])
def test_the_random_effects_summary_is_statsmodels(estimates, variances) -> None:
    """DerSimonian-Laird as statsmodels computes it. Where Cochran's Q is below its degrees of freedom (the second
    case) statsmodels leaves tau² negative; the method truncates it at 0, so the summary is then the fixed-effect
    one and I² is 0."""
    ours = random_effects(estimates, variances)
    reference = combine_effects(np.array(estimates), np.array(variances), method_re="dl")
    truncated = reference.tau2 < 0
    frame = reference.summary_frame().loc["fixed effect" if truncated else "random effect"]
    assert ours.estimate == pytest.approx(frame["eff"], abs=1e-12)
    assert ours.se == pytest.approx(frame["sd_eff"], abs=1e-12)
    assert (ours.ci_low, ours.ci_high) == pytest.approx((frame["ci_low"], frame["ci_upp"]), abs=1e-12)
    assert ours.i2 == pytest.approx(0.0 if truncated else reference.i2, abs=1e-12)
    assert ours.tau2 == pytest.approx(0.0 if truncated else reference.tau2, abs=1e-15)
