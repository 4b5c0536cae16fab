"""`bench data show`: maximum-intensity projections of one study with its ROI outlines."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from bench.errors import UsageError

if TYPE_CHECKING:
    from bench.data.cohort import Cohort

ROI_COLOURS = {"skeleton": "tab:cyan", "spine": "tab:orange", "spine_dilated": "tab:red"}


def _mip(volume: np.ndarray, axis: int) -> np.ndarray:
    """``volume`` is (z, y, x); axis 1 gives a coronal view, axis 2 a sagittal one, head up."""
    return volume.max(axis=axis)[::-1]


def render_study(
    images: dict[str, sitk.Image], rois: dict[str, sitk.Image], title: str, out: Path
) -> Path:
    """Coronal and sagittal MIPs of each image the study has (``pet`` and/or ``ct``, on one grid), ROIs outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arrays = {m: sitk.GetArrayFromImage(img) for m, img in images.items() if img is not None}
    if not arrays:
        raise UsageError(f"{title}: the study has no image to show")
    sx, sy, sz = next(iter(images.values())).GetSpacing()
    nz, ny, nx = next(iter(arrays.values())).shape
    views = [(f"{m.upper()} {plane}", a, axis, size)
             for m, a in arrays.items() for plane, axis, size in (("coronal", 1, sx), ("sagittal", 2, sy))]  # fmt: skip
    # Panels as wide as the anatomy they show, so every view has the same physical scale.
    widths = [nx * sx if axis == 1 else ny * sy for _, _, axis, _ in views]
    fig, axes = plt.subplots(
        1, len(views), figsize=(3.5 * len(views), 7), constrained_layout=True, gridspec_kw={"width_ratios": widths}
    )
    vmax = (float(np.percentile(arrays["pet"], 99.9)) or 1.0) if "pet" in arrays else 1.0
    for ax, (label, volume, axis, in_plane) in zip(np.atleast_1d(axes), views):
        image = _mip(volume, axis)
        if label.startswith("PET"):
            ax.imshow(image, cmap="gray_r", vmin=0, vmax=vmax, aspect=sz / in_plane, interpolation="nearest")
        else:
            ax.imshow(image, cmap="gray", vmin=-200, vmax=1200, aspect=sz / in_plane, interpolation="nearest")
        for roi, mask in rois.items():
            outline = _mip(sitk.GetArrayFromImage(mask).astype(float), axis)
            if outline.any():
                ax.contour(outline, levels=[0.5], colors=ROI_COLOURS.get(roi, "tab:green"), linewidths=0.8)
        ax.set_title(label)
        ax.set_axis_off()
    handles = [plt.Line2D([], [], color=ROI_COLOURS.get(r, "tab:green"), label=r) for r in rois]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles))
    fig.suptitle(title)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    return out


def show_patient(cohort: Cohort, patient: str, rois: list[str] | None, out: Path) -> Path:
    """Render one study of ``cohort`` (by sample id, or the first study of a patient id) to ``out``."""
    from bench.data.imaging.study import load_study

    if not cohort.has_images:
        raise UsageError(f"dataset {cohort.name!r} has no images to show")
    sample = patient
    if sample not in cohort.inputs:
        by_patient = [s for s, p in zip(cohort.sample_ids, cohort.patient_ids) if p == patient]
        if not by_patient:
            examples = ", ".join(list(cohort.inputs)[:5])
            raise UsageError(f"no patient {patient!r} in {cohort.name!r}; e.g. {examples}")
        sample = by_patient[0]
    inputs = cohort.inputs[sample]
    study = load_study(inputs, sample)
    if rois is None:  # the masks the manifest supplies, else the computed ones (which need a CT)
        rois = sorted(inputs.masks) or (["skeleton", "spine_dilated"] if inputs.ct is not None else [])
    masks = {roi: study.roi_mask(roi) for roi in rois}
    images = {m: study.image(m) for m in inputs.modalities}
    return render_study(images, masks, f"{cohort.name}: {sample}", out)
