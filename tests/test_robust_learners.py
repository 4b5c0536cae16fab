"""Learners that struggle: coxnet picks its own penalty, a failing row does not sink the others, warnings are flagged."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.linalg import LinAlgWarning
from sklearn.model_selection import StratifiedKFold

from bench.data.cohort import ColumnSpec
from bench.errors import ModelError
from bench.plugins.specs import resolve_models
from bench.protocol.preprocessing import FoldPreprocessor
from bench.stats.engine import harrell_c
from feature_extractors.base import FeatureBlock
from survival_models.base import SksurvModel
from survival_models.coxnet import CoxNet, CoxNetConfig, partial_log_likelihood
from survival_models.coxph import CoxPH
from survival_models.rsf import RandomSurvivalForest

# --- coxnet chooses its penalty ------------------------------------------------------------------------------


def _correlated(n: int = 250, p: int = 512, seed: int = 0) -> tuple[FeatureBlock, np.ndarray, np.ndarray]:
    """512 columns driven by five factors, rectified like pooled CNN activations, plus a little noise.

    The hazard is known (two of the factors): ``lp`` is the true linear predictor. At coxnet's former
    default (alpha = 0.01) coordinate descent diverges on these ("weights are too large").
    """
    from sksurv.util import Surv

    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n, 5))
    X = np.maximum(factors @ rng.normal(size=(5, p)) - 1.5, 0.0) + 0.01 * rng.normal(size=(n, p))
    lp = 2.0 * factors[:, 0] - 1.0 * factors[:, 1]
    event_time = rng.exponential(np.exp(-lp))
    censor_time = rng.exponential(3 * np.median(event_time), n)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(p)], index=[f"S{i:04d}" for i in range(n)])
    block = FeatureBlock("resnet_like", frame, {c: ColumnSpec("numeric") for c in frame.columns})
    return block, Surv.from_arrays(event_time <= censor_time, np.minimum(event_time, censor_time)), lp


def _folds(y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(StratifiedKFold(5, shuffle=True, random_state=0).split(np.zeros(len(y)), y["event"]))


def test_default_coxnet_fits_512_correlated_features_in_every_fold() -> None:
    block, y, lp = _correlated()
    diverged = 0
    for train, test in _folds(y):
        pre = FoldPreprocessor([block])
        X_train, X_test = pre.fit_transform(train), pre.transform(test)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # and without a numerical warning on the way
            model = CoxNet(random_state=0).with_layout(pre.layout).fit(X_train, y[train])
            risk = model.predict(X_test)
            survival = model.predict_survival_function(X_test, np.quantile(y["time"], [0.25, 0.5]))
        assert np.isfinite(risk).all() and np.isfinite(survival).all()
        path = model.estimator_
        assert not path.coef_[:, 0].any(), "the path starts where every coefficient is zero"
        assert path.alphas_[0] > model.alpha_ == path.alphas_[-1] > 0
        # The known hazard is found: held-out C close to that of the true linear predictor.
        truth = harrell_c(y["event"][test], y["time"][test], lp[test])
        assert harrell_c(y["event"][test], y["time"][test], risk) > truth - 0.1

        if diverged >= 3:  # shown already (a fold's diverging fit costs up to ten seconds)
            continue
        try:  # the former default, for contrast: these data do make it diverge
            CoxNet(CoxNetConfig(alpha=0.01)).fit(X_train, y[train])
        except ModelError as exc:
            diverged += 1
            assert str(exc).startswith("model 'coxnet' (alpha=0.01, l1_ratio=0.5, max_iter=100000, tol=1e-07) failed")
            assert "weights are too large" in str(exc)
    assert diverged >= 3, "the test data no longer reproduce the divergence"


def test_auto_penalty_is_deterministic_and_a_divergent_path_stops_where_it_fitted(monkeypatch) -> None:
    block, y, _ = _correlated(n=150)
    X = FoldPreprocessor([block]).fit_transform(np.arange(150))
    first, again = CoxNet(random_state=3).fit(X, y), CoxNet(random_state=3).fit(X, y)
    assert first.alpha_ == again.alpha_
    np.testing.assert_array_equal(first.predict(X), again.predict(X))

    # A library that fails below some penalty: the choice is made among the penalties above it.
    from sksurv.linear_model import CoxnetSurvivalAnalysis

    floor = first.alpha_ * 1.5
    original = CoxnetSurvivalAnalysis.fit

    def fails_below_floor(self, X, y):
        if self.alphas is not None and min(self.alphas) < floor:
            raise ArithmeticError("Numerical error, because weights are too large. Consider increasing alpha.")
        return original(self, X, y)

    monkeypatch.setattr(CoxnetSurvivalAnalysis, "fit", fails_below_floor)
    stopped = CoxNet(random_state=3).fit(X, y)
    assert floor <= stopped.alpha_ < floor * 1.3  # the smallest penalty that fits (path steps are ~10 %)


def test_partial_likelihood_matches_lifelines_and_breslow_ties_by_hand() -> None:
    import lifelines

    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 2))
    time = rng.exponential(np.exp(-0.7 * x[:, 0]))  # continuous: no ties, so Efron's likelihood is Breslow's
    event = rng.random(80) < 0.7
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "T": time, "E": event})
    fitted = lifelines.CoxPHFitter().fit(frame, "T", "E")
    eta = x @ fitted.params_[["a", "b"]].to_numpy()
    assert partial_log_likelihood(eta[:, None], event, time)[0] == pytest.approx(fitted.log_likelihood_, rel=1e-9)

    # Ties: at beta = 0 every event's risk set is everyone still at risk, tied times included.
    tied = rng.integers(1, 10, 80).astype(float)
    expected = -sum(np.log((tied >= t).sum()) for t in tied[event])
    assert partial_log_likelihood(np.zeros((80, 1)), event, tied)[0] == pytest.approx(expected)


@pytest.mark.slow
def test_auto_penalty_keeps_the_gbsg2_c_index_of_the_former_default() -> None:
    from bench.data.datasets import load_cohort
    from bench.plugins.registry import EXTRACTORS
    from bench.protocol.evaluation import evaluate
    from bench.protocol.splits import load_split

    cohort = load_cohort("gbsg2")
    split = load_split(cohort, "cv5")
    blocks = [EXTRACTORS.load("clinical")().extract(cohort, progress=False)]
    c_index = {}
    for spec in ("coxnet", "coxnet:alpha=0.01"):
        model = resolve_models([spec])[0]
        evaluation = evaluate(cohort, split, blocks, lambda _p, m=model: m.cls(m.config, random_state=0), bootstrap=0)
        c_index[spec] = evaluation.metrics["c_index"].mean
    assert abs(c_index["coxnet"] - c_index["coxnet:alpha=0.01"]) < 0.01, c_index


# --- a failing row, a warning row -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`bench grid` in process: rsf fails in its second fold, coxph warns in every fold, coxnet is fine."""
    from bench.cli import main

    tmp = tmp_path_factory.mktemp("robust")
    config = tmp / "grid.yaml"
    board = tmp / "board" / "veterans.md"
    config.write_text(
        yaml.safe_dump(
            {
                "dataset": "veterans",
                "bootstrap": 20,
                "seed": 0,
                "rows": [{"features": "clinical", "models": ["coxph", "rsf", "coxnet:alpha=0.1"]}],
                "baseline": {"extractor": "clinical", "model": "coxph"},
                "leaderboard": str(board),
            }
        )
    )
    calls = {"rsf": 0}

    def rsf_fit(self, X, y):
        calls["rsf"] += 1
        if calls["rsf"] == 2:
            raise ModelError("the forest fell over")
        return SksurvModel.fit(self, X, y)

    def coxph_fit(self, X, y):
        warnings.warn("Ill-conditioned matrix (rcond=1.234567891e-17): result may not be accurate.", LinAlgWarning)
        warnings.warn("this keyword is going away", FutureWarning)  # about the code: passed on, not counted
        return SksurvModel.fit(self, X, y)

    store = tmp / "mlflow.db"
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings(record=True) as passed_on:
        warnings.simplefilter("always")
        mp.setenv("BENCH_CACHE_DIR", str(tmp / "cache"))
        mp.setattr(RandomSurvivalForest, "fit", rsf_fit)
        mp.setattr(CoxPH, "fit", coxph_fit)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["grid", "--config", str(config), "--tracking-uri", f"sqlite:///{store}", "--quiet"])
    return {
        "code": code,
        "stderr": err.getvalue(),
        "board": board,
        "results": json.loads(board.with_suffix(".json").read_text()) if board.with_suffix(".json").exists() else None,
        "store": f"sqlite:///{store}",
        "passed_on": [str(w.message) for w in passed_on],
    }


def test_a_row_failing_in_one_fold_is_named_and_the_others_are_recorded(grid: dict) -> None:
    assert grid["code"] == 1
    wrote, error = grid["stderr"].strip().splitlines()  # the page of the finished rows, then one line of error
    assert wrote.startswith("wrote ") and "Traceback" not in grid["stderr"]
    assert error.startswith("bench: error: 1 of 3 rows failed, 2 recorded: model 'rsf' (n_estimators=200,")
    assert "failed to fit in fold r0f1 of row clinical x rsf: the forest fell over" in error

    rows = {(r["extractor"], r["model"]) for r in grid["results"]["rows"]}
    assert rows == {("clinical", "coxph"), ("clinical", "coxnet[alpha=0.1]")}
    page = grid["board"].read_text()
    assert "| clinical | coxnet[alpha=0.1] |" in page and "| rsf" not in page


def test_mlflow_has_the_finished_rows_and_the_failed_one(grid: dict) -> None:
    from bench.report.tracking import open_store

    mlflow = open_store(grid["store"])
    experiment = mlflow.get_experiment_by_name("veterans")
    runs = mlflow.search_runs([experiment.experiment_id])
    children = {r.data.tags["bench.model"]: r for r in runs if r.data.tags.get("bench.kind") == "combination"}
    assert {m: r.info.status for m, r in children.items()} == {
        "coxph": "FINISHED", "coxnet[alpha=0.1]": "FINISHED", "rsf": "FAILED",
    }  # fmt: skip
    assert "in fold r0f1 of row clinical x rsf: the forest fell over" in children["rsf"].data.tags["bench.error"]
    assert children["rsf"].data.params["model.name"] == "rsf"
    (parent,) = [r for r in runs if r.data.tags.get("bench.kind") == "invocation"]
    assert parent.info.status == "FAILED"

    assert children["coxph"].data.metrics["numerical_warnings"] == 5
    assert children["coxph"].data.tags["bench.warnings"].startswith("LinAlgWarning: Ill-conditioned matrix")
    assert children["coxnet[alpha=0.1]"].data.metrics["numerical_warnings"] == 0


def test_a_row_with_numerical_warnings_is_flagged_on_the_page_and_counted_in_the_results(grid: dict) -> None:
    rows = {r["model"]: r for r in grid["results"]["rows"]}
    assert rows["coxph"]["warnings"] == 5  # one per fold
    # Numbers in the message are rounded, so the text does not depend on the machine's last bits.
    first = "LinAlgWarning: Ill-conditioned matrix (rcond=1.23e-17): result may not be accurate."
    assert rows["coxph"]["first_warning"] == first
    assert "warnings" not in rows["coxnet[alpha=0.1]"], "no key without warnings: older results files stay as they are"

    page = grid["board"].read_text()
    assert "| clinical | coxph (5 warnings) |" in page
    assert f"- clinical x coxph: 5 numerical warnings during fitting (first: {first})" in page
    assert "coxnet[alpha=0.1] (" not in page
    assert "this keyword is going away" in grid["passed_on"], "warnings about the code are not swallowed"

    from bench.testing import run_cli

    check = run_cli("leaderboard", "--from", str(grid["board"].with_suffix(".json")), "--check")
    assert check.returncode == 0, check.stdout + check.stderr  # the counts read back into the same page


def test_pages_without_warnings_are_unchanged() -> None:
    from bench.report.page import page_files
    from bench.report.results import load_results

    repo = Path(__file__).resolve().parents[1]
    for name in ("synthetic_mm", "synthetic_mm_paper"):
        page = repo / "leaderboards" / f"{name}.md"
        results = load_results(page.with_suffix(".json"))
        assert results.rows and all(r.warnings == 0 for r in results.rows), name
        assert page_files(results, page)[page] == page.read_text()
