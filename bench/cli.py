"""The ``bench`` command line: parses arguments and calls the library; nothing else."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.errors import BenchError

DEFAULT_DATASET = "synthetic_mm"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="Survival-prognosis benchmark harness.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list registered extractors, models or datasets (imports nothing)")
    p.add_argument("what", choices=["extractors", "models", "datasets"])

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
    p.add_argument("--output-json", type=Path, metavar="PATH", help="also write the results as JSON")
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

    p = sub.add_parser("leaderboard", help="render the markdown leaderboard from the MLflow runs or a results file")
    _dataset_arg(p)
    p.add_argument("--split", help="split name (default: the dataset's default)")
    p.add_argument(
        "--from",
        dest="results",
        type=Path,
        metavar="RESULTS.json",
        help="render from the results file `bench grid` wrote beside its leaderboard instead of MLflow",
    )
    p.add_argument("--out", type=Path, help="output file (default: leaderboards/<dataset>.md, or beside --from)")
    p.add_argument("--check", action="store_true", help="regenerate in memory; exit 1 with a diff if the file differs")
    _baseline_args(p)
    _tracking_arg(p)

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
    _policy_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = data.add_parser("show", help="PET and CT maximum-intensity projections of one patient with ROI outlines")
    p.add_argument("patient", help="patient (or sample) id")
    _dataset_arg(p)
    p.add_argument("--roi", nargs="+", default=["skeleton", "spine_dilated"], help="ROIs to outline")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")

    p = sub.add_parser("cache", help="feature and mask cache: info or clear")
    p.add_argument("action", choices=["info", "clear"])

    splits = sub.add_parser("splits", help="make, import or verify frozen splits").add_subparsers(
        dest="splits_command", required=True, metavar="ACTION"
    )
    p = splits.add_parser("make", help="write splits/<dataset>/<name>.json")
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


def _baseline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--baseline",
        default="clinical",
        metavar="EXTRACTOR",
        help="extractor label every row is compared with (default clinical)",
    )
    p.add_argument(
        "--baseline-model",
        metavar="MODEL",
        help="compare with the baseline extractor under this model (default: the row's own model)",
    )


def _baseline(args: argparse.Namespace):
    from bench.report.leaderboard import Baseline

    return Baseline(args.baseline, args.baseline_model)


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
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except BenchError as exc:
        if args.debug:
            raise
        print(f"bench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


def cmd_list(args: argparse.Namespace) -> int:
    from bench.plugins.registry import DATASETS, EXTRACTORS, MODELS

    registry = {"extractors": EXTRACTORS, "models": MODELS, "datasets": DATASETS}[args.what]
    for e in registry.entries():
        extras = f" [{','.join(e.extras)}]" if e.extras else ""
        print(f"{e.name:<20} {e.distribution} {e.version}{extras}  ({e.value})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bench.protocol.runner import RunRequest, run
    from bench.report.leaderboard import rows_from_outcome, table_lines

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
    outcome = run(request, progress=not args.quiet)
    table, notes = table_lines(outcome.cohort, rows_from_outcome(outcome), _baseline(args))
    print(
        f"dataset {outcome.cohort.name}, split {outcome.split.name} ({outcome.split.sha256[:12]}), "
        f"B = {request.bootstrap}, seed {request.seed}"
    )
    print("\n".join(table + ([""] + notes if notes else [])))
    print(
        f"MLflow parent run {outcome.parent_run_id}; open the UI with: "
        f"mlflow ui --backend-store-uri {args.tracking_uri or 'sqlite:///mlflow.db'}"
    )
    if args.output_json:
        _write_atomic(args.output_json, json.dumps(outcome.as_json(), indent=1, sort_keys=True) + "\n")
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    from bench.protocol.grid import baseline_labels, check_plan, load_config, run_grid
    from bench.report.leaderboard import Baseline, render, rows_from_outcome
    from bench.report.results import rounded, save_results

    overrides = {"dataset": args.dataset, "bootstrap": args.bootstrap, "workers": args.workers}
    overrides.update({"weights": args.weights, "tracking_uri": args.tracking_uri})
    config = load_config(args.config, overrides)
    if args.plan:
        for features, models in check_plan(config):
            print(f"{features}: {', '.join(models)}")
        return 0
    outcome = run_grid(config, progress=not args.quiet)
    rows = rounded(rows_from_outcome(outcome))
    baseline = Baseline(*baseline_labels(config))
    out = args.leaderboard or (config.leaderboard if not args.dataset else None)
    out = out or Path("leaderboards") / f"{outcome.cohort.name}.md"
    source = f"bench grid --config {args.config}"
    save_results(out.with_suffix(".json"), outcome.cohort, outcome.split, rows, baseline, source)
    text = render(outcome.cohort, outcome.split, rows, baseline, source)
    _write_atomic(out, text)
    print(text, end="")
    print(f"wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)
    print(
        f"MLflow parent run {outcome.parent_run_id}; browse every run with: "
        f"mlflow ui --backend-store-uri {config.request.tracking_uri or 'sqlite:///mlflow.db'}"
    )
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    import leaderboards
    from bench.report.leaderboard import render, rows_from_mlflow, write_or_check
    from bench.protocol.splits import load_split

    if args.results:
        from bench.report.results import load_results

        results = load_results(args.results)
        text = render(results.protocol, results.split, results.rows, results.baseline, results.source)
        out = args.out or args.results.with_suffix(".md")
        regenerate = results.source
    else:
        cohort = _cohort(args)
        split = load_split(cohort, args.split or cohort.default_split)
        text = render(cohort, split, rows_from_mlflow(args.tracking_uri, cohort.name, split), _baseline(args))
        out = args.out or Path(leaderboards.__file__).parent / f"{cohort.name}.md"
        regenerate = f"bench leaderboard --dataset {cohort.name}"
    diff = write_or_check(text, out, args.check)
    if diff is not None:
        sys.stdout.write(diff)
        print(f"bench: {out} is out of date; regenerate it with: {regenerate}", file=sys.stderr)
        return 1
    if not args.check:
        print(text, end="")
        print(f"wrote {out}", file=sys.stderr)
    return 0


def cmd_splits(args: argparse.Namespace) -> int:
    from bench.protocol.splits import import_split, load_split, make_split, save_split, split_path

    cohort = _cohort(args)
    if args.splits_command == "verify":
        split = load_split(cohort, args.name or cohort.default_split)
        print(f"{split_path(cohort.name, split.name)}: ok (sha256 {split.sha256[:16]}, {cohort.n} samples)")
        return 0
    if args.splits_command == "make":
        split = make_split(cohort, args.name, args.folds, args.repeats, args.seed, args.holdout)
    else:
        split = import_split(cohort, args.file, args.name or args.file.stem)
    path = save_split(split, overwrite=args.force)
    print(f"wrote {path} (sha256 {split.sha256[:16]})")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "synth":
        from bench.data.synthetic import PRESETS, generate

        if args.preset not in PRESETS:
            from bench.errors import UnknownNameError

            raise UnknownNameError("preset", args.preset, sorted(PRESETS))
        manifest = generate(args.preset, args.seed, args.out, progress=not args.quiet)
        print(f"wrote {manifest}; run on it with: bench run --dataset {manifest}")
        return 0
    if args.data_command == "check":
        return _data_check(args)
    return _data_show(args)


def _data_check(args: argparse.Namespace) -> int:
    from bench.data.manifest import check_images, is_manifest_path, read_manifest

    source = args.manifest
    if not is_manifest_path(source):  # a registered imaging dataset: check the manifest it was built from
        cohort = _cohort(argparse.Namespace(dataset=source, horizons=args.horizons, tau=args.tau))
        source = str(cohort.extra.get("manifest") or "")
        if not source:
            print(f"{args.manifest}: a tabular dataset without images; nothing to check")
            return 0
    manifest = read_manifest(source, args.horizons, args.tau)
    problems = [str(p) for p in manifest.problems + check_images(manifest, progress=not args.quiet)]
    if manifest.policy is None:
        problems.append("no horizons and tau: declare them in a YAML manifest or pass --horizons and --tau")
    if problems:
        for problem in problems:
            print(f"{manifest.path}: {problem}")
        print(f"bench: {len(problems)} problem(s) in {manifest.path}", file=sys.stderr)
        return 2
    events = int(manifest.table["event"].astype(int).sum())
    print(f"{manifest.path}: ok ({len(manifest.table)} studies, {events} events)")
    return 0


def _data_show(args: argparse.Namespace) -> int:
    from bench.errors import UsageError
    from bench.data.imaging.show import render_study
    from bench.data.imaging.study import load_study

    cohort = _cohort(args)
    inputs = cohort.extra.get("inputs", {})
    if not inputs:
        raise UsageError(f"dataset {cohort.name!r} has no images to show")
    sample = args.patient
    if sample not in inputs:
        by_patient = [s for s, p in zip(cohort.sample_ids, cohort.patient_ids) if p == args.patient]
        if not by_patient:
            raise UsageError(f"no patient {args.patient!r} in {cohort.name!r}; e.g. {', '.join(list(inputs)[:5])}")
        sample = by_patient[0]
    study = load_study(inputs[sample], sample)
    rois = {roi: study.roi_mask(roi) for roi in args.roi}
    out = render_study(study.pet, study.ct, rois, f"{cohort.name}: {sample}", args.out)
    print(f"wrote {out}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    import shutil

    from bench.features.cache import FeatureCache, cache_root

    features = FeatureCache.default()
    masks = cache_root() / "masks"
    mask_files = list(masks.glob("*.nii.gz")) if masks.exists() else []
    if args.action == "info":
        count, size = features.info()
        mask_size = sum(f.stat().st_size for f in mask_files)
        print(f"{cache_root()}: {count} feature entries ({size / 1e6:.1f} MB), "
              f"{len(mask_files)} masks ({mask_size / 1e6:.1f} MB)")  # fmt: skip
        return 0
    removed = features.clear()
    if masks.exists():
        shutil.rmtree(masks)
    print(f"removed {removed} feature entries and {len(mask_files)} masks from {cache_root()}")
    return 0


def cmd_validate_statistics(args: argparse.Namespace) -> int:
    from bench.errors import UsageError
    from bench.stats.validity import StudyConfig, render_report, run_study

    if min(args.simulations, args.power_simulations, args.bootstrap) < 1 or args.n < 10:
        raise UsageError("--simulations, --power-simulations and --bootstrap must be positive and --n at least 10")
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
        _write_atomic(args.out, text)
    if args.output_json:
        _write_atomic(args.output_json, json.dumps(report.as_dict(), indent=1, sort_keys=True) + "\n")
    return 0


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


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
