"""Helpers for testing the harness and plugins for it: a small cohort with a known hazard, the CLI in a subprocess.

Plugin authors can use them too: ``from bench.testing import make_cohort``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.cohort import Cohort, ColumnSpec, EvaluationPolicy


def make_cohort(n_patients: int = 60, samples_per_patient: int = 1, seed: int = 0, name: str = "toy") -> Cohort:
    """A small cohort with a known linear hazard; several samples per patient when asked."""
    rng = np.random.default_rng(seed)
    n = n_patients * samples_per_patient
    patients = np.repeat([f"P{i:03d}" for i in range(n_patients)], samples_per_patient)
    age = rng.normal(60, 10, n_patients)
    stage = rng.choice(["I", "II", "III"], n_patients)
    sex = rng.choice(["F", "M"], n_patients)
    lp = 0.04 * (age - 60) + 0.6 * (stage == "III")
    truth = pd.DataFrame(
        {"lp": lp, "lp_clinical": 0.04 * (age - 60), "lp_imaging": 0.6 * (stage == "III")},
        index=[f"P{i:03d}" for i in range(n_patients)],
    )
    event_time = rng.exponential(1000 * np.exp(-lp))
    censor_time = rng.uniform(200, 2500, n_patients)
    # Several samples of one patient share the patient's covariates and outcome.
    age, stage, sex, event_time, censor_time = (
        np.repeat(v, samples_per_patient) for v in (age, stage, sex, event_time, censor_time)
    )
    clinical = pd.DataFrame(
        {"age": age, "stage": stage, "sex": sex},
        index=[f"S{i:04d}" for i in range(n)],
    )
    return Cohort(
        name=name,
        clinical=clinical,
        time=np.minimum(event_time, censor_time).round(),
        event=event_time <= censor_time,
        columns={
            "age": ColumnSpec("numeric"),
            "stage": ColumnSpec("ordinal", ("I", "II", "III")),
            "sex": ColumnSpec("categorical", ("F", "M")),
        },
        policy=EvaluationPolicy(horizons=(100.0, 300.0), tau=500.0),
        patient_ids=patients,
        truth=truth,  # the known linear predictor, as a synthetic cohort carries it
    )


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """``bench ...`` in a subprocess, as a user runs it."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=600
    )


def count_extractions(monkeypatch, extractor_cls: type) -> list[str]:
    """Record the sample id of every patient ``extractor_cls`` really extracts (cache hits are not counted)."""
    calls: list[str] = []
    real = extractor_cls.extract_patient

    def counting(self, record):
        calls.append(record.sample_id)
        return real(self, record)

    monkeypatch.setattr(extractor_cls, "extract_patient", counting)
    return calls


def subset_manifest(manifest: Path, n: int, folder: Path, name: str) -> Path:
    """The first ``n`` studies of a manifest cohort, as a cohort of their own in ``folder`` (named ``name``)."""
    import yaml

    header = yaml.safe_load(manifest.read_text())
    table = pd.read_csv(manifest.parent / header["table"], dtype=str, keep_default_na=False).head(n)
    for column in [c for c in table.columns if c in ("pet", "ct") or c.startswith("mask_")]:
        table[column] = [str(manifest.parent / v) if v else v for v in table[column]]
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "patients.csv", index=False)
    header.update(name=name, table="patients.csv")
    header.pop("truth", None)
    (folder / "manifest.yaml").write_text(yaml.safe_dump(header, sort_keys=False))
    return folder / "manifest.yaml"
