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

from bench.errors import UsageError
from feature_extractors.base import Extractor, PatientRecord


@dataclass(frozen=True)
class RadiomicsConfig:
    modality: Literal["pet", "ct", "both"] = "pet"  # which image(s) to describe
    roi: str = "skeleton"  # skeleton, spine, spine_dilated, or any mask_<roi> of the manifest
    bin_width_pet: float = 0.25  # SUV per grey level
    bin_width_ct: float = 25.0  # HU per grey level
    resample_mm: float = 0.0  # isotropic resampling before extraction; 0 keeps the PET grid
    feature_classes: tuple[str, ...] = ("firstorder", "shape", "glcm", "glrlm", "glszm")
    params_file: str = ""  # a pyradiomics YAML/JSON parameter file; when given it replaces the settings above


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

    def extract_patient(self, record: PatientRecord) -> dict[str, float]:
        from bench.data.imaging.study import Study

        if not record.inputs:
            raise UsageError("extractor 'radiomics' needs an imaging cohort (PET/CT manifest)")
        study = Study(record.inputs, record.sample_id)
        mask = study.roi_mask(self.config.roi)
        modalities = ["pet", "ct"] if self.config.modality == "both" else [self.config.modality]
        features: dict[str, float] = {}
        for modality in modalities:
            image = study.pet if modality == "pet" else study.ct
            result = pyradiomics_extractor(self.config, modality).execute(image, mask)
            for key, value in result.items():
                if not key.startswith("diagnostics_"):
                    features[f"{modality}_{key}"] = float(np.asarray(value))
        return features

    def cache_inputs(self, record: PatientRecord) -> list[Path]:
        inputs = record.inputs
        files = [Path(inputs["pet"])]
        supplied = inputs.get("masks", {}).get(self.config.roi)
        if self.config.modality != "pet" or supplied is None:
            files.append(Path(inputs["ct"]))
        if supplied is not None:
            files.append(Path(supplied))
        if self.config.params_file:
            files.append(Path(self.config.params_file))
        return files
