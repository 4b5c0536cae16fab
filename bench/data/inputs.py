"""What one study's images are: the typed record every imaging stage reads (never a dict of strings)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import InputError


@dataclass(frozen=True)
class StudyInputs:
    """The image files of one study: PET and CT (a NIfTI file or a DICOM series folder) and supplied ROI masks.

    ``pet_units`` says how NIfTI PET values are to be read (``suv``, or ``bqml`` converted from DICOM
    tags). Paths are absolute or relative to the working directory (a manifest resolves its own).
    """

    pet: Path | None = None
    ct: Path | None = None
    masks: Mapping[str, Path] = field(default_factory=dict)  # roi -> mask file, on any grid
    pet_units: str = "suv"

    def __post_init__(self) -> None:
        object.__setattr__(self, "masks", {k: Path(v) for k, v in self.masks.items()})  # a private copy
        for what in ("pet", "ct"):
            value = getattr(self, what)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, what, Path(value))

    @property
    def modalities(self) -> tuple[str, ...]:
        """The images this study has, PET first."""
        return tuple(m for m in ("pet", "ct") if getattr(self, m) is not None)

    def image(self, modality: str, patient: str = "") -> Path:
        """The file of ``modality``, or an error saying that this study has none."""
        path = getattr(self, modality, None) if modality in ("pet", "ct") else None
        if path is None:
            who = f"patient {patient!r}: " if patient else ""
            raise InputError(f"{who}no {modality.upper()} image in this study; give a {modality!r} path in the "
                             f"manifest or choose modality={'/'.join(self.modalities) or 'none'}")  # fmt: skip
        return path

    def files_for(self, modality: str, roi: str) -> list[Path]:
        """The files a feature of ``modality`` inside ``roi`` depends on (part of every cache key).

        The image itself; the CT when the ROI is derived from it; the supplied mask when there is one;
        and the PET, which defines the grid everything is brought onto, whenever the study has one.
        """
        files = [self.pet] if self.pet is not None else []
        supplied = self.masks.get(roi)
        if modality == "ct" or supplied is None:
            files.append(self.ct)
        if supplied is not None:
            files.append(supplied)
        return [f for f in files if f is not None]

    def all_files(self) -> list[Path]:
        files = [getattr(self, m) for m in self.modalities]
        return files + [self.masks[roi] for roi in sorted(self.masks)]


def study_inputs(value: StudyInputs | Mapping[str, Any] | None) -> StudyInputs | None:
    """``value`` as StudyInputs; the dict form of earlier versions (keys pet, ct, masks, pet_units) is accepted."""
    if value is None or isinstance(value, StudyInputs):
        return value
    if not value:
        return None
    unknown = set(value) - {"pet", "ct", "masks", "pet_units"}
    if unknown:
        raise InputError(f"unknown study input {sorted(unknown)[0]!r}; valid: pet, ct, masks, pet_units")
    return StudyInputs(value.get("pet"), value.get("ct"), value.get("masks") or {}, value.get("pet_units", "suv"))
