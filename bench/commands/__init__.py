"""What each ``bench`` command does once its arguments are parsed (``bench.cli`` parses them).

Each ``cmd_*`` takes the parsed arguments, checks what it can before any work, calls the
library and prints what the user needs; errors are raised (``bench.errors``) and printed
as one line by ``bench.cli.main``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from bench.errors import UsageError

DEFAULT_DATASET = "synthetic_mm"


def _cohort(args: argparse.Namespace):
    from bench.data.datasets import load_cohort

    return load_cohort(args.dataset, args.horizons, args.tau)


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
    from bench.protocol.baseline import planned_baseline
    from bench.protocol.runner import RunRequest, run
    from bench.report.files import write_atomic
    from bench.report.degenerate import degenerate_lines
    from bench.report.leaderboard import ranked, table_lines, warning_lines
    from bench.report.mlflow_sink import MlflowSink
    from bench.report.results_sink import ResultsSink

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
        scheduler=_scheduler(args),
        tune=args.tune,
        tune_inner_folds=args.tune_inner_folds,
        optuna_storage=args.optuna_storage,
        robust_perturbation=args.robust_perturb,
        robust_repeats=args.robust_repeats,
    )
    baseline = planned_baseline(request, args.baseline, args.baseline_model)
    saved = ResultsSink(baseline, _run_command(args), args.results)
    sinks = [MlflowSink(request.tracking_uri), saved, *_progress(args)]
    outcome = run(request, baseline=baseline, sinks=sinks)
    results = saved.results
    table, notes = table_lines(results)
    print(
        f"dataset {outcome.cohort.name}, split {outcome.split.name} ({outcome.split.sha256[:12]}), "
        f"B = {request.bootstrap}, seed {request.seed}"
    )
    warned = warning_lines(results)
    flagged = degenerate_lines(ranked(results.rows))  # folds where every test patient got one risk
    print("\n".join(table + ([""] + notes if notes else []) + ([""] + warned if warned else []) + flagged))
    ui = _ui_command(outcome.cohort.name, args.tracking_uri)
    print(f"MLflow parent run {outcome.parent_run_id}; open the UI with: {ui}")
    if saved.written:  # the rows that finished, even when others failed; never an empty file
        print(f"wrote {args.results}; render it with: bench leaderboard --from {args.results}", file=sys.stderr)
    if args.output_json:
        write_atomic(args.output_json, json.dumps(outcome.as_json(), indent=1, sort_keys=True) + "\n")
    outcome.check()  # exit 1 naming every failed row and fold
    return 0


def _scheduler(args: argparse.Namespace) -> str | None:
    """``--scheduler``, else ``$BENCH_DASK_SCHEDULER``; None leaves the choice to a grid config, then to --workers."""
    from bench.executor import scheduler_from_env

    return args.scheduler or scheduler_from_env()


def _progress(args: argparse.Namespace) -> list:
    """The progress output as a sink of the runner, unless ``--quiet``."""
    from bench.report.progress_sink import ProgressSink

    return [] if args.quiet else [ProgressSink()]


def _ui_command(dataset: str, tracking_uri: str | None) -> str:
    """The ``bench ui`` command that opens the MLflow UI on a run's store and dataset."""
    words = ["bench", "ui", "--dataset", dataset]
    return shlex.join(words + (["--tracking-uri", tracking_uri] if tracking_uri else []))


def _run_command(args: argparse.Namespace) -> str:
    """The ``bench run`` command quoted on a page: the options that decide the results, none that only route them."""
    words = ["bench", "run", "--dataset", args.dataset, "--extractor", *(args.extractor or ["clinical"])]
    words += ["--model", *(args.model or ["coxph"]), "--bootstrap", str(args.bootstrap), "--seed", str(args.seed)]
    optional = (("--split", args.split), ("--weights", args.weights), ("--baseline-model", args.baseline_model))
    for flag, value in optional:
        words += [flag, value] if value is not None else []
    redundant = args.baseline == "clinical" and set(args.extractor or ["clinical"]) == {"clinical"}
    words += ["--baseline", args.baseline] if args.baseline is not None and not redundant else []
    words += ["--tune", str(args.tune), "--tune-inner-folds", str(args.tune_inner_folds)] if args.tune else []
    words += ["--horizons", ",".join(f"{h:g}" for h in args.horizons)] if args.horizons else []
    words += ["--tau", f"{args.tau:g}"] if args.tau is not None else []
    if any("min_icc=" in e for e in args.extractor or []):
        words += ["--robust-perturb", args.robust_perturb, "--robust-repeats", str(args.robust_repeats)]
    return shlex.join([*words, "--results", str(args.results)] if args.results else words)


def _grid_command(args: argparse.Namespace) -> str:
    """The ``bench grid`` command quoted on a page, with the overrides that change its results."""
    words = ["bench", "grid", "--config", str(args.config)]
    for flag, value in (("--dataset", args.dataset), ("--bootstrap", args.bootstrap), ("--weights", args.weights)):
        words += [flag, str(value)] if value is not None else []
    return shlex.join(words)


def cmd_grid(args: argparse.Namespace) -> int:
    from bench.protocol.grid import check_plan, grid_baseline, grid_published, load_config, run_grid
    from bench.report.leaderboard import leaderboard_path
    from bench.report.mlflow_sink import MlflowSink
    from bench.report.results_sink import ResultsSink

    overrides = {"dataset": args.dataset, "bootstrap": args.bootstrap, "workers": args.workers}
    overrides["scheduler"] = _scheduler(args)
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
    chosen = args.leaderboard or (config.leaderboard if not args.dataset else None)

    def page_of(outcome) -> Path:  # the default page is named after the cohort, known once it is loaded
        return chosen or leaderboard_path(outcome.cohort.name)

    published = grid_published(config)  # a paper's values for some rows, shown beside ours
    saved = ResultsSink(grid_baseline(config), _grid_command(args), page_of, page=True, published=published)
    outcome = run_grid(config, sinks=[MlflowSink(config.request.tracking_uri), saved, *_progress(args)])
    if saved.written:  # the rows that finished, even when others failed; never an empty page
        data, *pages = saved.written
        print(page_of(outcome).read_text(), end="")
        print(f"wrote {', '.join(map(str, pages))} and {data}", file=sys.stderr)
    print(
        f"MLflow parent run {outcome.parent_run_id}; browse every run with: "
        f"{_ui_command(outcome.cohort.name, config.request.tracking_uri)}"
    )
    if config.robustness is not None:  # the page of how robust its extractors are, beside the leaderboard
        from bench.commands.robustness import grid_robustness

        grid_robustness(config, page_of(outcome), args.quiet)
    outcome.check()  # exit 1 naming every failed row and fold
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    from bench.commands.robustness import robustness

    return robustness(args)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from bench.plugins.specs import baseline_from_text
    from bench.report.leaderboard import leaderboard_path
    from bench.report.page import stale_page, write_page
    from bench.report.results import load_results

    if args.check_all is not None:
        return _check_all(args)
    if args.results is not None and args.results.name.endswith(".robustness.json"):
        from bench.commands.robustness import robustness_page

        return robustness_page(args)
    if args.dataset is not None:  # a manifest path names its cohort, as `bench run --dataset PATH` recorded it
        from bench.data.datasets import dataset_name

        args.dataset = dataset_name(args.dataset)
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
    if args.check:
        return _report_stale(stale_page(results, out, source), out, source)
    written = write_page(results, out, source)
    if args.print:
        print(out.read_text(), end="")
    print(f"wrote {', '.join(map(str, written))}", file=sys.stderr if args.print else sys.stdout)  # one line
    _print_comparison_hint(results, args)
    return 0


def _check_all(args: argparse.Namespace) -> int:
    """``bench leaderboard --check-all [DIR]``: every page of DIR against its results file; 1 if any is stale."""
    from bench.report.page import stale_page
    from bench.report.results import load_results
    from bench.report.robustness import is_robustness_file, load_robustness
    from bench.report.robustness import stale_page as stale_robustness_page

    given = [flag for flag, value in (("--from", args.results), ("--dataset", args.dataset),
             ("--tracking-uri", args.tracking_uri), ("--out", args.out), ("--check", args.check),
             ("--print", args.print), ("--baseline", args.baseline), ("--baseline-model", args.baseline_model))
             if value]  # fmt: skip
    if given:
        raise UsageError(f"--check-all checks every page as its results file says; drop {', '.join(given)}")
    folder = args.check_all
    if not folder.is_dir():
        raise UsageError(f"--check-all {str(folder)!r} is not a folder of leaderboards")
    pages, stale = sorted(folder.glob("*.md")), []
    orphans = [p for p in pages if not p.with_suffix(".json").is_file()]
    for page in orphans:
        print(f"{page}: no results file {page.with_suffix('.json').name} beside it, so it cannot be checked")
    for results_file in sorted(folder.glob("*.json")):
        page = results_file.with_suffix(".md")
        if is_robustness_file(results_file):
            results = load_robustness(results_file)
            problems = stale_robustness_page(results, page)
        else:
            results = load_results(results_file)
            problems = stale_page(results, page, results.source)
        if problems:
            stale.append(page)
            sys.stdout.write("".join(problems))
            print(f"{page}: out of date; regenerate it with: {results.source}")
        else:
            print(f"{page}: ok")
    if stale or orphans:
        print(f"bench: {len(stale) + len(orphans)} of {len(pages)} pages in {folder} are stale or uncheckable",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _report_stale(problems: list[str], out: Path, source: str) -> int:
    """``--check``: 0 when the page and its figures are current; else what differs, and exit 1."""
    if not problems:
        return 0
    sys.stdout.write("".join(problems))
    print(f"bench: {out} is out of date; regenerate it with: {source}", file=sys.stderr)
    return 1


def _leaderboard_from_store(args: argparse.Namespace, page: Path) -> int:
    """``bench leaderboard --tracking-uri URI``: the latest finished run of every row of one cohort."""
    from bench.plugins.specs import baseline_from_text
    from bench.report.page import stale_page, write_page
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
    if args.check:
        return _report_stale(stale_page(results, out), out, source)
    save_results(out.with_suffix(".json"), results)
    written = write_page(results, out)
    if args.print:
        print(out.read_text(), end="")
    print(f"wrote {', '.join(map(str, written))} and {out.with_suffix('.json')} ({len(results.rows)} rows)",
          file=sys.stderr if args.print else sys.stdout)  # fmt: skip
    _print_comparison_hint(results, args)
    return 0


def cmd_splits(args: argparse.Namespace) -> int:
    from bench.protocol.splits import (
        find_split,
        import_split,
        leakage_warning,
        load_split,
        make_group_split,
        make_split,
        save_split,
    )

    cohort = _cohort(args)
    if args.splits_command == "verify":
        split = load_split(cohort, args.name or cohort.default_split)
        where = find_split(cohort.name, split.name, cohort)
        print(f"{where}: ok (sha256 {split.sha256[:16]}, {cohort.n} samples)")
    else:
        by, test_groups = getattr(args, "by", None), getattr(args, "test_groups", ())
        if args.splits_command == "make" and by is not None:
            split = make_group_split(cohort, args.name, by, test_groups)
        elif test_groups:
            raise UsageError("--test-groups holds out groups of a group column: give --by COLUMN too")
        elif args.splits_command == "make":
            split = make_split(cohort, args.name, args.folds, args.repeats, args.seed, args.holdout)
        else:
            split = import_split(cohort, args.file, args.name or args.file.stem)
        path = save_split(split, overwrite=args.force, cohort=cohort)
        print(f"wrote {path} (sha256 {split.sha256[:16]})")
    leak = leakage_warning(split, cohort)
    if leak:
        print(leak, file=sys.stderr)
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
        if args.split is not None and report.ok:
            _check_split_leakage(args)
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


def _check_split_leakage(args: argparse.Namespace) -> None:
    """``bench data check --split NAME``: the split is verified against the cohort, and any leak said in one line."""
    from bench.data.datasets import load_cohort
    from bench.protocol.splits import leakage_warning, load_split

    cohort = load_cohort(args.manifest, args.horizons, args.tau)
    leak = leakage_warning(load_split(cohort, args.split), cohort)
    if leak:
        print(leak, file=sys.stderr)


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
    from bench.stats.calibration_validity import render_calibration, run_calibration_study
    from bench.stats.icc_validity import render_icc
    from bench.stats.validity import StudyConfig, render_report, run_study

    _check_outputs(("--out", args.out), ("--output-json", args.output_json))
    config = StudyConfig(
        simulations=args.simulations,
        power_simulations=args.power_simulations,
        fwer_simulations=args.fwer_simulations,
        null_rows=args.null_rows,
        n=args.n,
        bootstrap=args.bootstrap,
        seed=args.seed,
        calibration_simulations=args.calibration_simulations,
        calibration_n=args.calibration_n,
    )
    report = run_study(config, progress=not args.quiet)
    calibration = run_calibration_study(config, progress=not args.quiet)
    text = render_report(report) + render_calibration(calibration) + render_icc(seed=args.seed)
    print(text, end="")
    if args.out:
        write_atomic(args.out, text)
    if args.output_json:
        numbers = {**report.as_dict(), "calibration": calibration.as_dict()}
        write_atomic(args.output_json, json.dumps(numbers, indent=1, sort_keys=True) + "\n")
    return 0


def _print_comparison_hint(results, args: argparse.Namespace) -> None:
    """After a page is written: the MLflow UI's comparison URL of its rows, when the store holds their runs."""
    from bench.report.ui import print_comparison_hint

    stream = sys.stderr if args.print else sys.stdout  # with --print, stdout is the page
    print_comparison_hint(results, args.tracking_uri, file=stream)


def cmd_ui(args: argparse.Namespace) -> int:
    from bench.data.datasets import dataset_name
    from bench.report.ui import serve

    if args.dataset is not None:
        args.dataset = dataset_name(args.dataset)
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a port number; give 0 to 65535 (0: a free one)")
    return serve(args.tracking_uri, args.host, args.port, args.expose, args.dataset, args.results, DEFAULT_DATASET)


def cmd_weights(args: argparse.Namespace) -> int:
    """``bench weights lock``: record a weights file's sha256 (and hub commit) in the weights lock."""
    from dataclasses import fields

    from bench.plugins.registry import EXTRACTORS
    from bench.plugins.weights import lock_weights
    from bench.plugins.weights_lock import lock_path

    source = None
    if args.extractor:
        cls = EXTRACTORS.load(args.extractor)
        if "weights" not in {f.name for f in fields(cls.Config)}:
            raise UsageError(f"extractor {args.extractor!r} has no weights; name one that has (resnet3d, "
                             "medsam2_memory, timm), or lock a file with --weights PATH alone")  # fmt: skip
        published = getattr(cls, "weights_source", None)
        if published is None and not args.weights:
            raise UsageError(f"extractor {args.extractor!r} has no published weights file of its own; give the "
                             "file to lock with --weights PATH")  # fmt: skip
        source = published() if published is not None else None
    entry = lock_weights(args.extractor or "", args.weights or "", source)
    revision = f", revision {entry.revision}" if entry.revision else ""
    print(f"locked {entry.name}: sha256 {entry.sha256}{revision} (from {entry.source}) in {lock_path()}")
    return 0


COMMANDS = {
    "list": cmd_list,
    "run": cmd_run,
    "grid": cmd_grid,
    "leaderboard": cmd_leaderboard,
    "robustness": cmd_robustness,
    "splits": cmd_splits,
    "validate-statistics": cmd_validate_statistics,
    "data": cmd_data,
    "cache": cmd_cache,
    "ui": cmd_ui,
    "weights": cmd_weights,
}
