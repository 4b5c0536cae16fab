"""pyradiomics features of PET and/or CT inside an ROI (the maintained fork ``pyradiomics-bhklab``).

Defaults: intensities discretised with a fixed bin width per modality (0.25 SUV
for PET, 25 HU for CT), no resampling (features on the PET grid, where CT and the
mask are brought), and the first-order, shape and texture classes GLCM, GLRLM and
GLSZM. A user's pyradiomics parameter file replaces all of that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from bench.data.inputs import StudyInputs
from bench.errors import UsageError
from feature_extractors.base import (
    ExistingFile,
    Extractor,
    Interval,
    Length,
    OneOf,
    PatientRecord,
    image_files,
    image_needs,
    option,
    roi_inputs,
)


@dataclass(frozen=True)
class RadiomicsConfig:
    modality: Literal["pet", "ct", "both"] = "pet"  # which image(s) to describe
    roi: str = "skeleton"  # skeleton, spine, spine_dilated, or any mask_<roi> of the manifest
    bin_width_pet: float = option(0.25, Interval(0, None, "neither"))  # SUV per grey level
    bin_width_ct: float = option(25.0, Interval(0, None, "neither"))  # HU per grey level
    # isotropic resampling before extraction; 0 keeps the PET grid
    resample_mm: float = option(0.0, Interval(0, None, "left"))
    # pyradiomics feature classes to compute (pyradiomics' featureClassNames), e.g. "firstorder/glcm"
    feature_classes: tuple[str, ...] = option(
        ("firstorder", "shape", "glcm", "glrlm", "glszm"),
        Length(at_least=1),
        OneOf("firstorder", "shape", "shape2D", "glcm", "glrlm", "glszm", "gldm", "ngtdm"),
    )
    # a pyradiomics YAML/JSON parameter file; when given it replaces the settings above
    params_file: str = option("", ExistingFile())


def pyradiomics_extractor(config: RadiomicsConfig, modality: str):
    """The pyradiomics extractor these options describe (also used by the tests as the reference set-up)."""
    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    if config.params_file:
        if not Path(config.params_file).exists():
            raise UsageError(f"radiomics params_file {config.params_file!r} does not exist")
        return featureextractor.RadiomicsFeatureExtractor(config.params_file)
    settings = {
        "binWidth": config.bin_width_pet if modality == "pet" else config.bin_width_ct,
        "label": 1,
        "additionalInfo": False,
    }
    if config.resample_mm > 0:
        settings["resampledPixelSpacing"] = [config.resample_mm] * 3
        settings["interpolator"] = "sitkBSpline"
    extractor = featureextractor.RadiomicsFeatureExtractor(**settings)
    extractor.disableAllFeatures()
    for feature_class in config.feature_classes:
        if feature_class not in extractor.featureClassNames:
            valid = ", ".join(sorted(extractor.featureClassNames))
            raise UsageError(f"radiomics feature class {feature_class!r} unknown; valid: {valid}")
        extractor.enableFeatureClassByName(feature_class)
    return extractor


class RadiomicsExtractor(Extractor):
    name = "radiomics"
    version = "1"
    Config = RadiomicsConfig
    cacheable = True
    imports = ("radiomics.featureextractor",)

    def extract_patient(self, record: PatientRecord) -> dict[str, float]:
        from bench.data.imaging.study import Study

        study = Study(record.study_inputs(self.name), record.sample_id)
        mask = study.roi_mask(self.config.roi)
        modalities = ["pet", "ct"] if self.config.modality == "both" else [self.config.modality]
        features: dict[str, float] = {}
        for modality in modalities:
            image = study.image(modality)
            result = pyradiomics_extractor(self.config, modality).execute(image, mask)
            for key, value in result.items():
                if not key.startswith("diagnostics_"):
                    features[f"{modality}_{key}"] = float(np.asarray(value))
        return features

    def feature_class(self, feature: str) -> str | None:
        # "pet_original_glcm_Contrast": modality, image type (original, wavelet-LLH...), class, feature
        parts = feature.split("_")
        return parts[2] if len(parts) > 3 else None

    def missing_inputs(self, inputs: StudyInputs | None) -> str:
        modalities = ("pet", "ct") if self.config.modality == "both" else (self.config.modality,)
        return image_needs(inputs, modalities, self.config.roi)

    def input_files(self, inputs: StudyInputs | None) -> list[Path]:
        return image_files(inputs, "pet" if self.config.modality == "pet" else "ct", self.config.roi)

    def cache_inputs(self, record: PatientRecord) -> list[Path]:
        # "both" encodes the CT too, so it depends on the CT file exactly as modality=ct does.
        files = roi_inputs(record, "pet" if self.config.modality == "pet" else "ct", self.config.roi)
        if self.config.params_file:
            files.append(Path(self.config.params_file))
        return files
