"""The ``bench`` command line: parses arguments and hands them to ``bench.commands``; nothing else."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.commands import COMMANDS, DEFAULT_DATASET
from bench.errors import BenchError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line (exit 2), like every other error, not usage + error."""

    def error(self, message: str):  # argparse calls this for a bad argument
        print(f"bench: error: {self.prog}: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bench", description="Survival-prognosis benchmark harness.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list registered extractors, models or datasets (imports nothing)")
    p.add_argument("what", choices=["extractors", "models", "datasets"])
    p.add_argument("--options", action="store_true", help="a markdown table of every option (imports the plugins)")
    p.add_argument("--distribution", metavar="NAME", help="with --options: only the plugins of this distribution")

    p = sub.add_parser("run", help="evaluate extractor x model combinations on a frozen split")
    _dataset_arg(p)
    p.add_argument(
        "--extractor",
        nargs="+",
        action="extend",
        metavar="SPEC",
        help="extractor(s), NAME or NAME:key=value,...; A+B fuses blocks by patient; 'all' for every one; "
        "min_icc=X among the options keeps the features whose ICC under --robust-perturb, on each fold's training "
        "patients, reaches X (default: clinical)",
    )
    p.add_argument(
        "--model",
        nargs="+",
        action="extend",
        metavar="SPEC",
        help="model(s), NAME or NAME:key=value,...; 'all' for every one (default: coxph)",
    )
    p.add_argument("--split", help="split name under splits/<dataset>/ (default: the dataset's default)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="B", help="bootstrap replicates (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of models and bootstrap (default 0)")
    _tracking_arg(p)
    p.add_argument(
        "--results",
        type=Path,
        metavar="PATH.json",
        help="write the results file that `bench leaderboard` renders pages from (e.g. leaderboards/<dataset>.json)",
    )
    p.add_argument("--output-json", type=Path, metavar="PATH", help="also write the run's results with MLflow run ids")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="N > 1: a local Dask cluster of N processes extracts features and fits folds (default 1: this process)",
    )
    _scheduler_arg(p)
    p.add_argument(
        "--weights",
        metavar="PATH|random",
        help="checkpoint for extractors with pretrained weights; 'random' runs a labelled random-init control",
    )
    _tuning_args(p)
    p.add_argument("--robust-perturb", default="volume:+-1vox", metavar="CHAIN", help="for extractors given "
                   "min_icc=X: the perturbation their features' ICC is measured under (see `bench robustness`; "
                   "default volume:+-1vox)")  # fmt: skip
    p.add_argument("--robust-repeats", type=int, default=5, metavar="K", help="for min_icc=X: perturbed versions "
                   "per study (default 5)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _baseline_args(p, default=None, planned=True)

    p = sub.add_parser("grid", help="run a whole benchmark protocol from a YAML config (see configs/)")
    p.add_argument("--config", type=Path, required=True, help="grid config, e.g. configs/demo.yaml")
    p.add_argument("--dataset", help="run the config on this dataset or manifest instead of its own")
    p.add_argument("--bootstrap", type=int, metavar="B", help="override the config's bootstrap replicates")
    p.add_argument("--workers", type=int, help="override the config's local Dask workers (processes)")
    _scheduler_arg(p)
    p.add_argument("--weights", metavar="PATH|random", help="override the config's weights")
    p.add_argument("--leaderboard", type=Path, metavar="PATH", help="write the leaderboard here (and PATH.json)")
    p.add_argument("--plan", action="store_true", help="check the config and list its rows; compute nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _tracking_arg(p)

    p = sub.add_parser("robustness", help="how much each extractor's features move under perturbed masks and scans "
                       "(ICC per feature), or between a patient's scans (--retest)")  # fmt: skip
    p.add_argument("--dataset", default=DEFAULT_DATASET, help=f"dataset name (default {DEFAULT_DATASET}) or a "
                   "manifest; outcomes are never read, so a manifest of images only will do")  # fmt: skip
    p.add_argument("--extractor", nargs="+", action="extend", required=True, metavar="SPEC",
                   help="extractor(s) to measure, NAME or NAME:key=value,..., e.g. radiomics:roi=tumour")  # fmt: skip
    p.add_argument("--perturb", default="volume:+-1vox", metavar="CHAIN", help="perturbation chain, steps joined by "
                   "commas: volume:+2mm, volume:+-1vox, volume:-10%%, contour:4, shift:1.5mm, rotate:5, noise:0.1 "
                   "(default volume:+-1vox)")  # fmt: skip
    p.add_argument("--repeats", type=int, default=5, metavar="K", help="perturbed versions per study (default 5)")
    p.add_argument("--retest", action="store_true", help="no perturbation: the versions are each patient's scans "
                   "(several samples with one patient_id, e.g. the synthetic_mm_retest dataset)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the perturbations (default 0)")
    p.add_argument("--results", type=Path, metavar="PATH.robustness.json", help="write the results file and, beside "
                   "it, the page (.md), per-feature CSV (.csv) and figure (.svg), e.g. "
                   "leaderboards/<cohort>.robustness.json")  # fmt: skip
    p.add_argument("--workers", type=int, default=1, help="N > 1: a local Dask cluster of N processes (default 1)")
    _scheduler_arg(p)
    p.add_argument("--weights", metavar="PATH|random", help="checkpoint for extractors with pretrained weights; "
                   "'random' measures a labelled random-init control")  # fmt: skip
    _tracking_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser(
        "leaderboard", help="render a markdown leaderboard page from a results file or from an MLflow store"
    )
    source = p.add_mutually_exclusive_group()
    p.add_argument(
        "--dataset",
        help="render leaderboards/<dataset>.md from leaderboards/<dataset>.json, or (with --tracking-uri) from "
        "the dataset's MLflow experiment",
    )
    source.add_argument(
        "--from",
        dest="results",
        type=Path,
        metavar="RESULTS.json",
        help="render from this results file (written by `bench run --results` or `bench grid`)",
    )
    source.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="render from the latest finished run of every row in this MLflow store (e.g. sqlite:///mlflow.db); "
        "also writes the page's results file beside it",
    )
    p.add_argument(
        "--fingerprint",
        metavar="PREFIX",
        help="with --tracking-uri: only the runs of the cohort with this data fingerprint (when several share a name)",
    )
    p.add_argument("--out", type=Path, help="output file (default: leaderboards/<dataset>.md, or beside --from)")
    p.add_argument("--check", action="store_true", help="regenerate in memory; exit 1 with a diff if the file differs")
    p.add_argument("--print", action="store_true", help="also print the page (it always goes to its file)")
    p.add_argument(
        "--check-all",
        nargs="?",
        const=Path("leaderboards"),
        type=Path,
        metavar="DIR",
        help="check every page of DIR (default leaderboards/) against its results file, figures included; "
        "exit 1 naming each stale page",
    )
    _baseline_args(p, default=None)

    p = sub.add_parser(
        "ui", help="the MLflow UI on a store, with links to a dataset's runs and to its leaderboard's rows side by side"
    )
    _tracking_arg(p)
    p.add_argument("--port", type=int, default=5000, help="port to serve on (default 5000; 0 picks a free one)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind to (default 127.0.0.1: this machine only); any other needs --expose",
    )
    p.add_argument(
        "--expose",
        action="store_true",
        help="allow a --host beyond this machine: the MLflow server has no authentication, anyone who reaches it "
        "can read, change and delete every run",
    )
    p.add_argument(
        "--dataset",
        help=f"the dataset (experiment) to link to (default: the --results file's, else {DEFAULT_DATASET})",
    )
    p.add_argument(
        "--results",
        type=Path,
        metavar="PATH.json",
        help="a leaderboard's results file whose rows to link side by side (default leaderboards/<dataset>.json "
        "when it exists)",
    )

    p = sub.add_parser(
        "validate-statistics",
        help="simulation study: CI coverage, paired-test type-I error, power, family-wise error and calibration "
        "(writes docs/statistics.md)",
    )
    p.add_argument("--simulations", type=int, default=2000, help="cohorts for coverage and type-I error (2000)")
    p.add_argument("--power-simulations", type=int, default=1000, help="cohorts for power (1000)")
    p.add_argument("--fwer-simulations", type=int, default=1000, help="cohorts for the family-wise error (1000)")
    p.add_argument(
        "--null-rows", type=int, default=10, help="rows per cohort compared with the baseline, each as good as it (10)"
    )
    p.add_argument("--n", type=int, default=200, help="test patients per cohort (200)")
    p.add_argument(
        "--calibration-simulations", type=int, default=1000, help="cohorts for the O/E and slope intervals (1000)"
    )
    p.add_argument("--calibration-n", type=int, default=500, help="test patients per calibration cohort (500)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="B", help="replicates per cohort (1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the markdown report here, e.g. docs/statistics.md")
    p.add_argument("--output-json", type=Path, metavar="PATH", help="also write the numbers as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    data = sub.add_parser("data", help="synthesise, check and look at imaging cohorts").add_subparsers(
        dest="data_command", required=True, metavar="ACTION"
    )
    p = data.add_parser("synth", help="write a synthetic multiple-myeloma PET/CT cohort")
    p.add_argument("--preset", default="demo", help="tiny, demo (default), paper, or retest (tiny's size, each "
                   "patient scanned twice: test-retest pairs)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = data.add_parser("check", help="validate a manifest and every image it names; list all problems")
    p.add_argument("manifest", help="manifest (.yaml or .csv) or its folder, or a registered imaging dataset")
    p.add_argument(
        "--config", type=Path, metavar="GRID.yaml", help="also list the rows of this grid config that cannot run here"
    )
    p.add_argument("--split", metavar="NAME", help="also verify this split and warn when it leaks (identical rows "
                   "on both sides)")  # fmt: skip
    _policy_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = data.add_parser("show", help="PET and CT maximum-intensity projections of one patient with ROI outlines")
    p.add_argument("patient", help="patient (or sample) id")
    _dataset_arg(p)
    p.add_argument(
        "--roi", nargs="+", help="ROIs to outline (default: the manifest's masks, else skeleton and spine_dilated)"
    )
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")

    weights = sub.add_parser("weights", help="the weights lock: the sha256 of each pretrained weights file")
    weights = weights.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    p = weights.add_parser(
        "lock", help="hash a weights file into the weights lock ($BENCH_WEIGHTS_LOCK, else ./weights.lock.json)"
    )
    p.add_argument(
        "--extractor",
        metavar="NAME",
        help="an extractor with published weights (resnet3d, medsam2_memory): its file, found or downloaded as a run "
        "finds it, replaces its entry",
    )
    p.add_argument("--weights", metavar="PATH", help="lock this file (the entry is named after the file)")

    p = sub.add_parser("cache", help="feature and mask cache: info or clear")
    p.add_argument("action", choices=["info", "clear"])

    splits = sub.add_parser("splits", help="make, import or verify frozen splits").add_subparsers(
        dest="splits_command", required=True, metavar="ACTION"
    )
    p = splits.add_parser("make", help="write splits/<dataset>/<name>.json in the working directory")
    _dataset_arg(p)
    p.add_argument("--name", default="cv5", help="split name (default cv5)")
    p.add_argument("--folds", type=int, default=5, help="k of k-fold CV (default 5)")
    p.add_argument("--repeats", type=int, default=1, help="repeats with different shuffles (default 1)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    p.add_argument("--holdout", type=float, metavar="F", help="a single train/test split with test fraction F")
    p.add_argument("--by", metavar="COLUMN", help="split by a group column (kind: group, e.g. site): each group "
                   "once as the test fold (leave one group out)")  # fmt: skip
    p.add_argument("--test-groups", type=_names, metavar="A,B", default=(), help="with --by: hold these groups out "
                   "together and train on the others")  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace an existing split file")
    p = splits.add_parser("import", help="freeze a split defined elsewhere (CSV: patient_id, fold or split)")
    _dataset_arg(p)
    p.add_argument("file", type=Path, help="CSV with patient_id and fold (0..k-1) or split (train/test)")
    p.add_argument("--name", help="split name (default: the CSV's file name)")
    p.add_argument("--force", action="store_true", help="replace an existing split file")
    p = splits.add_parser("verify", help="check a split file against its dataset")
    _dataset_arg(p)
    p.add_argument("--name", help="split name (default: the dataset's default)")
    return parser


def _dataset_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        default=DEFAULT_DATASET,
        help=f"dataset name (default {DEFAULT_DATASET}; see `bench list datasets`) or a manifest (.yaml/.csv)",
    )
    _policy_args(p)


def _policy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--horizons", type=_floats, metavar="T1,T2,...", help="td-AUC horizons for a CSV manifest")
    p.add_argument("--tau", type=float, help="Uno's C truncation time for a CSV manifest")


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _baseline_args(p: argparse.ArgumentParser, default: str | None = "clinical", planned: bool = False) -> None:
    """``planned``: a command that runs rows, whose defaults follow them (``bench.protocol.baseline``)."""
    chosen = "the extractor every row has, else clinical" if planned else "the one the results were made with"
    p.add_argument(
        "--baseline",
        default=default,
        metavar="EXTRACTOR",
        help="extractor (label or spec) every row is compared with"
        + (f" (default {default})" if default else f" (default: {chosen})"),
    )
    p.add_argument(
        "--baseline-model",
        metavar="MODEL",
        help="compare with the baseline extractor under this model (default: the row's own model"
        + ("; coxph, else the first model, when every row has the baseline's features)" if planned else ")"),
    )


def _tuning_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tune",
        type=int,
        default=0,
        metavar="N",
        help="nested tuning: N Optuna (TPE) trials per outer training fold, scored by inner CV (default 0: off)",
    )
    p.add_argument("--tune-inner-folds", type=int, default=3, metavar="K", help="inner CV folds (default 3)")
    p.add_argument(
        "--optuna-storage",
        metavar="URL",
        help="Optuna storage, e.g. sqlite:///optuna.db, so trials persist and workers can share them",
    )


def _scheduler_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="run extraction and fits on this existing Dask cluster (default: $BENCH_DASK_SCHEDULER, then a grid "
        "config's scheduler:); see docs/scaling.md",
    )


def _tracking_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///mlflow.db in the working directory)")


def main(argv: list[str] | None = None) -> int:
    from bench.signals import EXIT_CODE, Terminated, sigterm_as_interrupt

    args = build_parser().parse_args(argv)
    try:
        with sigterm_as_interrupt():  # SIGTERM unwinds like Ctrl-C: runs in progress end FAILED, temp files go
            return COMMANDS[args.command](args)
    except BenchError as exc:
        if args.debug:
            raise
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())  # always one line
        print(f"bench: error: {message}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print("bench: terminated (SIGTERM); any run in progress is marked FAILED", file=sys.stderr)
        return EXIT_CODE
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of the output went away (`bench ... | head`): nothing more to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the interpreter's final flush must not fail
        return 141  # 128 + SIGPIPE, as a shell reports it
    except Exception as exc:  # a bug, not bad input (that is a BenchError): still one line, no traceback
        if args.debug:
            raise
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        print(
            f"bench: error: internal error: {type(exc).__name__}: {first}; "
            "rerun with --debug for the traceback, and report it",
            file=sys.stderr,
        )
        return 3
