"""MedSAM2 memory embeddings: the direct route against sam2's video predictor, for two ROIs of one study.

Not part of the default test run (`--benchmark-skip`); run with `make bench`.
The direct route encodes each slice once for both ROIs; the video-predictor route
is run once per ROI, as MedSAM2's scripts do, and encodes each slice twice per ROI
(when its box is added and when its memory is encoded). Both use the same
random-init model and the same slices; the ratio is reported per slice.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sam2")

from feature_extractors import medsam2_memory as m2

from .conftest import TIMINGS

SLICES = 4
CONFIG = m2.MedSAM2Config(weights="random", max_slices=SLICES, batch_size=SLICES)
TARGET = 1.8  # direct route at least this much faster per slice


@pytest.fixture(scope="module")
def study() -> tuple:
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[0:12, 0:48, 0:80]
    body = ((y - 24) / 20.0) ** 2 + ((x - 40) / 36.0) ** 2 < 1
    pet = np.where(body, 1.0 + 0.2 * rng.standard_normal(body.shape), 0.0).astype(np.float32)
    spine = (np.abs(y - 32) < 5) & (np.abs(x - 40) < 5) & (z >= 1) & (z <= 10)
    skeleton = spine | ((np.abs(y - 14) < 4) & (np.abs(x - 40) < 24) & (z >= 1) & (z <= 10))
    return m2.build_model(None, seed=0), np.where(spine, 3.0, pet), {"skeleton": skeleton, "spine": spine}


def test_medsam2_direct_two_rois(benchmark, record, study) -> None:
    model, volume, masks = study
    out = benchmark.pedantic(m2.embed_study, args=(model, volume, masks, CONFIG), rounds=3, iterations=1)
    assert all(len(a["slices"]) == SLICES for a in out.values())
    record("medsam2_direct", benchmark)


def test_medsam2_video_predictor_two_rois(benchmark, record, study) -> None:
    model, volume, masks = study

    def per_roi():
        return {roi: m2.embed_roi_video_predictor(model, volume, mask, CONFIG) for roi, mask in masks.items()}

    out = benchmark.pedantic(per_roi, rounds=3, iterations=1)
    assert all(len(a["slices"]) == SLICES for a in out.values())
    record("medsam2_video", benchmark)


def test_medsam2_direct_speedup(capsys) -> None:
    if not {"medsam2_direct", "medsam2_video"} <= set(TIMINGS):
        pytest.skip("needs both MedSAM2 benchmarks in the same run")
    per_slice = {k: TIMINGS[k] / SLICES for k in ("medsam2_direct", "medsam2_video")}
    ratio = per_slice["medsam2_video"] / per_slice["medsam2_direct"]
    with capsys.disabled():
        print(
            f"\nMedSAM2, 2 ROIs x {SLICES} slices: direct {per_slice['medsam2_direct']:.2f} s/slice, "
            f"video predictor {per_slice['medsam2_video']:.2f} s/slice: {ratio:.1f}x"
        )
    assert ratio >= TARGET
