"""Elastic-net penalised Cox model (scikit-survival's ``CoxnetSurvivalAnalysis``).

Given ``alpha``, one fit at that penalty. Left unset (the default), the penalty is chosen on the
training rows as R's ``cv.glmnet`` chooses it: a path of penalties from ``alpha_max`` (the smallest at
which every coefficient is zero) down to a fraction of it, scored by inner k-fold cross-validated
partial likelihood (Verweij and van Houwelingen's, glmnet's default for the Cox model), then one refit
on all training rows at the best penalty (``alpha_``).

Coordinate descent can diverge at small penalties on many correlated features ("weights are too
large"). The path then stops at the last penalty that fitted and the choice is made among those, so an
unset ``alpha`` always fits.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.errors import ModelError
from survival_models.base import Interval, SksurvModel, option

# Automatic penalty (alpha unset). Module constants, not options: the options are part of run names.
AUTO_N_ALPHAS = 50  # penalties on the path, log-spaced from alpha_max down
AUTO_MIN_RATIO = 1e-4  # smallest penalty / alpha_max with more rows than features (glmnet's lambda.min.ratio)
AUTO_MIN_RATIO_WIDE = 1e-2  # the same with at least as many features as rows
AUTO_INNER_FOLDS = 3  # inner CV folds, stratified by event, drawn from the model's random_state

# Numbers that end a path early: the penalties before them are kept.
PATH_ERRORS = (ArithmeticError, ValueError)


@dataclass(frozen=True)
class CoxNetConfig:
    # penalty strength, on standardised features; unset: chosen by inner CV on the training rows
    alpha: float | None = option(None, Interval(0, None, "neither"))
    l1_ratio: float = option(0.5, Interval(0, 1, "right"))  # 1 is the lasso, towards 0 the ridge
    max_iter: int = option(100_000, Interval(1, None, "left"))  # coordinate-descent iterations at most
    tol: float = option(1e-7, Interval(0, None, "left"))  # convergence tolerance


class CoxNet(SksurvModel):
    name = "coxnet"
    version = "1"
    imports = ("sksurv.linear_model", "sklearn.model_selection")
    Config = CoxNetConfig

    def make_estimator(self, alphas: Any = None, baseline: bool = True) -> Any:
        """The estimator for ``alphas`` (default: the configured alpha alone)."""
        from sksurv.linear_model import CoxnetSurvivalAnalysis

        c = self.config
        return CoxnetSurvivalAnalysis(
            alphas=[c.alpha] if alphas is None else alphas,
            l1_ratio=c.l1_ratio,
            max_iter=c.max_iter,
            tol=c.tol,
            fit_baseline_model=baseline,
        )

    def fit(self, X: np.ndarray, y: np.ndarray) -> CoxNet:
        if self.config.alpha is not None:
            super().fit(X, y)
            self.alpha_ = self.config.alpha
            return self
        try:
            alphas = self._path(X, y)
            best = self._best_alpha(X, y, alphas)
            # The refit ends its path at the chosen penalty, so the estimator's defaults (its last alpha) are it.
            self.estimator_ = self._fit_path(X, y, alphas[: best + 1], baseline=True)
        except PATH_ERRORS as exc:
            raise ModelError.of(self, "failed to fit", str(exc)) from exc
        if self.estimator_ is None:
            raise ModelError.of(self, "failed to fit", f"no penalty on the path fitted, not even alpha_max {alphas[0]}")
        self.alpha_ = float(self.estimator_.alphas_[-1])
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator_.predict(X, alpha=self.alpha_), dtype=float)

    def degenerate_reason(self) -> str:
        """The null model: the penalty left no coefficient (on the automatic path, alpha_max was the best)."""
        coef = np.asarray(self.estimator_.coef_)
        if np.any((coef[:, -1] if coef.ndim == 2 else coef) != 0):  # the last penalty of the fit is the chosen one
            return ""
        at_max = self.config.alpha is None and len(self.estimator_.alphas_) == 1  # the path's first penalty won
        return f"coxnet chose {'alpha_max' if at_max else f'alpha={self.alpha_:.3g}'}: no feature selected"

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "alpha": trial.suggest_float("alpha", 1e-4, 1.0, log=True),
            "l1_ratio": trial.suggest_float("l1_ratio", 0.05, 1.0),
        }

    # ------------------------------------------------------------------------------ automatic penalty

    def _path(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """AUTO_N_ALPHAS penalties, log-spaced from alpha_max down to its AUTO_MIN_RATIO(_WIDE)."""
        from sksurv.linear_model import CoxnetSurvivalAnalysis

        # scikit-survival computes alpha_max when it makes the path itself: a two-step path gives it cheaply.
        probe = CoxnetSurvivalAnalysis(n_alphas=2, alpha_min_ratio=0.99, l1_ratio=self.config.l1_ratio)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="all coefficients are zero")
            alpha_max = float(probe.fit(X, y).alphas_[0])
        ratio = AUTO_MIN_RATIO if X.shape[0] > X.shape[1] else AUTO_MIN_RATIO_WIDE
        return alpha_max * np.geomspace(1.0, ratio, AUTO_N_ALPHAS)

    def _best_alpha(self, X: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> int:
        """Index of the penalty with the best inner-CV partial likelihood; ties go to the larger penalty."""
        event, time = y[y.dtype.names[0]].astype(bool), y[y.dtype.names[1]].astype(float)
        scores = np.zeros(len(alphas))
        usable = len(alphas)  # penalties every inner fold fitted (a path can stop early)
        for train in self._inner_train_rows(event):
            estimator = self._fit_path(X[train], y[train], alphas, baseline=False)
            if estimator is None:  # e.g. no event in these rows: this fold says nothing
                continue
            fitted = len(estimator.alphas_)
            usable = min(usable, fitted)
            eta = X @ estimator.coef_
            # Grouped CV partial likelihood: all rows minus the inner-training rows, at the inner-training fit.
            scores[:fitted] += partial_log_likelihood(eta, event, time) - partial_log_likelihood(
                eta[train], event[train], time[train]
            )
        return int(np.argmax(scores[:usable]))

    def _inner_train_rows(self, event: np.ndarray) -> list[np.ndarray]:
        from sklearn.model_selection import KFold, StratifiedKFold

        seed = self.random_state if self.random_state is not None else 0
        n_events = int(event.sum())
        if min(n_events, len(event) - n_events) >= AUTO_INNER_FOLDS:
            folds = StratifiedKFold(AUTO_INNER_FOLDS, shuffle=True, random_state=seed).split(event, event)
        else:  # too few events (or censored rows) to stratify by
            folds = KFold(AUTO_INNER_FOLDS, shuffle=True, random_state=seed).split(event)
        return [train for train, _ in folds]

    def _fit_path(self, X: np.ndarray, y: np.ndarray, alphas: np.ndarray, baseline: bool) -> Any:
        """The estimator fitted on the longest leading part of ``alphas`` that fits; None if none does.

        A path that fails at one penalty fails at every longer one (each step starts from the one before),
        so the longest part that fits is found by bisection.
        """

        def attempt(k: int) -> Any:
            estimator = self.make_estimator(alphas[:k], baseline)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="all coefficients are zero")  # alpha_max, by design
                return estimator.fit(X, y)

        try:
            return attempt(len(alphas))
        except PATH_ERRORS:
            pass
        fits, fitted, failed = None, 0, len(alphas)
        while failed - fitted > 1:
            middle = (fitted + failed) // 2
            try:
                fits, fitted = attempt(middle), middle
            except PATH_ERRORS:
                failed = middle
        return fits


def partial_log_likelihood(eta: np.ndarray, event: np.ndarray, time: np.ndarray) -> np.ndarray:
    """Cox's log partial likelihood (Breslow's ties) of each column of the linear predictors ``eta`` (n, k)."""
    order = np.argsort(-time, kind="mergesort")
    eta, event, time = eta[order], event[order], time[order]
    log_risk = np.logaddexp.accumulate(eta, axis=0)  # log of sum(exp(eta)) over the rows at or after each time
    last_tied = np.searchsorted(-time, -time, side="right") - 1  # tied times share the whole tie group
    return (eta - log_risk[last_tied])[event].sum(axis=0)
