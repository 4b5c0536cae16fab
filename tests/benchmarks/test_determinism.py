"""Regeneration is byte-identical at any thread count: features and fits of the DeepSurv rows included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_deepsurv_rows_regenerate_byte_for_byte_at_one_and_two_threads(
    benchmark, tmp_path: Path, synthetic_data: Path
) -> None:
    """The demo's three DeepSurv rows (concatenation, gate, depth attention over MedSAM2 per-slice memory), each
    subprocess with its own empty feature cache: extraction and training both run at OMP_NUM_THREADS=1 and 2.

    Three minutes of CPU: under ``make bench`` (timed), not ``make test``; ``tests/test_threads.py`` checks the
    mechanism there."""
    config = tmp_path / "deepsurv.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dataset": "synthetic_mm_tiny",
                "seed": 0,
                "bootstrap": 50,
                "weights": "random",
                "extractors": {
                    "pet": "medsam2_memory:modality=pet,roi=spine_dilated,max_slices=2",
                    "pet_attention": "medsam2_memory:modality=pet,roi=spine_dilated,max_slices=2,pool=attention",
                },
                "rows": [
                    {"features": "pet+clinical", "models": ["deepsurv", "deepsurv:fusion=gate"]},
                    {"features": "pet_attention", "models": ["deepsurv"]},
                    {"features": "clinical", "models": ["coxph"]},
                ],
                "baseline": {"extractor": "clinical", "model": "coxph"},
            }
        )
    )
    pages = {}
    benchmark.pedantic(lambda: _regenerate(config, tmp_path, synthetic_data, pages), rounds=1, iterations=1)
    assert b"pool=attention" in pages[1][".md"] and b"deepsurv[fusion=gate]" in pages[1][".md"]
    for suffix in pages[1]:
        assert pages[1][suffix] == pages[2][suffix], f"page{suffix} differs between 1 and 2 threads"


def _regenerate(config: Path, tmp_path: Path, synthetic_data: Path, pages: dict) -> None:
    for threads in (1, 2):
        out = tmp_path / f"threads{threads}"
        out.mkdir()
        env = {
            "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
            "HOME": str(tmp_path),
            "BENCH_DATA_DIR": str(synthetic_data),
            "BENCH_CACHE_DIR": str(out / "cache"),  # features computed anew under this thread count
            **{name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
        }
        command = [sys.executable, "-m", "bench", "grid", "--config", str(config), "--leaderboard",
                   str(out / "page.md"), "--tracking-uri", f"sqlite:///{out / 'mlflow.db'}", "--quiet"]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        pages[threads] = {suffix: (out / f"page{suffix}").read_bytes() for suffix in (".md", ".json", ".forest.svg")}
