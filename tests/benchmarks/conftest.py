"""Speed ratios of the metrics engine against the references, printed at the end of `make bench`."""

from __future__ import annotations

import pytest

TIMINGS: dict[str, float] = {}  # benchmark name -> mean seconds, filled by the benchmarks


@pytest.fixture
def record():
    def _record(name: str, benchmark) -> None:
        TIMINGS[name] = benchmark.stats.stats.mean

    return _record


def ratios() -> dict[str, float]:
    pairs = {
        "harrell bootstrap: sksurv loop / engine": ("harrell_sksurv_loop", "harrell_engine"),
        "harrell bootstrap: lifelines loop / engine": ("harrell_lifelines_loop", "harrell_engine"),
        "single C-index: n=100k / n=10k": ("c_index_100k", "c_index_10k"),
        "td-AUC bootstrap: sksurv loop / engine": ("td_auc_sksurv_loop", "td_auc_engine"),
        "IBS bootstrap: sksurv loop / engine": ("ibs_sksurv_loop", "ibs_engine"),
    }
    return {label: TIMINGS[a] / TIMINGS[b] for label, (a, b) in pairs.items() if a in TIMINGS and b in TIMINGS}


def pytest_terminal_summary(terminalreporter) -> None:
    found = ratios()
    if found:
        terminalreporter.section("speed ratios (same run)")
        for label, value in found.items():
            terminalreporter.write_line(f"{label}: {value:.1f}x")
