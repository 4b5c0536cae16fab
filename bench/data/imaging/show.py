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


def render_study(pet: sitk.Image, ct: sitk.Image, rois: dict[str, sitk.Image], title: str, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pet_a = sitk.GetArrayFromImage(pet)
    ct_a = sitk.GetArrayFromImage(ct)
    sx, sy, sz = pet.GetSpacing()
    nz, ny, nx = pet_a.shape
    # Panels as wide as the anatomy they show, so every view has the same physical scale.
    widths = [nx * sx, ny * sy, nx * sx, ny * sy]
    fig, axes = plt.subplots(1, 4, figsize=(14, 7), constrained_layout=True, gridspec_kw={"width_ratios": widths})
    views = [("PET coronal", pet_a, 1, sx), ("PET sagittal", pet_a, 2, sy),
             ("CT coronal", ct_a, 1, sx), ("CT sagittal", ct_a, 2, sy)]  # fmt: skip
    vmax = float(np.percentile(pet_a, 99.9)) or 1.0
    for ax, (label, volume, axis, in_plane) in zip(axes, views):
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


def show_patient(cohort: Cohort, patient: str, rois: list[str], out: Path) -> Path:
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
    study = load_study(cohort.inputs[sample], sample)
    masks = {roi: study.roi_mask(roi) for roi in rois}
    return render_study(study.pet, study.ct, masks, f"{cohort.name}: {sample}", out)
