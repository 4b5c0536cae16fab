"""``bench robustness`` on the 51 real IBSI soft-tissue-sarcoma PET studies with their tumour masks (a cohort of
images only: no outcome is read): ICCs equal pingouin's, the page and its files regenerate byte for byte at 1 and 2
workers and are checked by ``--check-all``, pure noise has an ICC near 0 and features of the image alone an ICC of 1
under mask-only perturbations, MLflow runs of kind robustness, and bad input in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest

from bench.protocol.robustness_run import RobustnessRequest, measure
from bench.report.robustness import load_robustness, page_text, results_of, summarise
from bench.testing import run_cli, subset_manifest

from data_paths import STS_MANIFEST
from icc_reference import pingouin_icc


@pytest.fixture(scope="module")
def sts_radiomics(tmp_path_factory: pytest.TempPathFactory):
    """Radiomics of the 51 studies and 5 versions of each, the tumour grown or shrunk by one voxel."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_CACHE_DIR", str(cache))
        request = RobustnessRequest(str(STS_MANIFEST), ("radiomics:roi=tumour",), "volume:+-1vox", 5)
        cohort, measured = measure(request)
    return cohort, measured, request


def test_icc_and_ci_equal_pingouin_on_radiomics_of_51_real_pet_studies(sts_radiomics) -> None:
    cohort, (m,), _ = sts_radiomics
    assert cohort.n == 51 and m.versions.values.shape[:2] == (51, 6)
    names = m.versions.names
    assert len(m.iccs) >= 80, "every radiomics feature that varies has an ICC"
    for f in m.iccs:
        reference = pingouin_icc(m.versions.values[:, :, names.index(f.name)])
        assert (f.icc, f.ci_low, f.ci_high) == pytest.approx(reference, abs=1e-10), f.name
    shape = m.versions.values[:, :, names.index("pet_original_shape_VoxelVolume")]
    moved = shape[:, 1:] / shape[:, :1]
    assert (moved > 1).any() and (moved < 1).any(), "one voxel either way: grown in some versions, shrunk in others"


def test_the_page_lists_radiomics_per_class(sts_radiomics, tmp_path: Path) -> None:
    cohort, measured, request = sts_radiomics
    results = results_of(cohort.name, measured, request, "bench robustness ...")
    (e,) = results.extractors
    assert e.classes() == ["firstorder", "glcm", "glrlm", "glszm", "shape"]
    text = page_text(results, tmp_path / "ibsi_sts.robustness.md")
    for c in e.classes():
        s = summarise([f for f in e.features if f.feature_class == c])
        assert f"| &nbsp;&nbsp;{c} | {s.n} | {s.median:.3f} |" in text
    assert "51 studies" in text and "`volume:+-1vox`" in text
    assert "| regenerate | `bench robustness ...` |" in text and "| made with | prognosis-bench " in text


def _sts_subset(tmp_path: Path, n: int = 6) -> Path:
    return subset_manifest(STS_MANIFEST, n, tmp_path / "sts", "sts6")


def test_the_page_regenerates_byte_for_byte_at_one_and_two_workers_and_check_all_guards_it(tmp_path: Path,
                                                                                           tracking_uri: str) -> None:  # fmt: skip
    manifest = _sts_subset(tmp_path)
    outputs = {}
    for workers in (1, 2):
        folder = tmp_path / f"w{workers}"
        result = run_cli(
            "robustness", "--dataset", str(manifest), "--extractor", "radiomics:roi=tumour,feature_classes=firstorder",
            "example_noise:per_study=true", "--perturb", "volume:+-1vox,contour:2", "--repeats", "2",
            "--workers", str(workers), "--results", str(folder / "sts6.robustness.json"), "--quiet",
            "--tracking-uri", tracking_uri,
            env={"BENCH_CACHE_DIR": str(tmp_path / f"cache{workers}")},  # each computes every version itself
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        outputs[workers] = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
    assert sorted(outputs[1]) == ["sts6.robustness.csv", "sts6.robustness.json", "sts6.robustness.md",
                                  "sts6.robustness.svg"]  # fmt: skip
    for name in outputs[1]:
        if name.endswith(".json"):  # the command quoted differs by --results; everything else is the same
            one, two = (json.loads(outputs[w][name]) for w in (1, 2))
            one.pop("source"), two.pop("source")
            assert one == two
        else:
            one, two = (str(tmp_path / f"w{w}").encode() for w in (1, 2))  # the --results path quoted on the page
            assert outputs[1][name].replace(one, two) == outputs[2][name], name
    folder = tmp_path / "w1"
    assert run_cli("leaderboard", "--check-all", str(folder)).returncode == 0
    page = folder / "sts6.robustness.md"
    page.write_text(page.read_text().replace("median ICC", "median"))
    stale = run_cli("leaderboard", "--check-all", str(folder))
    assert stale.returncode == 1 and "sts6.robustness.md: out of date" in stale.stdout
    shutil.copy(tmp_path / "w2" / "sts6.robustness.md", page)
    page.write_text(page.read_text().replace(str(tmp_path / "w2"), str(tmp_path / "w1")))
    (folder / "sts6.robustness.svg").write_text("<svg/>")
    stale = run_cli("leaderboard", "--check-all", str(folder))
    assert stale.returncode == 1 and "sts6.robustness.svg differs from the regenerated figure" in stale.stdout

    runs = mlflow.MlflowClient(tracking_uri).search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(tracking_uri).search_experiments()],
        "tags.`bench.kind` = 'robustness'")  # fmt: skip
    assert len(runs) == 4, "one run per extractor and invocation"
    results = load_robustness(tmp_path / "w1" / "sts6.robustness.json")
    medians = {e.label: summarise(e.features).median for e in results.extractors}
    assert sorted({r.data.params["extractor"] for r in runs}) == sorted(medians)
    for run in runs:
        assert run.data.metrics["icc_median"] == pytest.approx(medians[run.data.params["extractor"]])


def test_pure_noise_has_an_icc_near_zero(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    manifest = subset_manifest(STS_MANIFEST, 20, tmp_path / "sts", "sts20")
    # every version a different study (volume:+-1vox alone has two outcomes, and equal studies draw equal noise)
    request = RobustnessRequest(str(manifest), ("example_noise:per_study=true,n_features=50",), "contour:3", 4)
    _, (m,) = measure(request)
    values = [f.icc for f in m.iccs]
    assert len(values) == 50 and abs(float(np.median(values))) < 0.05
    covering = [f.ci_low <= 0 <= f.ci_high for f in m.iccs]
    # 95 % CIs: about 47 of 50 contain the true 0; fewer than 43 has probability < 0.1 % (binomial)
    assert sum(covering) >= 43, f"only {sum(covering)} of 50 noise features' CIs contain 0"


def test_features_of_the_image_alone_do_not_move_with_the_mask(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    manifest = _sts_subset(tmp_path, 8)
    specs = ("suv_stats:roi=tumour,region=image", "suv_stats:roi=tumour")
    _, (image, roi) = measure(RobustnessRequest(str(manifest), specs, "volume:+-1vox,contour:4", 3))
    assert {f.name for f in image.iccs} == {"suv_max", "suv_mean", "mtv_ml", "tlg"}
    assert all(f.icc == pytest.approx(1.0, abs=1e-12) for f in image.iccs), "the mask moved, the image did not"
    values = image.versions.values
    assert np.array_equal(values, np.repeat(values[:, :1], values.shape[1], axis=1)), "every version the same"
    assert any(f.icc < 0.999 for f in roi.iccs), "the same statistics inside the ROI move with it"
    _, (noisy,) = measure(RobustnessRequest(str(manifest), specs[:1], "noise:0.5", 2))
    assert all(f.icc < 1 - 1e-9 for f in noisy.iccs if f.name != "mtv_ml"), "noise in the image moves them"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--extractor", "radiomics:roi=tumour", "--results", "out.json"], "name it <cohort>.robustness.json"),
        (["--extractor", "radiomics:roi=tumour+suv_stats:roi=tumour"], "robustness is measured per extractor"),
        (["--extractor", "radiomics:roi=liver"], "extractor 'radiomics[roi=liver]' cannot run on 6 of 6 studies"),
        (["--extractor", "radiomics:roi=tumour", "--perturb", "blur:2"], "perturbation 'blur:2' is not one of"),
        (["--extractor", "radiomics:roi=tumour", "--repeats", "0"], "--repeats must be at least 1"),
        (["--extractor", "radiomics:roi=tumour", "--retest"], "one sample per patient: --retest needs"),
        (["--extractor", "clinical"], "computes the whole cohort at once"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str, tracking_uri: str) -> None:
    manifest = _sts_subset(tmp_path)
    result = run_cli("robustness", "--dataset", str(manifest), *args, "--quiet", "--tracking-uri", tracking_uri,
                     cwd=tmp_path, env={"BENCH_CACHE_DIR": str(tmp_path / "cache")})  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out.json").exists()


def test_the_committed_page_measures_radiomics_per_class_and_two_random_init_networks() -> None:
    results = load_robustness(Path(__file__).parents[1] / "leaderboards" / "ibsi_sts.robustness.json")
    assert (results.dataset, results.units, results.repeats, results.perturbation) == ("ibsi_sts", 51, 5,
                                                                                       "volume:+-1vox")  # fmt: skip
    by_name = {e.label.split("[")[0]: e for e in results.extractors}
    assert set(by_name) == {"radiomics", "timm", "medsam2_memory"}
    assert by_name["radiomics"].classes() == ["firstorder", "glcm", "glrlm", "glszm", "shape"]
    assert not by_name["radiomics"].random_init
    for network in ("timm", "medsam2_memory"):
        assert by_name[network].random_init and "random-init" in by_name[network].label, "labelled as a control"
    text = (Path(__file__).parents[1] / "leaderboards" / "ibsi_sts.robustness.md").read_text()
    assert text.count("random-init]**") == 2
