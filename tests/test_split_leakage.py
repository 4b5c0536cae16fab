"""A split whose two sides share identical rows (covariates, time and event) is said to leak, in one line.

The DeepSurv paper's WHAS file repeats individuals: 1310 training rows hold 640 distinct ones, and 164 distinct
test rows also occur in training (as the data's source notes, tests/data/README.md). GBSG2's
cv5 has no repeated row.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from bench.testing import run_cli

WHAS = Path(__file__).resolve().parent / "data" / "deepsurv_2018" / "whas_train_test.h5"


def _whas_cohort(folder: Path) -> tuple[Path, Path, int, int]:
    """The WHAS file as a tabular manifest and its train/test as a split CSV; the expected leak, counted with
    pandas: test rows identical to some training row, and how many distinct rows they are."""
    parts = []
    with h5py.File(WHAS, "r") as f:
        for part in ("train", "test"):
            x = f[part]["x"][:].astype(float)
            frame = pd.DataFrame(x, columns=[f"x{j}" for j in range(x.shape[1])])
            frame["time"] = f[part]["t"][:].astype(float)
            frame["event"] = f[part]["e"][:].astype(int)
            frame["split"] = part
            parts.append(frame)
    table = pd.concat(parts, ignore_index=True)
    table.insert(0, "patient_id", [f"w{i:04d}" for i in range(len(table))])
    table.drop(columns="split").to_csv(folder / "whas.csv", index=False)
    (folder / "manifest.yaml").write_text(
        "format: 1\nname: whas_paper\ntable: whas.csv\nhorizons: [365, 730, 1095]\ntau: 1095\n"
        "columns: {" + ", ".join(f"x{j}: numeric" for j in range(x.shape[1])) + "}\n"
    )
    table[["patient_id", "split"]].to_csv(folder / "paper.csv", index=False)
    columns = [c for c in table.columns if c not in ("patient_id", "split")]
    train_rows = set(map(tuple, table.loc[table["split"] == "train", columns].astype(str).to_numpy()))
    test = table.loc[table["split"] == "test", columns].astype(str)
    shared = [tuple(r) for r in test.to_numpy() if tuple(r) in train_rows]
    return folder / "manifest.yaml", folder / "paper.csv", len(shared), len(set(shared))


def test_the_whas_split_is_said_to_leak_with_its_counts(tmp_path: Path) -> None:
    manifest, csv, leaking, distinct = _whas_cohort(tmp_path)
    assert leaking > 0 and distinct == 164, "the data README's count"
    made = run_cli("splits", "import", "--dataset", str(manifest), str(csv), "--name", "paper", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    line = (f"warning: {leaking} of 328 test samples of split 'paper' ({distinct} distinct rows) have a row identical "
            "to a training sample's (covariates, time and event)")  # fmt: skip
    assert made.stderr.count("\n") == 1 and made.stderr.startswith(line), made.stderr
    for command in (["splits", "verify", "--dataset", str(manifest), "--name", "paper"],
                    ["data", "check", str(manifest), "--split", "paper"]):  # fmt: skip
        checked = run_cli(*command, cwd=tmp_path)
        assert checked.returncode == 0 and checked.stderr.startswith(line), (command, checked.stderr)


def test_gbsg2_cv5_and_a_fresh_split_of_whas_rows_without_repeats_do_not_warn(tmp_path: Path) -> None:
    checked = run_cli("splits", "verify", "--dataset", "gbsg2", "--name", "cv5", cwd=tmp_path)
    assert checked.returncode == 0 and "warning" not in checked.stderr, checked.stderr
    manifest, _, _, _ = _whas_cohort(tmp_path)
    table = pd.read_csv(tmp_path / "whas.csv")
    distinct = table.drop_duplicates(subset=[c for c in table.columns if c != "patient_id"])
    distinct.to_csv(tmp_path / "whas.csv", index=False)  # every individual once
    made = run_cli("splits", "make", "--dataset", str(manifest), "--name", "cv5", cwd=tmp_path)
    assert made.returncode == 0 and "warning" not in made.stderr, made.stderr
    assert np.isfinite(distinct["time"]).all()
