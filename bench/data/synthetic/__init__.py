"""The built-in synthetic multiple-myeloma PET/CT cohort: anatomy, disease, outcome, writing.

Whole-body PET (SUV) and CT (HU) phantoms are written as NIfTI next to a manifest, the
layout of a user cohort. Progression-free survival follows a known proportional-hazards
model; its true predictors go to ``truth.csv``, which the harness never uses as a feature.

Modules: ``presets`` (presets, manifest policy, seeding), ``patients`` (covariates and
outcome), ``canvas`` (labels, grids, painting primitives), ``anatomy`` (the body),
``render`` (lesions and imaging physics), ``writing`` (files on disk), ``datasets``
(the registered cohorts, generated on first use).
"""

from bench.data.synthetic.canvas import LABELS
from bench.data.synthetic.patients import sample_patients
from bench.data.synthetic.presets import CLINICAL_COLUMNS, HORIZONS, PRESETS, TAU, TRUTH_COLUMNS, Preset, dataset_name
from bench.data.synthetic.render import render_patient, spine_truth
from bench.data.synthetic.writing import generate

__all__ = [
    "CLINICAL_COLUMNS",
    "HORIZONS",
    "LABELS",
    "PRESETS",
    "TAU",
    "TRUTH_COLUMNS",
    "Preset",
    "dataset_name",
    "generate",
    "render_patient",
    "sample_patients",
    "spine_truth",
]
