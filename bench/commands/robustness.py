"""``bench robustness`` (and a grid config's ``robustness:`` block): every feature's ICC under perturbed versions."""

from __future__ import annotations

import argparse
import shlex

from bench.errors import UsageError


def robustness(args: argparse.Namespace) -> int:
    """``bench robustness``: every feature's ICC under perturbed versions (or rescans); the page beside --results."""
    from bench.commands import _check_outputs, _scheduler
    from bench.protocol.robustness_run import RobustnessRequest
    from bench.report.robustness import SUFFIX, run_robustness, summarise

    if args.results is not None and not args.results.name.endswith(f"{SUFFIX}.json"):
        raise UsageError(f"--results {str(args.results)!r}: name it <cohort>{SUFFIX}.json, so that its page "
                         f"(<cohort>{SUFFIX}.md beside it) is checked as a robustness page")  # fmt: skip
    page = args.results.with_suffix(".md") if args.results is not None else None
    _check_outputs(("--results", args.results), ("--results", page))
    request = RobustnessRequest(args.dataset, tuple(args.extractor), args.perturb, args.repeats, args.seed, args.retest,
                                args.workers, _scheduler(args), args.weights)  # fmt: skip
    words = ["bench", "robustness", "--dataset", args.dataset, "--extractor", *args.extractor]
    words += ["--retest"] if args.retest else ["--perturb", args.perturb, "--repeats", str(args.repeats)]
    words += ["--seed", str(args.seed)] + (["--weights", args.weights] if args.weights else [])
    source = shlex.join(words + (["--results", str(args.results)] if args.results else []))
    results, written = run_robustness(request, args.results, page, args.tracking_uri, source, not args.quiet)
    for e in results.extractors:
        s = summarise(e.features)
        print(f"{e.label}: " + (f"{s.n} features, median ICC {s.median:.3f}, {s.good:.0%} >= 0.75, "
                                f"{s.excellent:.0%} >= 0.90" if s else "no feature varies"))  # fmt: skip
    print(f"wrote {', '.join(map(str, written))}" if written else "(no --results: nothing written but the MLflow runs)")
    return 0
