"""Speed ratios of the same run (metrics engine against the references, workers against one process), printed at
the end of `make bench`."""

from __future__ import annotations

from typing import NamedTuple

import pytest

# benchmark name -> seconds of its fastest round, filled by the benchmarks: of a few rounds on a shared machine, the
# fastest is the one least disturbed by other work, and the same statistic on both sides keeps a ratio fair
TIMINGS: dict[str, float] = {}
ROUNDS: dict[str, int] = {}  # benchmark name -> how many rounds its fastest was taken from


class Pair(NamedTuple):
    slower: str  # benchmark names
    faster: str
    timed: str  # what both sides' timed call does, set-up included; untimed work is said to be


# Both sides of a ratio do the same job from the same inputs, and both are the fastest of the same number of rounds.
PAIRS = {
    "harrell bootstrap: sksurv loop / engine": Pair(
        "harrell_sksurv_loop", "harrell_engine",
        "(event, time, risk, replicate indices) -> every replicate's C; the engine's counts matrix included",
    ),
    "harrell bootstrap: lifelines loop / engine": Pair(
        "harrell_lifelines_loop", "harrell_engine",
        "(event, time, risk, replicate indices) -> every replicate's C; the engine's counts matrix included",
    ),
    "single C-index: n=100k / n=10k": Pair("c_index_100k", "c_index_10k", "one C-index, the engine on both sides"),
    "td-AUC bootstrap: sksurv loop / engine": Pair(
        "td_auc_sksurv_loop", "td_auc_engine",
        "(training and test outcomes, risk, replicate indices) -> every replicate's AUC at each horizon and their "
        "mean; follow-up censoring, censoring KM and IPCW weights included on both sides",
    ),
    "IBS bootstrap: sksurv loop / engine": Pair(
        "ibs_sksurv_loop", "ibs_engine",
        "(training and test outcomes, survival curves, replicate indices) -> every replicate's IBS; follow-up "
        "censoring, censoring KM and Brier contributions included on both sides",
    ),
    "radiomics extraction: 1 / 2 Dask workers": Pair(
        "radiomics_dask_1_worker", "radiomics_dask_2_workers",
        "every patient into an empty cache, on a started cluster whose workers imported the plugins (not timed)",
    ),
    "radiomics extraction: Dask 1 worker / in-process": Pair(
        "radiomics_dask_1_worker", "radiomics_in_process",
        "every patient into an empty cache; cluster start and plugin imports not timed (this process has them too)",
    ),
    "fitting stage: 1 / 2 Dask workers": Pair(
        "fitting_dask_1_worker", "fitting_dask_2_workers",
        "every fold of every row on fresh workers of a started cluster (cluster start not timed)",
    ),
    "fitting stage: Dask 1 worker / in-process": Pair(
        "fitting_dask_1_worker", "fitting_in_process",
        "every fold of every row on a fresh worker / in a fresh forked child (cluster start, fork's imports not timed)",
    ),
    "fitting stage: with / without calibration": Pair(
        "fitting_with_calibration", "fitting_without_calibration",
        "every fold of every row in a fresh forked child; with: also S(T_i | x_i), O/E, slope, ICI, D-calibration and "
        "net benefit for every replicate",
    ),
    "MedSAM2, 2 ROIs: video predictor / direct": Pair(
        "medsam2_video", "medsam2_direct", "same model, volume and masks -> both ROIs' per-slice memory embeddings"
    ),
    "512-px slice: MedSAM2 encoder / resnet18": Pair(
        "medsam2_encoder_512px", "timm_resnet18_512px",
        "the same 8 normalised crops in one batch, one thread; models built and a first pass made before timing",
    ),
    "512-px slice: MedSAM2 encoder / convnext_tiny": Pair(
        "medsam2_encoder_512px", "timm_convnext_tiny_512px",
        "the same 8 normalised crops in one batch, one thread; models built and a first pass made before timing",
    ),
}  # fmt: skip


@pytest.fixture
def record():
    def _record(name: str, benchmark) -> None:
        TIMINGS[name] = benchmark.stats.stats.min
        ROUNDS[name] = benchmark.stats.stats.rounds

    return _record


def ratios() -> dict[str, float]:
    return {label: TIMINGS[p.slower] / TIMINGS[p.faster] for label, p in PAIRS.items() if _measured(p)}


def unequal_rounds() -> list[str]:
    """The labels of measured pairs whose two sides were not taken from the same number of rounds."""
    return [label for label, p in PAIRS.items() if _measured(p) and ROUNDS[p.slower] != ROUNDS[p.faster]]


def _measured(pair: Pair) -> bool:
    return pair.slower in TIMINGS and pair.faster in TIMINGS


def pytest_terminal_summary(terminalreporter) -> None:
    found = ratios()
    if found:
        terminalreporter.section("speed ratios (same run; each side the fastest of its rounds)")
        for label, value in found.items():
            pair = PAIRS[label]
            shown = f"{value:.1f}x" if value >= 10 else f"{value:.2f}x"  # 1.08x, not 1.1x, against a 1.10 target
            seconds = f"{TIMINGS[pair.slower]:.2f} s / {TIMINGS[pair.faster]:.3f} s"
            rounds = {ROUNDS[pair.slower], ROUNDS[pair.faster]}
            of = f"min of {rounds.pop()} rounds each" if len(rounds) == 1 else "UNEQUAL ROUNDS: not comparable"
            terminalreporter.write_line(f"{label}: {shown} ({seconds}, {of})")
            terminalreporter.write_line(f"    timed: {pair.timed}")
