"""``bench robustness`` (and a grid config's ``robustness:`` block): every feature's ICC under perturbed versions."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from bench.errors import UsageError


def robustness(args: argparse.Namespace) -> int:
    """``bench robustness``: every feature's ICC under perturbed versions (or rescans); the page beside --results."""
    from bench.commands import _check_outputs, _scheduler
    from bench.protocol.robustness_run import RobustnessRequest
    from bench.report.robustness import SUFFIX

    if args.results is not None and not args.results.name.endswith(f"{SUFFIX}.json"):
        raise UsageError(f"--results {str(args.results)!r}: name it <cohort>{SUFFIX}.json, so that its page "
                         f"(<cohort>{SUFFIX}.md beside it) is checked as a robustness page")  # fmt: skip
    _check_outputs(("--results", args.results), ("--results", _page(args.results)))
    request = RobustnessRequest(args.dataset, tuple(args.extractor), args.perturb, args.repeats, args.seed, args.retest,
                                args.workers, _scheduler(args), args.weights)  # fmt: skip
    _measure_and_write(request, args.results, args.tracking_uri, not args.quiet)
    return 0


def grid_robustness(config, board: Path | None, quiet: bool) -> None:
    """A grid config's ``robustness:`` block: its extractors measured under its perturbation, the page (when the
    grid writes a leaderboard) beside it as ``<leaderboard>.robustness.md``."""
    from bench.protocol.robustness_run import RobustnessRequest
    from bench.report.robustness import SUFFIX

    block, run = config.robustness, config.request
    request = RobustnessRequest(run.dataset, block.extractors, block.perturb, block.repeats, run.seed, False,
                                run.workers, run.scheduler, run.weights)  # fmt: skip
    results = board.with_name(f"{board.stem}{SUFFIX}.json") if board is not None else None
    _measure_and_write(request, results, run.tracking_uri, not quiet)


def _page(results: Path | None) -> Path | None:
    return results.with_suffix(".md") if results is not None else None


def _measure_and_write(request, results: Path | None, tracking_uri: str | None, progress: bool) -> None:
    from bench.report.robustness import run_robustness, summarise

    words = ["bench", "robustness", "--dataset", request.dataset, "--extractor", *request.extractors]
    words += ["--retest"] if request.retest else ["--perturb", request.perturbation, "--repeats", str(request.repeats)]
    words += ["--seed", str(request.seed)] + (["--weights", request.weights] if request.weights else [])
    source = shlex.join(words + (["--results", str(results)] if results else []))
    done, written = run_robustness(request, results, _page(results), tracking_uri, source, progress)
    for e in done.extractors:
        s = summarise(e.features)
        print(f"{e.label}: " + (f"{s.n} features, median ICC {s.median:.3f}, {s.good:.0%} >= 0.75, "
                                f"{s.excellent:.0%} >= 0.90" if s else "no feature varies"))  # fmt: skip
    print(f"wrote {', '.join(map(str, written))}" if written else "(no --results: nothing written but the MLflow runs)")


def robustness_page(args: argparse.Namespace) -> int:
    """``bench leaderboard --from X.robustness.json [--check]``: the robustness page rendered from its results."""
    from bench.commands import _report_stale
    from bench.report.robustness import load_robustness, stale_page, write_page

    given = [flag for flag, value in (("--dataset", args.dataset), ("--tracking-uri", args.tracking_uri),
             ("--baseline", args.baseline), ("--baseline-model", args.baseline_model)) if value]  # fmt: skip
    if given:
        raise UsageError(f"{args.results} is a robustness results file; drop {', '.join(given)}")
    results = load_robustness(args.results)
    out = args.out or args.results.with_suffix(".md")
    if args.check:
        return _report_stale(stale_page(results, out), out, results.source)
    written = write_page(results, out)
    if args.print:
        print(out.read_text(), end="")
    print(f"wrote {', '.join(map(str, written))}")
    return 0
