"""A perturbed copy of one study, written as NIfTI files for any extractor to read (issue 27).

Extractors build their ``Study`` from a record's ``StudyInputs``; a perturbed study is therefore new inputs:
its PET and CT on the study's grid and the perturbed ROIs as supplied masks (derived ROIs such as
``spine_dilated`` are derived from the original CT first, then perturbed), written under a folder the caller
owns (temporary or cached), never beside the user's files. The PET is written in SUV, as the study reads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from bench.data.imaging.perturb import Step, perturb_study
from bench.data.imaging.study import Study
from bench.data.inputs import StudyInputs


def perturbed_inputs(inputs: StudyInputs, sample_id: str, rois: tuple[str, ...], chain: tuple[Step, ...],
                     seed: int, folder: Path) -> StudyInputs:  # fmt: skip
    """``inputs`` after ``chain`` (seeded by ``seed``), written into ``folder``; the ROIs ``rois`` become masks."""
    study = Study(inputs, sample_id)
    grid = study.grid
    images = {m: sitk.GetArrayFromImage(study.image(m)) for m in ("pet", "ct") if getattr(inputs, m) is not None}
    masks = {roi: sitk.GetArrayFromImage(study.roi_mask(roi)) > 0 for roi in rois}
    spacing = tuple(reversed(grid.GetSpacing()))  # arrays are (z, y, x)
    images, masks = perturb_study(images, masks, spacing, chain, seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, array in [*images.items(), *((f"mask_{r}", m.astype(np.uint8)) for r, m in masks.items())]:
        image = sitk.GetImageFromArray(array.astype(np.float32) if array.dtype != np.uint8 else array)
        image.CopyInformation(grid)
        written[name] = folder / f"{name}.nii"  # uncompressed: read once, within the task, then removed
        sitk.WriteImage(image, str(written[name]))
    return StudyInputs(written.get("pet"), written.get("ct"), {r: written[f"mask_{r}"] for r in rois}, "suv")
