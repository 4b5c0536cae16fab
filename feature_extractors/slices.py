"""Which axial slices of a study an ROI gives, and where the ROI lies on each: one choice for every slice-wise extractor.

``medsam2_memory`` prompts MedSAM2 with each chosen slice's box; ``timm`` crops each chosen slice
around that box (plus a margin) for a 2D backbone. Both take their slices from ``roi_slices`` and
their boxes from ``slice_box``, so the two see the same slices of the same ROI with the same options
(``slice_stride``, ``max_slices``).

Arrays are SimpleITK's (z, y, x); a box is ``[x0, y0, x1, y1]`` in pixels, both ends inside the ROI.
"""

from __future__ import annotations

import math

import numpy as np


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
