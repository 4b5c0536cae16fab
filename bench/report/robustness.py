"""The robustness page: each representation's ICCs under perturbed versions of the same studies (issue 27).

``leaderboards/<cohort>.robustness.json`` holds every feature's ICC(2,1) and 95 % CI per extractor, with what made
them (the command, the perturbation, the versions); the page ``<cohort>.robustness.md``, the per-feature CSV and the
figure of the ICC distributions (SVG) are rendered from it alone, so ``bench leaderboard --check-all`` verifies
them byte for byte like every other page.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.errors import InputError
from bench.protocol.robustness_run import Measured, RobustnessRequest, measure
from bench.report.files import stale_diff, write_atomic
from bench.report.provenance import describe, extractor_provenance

FORMAT = "prognosis-bench-robustness/1"
GOOD, EXCELLENT = 0.75, 0.90  # reliability thresholds of Koo & Li (2016)
SUFFIX = ".robustness"


@dataclass(frozen=True)
class FeatureRow:
    name: str
    feature_class: str | None
    icc: float
    ci_low: float
    ci_high: float


@dataclass
class ExtractorRobustness:
    label: str  # the extractor as its rows are labelled (name and options)
    random_init: bool  # a random-initialised network: a control, not the published model
    features: list[FeatureRow]
    left_out: int  # features with no ICC: the same in every study and version, or missing somewhere

    def classes(self) -> list[str]:
        return sorted({f.feature_class for f in self.features if f.feature_class is not None})


@dataclass
class RobustnessResults:
    dataset: str
    source: str  # the command that made these results
    perturbation: str  # the chain, or "" with retest
    repeats: int  # perturbed versions per study (retest: scans per patient)
    seed: int
    retest: bool
    units: int  # studies (retest: patients)
    extractors: list[ExtractorRobustness]
    provenance: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict) -> RobustnessResults:
        extractors = [ExtractorRobustness(e["label"], e["random_init"], [FeatureRow(**f) for f in e["features"]],
                                          e["left_out"]) for e in data["extractors"]]  # fmt: skip
        fields = {k: data[k] for k in ("dataset", "source", "perturbation", "repeats", "seed", "retest", "units")}
        return cls(**fields, extractors=extractors, provenance=data.get("provenance", {}))


def is_robustness_file(path: Path) -> bool:
    return path.name.endswith(f"{SUFFIX}.json")


def robustness_page_path(dataset: str, folder: Path = Path("leaderboards")) -> Path:
    return folder / f"{dataset}{SUFFIX}.md"


def load_robustness(path: Path) -> RobustnessResults:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read robustness results {str(path)!r}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path} is not a robustness results file (format {FORMAT!r}); make it with "
                         "`bench robustness --results PATH`")  # fmt: skip
    return RobustnessResults.from_json(data)


def write_results(results: RobustnessResults, path: Path) -> None:
    write_atomic(path, json.dumps(results.as_json(), indent=1, sort_keys=False) + "\n")


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    good: float  # fraction with ICC >= GOOD
    excellent: float  # fraction with ICC >= EXCELLENT
    lowest: str  # the least robust feature


def summarise(features: list[FeatureRow]) -> Summary | None:
    if not features:
        return None
    values = [f.icc for f in features]
    lowest = min(features, key=lambda f: (f.icc, f.name)).name
    return Summary(len(values), statistics.median(values), sum(v >= GOOD for v in values) / len(values),
                   sum(v >= EXCELLENT for v in values) / len(values), lowest)  # fmt: skip


def csv_path(page: Path) -> Path:
    return page.with_suffix(".csv")


def figure_path(page: Path) -> Path:
    return page.with_suffix(".svg")


def page_files(results: RobustnessResults, page: Path) -> dict[Path, str]:
    """The page, its per-feature CSV and its figure, rendered from ``results`` alone."""
    return {page: page_text(results, page), csv_path(page): feature_csv(results.extractors),
            figure_path(page): figure_svg(results)}  # fmt: skip


def write_page(results: RobustnessResults, page: Path) -> list[Path]:
    files = page_files(results, page)
    for path, text in files.items():
        write_atomic(path, text)
    return list(files)


def stale_page(results: RobustnessResults, page: Path) -> list[str]:
    """What differs between the files on disk and the page regenerated from ``results`` (empty: all current)."""
    problems = []
    for path, text in page_files(results, page).items():
        if path.suffix in (".md", ".csv"):
            diff = stale_diff(text, path)
            problems += [diff] if diff is not None else []
        elif not path.is_file():
            problems.append(f"{path} is missing\n")
        elif path.read_text() != text:
            problems.append(f"{path} differs from the regenerated figure\n")
    return problems


def shown_label(e: ExtractorRobustness) -> str:
    return f"{e.label} (random init)" if e.random_init and "random" not in e.label else e.label


def feature_csv(extractors: list[ExtractorRobustness]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["representation", "class", "feature", "icc", "ci_low", "ci_high"])
    for e in extractors:
        for f in e.features:
            writer.writerow([e.label, f.feature_class or "", f.name, *(f"{v:.6f}" for v in (f.icc, f.ci_low,
                                                                                           f.ci_high))])  # fmt: skip
    return out.getvalue()


def _row(label: str, s: Summary | None) -> str:
    if s is None:
        return f"| {label} | 0 | — | — | — | — |"
    return f"| {label} | {s.n} | {s.median:.3f} | {s.good:.0%} | {s.excellent:.0%} | `{s.lowest}` |"


def _versions(r: RobustnessResults) -> str:
    if r.retest:
        return f"{r.repeats} scans of each patient (its samples in the manifest): test-retest"
    return (f"each study as it is and {r.repeats} perturbed versions of it, `{r.perturbation}`, seed {r.seed} (each "
            "version draws its own perturbation)")  # fmt: skip


def page_text(results: RobustnessResults, page: Path) -> str:
    kind = "test-retest" if results.retest else "perturbation"
    units = f"{results.units} {'patients' if results.retest else 'studies'}"
    lines = [
        f"# Robustness ({kind}): {results.dataset}",
        "",
        f"<!-- generated by `{results.source}`; do not edit by hand -->",
        "",
        "How much each representation moves when the ROI or the scan does: every feature is extracted from every "
        "version of every study, and its agreement across the versions is its ICC.",
        "",
        "| protocol | |",
        "|---|---|",
        f"| dataset | {results.dataset}: {units}; outcomes are not read |",
        f"| versions | {_versions(results)} |",
        "| ICC | ICC(2,1): two-way random effects, absolute agreement, single measurement (Koo & Li 2016), with its "
        f"95 % CI per feature in [{csv_path(page).name}]({csv_path(page).name}); ICC ≥ {GOOD:.2f} is good "
        f"reliability, ≥ {EXCELLENT:.2f} excellent |",
        f"| regenerate | `{results.source}` |",
        f"| made with | {describe(results.provenance)} |",
        "",
        "| representation | features | median ICC | ICC ≥ 0.75 | ICC ≥ 0.90 | least robust feature |",
        "|---|---|---|---|---|---|",
    ]
    for e in results.extractors:
        lines.append(_row(f"**{shown_label(e)}**", summarise(e.features)))
        for c in e.classes():
            lines.append(_row(f"&nbsp;&nbsp;{c}", summarise([f for f in e.features if f.feature_class == c])))
    lines += ["", f"![ICC distributions]({figure_path(page).name})", ""]
    left = [f"{shown_label(e)}: {e.left_out}" for e in results.extractors if e.left_out]
    lines += [
        "How to read: a feature with a low ICC changes within a study about as much as it differs between studies, "
        "so a model cannot tell one patient from another by it once the mask moves; a representation whose "
        "features mostly reach 0.90 carries what it measures from one reader or scan to the next. "
        "Random-init rows are untrained networks: a control for what the architecture alone gives, not the "
        "published model.",
        "",
    ]
    if left:
        lines += ["Features left out (the same in every study and version, or missing somewhere, so no ICC): "
                  + "; ".join(left) + ".", ""]  # fmt: skip
    return "\n".join(lines)


def figure_svg(results: RobustnessResults) -> str:
    from bench.report.figures import icc_figure, svg_text

    groups = []
    for e in results.extractors:
        if e.classes() and len(e.classes()) > 1:
            groups += [(f"{shown_label(e)}: {c}", [f.icc for f in e.features if f.feature_class == c])
                       for c in e.classes()]  # fmt: skip
        else:
            groups.append((shown_label(e), [f.icc for f in e.features]))
    title = f"{results.dataset}: ICC(2,1) per feature" + (" (test-retest)" if results.retest else
                                                          f" under {results.perturbation}")  # fmt: skip
    return svg_text(icc_figure([g[0] for g in groups], [g[1] for g in groups], title, (GOOD, EXCELLENT)))


def track(results: RobustnessResults, tracking_uri: str | None) -> list[str]:
    """One MLflow run of kind ``robustness`` per extractor (summaries as metrics, its features' ICCs as a CSV and
    the figure as artifacts) under a parent run ``bench robustness`` in the cohort's experiment; their run ids."""
    from bench.report.tracking import KIND_TAG, Tracker

    params = {"command": results.source, "perturbation": results.perturbation or "retest", "repeats": results.repeats,
              "seed": results.seed, "retest": results.retest, "units": results.units}  # fmt: skip
    tracker = Tracker(tracking_uri, results.dataset, params, run_name="bench robustness")
    figure = figure_svg(results)
    ids = []
    try:
        for e in results.extractors:
            scalars: dict[str, float] = {}
            for prefix, rows in [("", e.features), *((f"{c}_", [f for f in e.features if f.feature_class == c])
                                                     for c in e.classes())]:  # fmt: skip
                s = summarise(rows)
                if s is not None:
                    scalars |= {f"{prefix}icc_median": s.median, f"{prefix}icc_fraction_075": s.good,
                                f"{prefix}icc_fraction_090": s.excellent, f"{prefix}n_features": s.n}  # fmt: skip
            ids.append(tracker.log_combination(
                f"robustness {e.label}", {**params, "extractor": e.label, "random_init": e.random_init},
                {KIND_TAG: "robustness"}, {}, {"robustness/features.csv": feature_csv([e]),
                                               "robustness/icc_distributions.svg": figure}, scalars))  # fmt: skip
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish()
    return ids


def results_of(dataset: str, measured: list[Measured], request: RobustnessRequest, source: str) -> RobustnessResults:
    """The results file's content of a finished measurement."""
    from bench.plugins.weights import RANDOM, used_weights

    extractors, weights = [], {}
    for m in measured:
        rows = [FeatureRow(f.name, c, f.icc, f.ci_low, f.ci_high) for f, c in zip(m.iccs, m.classes)]
        random_init = getattr(m.spec.config, "weights", None) == RANDOM
        extractors.append(ExtractorRobustness(m.spec.label, random_init, rows, len(m.versions.names) - len(rows)))
        if (file := used_weights(m.spec.cls(m.spec.config))) is not None:
            weights[m.spec.label] = file.as_dict()
    units = len(measured[0].versions.units) if measured else 0
    repeats = measured[0].versions.values.shape[1] if request.retest and measured else request.repeats
    return RobustnessResults(dataset, source, "" if request.retest else request.perturbation, repeats, request.seed,
                             request.retest, units, extractors,
                             extractor_provenance([m.spec.key() for m in measured], weights))  # fmt: skip


def run_robustness(request: RobustnessRequest, results_path: Path | None, page: Path | None, tracking_uri: str | None,
                   source: str, progress: bool) -> tuple[RobustnessResults, list[Path]]:  # fmt: skip
    """Measure, then write the results file and the page (when asked) and record the MLflow runs (unless
    ``tracking_uri`` is ""); the results and the files written."""
    cohort, measured = measure(request, progress)
    results = results_of(cohort.name, measured, request, source)
    written = []
    if results_path is not None:
        write_results(results, results_path)
        written.append(results_path)
    if page is not None:
        written += write_page(results, page)
    if tracking_uri != "":
        track(results, tracking_uri)
    return results, written
