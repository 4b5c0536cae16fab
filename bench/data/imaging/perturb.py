"""Perturbations of a study's image and ROI masks, seeded and deterministic, composable as a chain (issue 27).

After Zwanenburg et al. (Sci Rep 2019): a chain such as ``volume:+2mm,contour:4,shift:1.5mm,rotate:5,noise:0.1``
is applied step by step to arrays on one grid (z, y, x) with the voxel spacing in mm; each step draws from its
own stream of ``seed`` (and the step's position), so the same chain and seed give the same arrays, and the
inputs are never modified (every step returns new arrays).

- ``volume:+Xmm`` / ``volume:-Xmm``: grow or shrink each mask by X mm (Euclidean distance in mm, any spacing);
  ``volume:+Nvox`` by N voxels (distance in voxels: 1 is one face-connected layer); ``volume:P%`` (``+P%``/``-P%``):
  grow or shrink until the volume changes by that fraction, the nearest voxels first (exactly ``round(P * V)``
  voxels). ``+-`` (or ``±``) instead of a sign grows or shrinks, each with probability 1/2 per seed
  (``volume:+-1vox``: the one-voxel reader disagreement of Zwanenburg et al.).
- ``contour:k``: k random local edits of each mask's boundary, each adding or removing a ball of voxels around a
  boundary voxel; an edit that would move the volume more than 10 % from the original is skipped.
- ``shift:Lmm``: the image and its masks translated together by a random vector of length L mm (image linear,
  masks nearest-neighbour).
- ``rotate:D``: the image and masks rotated by D degrees (random sign) in the axial plane about the first mask's
  centre.
- ``noise:S``: Gaussian noise with S times the image's noise estimate inside the body (the MAD of the image
  minus its 1-voxel Gaussian smoothing, over voxels above the image's median).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bench.errors import UsageError

KINDS = ("volume", "contour", "shift", "rotate", "noise")
CONTOUR_RADIUS = 2  # voxels: the ball each contour edit adds or removes
CONTOUR_LIMIT = 0.10  # an edit never takes the volume further than this from the original


@dataclass(frozen=True)
class Step:
    kind: str
    amount: float
    unit: str  # "mm", "vox", "%", "" (a count, degrees or a noise factor)
    either: bool = False  # volume only: grow or shrink by |amount|, the sign drawn from the step's stream

    def __str__(self) -> str:
        sign = "+-" if self.either else "+" if self.kind == "volume" and self.amount > 0 else ""
        value = f"{self.amount * 100:g}" if self.unit == "%" else f"{self.amount:g}"
        return f"{self.kind}:{sign}{value}{self.unit}"


_STEP = re.compile(r"^(volume|contour|shift|rotate|noise):(\+-|±|[+-])?(\d+(?:\.\d+)?)(mm|vox|%)?$")
_FORMS = "volume:+2mm, volume:+-1vox, volume:-10%, contour:4, shift:1.5mm, rotate:5, noise:0.1"


def parse_chain(text: str) -> tuple[Step, ...]:
    """``volume:+2mm,contour:4,...`` as steps; a bad step is one line naming it and the forms that exist."""
    steps = []
    for part in (p.strip() for p in text.split(",")):
        match = _STEP.match(part)
        if not match:
            raise UsageError(f"perturbation {part!r} is not one of: {_FORMS}")
        kind, sign, amount, unit = match.group(1), match.group(2) or "", float(match.group(3)), match.group(4) or ""
        either = sign in ("+-", "±")
        amount = -amount if sign == "-" else amount
        allowed = {"volume": ("mm", "vox", "%"), "contour": ("",), "shift": ("mm",), "rotate": ("",), "noise": ("",)}
        if unit not in allowed[kind] or (kind == "contour" and amount != int(amount)) or \
                (kind in ("contour", "shift", "noise") and amount < 0) or (either and kind != "volume"):  # fmt: skip
            units = " or ".join(u or "a number" for u in allowed[kind])
            raise UsageError(f"perturbation {part!r}: {kind} takes {units}"
                             + ("; a count" if kind == "contour" else "") + "; non-negative where it is a size"
                             + ("; +- only for volume" if either else ""))  # fmt: skip
        steps.append(Step(kind, amount / 100 if unit == "%" else amount, unit, either))
    return tuple(steps)


def perturb(image: np.ndarray, masks: dict[str, np.ndarray], spacing, chain: tuple[Step, ...], seed: int):
    """The image and masks after every step of ``chain`` (new arrays; the inputs are untouched)."""
    images, masks = perturb_study({"image": image}, masks, spacing, chain, seed)
    return images["image"], masks


def perturb_study(images: dict[str, np.ndarray], masks: dict[str, np.ndarray], spacing, chain: tuple[Step, ...],
                  seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:  # fmt: skip
    """Several images of one grid (PET and CT) and their masks after ``chain``: a shift or rotation moves them all
    together, noise is drawn for each image at its own noise level."""
    images = {name: np.array(image, dtype=float) for name, image in images.items()}
    masks = {name: np.array(mask, dtype=bool) for name, mask in masks.items()}
    spacing = np.asarray(spacing, dtype=float)
    for position, step in enumerate(chain):
        rng = np.random.default_rng(np.random.SeedSequence([seed, position, KINDS.index(step.kind)]))
        images, masks = _apply(step, images, masks, spacing, rng)
    return images, masks


def _apply(step: Step, images, masks, spacing, rng):
    if step.kind == "volume":
        amount = step.amount * (1 if not step.either or rng.random() < 0.5 else -1)  # one sign for every mask
        return images, {n: _volume(m, spacing, step.unit, amount) for n, m in masks.items()}
    if step.kind == "contour":
        return images, {n: _contour(m, int(step.amount), rng) for n, m in masks.items()}
    if step.kind == "noise":
        return {n: i + rng.normal(0.0, step.amount * noise_level(i), i.shape) for n, i in images.items()}, masks
    if step.kind == "shift":
        direction = rng.normal(size=3)
        voxels = direction / np.linalg.norm(direction) * step.amount / spacing
        moved = {n: ndimage.shift(m.astype(float), voxels, order=0, mode="constant") > 0.5 for n, m in masks.items()}
        return {n: ndimage.shift(i, voxels, order=1, mode="nearest") for n, i in images.items()}, moved
    angle = np.deg2rad(step.amount) * (1 if rng.random() < 0.5 else -1)
    shape = next(iter(images.values())).shape
    centre = np.array(ndimage.center_of_mass(next(iter(masks.values())))) if masks else np.array(shape) / 2
    return {n: _rotated(i, 1, centre, angle, spacing) for n, i in images.items()}, {
        n: _rotated(m.astype(float), 0, centre, angle, spacing) > 0.5 for n, m in masks.items()
    }


def _volume(mask: np.ndarray, spacing: np.ndarray, unit: str, amount: float) -> np.ndarray:
    if unit in ("mm", "vox"):
        sampling = spacing if unit == "mm" else None
        if amount >= 0:
            return ndimage.distance_transform_edt(~mask, sampling=sampling) <= amount
        return ndimage.distance_transform_edt(mask, sampling=sampling) > -amount
    count = int(round(abs(amount) * mask.sum()))
    out = mask.copy()
    if amount >= 0:  # the nearest outside voxels join, stable order breaks ties
        distance = ndimage.distance_transform_edt(~mask, sampling=spacing)
        outside = np.flatnonzero(~mask.ravel())
        chosen = outside[np.argsort(distance.ravel()[outside], kind="stable")[:count]]
        out.ravel()[chosen] = True
    else:  # the inside voxels nearest the boundary leave
        distance = ndimage.distance_transform_edt(mask, sampling=spacing)
        inside = np.flatnonzero(mask.ravel())
        chosen = inside[np.argsort(distance.ravel()[inside], kind="stable")[:count]]
        out.ravel()[chosen] = False
    return out


def _contour(mask: np.ndarray, edits: int, rng: np.random.Generator) -> np.ndarray:
    original = int(mask.sum())
    out = mask.copy()
    r = CONTOUR_RADIUS
    ball = np.add.outer(np.add.outer(np.arange(-r, r + 1) ** 2, np.arange(-r, r + 1) ** 2), np.arange(-r, r + 1) ** 2)
    ball = ball <= r * r
    for _ in range(edits):
        boundary = np.argwhere(out & ~ndimage.binary_erosion(out))
        if len(boundary) == 0:
            break
        centre = boundary[rng.integers(len(boundary))]
        grow = rng.random() < 0.5
        low = np.maximum(centre - r, 0)
        high = np.minimum(centre + r + 1, out.shape)
        patch = ball[tuple(slice(lo - c + r, hi - c + r) for lo, hi, c in zip(low, high, centre))]
        region = tuple(slice(lo, hi) for lo, hi in zip(low, high))
        candidate = out.copy()
        candidate[region] = (candidate[region] | patch) if grow else (candidate[region] & ~patch)
        if abs(int(candidate.sum()) - original) <= CONTOUR_LIMIT * original and candidate.any():
            out = candidate
    return out


def _rotated(volume: np.ndarray, order: int, centre: np.ndarray, angle: float, spacing: np.ndarray) -> np.ndarray:
    """``volume`` rotated by ``angle`` in the axial (y, x) plane about ``centre`` (voxel coordinates), in mm."""
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    to_mm, to_voxels = np.diag(spacing), np.diag(1 / spacing)
    matrix = to_voxels @ rotation.T @ to_mm  # output voxel -> input voxel
    offset = centre - matrix @ centre
    return ndimage.affine_transform(volume, matrix, offset=offset, order=order, mode="nearest")


def noise_level(image: np.ndarray) -> float:
    """The image's noise standard deviation inside the body: the scaled MAD of the image minus its smoothing,
    over voxels above the median (the body, in a PET or CT volume that has air around it)."""
    residual = image - ndimage.gaussian_filter(image, 1.0)
    body = image > np.median(image)
    values = residual[body] if body.any() else residual.ravel()
    return float(1.4826 * np.median(np.abs(values - np.median(values))))
