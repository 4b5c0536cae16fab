"""The ``bench`` command line: parses arguments and calls the library; nothing else."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from bench.errors import BenchError, UsageError

DEFAULT_DATASET = "synthetic_mm"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="Survival-prognosis benchmark harness.")
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
        help="extractor(s), NAME or NAME:key=value,...; A+B fuses blocks by patient; 'all' for every one "
        "(default: clinical)",
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
    p.add_argument("--workers", type=int, default=1, help="local processes for feature extraction (default 1)")
    p.add_argument(
        "--weights",
        metavar="PATH|random",
        help="checkpoint for extractors with pretrained weights; 'random' runs a labelled random-init control",
    )
    _tuning_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _baseline_args(p)

    p = sub.add_parser("grid", help="run a whole benchmark protocol from a YAML config (see configs/)")
    p.add_argument("--config", type=Path, required=True, help="grid config, e.g. configs/demo.yaml")
    p.add_argument("--dataset", help="run the config on this dataset or manifest instead of its own")
    p.add_argument("--bootstrap", type=int, metavar="B", help="override the config's bootstrap replicates")
    p.add_argument("--workers", type=int, help="override the config's extraction processes")
    p.add_argument("--weights", metavar="PATH|random", help="override the config's weights")
    p.add_argument("--leaderboard", type=Path, metavar="PATH", help="write the leaderboard here (and PATH.json)")
    p.add_argument("--plan", action="store_true", help="check the config and list its rows; compute nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _tracking_arg(p)

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
    _baseline_args(p, default=None)

    p = sub.add_parser(
        "validate-statistics",
        help="simulation study: CI coverage, paired-test type-I error and power (writes docs/statistics.md)",
    )
    p.add_argument("--simulations", type=int, default=2000, help="cohorts for coverage and type-I error (2000)")
    p.add_argument("--power-simulations", type=int, default=1000, help="cohorts for power (1000)")
    p.add_argument("--n", type=int, default=200, help="test patients per cohort (200)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="B", help="replicates per cohort (1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the markdown report here, e.g. docs/statistics.md")
    p.add_argument("--output-json", type=Path, metavar="PATH", help="also write the numbers as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    data = sub.add_parser("data", help="synthesise, check and look at imaging cohorts").add_subparsers(
        dest="data_command", required=True, metavar="ACTION"
    )
    p = data.add_parser("synth", help="write a synthetic multiple-myeloma PET/CT cohort")
    p.add_argument("--preset", default="demo", help="tiny, demo (default) or paper")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = data.add_parser("check", help="validate a manifest and every image it names; list all problems")
    p.add_argument("manifest", help="manifest (.yaml or .csv) or its folder, or a registered imaging dataset")
    p.add_argument(
        "--config", type=Path, metavar="GRID.yaml", help="also list the rows of this grid config that cannot run here"
    )
    _policy_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = data.add_parser("show", help="PET and CT maximum-intensity projections of one patient with ROI outlines")
    p.add_argument("patient", help="patient (or sample) id")
    _dataset_arg(p)
    p.add_argument(
        "--roi", nargs="+", help="ROIs to outline (default: the manifest's masks, else skeleton and spine_dilated)"
    )
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")

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


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _cohort(args: argparse.Namespace):
    from bench.data.datasets import load_cohort

    return load_cohort(args.dataset, args.horizons, args.tau)


def _baseline_args(p: argparse.ArgumentParser, default: str | None = "clinical") -> None:
    p.add_argument(
        "--baseline",
        default=default,
        metavar="EXTRACTOR",
        help="extractor (label or spec) every row is compared with"
        + (f" (default {default})" if default else " (default: the one the results were made with)"),
    )
    p.add_argument(
        "--baseline-model",
        metavar="MODEL",
        help="compare with the baseline extractor under this model (default: the row's own model)",
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
        print(f"bench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print("bench: terminated (SIGTERM); any run in progress is marked FAILED", file=sys.stderr)
        return EXIT_CODE
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
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


def _check_outputs(*outputs: tuple[str, Path | None]) -> None:
    """Every (flag, path) output of a command can be written: checked before any work starts."""
    from bench.report.files import check_writable

    for flag, path in outputs:
        check_writable(path, flag)


def cmd_list(args: argparse.Namespace) -> int:
    from bench.plugins.registry import DATASETS, EXTRACTORS, MODELS

    registry = {"extractors": EXTRACTORS, "models": MODELS, "datasets": DATASETS}[args.what]
    if args.options:
        from bench.plugins.docs import options_table

        print(options_table(registry, args.distribution), end="")
        return 0
    for e in registry.entries():
        extras = f" [{','.join(e.extras)}]" if e.extras else ""
        print(f"{e.name:<20} {e.distribution} {e.version}{extras}  ({e.value})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bench.plugins.specs import resolve_baseline
    from bench.protocol.runner import RunRequest, run
    from bench.report.files import write_atomic
    from bench.report.leaderboard import table_lines, warning_lines
    from bench.report.results import Results, save_results

    _check_outputs(("--results", args.results), ("--output-json", args.output_json))
    request = RunRequest(
        dataset=args.dataset,
        extractors=tuple(args.extractor or ["clinical"]),
        models=tuple(args.model or ["coxph"]),
        split=args.split,
        bootstrap=args.bootstrap,
        seed=args.seed,
        tracking_uri=args.tracking_uri,
        horizons=args.horizons,
        tau=args.tau,
        weights=args.weights,
        workers=args.workers,
        tune=args.tune,
        tune_inner_folds=args.tune_inner_folds,
        optuna_storage=args.optuna_storage,
    )
    baseline = resolve_baseline(args.baseline, args.baseline_model, args.weights, args.tune)
    outcome = run(request, progress=not args.quiet)
    results = Results.from_outcome(outcome, baseline, _run_command(args))
    table, notes = table_lines(results)
    print(
        f"dataset {outcome.cohort.name}, split {outcome.split.name} ({outcome.split.sha256[:12]}), "
        f"B = {request.bootstrap}, seed {request.seed}"
    )
    warned = warning_lines(results)
    print("\n".join(table + ([""] + notes if notes else []) + ([""] + warned if warned else [])))
    print(
        f"MLflow parent run {outcome.parent_run_id}; open the UI with: "
        f"mlflow ui --backend-store-uri {args.tracking_uri or 'sqlite:///mlflow.db'}"
    )
    if args.results and results.rows:  # the rows that finished, even when others failed; never an empty file
        save_results(args.results, results)
        print(f"wrote {args.results}; render it with: bench leaderboard --from {args.results}", file=sys.stderr)
    if args.output_json:
        write_atomic(args.output_json, json.dumps(outcome.as_json(), indent=1, sort_keys=True) + "\n")
    outcome.check()  # exit 1 naming every failed row and fold
    return 0


def _run_command(args: argparse.Namespace) -> str:
    """The ``bench run`` command quoted on a page: the options that decide the results, none that only route them."""
    words = ["bench", "run", "--dataset", args.dataset, "--extractor", *(args.extractor or ["clinical"])]
    words += ["--model", *(args.model or ["coxph"]), "--bootstrap", str(args.bootstrap), "--seed", str(args.seed)]
    optional = (("--split", args.split), ("--weights", args.weights), ("--baseline-model", args.baseline_model))
    for flag, value in optional:
        words += [flag, value] if value is not None else []
    words += ["--baseline", args.baseline] if args.baseline != "clinical" else []
    words += ["--tune", str(args.tune), "--tune-inner-folds", str(args.tune_inner_folds)] if args.tune else []
    words += ["--horizons", ",".join(f"{h:g}" for h in args.horizons)] if args.horizons else []
    words += ["--tau", f"{args.tau:g}"] if args.tau is not None else []
    return shlex.join([*words, "--results", str(args.results)] if args.results else words)


def _grid_command(args: argparse.Namespace) -> str:
    """The ``bench grid`` command quoted on a page, with the overrides that change its results."""
    words = ["bench", "grid", "--config", str(args.config)]
    for flag, value in (("--dataset", args.dataset), ("--bootstrap", args.bootstrap), ("--weights", args.weights)):
        words += [flag, str(value)] if value is not None else []
    return shlex.join(words)


def cmd_grid(args: argparse.Namespace) -> int:
    from bench.protocol.grid import check_plan, grid_baseline, load_config, run_grid
    from bench.report.files import write_atomic
    from bench.report.leaderboard import leaderboard_path, render
    from bench.report.results import Results, save_results

    overrides = {"dataset": args.dataset, "bootstrap": args.bootstrap, "workers": args.workers}
    overrides.update({"weights": args.weights, "tracking_uri": args.tracking_uri})
    config = load_config(args.config, overrides)
    board = args.leaderboard or (config.leaderboard if not args.dataset else None)
    if board is not None and not args.plan:  # the default page's name needs the cohort: written where it always is
        flag = "--leaderboard" if args.leaderboard else f"{args.config}: leaderboard"
        _check_outputs((flag, board), (flag, board.with_suffix(".json")))
    if args.plan:
        for features, models in check_plan(config):
            print(f"{features}: {', '.join(models)}")
        return 0
    outcome = run_grid(config, progress=not args.quiet)
    results = Results.from_outcome(outcome, grid_baseline(config), _grid_command(args))
    out = args.leaderboard or (config.leaderboard if not args.dataset else None)
    out = out or leaderboard_path(outcome.cohort.name)
    if results.rows:  # the rows that finished, even when others failed; never an empty page
        save_results(out.with_suffix(".json"), results)
        text = render(results)
        write_atomic(out, text)
        print(text, end="")
        print(f"wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)
    print(
        f"MLflow parent run {outcome.parent_run_id}; browse every run with: "
        f"mlflow ui --backend-store-uri {config.request.tracking_uri or 'sqlite:///mlflow.db'}"
    )
    outcome.check()  # exit 1 naming every failed row and fold
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from bench.plugins.specs import baseline_from_text
    from bench.report.files import stale_diff, write_atomic
    from bench.report.leaderboard import leaderboard_path, render
    from bench.report.results import load_results

    _check_outputs(("--out", None if args.check else args.out))  # --check writes nothing
    if args.results is not None and args.dataset is not None:
        raise UsageError("give --from RESULTS.json or --dataset NAME, not both")
    if args.fingerprint and not args.tracking_uri:
        raise UsageError("--fingerprint selects runs in an MLflow store: give --tracking-uri too")
    page = leaderboard_path(args.dataset or DEFAULT_DATASET)
    if args.tracking_uri:
        return _leaderboard_from_store(args, page)
    path = args.results or page.with_suffix(".json")
    results = load_results(path)
    if args.baseline is not None or args.baseline_model is not None:
        results = results.with_baseline(baseline_from_text(args.baseline or "clinical", args.baseline_model))
    if not args.results and results.protocol.dataset != (args.dataset or DEFAULT_DATASET):
        raise UsageError(f"{path} holds results for dataset {results.protocol.dataset!r}, not {args.dataset!r}")
    out = args.out or (args.results.with_suffix(".md") if args.results else page)
    # The page quotes the command that made its results, so `--from RESULTS --check` verifies any page;
    # a baseline changed here is a page of its own, quoted as this command.
    source = results.source
    if args.baseline is not None or args.baseline_model is not None:
        source = f"bench leaderboard --from {path}{results.baseline.flags()}"
    text = render(results, source)
    if args.check:
        diff = stale_diff(text, out)
        if diff is not None:
            sys.stdout.write(diff)
            print(f"bench: {out} is out of date; regenerate it with: {source}", file=sys.stderr)
            return 1
        return 0
    write_atomic(out, text)
    if args.print:
        print(text, end="")
    print(f"wrote {out}", file=sys.stderr if args.print else sys.stdout)  # one line; the page is in the file
    return 0


def _leaderboard_from_store(args: argparse.Namespace, page: Path) -> int:
    """``bench leaderboard --tracking-uri URI``: the latest finished run of every row of one cohort."""
    from bench.plugins.specs import baseline_from_text
    from bench.report.files import stale_diff, write_atomic
    from bench.report.leaderboard import render
    from bench.report.results import save_results
    from bench.report.store import results_from_store

    dataset = args.dataset or DEFAULT_DATASET
    words = ["bench", "leaderboard", "--dataset", dataset, "--tracking-uri", args.tracking_uri]
    words += ["--fingerprint", args.fingerprint] if args.fingerprint else []
    words += ["--out", str(args.out)] if args.out else []
    baseline = baseline_from_text(args.baseline or "clinical", args.baseline_model)
    source = shlex.join(words) + baseline.flags()
    results = results_from_store(args.tracking_uri, dataset, baseline, source, args.fingerprint)
    out = args.out or page
    text = render(results)
    if args.check:
        diff = stale_diff(text, out)
        if diff is not None:
            sys.stdout.write(diff)
            print(f"bench: {out} is out of date; regenerate it with: {source}", file=sys.stderr)
            return 1
        return 0
    save_results(out.with_suffix(".json"), results)
    write_atomic(out, text)
    if args.print:
        print(text, end="")
    print(f"wrote {out} and {out.with_suffix('.json')} ({len(results.rows)} rows)",
          file=sys.stderr if args.print else sys.stdout)  # fmt: skip
    return 0


def cmd_splits(args: argparse.Namespace) -> int:
    from bench.protocol.splits import find_split, import_split, load_split, make_split, save_split

    cohort = _cohort(args)
    if args.splits_command == "verify":
        split = load_split(cohort, args.name or cohort.default_split)
        print(f"{find_split(cohort.name, split.name)}: ok (sha256 {split.sha256[:16]}, {cohort.n} samples)")
        return 0
    if args.splits_command == "make":
        split = make_split(cohort, args.name, args.folds, args.repeats, args.seed, args.holdout)
    else:
        split = import_split(cohort, args.file, args.name or args.file.stem)
    path = save_split(split, overwrite=args.force)
    print(f"wrote {path} (sha256 {split.sha256[:16]})")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command in ("synth", "show"):  # an output that cannot be written stops before any work
        from bench.report.files import check_writable

        check_writable(args.out, "--out", folder=args.data_command == "synth")
    if args.data_command == "synth":
        from bench.data.synthetic import generate

        manifest = generate(args.preset, args.seed, args.out, progress=not args.quiet)
        print(f"wrote {manifest}; run on it with: bench run --dataset {manifest}")
        return 0
    if args.data_command == "check":
        from bench.data.check import check_dataset

        report = check_dataset(args.manifest, args.horizons, args.tau, progress=not args.quiet)
        if args.config is not None and report.ok:
            from bench.protocol.grid import unrunnable_rows

            report.problems += unrunnable_rows(args.config, args.manifest, args.horizons, args.tau)
        where = report.path or args.manifest
        if report.path is None and report.ok:
            print(f"{args.manifest}: a tabular dataset without images; nothing to check")
            return 0
        for problem in report.problems:
            print(f"{where}: {problem}")
        if not report.ok:
            print(f"bench: {len(report.problems)} problem(s) in {where}", file=sys.stderr)
            return 2
        print(f"{where}: ok ({report.studies} studies, {report.events} events)")
        return 0
    from bench.data.imaging.show import show_patient

    print(f"wrote {show_patient(_cohort(args), args.patient, args.roi, args.out)}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from bench import cache

    if args.action == "info":
        print(cache.summary())
        return 0
    removed = cache.clear()
    print(f"removed {removed.feature_entries} feature entries and {removed.masks} masks from {removed.root}")
    return 0


def cmd_validate_statistics(args: argparse.Namespace) -> int:
    from bench.report.files import write_atomic
    from bench.stats.validity import StudyConfig, render_report, run_study

    _check_outputs(("--out", args.out), ("--output-json", args.output_json))
    config = StudyConfig(
        simulations=args.simulations,
        power_simulations=args.power_simulations,
        n=args.n,
        bootstrap=args.bootstrap,
        seed=args.seed,
    )
    report = run_study(config, progress=not args.quiet)
    text = render_report(report)
    print(text, end="")
    if args.out:
        write_atomic(args.out, text)
    if args.output_json:
        write_atomic(args.output_json, json.dumps(report.as_dict(), indent=1, sort_keys=True) + "\n")
    return 0


COMMANDS = {
    "list": cmd_list,
    "run": cmd_run,
    "grid": cmd_grid,
    "leaderboard": cmd_leaderboard,
    "splits": cmd_splits,
    "validate-statistics": cmd_validate_statistics,
    "data": cmd_data,
    "cache": cmd_cache,
}
