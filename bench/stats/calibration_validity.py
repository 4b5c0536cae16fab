"""Do the calibration intervals mean what they say? The calibration part of ``bench validate-statistics``.

Cohorts come from the C-index study's model (``bench.stats.validity.simulate``): ``lp ~ N(0, 1)``, exponential
event times with cumulative hazard ``H0(t) exp(lp)``, ``H0(t) = log(2) t / 365 days``, censoring uniform on
[0, 1500] days and independent of lp. Each cohort of n test patients is scored at the horizon h = 365 days by
three models, whose population values are known by construction:

- **true**: ``S(h | x) = exp(-H0(h) exp(lp))``. Its O/E is exactly 1: with censoring independent of lp,
  1 - KM(h) estimates the marginal risk ``E[1 - S(h | X)]``, which is also the mean predicted risk. Its slope is
  exactly 1: ``cloglog(1 - S(h | x)) = log H0(h) + lp``, and lp's Cox coefficient is 1.
- **doubled** cumulative hazard, ``S(h | x)^2``: overpredicts risk, O/E below 1 (its population value by
  quadrature). Its cloglog is the true one plus log 2, a shift that leaves a Cox coefficient unchanged: its slope
  is exactly 1, and on a replicate the true model's.
- **halved** linear predictor, ``exp(-H0(h) exp(lp / 2))``: too little spread, slope exactly 2 (on a replicate
  twice the true model's); its O/E is near 1 but not 1 (by quadrature).

"On a replicate" holds but where the metrics' clipping of risks at 1 - 1e-10 moves a patient's cloglog: the
doubled model's patients with lp above 2.81 (0.25 % of them), the true model's above 3.50 (0.02 %); the slopes then
differ by a few thousandths.

O/E and slope are computed as ``bench.stats.calibration`` computes them for a leaderboard fold (the tests check
that they are the same numbers), on B bootstrap replicates of the cohort, with percentile 95 % intervals. Only O/E
and slope are studied: only theirs have a population value that the intervals should cover (ICI and
D-calibration are bounded below, see ``render_calibration``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.integrate import quad
from scipy.stats import binomtest, norm
from tqdm.auto import tqdm

from bench.stats.calibration import CLIP, cloglog
from bench.stats.validity import CENSOR_MAX_DAYS, MEDIAN_DAYS, Rate, StudyConfig, _replicate_counts, simulate
from bench.stats.weighted_fits import cox_fit, kaplan_meier_at

HORIZON_DAYS = 365.0
BASELINE_HAZARD = math.log(2) * HORIZON_DAYS / MEDIAN_DAYS  # H0(h): the true model's median is h at lp = 0
MODELS = ("true", "doubled", "halved")
METRICS = ("oe", "slope")
LABELS = {"oe": "O/E", "slope": "the slope"}
COVERAGE_TARGET = (0.93, 0.97)
DETECTION_TARGET = 0.80
DETECTED = {"doubled": "oe", "halved": "slope"}  # the miscalibration each wrong model must be caught by


def survival_at_horizon(lp: np.ndarray) -> dict[str, np.ndarray]:
    """Each model's predicted S(h | x) of patients with true linear predictors ``lp``."""
    lp = np.asarray(lp, dtype=float)
    true = np.exp(-BASELINE_HAZARD * np.exp(lp))
    return {"true": true, "doubled": true**2, "halved": np.exp(-BASELINE_HAZARD * np.exp(lp / 2))}


def clipped_above(factor: float) -> float:
    """The lp above which a model with cumulative hazard ``factor H0(h) exp(lp)`` predicts a risk that the metrics
    clip at 1 - CLIP (where S(h | x) < CLIP)."""
    return math.log(-math.log(CLIP) / (factor * BASELINE_HAZARD))


def _expected(f) -> float:
    """E[f(Z)] for Z ~ N(0, 1), by quadrature (beyond 12 SD the density is below 1e-31)."""
    return quad(lambda z: f(z) * norm.pdf(z), -12.0, 12.0, epsabs=1e-14, epsrel=1e-12, limit=200)[0]


def population_values() -> dict[str, dict[str, float]]:
    """Each model's population O/E (observed over mean predicted risk, by quadrature) and slope (by construction)."""
    risk = {model: _expected(lambda z, m=model: 1.0 - survival_at_horizon(np.array([z]))[m][0]) for model in MODELS}
    slopes = {"true": 1.0, "doubled": 1.0, "halved": 2.0}
    return {model: {"oe": risk["true"] / risk[model], "slope": slopes[model]} for model in MODELS}


def population_risk() -> float:
    """The share of the population with an event by the horizon: what 1 - KM(h) estimates."""
    return _expected(lambda z: -math.expm1(-BASELINE_HAZARD * math.exp(z)))


def oe_and_slope(
    y: np.ndarray, survival: dict[str, np.ndarray], h: float, counts: np.ndarray
) -> dict[str, dict[str, np.ndarray]]:
    """O/E and calibration slope at ``h`` of each model's S(h | x), per row of ``counts``: the same numbers as
    ``CalibrationMetrics.evaluate``, without the metrics this study does not need (and with the Kaplan-Meier
    estimate, which does not depend on the model, computed once)."""
    time, event = y["time"].astype(float), y["event"].astype(bool)
    observed = 1.0 - kaplan_meier_at(time, event, counts, h)
    total = counts.sum(axis=1)
    out = {}
    for model, s in survival.items():
        risk = np.clip(1.0 - s, CLIP, 1.0 - CLIP)
        with np.errstate(invalid="ignore", divide="ignore"):
            oe = observed / ((counts @ risk) / total)
        fit = cox_fit(time, event, cloglog(risk)[:, None], counts)
        out[model] = {"oe": oe, "slope": np.where(fit.converged, fit.beta[:, 0], np.nan)}
    return out


def _interval(replicates: np.ndarray) -> tuple[float, float]:
    """Percentile 95 % interval of the finite replicates, as the leaderboard's; NaN when none is finite."""
    finite = replicates[np.isfinite(replicates)]
    if not finite.size:
        return math.nan, math.nan
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


@dataclass(frozen=True)
class MetricStudy:
    """One model's O/E or slope over the simulated cohorts."""

    population: float  # its population value
    mean: float  # mean of the cohorts' point estimates
    sd: float  # their SD across cohorts
    covers_one: Rate  # cohorts whose 95 % CI contains 1 (coverage for the true model; 1 - detection otherwise)
    mean_ci_width: float


@dataclass(frozen=True)
class CalibrationReport:
    simulations: int
    n: int
    bootstrap: int
    seed: int
    horizon: float
    population_risk: float  # share with an event by the horizon
    models: dict[str, dict[str, MetricStudy]]  # model -> metric ("oe", "slope") -> its results

    def coverage(self, metric: str) -> Rate:
        """How often the true model's CI contains its population value, 1."""
        return self.models["true"][metric].covers_one

    def detection(self, model: str, metric: str) -> Rate:
        """How often a miscalibrated model's CI excludes 1."""
        covers = self.models[model][metric].covers_one
        return Rate(1.0 - covers.value, covers.mc_error, covers.simulations)

    def shortfalls(self) -> list[str]:
        """The targets the study misses: coverage in [93 %, 97 %], detection at least 80 %."""
        low, high = COVERAGE_TARGET
        missed = [f"coverage of {LABELS[m]} {self.coverage(m)}" for m in METRICS
                  if not low <= self.coverage(m).value <= high]  # fmt: skip
        return missed + [
            f"detection of the {model} model by {LABELS[metric]} {self.detection(model, metric)}"
            for model, metric in DETECTED.items()
            if self.detection(model, metric).value < DETECTION_TARGET
        ]

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "coverage": {m: asdict(self.coverage(m)) for m in METRICS},
            "detection": {f"{model}_{metric}": asdict(self.detection(model, metric))
                          for model, metric in DETECTED.items()},
        }  # fmt: skip


def binomial_interval(rate: Rate) -> tuple[float, float]:
    """Clopper-Pearson 95 % interval of a Monte Carlo proportion."""
    hits = round(rate.value * rate.simulations)
    ci = binomtest(hits, rate.simulations).proportion_ci(0.95, method="exact")
    return float(ci.low), float(ci.high)


def run_calibration_study(config: StudyConfig = StudyConfig(), progress: bool = True) -> CalibrationReport:
    """Coverage of the true model's O/E and slope intervals, and detection of the two miscalibrated models."""
    n, h = config.calibration_n, HORIZON_DAYS
    cohorts = {(model, metric): [] for model in MODELS for metric in METRICS}  # (point, low, high) per cohort
    for s in tqdm(range(config.calibration_simulations), desc="calibration", disable=not progress, leave=False):
        rng = np.random.default_rng([config.seed, 4, s])
        y, lp = simulate(n, rng)
        counts = np.vstack([np.ones(n), _replicate_counts(n, config.bootstrap, rng)])  # row 0: the cohort itself
        values = oe_and_slope(y, survival_at_horizon(lp), h, counts)
        for (model, metric), rows in cohorts.items():
            rows.append((values[model][metric][0], *_interval(values[model][metric][1:])))
    population = population_values()
    models = {model: {metric: _summary(population[model][metric], cohorts[model, metric]) for metric in METRICS}
              for model in MODELS}  # fmt: skip
    return CalibrationReport(config.calibration_simulations, n, config.bootstrap, config.seed, h, population_risk(),
                             models)  # fmt: skip


def _summary(population: float, cohorts: list[tuple[float, float, float]]) -> MetricStudy:
    point, low, high = (np.array(column) for column in zip(*cohorts))
    return MetricStudy(
        population=population,
        mean=float(np.nanmean(point)),
        sd=float(np.nanstd(point, ddof=1)) if len(point) > 1 else math.nan,
        covers_one=Rate.of((low <= 1.0) & (1.0 <= high)),  # a NaN interval covers nothing
        mean_ci_width=float(np.nanmean(high - low)),
    )


# The section's fixed part: what each metric is, how the page reports it, what it is checked against.
DEFINITIONS = [
    "## Calibration and clinical utility",
    "",
    "Every leaderboard row also carries calibration and net benefit (`bench/stats/calibration.py`), computed per",
    "test fold from each patient's predicted survival at the policy's horizons, `S(h | x)`, and at their own time,",
    "`S(T_i | x_i)`, for every bootstrap replicate at once (a replicate is the multiplicity with which each test",
    "patient was drawn). The predicted risk is `1 - S(h | x)`, clipped to [1e-10, 1 - 1e-10] as lifelines clips it,",
    "and `cloglog(risk) = log(-log S(h | x))`.",
    "",
    "### Definitions",
    "",
    "- **O/E** at h: the observed risk, 1 - Kaplan-Meier of the test fold at h, over the mean predicted risk.",
    "  1 is calibrated in the large; below 1 the model overpredicts risk.",
    "- **Calibration slope** at h: the coefficient of `cloglog(risk)` in a Cox model of the fold's outcome",
    "  (Breslow ties), fitted by Newton's method on every replicate. 1 is ideal; above 1 the predictions are",
    "  too close together, below 1 too spread out (overfitting).",
    "- **ICI** at h (Austin, Harrell and van Klaveren 2020): a Cox model on a restricted cubic spline of",
    "  `cloglog(risk)` (3 knots at the fold's 10th, 50th and 90th percentiles, the same for every replicate;",
    "  Harrell's basis, scaled as `Hmisc::rcspline.eval`) smooths the observed risk `1 - exp(-H0(h) exp(f))` with",
    "  Breslow's H0; the ICI is the mean absolute difference between predicted and smoothed observed risk, E50",
    "  and E90 its median and 90th percentile (the leaderboard carries the ICI). With fewer than 3 distinct",
    "  knots the smoother is linear in `cloglog(risk)`, and with a single prediction value it is Breslow's H0",
    "  alone.",
    "- **D-calibration** (Haider et al. 2020): the chi-square statistic of `S(T_i | x_i)` over 10 equal bins of",
    "  [0, 1] against the uniform, and its p (9 degrees of freedom). An event adds 1 to the bin of its `S`; a",
    "  censored patient with `S = s` adds `(s - lower edge) / s` to its own bin and `1 / (10 s)` to each bin",
    "  below (its remaining probability spread uniformly over [0, s]); at `s = 1` it adds 1/10 to every bin.",
    "- **Net benefit** at h and threshold probability p (Vickers et al. 2008, survival form): the patients with",
    "  risk >= p are treated; `NB = t (1 - S_t(h)) - t S_t(h) p / (1 - p)`, with `t` the share treated and `S_t`",
    "  the Kaplan-Meier estimate of the treated; NB is 0 when nobody is treated. Treat-all is the same with",
    "  everyone treated (`(1 - S(h)) - S(h) p / (1 - p)`, S the fold's Kaplan-Meier), treat-none is 0, and",
    "  the gain is the model's net benefit minus treat-all's on the same replicate. The policy declares the",
    "  thresholds (0.05 to 0.50 by 0.05 unless a dataset says otherwise) and the two the page's table shows.",
    "- A value is NaN, with its reason, where it is undefined: the horizon is past the replicate's follow-up",
    "  (for net benefit, past the treated patients' follow-up while their Kaplan-Meier estimate is above 0), the",
    "  replicate has no event, every prediction is the same (no slope), or the Cox fit does not converge.",
    "",
    "### How the page reports them",
    "",
    "- The headline is the mean of the fold values, like every metric; its interval is the percentile 95 % CI",
    "  of the replicate fold means.",
    "- ICI and the D-calibration statistic are bounded below by 0, and a bootstrap replicate duplicates",
    "  patients, which adds spurious miscalibration (duplicated patients make the smoothed curve and the",
    "  histogram lumpier): their intervals are biased upward, and D-calibration's p downward. The percentile",
    "  interval of such a statistic may not even contain its point estimate; read them as a range of",
    "  replicate values, not as an interval for the population value. O/E and the slope are not bounded at",
    "  their ideal value, 1, and the study below checks their intervals.",
    "",
    "### References",
    "",
    "The definitions are checked against independent implementations: the calibration slope against",
    "scikit-survival's `CoxPHSurvivalAnalysis(ties='breslow')` on `cloglog(risk)`, ICI and E50 against",
    "lifelines' `survival_probability_calibration`, D-calibration against SurvivalEVAL's `d_calibration`, and",
    "net benefit and treat-all against dcurves' `dca` with a time to outcome.",
    "",
]


def _with_interval(rate: Rate) -> str:
    low, high = binomial_interval(rate)
    return f"{rate}; 95 % CI {100 * low:.1f}-{100 * high:.1f} %"


def _estimates(study: MetricStudy, population_format: str) -> str:
    return (f"{study.mean:.3f} ({study.sd:.3f}) | {study.population:{population_format}} | "
            f"{study.mean_ci_width:.3f}")  # fmt: skip


def render_calibration(report: CalibrationReport) -> str:
    """The calibration section of ``docs/statistics.md``: the definitions, their references, the study."""
    m = report.models
    low, high = COVERAGE_TARGET
    coverage_target = f"{100 * low:.0f}-{100 * high:.0f} %"
    detection_target = f"at least {100 * DETECTION_TARGET:.0f} %"
    missed = report.shortfalls()
    doubled_oe, halved_oe = m["doubled"]["oe"].population, m["halved"]["oe"].population
    design = [
        "### Validity study",
        "",
        "Do the 95 % intervals of O/E and slope cover the true model's value, 1, 95 % of the time, and do they",
        "exclude 1 for a miscalibrated model? A simulation with known truth answers it, with the leaderboard's",
        "O/E and slope (the same code) and its bootstrap.",
        "",
        "- Model: the C-index study's (`lp ~ N(0, 1)`, exponential event times with cumulative hazard",
        f"  `H0(t) exp(lp)`, `H0(t) = log(2) t / {MEDIAN_DAYS:g}` days, censoring uniform on "
        f"[0, {CENSOR_MAX_DAYS:g}] days);",
        f"  horizon h = {report.horizon:g} days, by which {100 * report.population_risk:.1f} % of the population "
        "has had the event.",
        "- Scored with the true model `S(h | x) = exp(-H0(h) exp(lp))`, whose population O/E and slope are",
        "  exactly 1 by construction (censoring is independent of lp, so 1 - KM(h) estimates the mean predicted",
        "  risk; its cloglog is `log H0(h) + lp`); with its cumulative hazard doubled, `S(h | x)^2`",
        f"  (population O/E {doubled_oe:.4f}, slope exactly 1: its cloglog is the true one plus log 2); and with",
        "  its linear predictor halved, `exp(-H0(h) exp(lp / 2))` (slope exactly 2: its cloglog is an affine",
        f"  function of the true one with slope 1/2; population O/E {halved_oe:.4f}). Population O/E by",
        "  quadrature over lp. On each replicate the doubled model's slope is the true model's and the halved",
        "  model's twice it, but where clipping the risk at 1 - 1e-10 moves a patient's cloglog (lp above",
        f"  {clipped_above(2.0):.2f} for the doubled model, {100 * norm.sf(clipped_above(2.0)):.2f} % of patients; "
        f"above {clipped_above(1.0):.2f} for the true one).",
        f"- Each simulated cohort: n = {report.n} test patients, B = {report.bootstrap} bootstrap resamples of them,",
        "  percentile 95 % CI; a model is detected when its CI excludes 1.",
        f"- Seed {report.seed}; a cohort's draws depend only on the seed and its index.",
        "",
    ]
    rates = [
        "| quantity | estimate +- Monte Carlo SE (simulations); binomial 95 % CI | target |",
        "|---|---|---|",
        f"| coverage of the 95 % CI of O/E, true model | {_with_interval(report.coverage('oe'))} | {coverage_target} |",
        f"| coverage of the 95 % CI of the slope, true model | {_with_interval(report.coverage('slope'))} | "
        f"{coverage_target} |",
        f"| detection by O/E, doubled cumulative hazard | {_with_interval(report.detection('doubled', 'oe'))} | "
        f"{detection_target} |",
        f"| detection by the slope, halved linear predictor | "
        f"{_with_interval(report.detection('halved', 'slope'))} | {detection_target} |",
        f"| detection by the slope, doubled cumulative hazard | {report.detection('doubled', 'slope')} | "
        "about 5 %: its slope is 1 (for information) |",
        f"| detection by O/E, halved linear predictor | {report.detection('halved', 'oe')} | "
        f"low: its O/E is {halved_oe:.3f} (for information) |",
        "",
    ]
    estimates = [
        "| model | mean O/E (SD) | population O/E | mean CI width | mean slope (SD) | population slope "
        "| mean CI width |",
        "|---|---|---|---|---|---|---|",
        *[f"| {model} | {_estimates(m[model]['oe'], '.3f')} | {_estimates(m[model]['slope'], 'g')} |"
          for model in MODELS],  # fmt: skip
        "",
        ("Every estimate is within its target; the binomial intervals say how precisely the simulations measure"
         " it." if not missed else "Targets missed: " + "; ".join(missed) + "."),
        "",
    ]
    return "\n".join(["", *DEFINITIONS, *design, *rates, *estimates])
