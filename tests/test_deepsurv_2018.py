"""The DeepSurv paper's cohorts (``bench.data.deepsurv_2018``) and a grid's published values on the page.

The files are the repository's copies (``tests/data/deepsurv_2018``), found through ``$BENCH_DATA_DIR``, so nothing
is downloaded. The expected sizes and event counts are the data README's table; the expected C-index is the
paper's (Katzman et al. 2018), never a number this code produced.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from data_paths import DATA, DEEPSURV

from bench.data.datasets import load_cohort
from bench.data.deepsurv_2018 import COHORTS, fetch
from bench.errors import DataError, UsageError
from bench.protocol.grid import grid_published, load_config
from bench.protocol.splits import load_split
from bench.testing import run_cli

# dataset -> (train n, train events, test n, test events, covariates), as the data README lists them
SIZES = {
    "deepsurv_whas": (1310, 552, 328, 138, 6),
    "deepsurv_support": (7098, 4823, 1775, 1213, 14),
    "deepsurv_metabric": (1523, 887, 381, 216, 9),
    "rotterdam_gbsg": (1546, 968, 686, 299, 7),
}
REPO = Path(__file__).resolve().parents[1]
PUBLISHED_CPH = 0.6580  # the paper's Cox model on Rotterdam -> GBSG


@pytest.fixture
def paper_data(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BENCH_DATA_DIR", str(DATA))  # the cohorts read $BENCH_DATA_DIR/deepsurv_2018
    return DEEPSURV


@pytest.mark.parametrize("name", sorted(SIZES))
def test_each_file_reads_with_its_sizes_and_events(paper_data: Path, name: str) -> None:
    n_train, e_train, n_test, e_test, d = SIZES[name]
    cohort = load_cohort(name)
    assert cohort.clinical.shape == (n_train + n_test, d)
    assert int(cohort.event.sum()) == e_train + e_test
    assert all(spec.kind == "numeric" for spec in cohort.columns.values())
    assert cohort.default_split == "paper" and cohort.policy.horizons[-1] <= cohort.time.max()


@pytest.mark.parametrize("name", sorted(SIZES))
def test_the_paper_split_is_the_files_train_and_test(paper_data: Path, name: str) -> None:
    cohort = load_cohort(name)
    (fold,) = load_split(cohort, "paper").folds(cohort)
    with h5py.File(paper_data / COHORTS[name].file, "r") as h5:
        for part, rows in (("train", fold.train), ("test", fold.test)):
            np.testing.assert_array_equal(cohort.time[rows], h5[part]["t"][:])
            np.testing.assert_array_equal(cohort.event[rows], h5[part]["e"][:].astype(bool))
            np.testing.assert_array_equal(cohort.clinical.to_numpy()[rows], h5[part]["x"][:])


def test_a_file_with_another_sha256_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "deepsurv_2018"
    folder.mkdir()
    changed = bytearray((DEEPSURV / "whas_train_test.h5").read_bytes())
    changed[-1] ^= 1
    (folder / "whas_train_test.h5").write_bytes(bytes(changed))
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=r"whas_train_test\.h5 has sha256 .* not 2ed86f073fdbe34b.*replace it with "
                                        r"https://raw\.githubusercontent\.com/") as error:  # fmt: skip
        load_cohort("deepsurv_whas")
    assert "\n" not in str(error.value)


def test_without_the_data_folder_the_pooch_cache_serves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Second in line: a checked file already in pooch's cache (under $XDG_CACHE_HOME) is used, not downloaded."""
    cached = tmp_path / "cache" / "prognosis-bench" / "deepsurv_2018"
    cached.mkdir(parents=True)
    shutil.copy(DEEPSURV / "gbsg_cancer_train_test.h5", cached)
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert fetch(COHORTS["rotterdam_gbsg"]) == cached / "gbsg_cancer_train_test.h5"
    assert load_cohort("rotterdam_gbsg").n == 1546 + 686


def test_published_values_belong_to_one_model(tmp_path: Path) -> None:
    config = tmp_path / "grid.yaml"
    config.write_text("dataset: rotterdam_gbsg\nrows:\n"
                      "  - {features: clinical, models: [coxph, rsf], published: {c_index: 0.658}}\n")  # fmt: skip
    with pytest.raises(UsageError, match=r"rows\[0\]: published values belong to one model, but the row names 2"):
        load_config(config)
    config.write_text("dataset: rotterdam_gbsg\nrows:\n  - {features: clinical, models: [coxph], published: 0.658}\n")
    with pytest.raises(UsageError, match=r"published must be a mapping like \{c_index: 0.8179"):
        load_config(config)


def test_coxph_reproduces_the_published_value_and_the_page_shows_it(
    paper_data: Path, tmp_path: Path, tracking_uri: str
) -> None:
    """A plain Cox model on Rotterdam -> GBSG gives the paper's CPH C-index; the page puts the two side by side."""
    config = tmp_path / "gbsg.yaml"
    config.write_text(
        "dataset: rotterdam_gbsg\nbootstrap: 20\nrows:\n"
        f"  - {{features: clinical, models: [coxph], published: {{c_index: {PUBLISHED_CPH}, source: paper CPH}}}}\n"
    )
    page = tmp_path / "gbsg.md"
    env = {"BENCH_DATA_DIR": str(DATA)}
    result = run_cli("grid", "--config", str(config), "--leaderboard", str(page), "--tracking-uri", tracking_uri,
                     "--quiet", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(page.with_suffix(".json").read_text())["rows"]
    assert row["published"] == {"c_index": PUBLISHED_CPH, "source": "paper CPH"}
    ours = row["metrics"]["c_index"]
    assert abs(ours["mean"] - PUBLISHED_CPH) < 0.005
    shifted = f"[{ours['ci_low'] - PUBLISHED_CPH:+.3f}, {ours['ci_high'] - PUBLISHED_CPH:+.3f}]"
    text = page.read_text()
    assert "## Published values" in text
    line = next(line for line in text.splitlines() if line.startswith("| clinical | coxph |") and "0.6580" in line)
    assert shifted in line and "| yes | paper CPH |" in line
    check = run_cli("leaderboard", "--from", str(page.with_suffix(".json")), "--out", str(page), "--check")
    assert check.returncode == 0, check.stderr


# config -> (dataset, published CPH, published DeepSurv): the paper's table as the data README transcribes it
CONFIGS = {
    "whas": ("deepsurv_whas", 0.8179, 0.8626),
    "support": ("deepsurv_support", 0.5831, 0.6183),
    "metabric": ("deepsurv_metabric", 0.6314, 0.6434),
    "gbsg": ("rotterdam_gbsg", 0.6580, 0.6684),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_shipped_configs_carry_the_papers_table_onto_their_pages(name: str) -> None:
    """Each config's published values land on the coxph and deepsurv rows, and its committed page carries them."""
    dataset, cph, deep = CONFIGS[name]
    config = load_config(REPO / "configs" / "deepsurv_2018" / f"{name}.yaml")
    assert config.request.dataset == dataset and config.request.split == "paper"
    published = {key.model.name: values["c_index"] for key, values in grid_published(config).items()}
    assert published == {"coxph": cph, "deepsurv": deep}
    rows = json.loads((REPO / "leaderboards" / f"{dataset}.json").read_text())["rows"]
    assert {row["model"].split("[")[0]: row["published"]["c_index"] for row in rows if "published" in row} == published
