"""Which axial slices of a study an ROI gives, where the ROI lies on each, and the extractor of per-slice vectors.

``medsam2_memory`` prompts MedSAM2 with each chosen slice's box; ``timm`` crops each chosen slice
around that box (plus a margin) for a 2D backbone. Both take their slices from ``roi_slices`` and
their boxes from ``slice_box``, so the two see the same slices of the same ROI with the same options
(``slice_stride``, ``max_slices``).

Arrays are SimpleITK's (z, y, x); a box is ``[x0, y0, x1, y1]`` in pixels, both ends inside the ROI.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from bench.cache import FeatureCache
from bench.data.cohort import Cohort
from bench.data.inputs import StudyInputs
from feature_extractors.base import (
    Extractor,
    FeatureBlock,
    PatientRecord,
    image_files,
    image_needs,
    one_thread,
    patient_records,
    roi_inputs,
)


def roi_slices(mask: np.ndarray, stride: int = 1, max_slices: int = 0) -> np.ndarray:
    """Indices of the axial slices the ROI touches, strided, then evenly subsampled to ``max_slices``."""
    touched = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[:: max(stride, 1)]
    if max_slices and len(touched) > max_slices:
        touched = touched[np.unique(np.linspace(0, len(touched) - 1, max_slices).round().astype(int))]
    return touched


def slice_box(mask_slice: np.ndarray) -> np.ndarray:
    """The ROI's bounding box ``[x0, y0, x1, y1]`` on one slice, in pixels (float32; the last pixels included)."""
    ys, xs = np.nonzero(mask_slice)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float32)


def square_window(box: np.ndarray, spacing: tuple[float, float], margin_mm: float) -> tuple[int, int, int, int]:
    """The pixels ``(x_start, y_start, x_stop, y_stop)`` (stops excluded) of a square crop around ``box``.

    The box grows by ``margin_mm`` on every side, then its shorter side grows to the longer one, both in
    millimetres (``spacing`` is the pixel's x and y size), about the box's centre: the crop is square on the
    patient whatever the in-plane spacing, and it may reach past the image (see ``crop``).
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    sx, sy = spacing
    side_mm = max((x1 - x0 + 1) * sx, (y1 - y0 + 1) * sy) + 2 * margin_mm
    out = []
    for low, high, size in ((x0, x1, sx), (y0, y1, sy)):
        n = max(1, math.ceil(side_mm / size - 1e-9))
        start = math.floor((low + high + 1 - n) / 2)  # the centre of n pixels from start is the box's centre
        out.append((start, start + n))
    (xs, xe), (ys, ye) = out
    return xs, ys, xe, ye


def crop(plane: np.ndarray, window: tuple[int, int, int, int], fill: float) -> np.ndarray:
    """``plane[y_start:y_stop, x_start:x_stop]``, where the window reaches past the image filled with ``fill``."""
    xs, ys, xe, ye = window
    out = np.full((ye - ys, xe - xs), fill, dtype=np.float32)
    h, w = plane.shape
    sy, sx = slice(max(ys, 0), min(ye, h)), slice(max(xs, 0), min(xe, w))
    if sy.start < sy.stop and sx.start < sx.stop:
        out[sy.start - ys : sy.stop - ys, sx.start - xs : sx.stop - xs] = plane[sy, sx]
    return out


def padded(sequences: dict[str, np.ndarray], order) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice vectors of every sample, zero-padded to the longest: values [n, D, F] and mask [n, D]."""
    depth = max(len(v) for v in sequences.values())
    features = next(iter(sequences.values())).shape[1]
    values = np.zeros((len(order), depth, features), np.float64)
    mask = np.zeros((len(order), depth), bool)
    for i, sid in enumerate(order):
        seq = np.asarray(sequences[sid], np.float64)
        values[i, : len(seq)] = seq
        mask[i, : len(seq)] = True
    return values, mask


class SliceExtractor(Extractor):
    """An extractor of per-slice vectors of one image inside an ROI (``medsam2_memory``, ``timm``).

    Its config has ``modality``, ``roi``, ``pool`` (mean or attention) and ``weights``; a subclass gives
    ``weights_path`` (raising WeightsError when there is none), ``compute_entry`` (one study's cached arrays) and
    ``slice_vectors`` (an entry's per-slice vectors [D, F]). The features are the mean over slices; with
    ``pool=attention`` the block also carries the per-slice vectors of every sample, zero-padded with a mask.
    Poolings share cache entries (``pool`` and ``batch_size`` are not in the key).
    """

    cacheable = True
    uses_torch = True

    def weights_path(self) -> Path | None:
        raise NotImplementedError

    def slice_vectors(self, entry: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def entry_features(self, entry: dict[str, np.ndarray]) -> dict[str, float]:
        vector = np.asarray(self.slice_vectors(entry), dtype=np.float64).mean(axis=0)
        return {f"{self.feature_prefix}_{i:03d}": float(v) for i, v in enumerate(vector)}

    feature_prefix = "slice"  # the features' names: PREFIX_000, PREFIX_001 ...

    def cache_options(self) -> dict[str, Any]:
        options = {**dataclasses.asdict(self.config), "_meta": self.meta()}
        for unused in ("batch_size", "pool"):  # neither changes the cached arrays
            options.pop(unused)
        return options

    def meta(self) -> dict[str, Any]:
        """What fixes the arrays besides the options and the inputs (in the cache key and in the entry)."""
        return {}

    def embeddings(self, record: PatientRecord, cache: FeatureCache | None = None) -> dict[str, np.ndarray]:
        """The cached arrays of one study (computed on a miss, with one thread: the same bits on any machine)."""
        key = self.cache_key(record) if cache is not None else None
        hit = cache.get(key) if cache is not None and key is not None else None
        if hit is not None:
            return hit
        with one_thread(self.uses_torch):
            arrays = self.compute_entry(record)
        if cache is not None and key is not None:
            cache.put(key, arrays)
        return arrays

    def extract_patient(self, record: PatientRecord) -> dict[str, float]:
        return self.entry_features(self.embeddings(record))

    def extract(
        self, cohort: Cohort, progress: bool = True, cache: FeatureCache | None = None, **kwargs
    ) -> FeatureBlock:
        self.weights_path()  # a missing checkpoint stops the run here, not once per patient
        cache = cache if cache is not None else FeatureCache.default()
        block = super().extract(cohort, progress=progress, cache=cache, **kwargs)
        if self.config.pool == "attention":
            block.sequence, block.sequence_mask = padded(self.sequences(cohort, cache), cohort.sample_ids)
            block.__post_init__()
        return block

    def produces_sequence(self) -> bool:
        return self.config.pool == "attention"

    def sequences(self, cohort: Cohort, cache: FeatureCache | None = None) -> dict[str, np.ndarray]:
        """Per-slice vectors [D, F] of every sample (for attention pooling over depth), from the cache."""
        self.weights_path()
        cache = cache if cache is not None else FeatureCache.default()
        return {r.sample_id: np.asarray(self.slice_vectors(self.embeddings(r, cache))) for r in patient_records(cohort)}

    def missing_inputs(self, inputs: StudyInputs | None) -> str:
        return image_needs(inputs, (self.config.modality,), self.config.roi)

    def input_files(self, inputs: StudyInputs | None) -> list[Path]:
        return image_files(inputs, self.config.modality, self.config.roi)

    def cache_inputs(self, record: PatientRecord) -> list[Path]:
        return roi_inputs(record, self.config.modality, self.config.roi)
