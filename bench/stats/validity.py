"""Do the leaderboard's intervals and paired tests mean what they say? A simulation study.

Cohorts are drawn from a known proportional-hazards model: a true linear
predictor ``lp ~ N(0, 1)``, exponential event times with hazard ``exp(lp)``
(scaled to a median of one year), and uniform censoring giving about half the
patients an event. A risk score is ``lp`` plus independent Gaussian noise; its
noise level sets how good it is. The population value of each C-index (which,
for Harrell's, depends on the censoring too) is computed once from a very large
sample drawn the same way.

For each simulated cohort of ``n`` test patients the engine computes the
statistics exactly as it does for a leaderboard fold: B bootstrap resamples of
the test patients, the censoring distribution of Uno's C from a separate
training sample (4n patients, as in 5-fold cross-validation), percentile 95 %
intervals, and the paired difference of two scores on the same replicates.

A page compares many rows with one baseline, so the study also counts how often
a cohort with several null rows (each as good as the baseline) shows at least one
raw p below alpha, and at least one Holm-adjusted p below alpha (the page's
``p (Holm)`` column): the family-wise error without and with the adjustment.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from tqdm.auto import tqdm

from bench.data.cohort import structured_y
from bench.errors import UsageError
from bench.stats.bootstrap import holm, paired_difference
from bench.stats.engine import concordance, uno_weights

MEDIAN_DAYS = 365.0
CENSOR_MAX_DAYS = 1500.0
TAU_DAYS = 900.0
POPULATION = 1_000_000


@dataclass(frozen=True)
class StudyConfig:
    simulations: int = 2000  # cohorts for coverage and type-I error
    power_simulations: int = 1000  # cohorts for power
    n: int = 200  # test patients per cohort
    bootstrap: int = 1000  # replicates per cohort
    noise: float = 1.0  # noise SD of the reference score
    power_gap: float = 0.03  # population C-index advantage of the better score
    alpha: float = 0.05
    seed: int = 0
    fwer_simulations: int = 1000  # cohorts for the family-wise error
    null_rows: int = 10  # rows per cohort compared with the baseline, each as good as it
    calibration_simulations: int = 1000  # cohorts for O/E and slope (bench.stats.calibration_validity)
    calibration_n: int = 500  # test patients per calibration cohort

    def __post_init__(self) -> None:
        counts = (self.simulations, self.power_simulations, self.bootstrap, self.fwer_simulations, self.null_rows)
        if min(counts) < 1 or self.n < 10:
            raise UsageError(
                "--simulations, --power-simulations, --fwer-simulations, --null-rows and --bootstrap must be "
                f"positive and --n at least 10 (got {counts[0]}, {counts[1]}, {counts[3]}, {counts[4]}, "
                f"{counts[2]} and {self.n})"
            )
        # below 50 patients, replicates without follow-up to the horizon or with too few events become common
        if self.calibration_simulations < 1 or self.calibration_n < 50:
            raise UsageError(
                "--calibration-simulations must be positive and --calibration-n at least 50 "
                f"(got {self.calibration_simulations} and {self.calibration_n})"
            )


@dataclass(frozen=True)
class Rate:
    """A Monte Carlo proportion with its standard error."""

    value: float
    mc_error: float
    simulations: int

    @classmethod
    def of(cls, hits: np.ndarray) -> Rate:
        p = float(np.mean(hits))
        return cls(p, math.sqrt(p * (1 - p) / len(hits)), len(hits))

    def __str__(self) -> str:
        return f"{100 * self.value:.1f} % +- {100 * self.mc_error:.1f} % (n = {self.simulations})"


@dataclass(frozen=True)
class StudyReport:
    config: StudyConfig
    population_harrell: float
    population_uno: float
    weaker_noise: float  # noise SD of the score worse by ``power_gap``
    population_gap: float  # its realised population gap
    event_fraction: float
    coverage_harrell: Rate
    coverage_uno: Rate
    type_one_error: Rate
    power: Rate
    mean_ci_width_harrell: float
    fwer_unadjusted: Rate  # cohorts where any of the null rows has p < alpha
    fwer_holm: Rate  # cohorts where any of them has Holm-adjusted p < alpha

    def as_dict(self) -> dict:
        return asdict(self)


def simulate(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes and true linear predictors of ``n`` patients."""
    lp = rng.normal(size=n)
    event_time = rng.exponential(MEDIAN_DAYS / math.log(2) * np.exp(-lp))
    censor_time = rng.uniform(0, CENSOR_MAX_DAYS, n)
    return structured_y(event_time <= censor_time, np.minimum(event_time, censor_time)), lp


def population_c(noise: float, seed: int) -> tuple[float, float, float]:
    """Harrell's and Uno's C of ``lp + noise * z`` on a very large sample, and its event fraction."""
    rng = np.random.default_rng([seed, 999])
    y, lp = simulate(POPULATION, rng)
    z = np.random.default_rng([seed, 998]).normal(size=POPULATION)
    score = lp + noise * z
    harrell = float(concordance(y["event"], y["time"], score)[0])
    uno = float(concordance(y["event"], y["time"], score, weights=uno_weights(y, y, TAU_DAYS))[0])
    return harrell, uno, float(y["event"].mean())


def _population_harrell(noise: float, y: np.ndarray, lp: np.ndarray, z: np.ndarray) -> float:
    return float(concordance(y["event"], y["time"], lp + noise * z)[0])


def weaker_noise(config: StudyConfig) -> tuple[float, float]:
    """Noise SD whose score is worse than the reference by ``power_gap`` in population Harrell's C (bisection)."""
    rng = np.random.default_rng([config.seed, 997])
    y, lp = simulate(POPULATION // 4, rng)
    z = rng.normal(size=len(lp))
    target = _population_harrell(config.noise, y, lp, z) - config.power_gap
    low, high = config.noise, config.noise * 10
    for _ in range(40):
        mid = (low + high) / 2
        if _population_harrell(mid, y, lp, z) > target:
            low = mid
        else:
            high = mid
    noise = (low + high) / 2
    return noise, _population_harrell(config.noise, y, lp, z) - _population_harrell(noise, y, lp, z)


def _replicate_counts(n: int, bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    indices = rng.integers(0, n, size=(bootstrap, n))
    offsets = (np.arange(bootstrap) * n)[:, None]
    return np.bincount((indices + offsets).ravel(), minlength=bootstrap * n).reshape(bootstrap, n).astype(float)


def _ci(replicates: np.ndarray) -> tuple[float, float]:
    finite = replicates[np.isfinite(replicates)]
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def run_study(config: StudyConfig = StudyConfig(), progress: bool = True) -> StudyReport:
    pop_harrell, pop_uno, event_fraction = population_c(config.noise, config.seed)
    noise_b, gap = weaker_noise(config)

    covered_h, covered_u, rejected, widths = [], [], [], []
    for s in tqdm(range(config.simulations), desc="coverage and type-I", disable=not progress, leave=False):
        rng = np.random.default_rng([config.seed, 1, s])
        y_test, lp = simulate(config.n, rng)
        y_train, _ = simulate(4 * config.n, rng)
        score_a = lp + config.noise * rng.normal(size=config.n)
        score_b = lp + config.noise * rng.normal(size=config.n)  # equally good
        counts = _replicate_counts(config.n, config.bootstrap, rng)
        e, t = y_test["event"], y_test["time"]
        harrell_a = concordance(e, t, score_a, counts)
        low, high = _ci(harrell_a)
        covered_h.append(low <= pop_harrell <= high)
        widths.append(high - low)
        uno_a = concordance(e, t, score_a, counts, uno_weights(y_train, y_test, TAU_DAYS))
        low, high = _ci(uno_a)
        covered_u.append(low <= pop_uno <= high)
        point_a, point_b = concordance(e, t, score_a)[0], concordance(e, t, score_b)[0]
        test = paired_difference(point_a, point_b, harrell_a, concordance(e, t, score_b, counts))
        rejected.append(test.p_value < config.alpha)

    detected = []
    for s in tqdm(range(config.power_simulations), desc="power", disable=not progress, leave=False):
        rng = np.random.default_rng([config.seed, 2, s])
        y_test, lp = simulate(config.n, rng)
        better = lp + config.noise * rng.normal(size=config.n)
        worse = lp + noise_b * rng.normal(size=config.n)
        counts = _replicate_counts(config.n, config.bootstrap, rng)
        e, t = y_test["event"], y_test["time"]
        test = paired_difference(
            concordance(e, t, better)[0],
            concordance(e, t, worse)[0],
            concordance(e, t, better, counts),
            concordance(e, t, worse, counts),
        )
        detected.append(test.p_value < config.alpha and test.difference > 0)

    fwer_unadjusted, fwer_holm = family_wise_error(config, progress)
    return StudyReport(
        config=config,
        population_harrell=pop_harrell,
        population_uno=pop_uno,
        weaker_noise=noise_b,
        population_gap=gap,
        event_fraction=event_fraction,
        coverage_harrell=Rate.of(np.array(covered_h)),
        coverage_uno=Rate.of(np.array(covered_u)),
        type_one_error=Rate.of(np.array(rejected)),
        power=Rate.of(np.array(detected)),
        mean_ci_width_harrell=float(np.mean(widths)),
        fwer_unadjusted=fwer_unadjusted,
        fwer_holm=fwer_holm,
    )


def family_wise_error(config: StudyConfig, progress: bool = False) -> tuple[Rate, Rate]:
    """How often a cohort of null rows shows any p < alpha: with raw p-values, and with Holm-adjusted ones.

    Each cohort has a baseline score and ``null_rows`` scores with the same noise SD
    (independent draws, so each is as good as the baseline in the population), all
    compared with the baseline on the same bootstrap replicates, as on a page.
    """
    any_raw, any_holm = [], []
    for s in tqdm(range(config.fwer_simulations), desc="family-wise error", disable=not progress, leave=False):
        rng = np.random.default_rng([config.seed, 3, s])
        y_test, lp = simulate(config.n, rng)
        scores = lp + config.noise * rng.normal(size=(config.null_rows + 1, config.n))  # row 0 is the baseline
        counts = _replicate_counts(config.n, config.bootstrap, rng)
        e, t = y_test["event"], y_test["time"]
        points = [concordance(e, t, score)[0] for score in scores]
        replicates = [concordance(e, t, score, counts) for score in scores]
        tests = [paired_difference(points[j], points[0], replicates[j], replicates[0]) for j in range(1, len(scores))]
        p = np.array([test.p_value for test in tests])
        any_raw.append(bool((p < config.alpha).any()))
        any_holm.append(bool((holm(p) < config.alpha).any()))
    return Rate.of(np.array(any_raw)), Rate.of(np.array(any_holm))


def render_report(report: StudyReport) -> str:
    """The study's results as markdown (``docs/statistics.md``)."""
    c = report.config
    independent = 1 - (1 - c.alpha) ** c.null_rows
    return "\n".join(
        [
            "# Validity of the leaderboard's statistics",
            "",
            "<!-- generated by `bench validate-statistics --out docs/statistics.md`; do not edit by hand -->",
            "",
            "Do the 95 % bootstrap intervals cover the true C-index 95 % of the time, does the paired",
            "test reject 5 % of the time when two scores are equally good, and does the Holm adjustment",
            "keep a page of such comparisons from showing a false difference more than 5 % of the time?",
            "A simulation with known truth answers it, using the same engine, bootstrap and paired test",
            "as the leaderboard.",
            "",
            "## Design",
            "",
            "- Model: true linear predictor `lp ~ N(0, 1)`; exponential event times with hazard",
            f"  proportional to `exp(lp)` (median {MEDIAN_DAYS:g} days); censoring uniform on",
            f"  [0, {CENSOR_MAX_DAYS:g}] days; {100 * report.event_fraction:.0f} % of patients have an event.",
            f"- Risk scores: `lp + noise`, Gaussian noise with SD {c.noise:g} for the reference score.",
            f"- Population values from {POPULATION:,} patients drawn the same way: Harrell's C",
            f"  {report.population_harrell:.4f}; Uno's C (tau = {TAU_DAYS:g} days) {report.population_uno:.4f}.",
            f"- Each simulated cohort: n = {c.n} test patients, B = {c.bootstrap} bootstrap resamples of them,",
            "  percentile 95 % CI; Uno's censoring distribution from a separate training sample of",
            f"  {4 * c.n} patients (the training part of 5-fold cross-validation).",
            "- Type-I error: two scores with the same noise SD (equally good in the population),",
            f"  paired bootstrap test on the same replicates, rejection at p < {c.alpha:g}.",
            f"- Power: the second score's noise SD is {report.weaker_noise:.3f}, which makes it worse by",
            f"  {report.population_gap:.4f} in population Harrell's C (target {c.power_gap:g}).",
            f"- Family-wise error: a baseline score and {c.null_rows} more scores with the same noise SD",
            "  (independent noise, so each is as good as the baseline in the population), each compared with",
            "  the baseline on the same replicates, as the rows of a page are; a cohort counts when any of its",
            f"  {c.null_rows} p-values is below {c.alpha:g}, raw (`p`) or Holm-adjusted (`p (Holm)`).",
            f"- Seed {c.seed}; a cohort's draws depend only on the seed and its index.",
            "",
            "## Results",
            "",
            "| quantity | estimate +- Monte Carlo SE (simulations) | target |",
            "|---|---|---|",
            f"| coverage of the 95 % CI, Harrell's C | {report.coverage_harrell} | 93-97 % |",
            f"| coverage of the 95 % CI, Uno's C | {report.coverage_uno} | 93-97 % |",
            f"| type-I error of the paired test | {report.type_one_error} | 3-7 % |",
            f"| power, gap {c.power_gap:g} in C | {report.power} | as high as n allows |",
            f"| mean width of the Harrell CI | {report.mean_ci_width_harrell:.3f} | |",
            f"| family-wise error, {c.null_rows} null rows, raw p | {report.fwer_unadjusted} | "
            f"{100 * independent:.0f} % if independent; less, as they share the baseline |",
            f"| family-wise error, {c.null_rows} null rows, Holm-adjusted p | {report.fwer_holm} | "
            f"at most {100 * c.alpha:g} % |",
            "",
            "## Reading it",
            "",
            "- The intervals are for a fixed risk score on a test sample: the variability the leaderboard's",
            "  bootstrap captures is that of the test patients (resampled within each fold), not that of",
            "  refitting the model on another training set.",
            "- At n = 200 a gap of 0.03 in C is hard to detect; the power above is what a cohort of the",
            "  study's size can expect, and the reason every leaderboard entry carries its paired CI.",
            "- The rows of a page share the baseline's replicates, so their tests are positively correlated",
            "  and the raw family-wise error stays below that of independent tests; it still grows with the",
            "  number of rows. Holm's step-down adjustment bounds it by alpha under any dependence, at the",
            "  cost of power for each single row: read `p (Holm)` for claims about the page as a whole.",
            "",
        ]
    )
