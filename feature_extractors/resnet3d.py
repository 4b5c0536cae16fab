"""torchvision's 3D ResNet-18 (R3D-18, Kinetics-400) on a physical crop around an ROI.

Pipeline per patient: a box, axis-aligned in physical space (the ROI's bounding box
plus ``margin_mm``, or ``crop_mm`` millimetres centred on the ROI's centroid when
given), is resampled onto an isotropic grid of
``voxel_mm`` (linear for the image, nearest neighbour for the mask; outside the
image is background, 0 SUV or -1000 HU). Intensities go to [0, 1] with a fixed,
patient-independent scale (PET: SUV / 10, CT: (HU + 1000) / 2000, both clipped),
so that absolute uptake and density stay comparable between patients; voxels
outside the ROI are set to 0 (background) unless ``mask_outside`` is off. The grey
volume is replicated to 3 channels, normalised with the Kinetics-400 mean/std of
torchvision's R3D_18 weights, and run through the network up to its global
average pool: 512 features ``r3d_000`` ... ``r3d_511``.

Array axes: SimpleITK's (z, y, x) become the network's (time, height, width).
Weights follow the project's policy (bench.plugins.weights): a path, $RESNET3D_WEIGHTS,
the torch hub cache or ours, a download through torch hub into its cache; the file's sha256
must start with the prefix its name carries (``r3d_18-b3b3357e.pth``) and match the weights
lock once it holds the whole hash. Random initialisation only with ``weights=random``
(``--weights random``), seeded by ``seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import SimpleITK as sitk

from bench.data.inputs import StudyInputs
from bench.errors import DataError, UsageError
from bench.plugins.weights import RANDOM, WeightsError, WeightsSource, resolve_weights
from feature_extractors.base import (
    AnyOf,
    Extractor,
    Interval,
    Length,
    PatientRecord,
    image_files,
    image_needs,
    option,
    roi_inputs,
)

if TYPE_CHECKING:
    import torch

    from bench.data.cohort import Cohort
    from feature_extractors.base import FeatureBlock

# The normalisation of torchvision's R3D_18_Weights.KINETICS400_V1 transforms (VideoClassification).
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
N_FEATURES = 512
PET_SUV_MAX = 10.0  # SUV mapped to 1; hotter lesions saturate
CT_HU_MIN, CT_HU_MAX = -1000.0, 1000.0  # air to dense bone
BACKGROUND = {"pet": 0.0, "ct": CT_HU_MIN}
MIN_VOXELS = 16  # per axis of an automatic crop: R3D-18 downsamples space by 16 and time by 8


@dataclass(frozen=True)
class ResNet3DConfig:
    modality: Literal["pet", "ct"] = "pet"  # which image goes through the network
    roi: str = "skeleton"  # skeleton, spine, spine_dilated, or any mask_<roi> of the manifest
    # physical size of the crop in x/y/z (CLI: 320/240/480); empty (the default): the ROI's bounding box plus
    #   margin_mm on every side, so a 3 cm tumour and a whole skeleton both fill the crop
    crop_mm: tuple[float, ...] = option((), AnyOf(Length(0), Length(3)), Interval(0, None, "neither"))
    margin_mm: float = option(10.0, Interval(0, None, "left"))  # context around the ROI's box (crop_mm empty only)
    voxel_mm: float = option(6.0, Interval(0, None, "neither"))  # isotropic voxel of the resampled crop
    mask_outside: bool = True  # set voxels outside the ROI to background (0 after normalisation)
    weights: str = ""  # "" resolves the Kinetics-400 checkpoint; "random" is an explicit random-init control; or a path
    seed: int = option(0, Interval(0, None, "left"))  # torch seed of the random initialisation (weights=random only)
    device: str = "cpu"  # torch device the network runs on


def weights_source() -> WeightsSource:
    """Where the Kinetics-400 R3D-18 checkpoint comes from; torch hub's cache is looked in first."""
    import torch
    from torchvision.models.video import R3D_18_Weights

    url = R3D_18_Weights.KINETICS400_V1.url
    filename = url.rsplit("/", 1)[-1]
    return WeightsSource(
        filename=filename,
        env_var="RESNET3D_WEIGHTS",
        url=url,
        homepage="https://pytorch.org/vision/stable/models/video_resnet.html",
        locations=(Path(torch.hub.get_dir()) / "checkpoints" / filename,),
    )


def crop_volume(image: sitk.Image, mask: sitk.Image, config: ResNet3DConfig, modality: str | None = None) -> np.ndarray:
    """The normalised crop, (z, y, x) float32 in [0, 1].

    With ``crop_mm`` given: that box, centred on the mask's physical centroid. Without: the mask's
    physical bounding box plus ``margin_mm`` on every side, centred on the box (at least
    ``MIN_VOXELS`` voxels per axis, which the network's strides need).
    """
    modality = modality or config.modality
    _check_geometry(config)
    binary = sitk.Cast(mask > 0, sitk.sitkUInt8)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(binary)
    if not stats.HasLabel(1):
        raise DataError(f"ROI {config.roi!r} is empty: no voxels to centre the resnet3d crop on")
    if config.crop_mm:
        centre = np.array(stats.GetCentroid(1))  # physical, x/y/z
        size = [max(1, round(mm / config.voxel_mm)) for mm in config.crop_mm]
    else:
        low, high = _physical_box(binary, stats)
        centre = (low + high) / 2.0
        extent = high - low + 2.0 * config.margin_mm
        size = [max(MIN_VOXELS, math.ceil(mm / config.voxel_mm)) for mm in extent]
    # Voxel centres span (size - 1) voxels, so the grid's centre is the ROI centroid on either input grid.
    origin = centre - (np.array(size) - 1) / 2.0 * config.voxel_mm
    reference = sitk.Image(size, sitk.sitkFloat32)
    reference.SetSpacing([config.voxel_mm] * 3)
    reference.SetOrigin(origin.tolist())
    reference.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    background = BACKGROUND[modality]
    values = sitk.Resample(
        sitk.Cast(image, sitk.sitkFloat32), reference, sitk.Transform(), sitk.sitkLinear, background, sitk.sitkFloat32
    )
    array = sitk.GetArrayFromImage(values).astype(np.float64)
    if modality == "pet":
        array = array / PET_SUV_MAX
    else:
        array = (array - CT_HU_MIN) / (CT_HU_MAX - CT_HU_MIN)
    array = np.clip(array, 0.0, 1.0)
    if config.mask_outside:
        inside = sitk.Resample(binary, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        array[sitk.GetArrayFromImage(inside) == 0] = 0.0
    return array.astype(np.float32)


def network_input(crop: np.ndarray) -> torch.Tensor:
    """(1, 3, z, y, x): the grey crop on 3 channels with the Kinetics-400 normalisation."""
    import torch

    volume = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))
    mean = torch.tensor(KINETICS_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(KINETICS_STD).view(3, 1, 1, 1)
    return ((volume.unsqueeze(0).expand(3, *volume.shape) - mean) / std).unsqueeze(0)


_MODELS: dict[tuple[str | None, int, str], Any] = {}


def load_model(weights: Path | None, seed: int = 0, device: str = "cpu") -> torch.nn.Module:
    """R3D-18 without its classifier (``fc`` is Identity), in eval mode; cached per process."""
    import torch
    from torchvision.models.video import r3d_18

    key = (str(weights) if weights is not None else None, seed if weights is None else 0, device)
    if key not in _MODELS:
        if weights is None:
            with torch.random.fork_rng(devices=[]):  # seed the init without moving the caller's RNG
                torch.manual_seed(seed)
                model = r3d_18(weights=None)
        else:
            model = r3d_18(weights=None)  # the checkpoint has fc too: load it whole, then drop fc
            try:
                state = torch.load(weights, map_location="cpu", weights_only=True)
                model.load_state_dict(state, strict=True)
            except Exception as exc:  # unpickling and key/shape mismatches alike: a bad weights file
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise WeightsError(f"resnet3d: {str(weights)!r} is not an R3D-18 state dict ({first})") from exc
        model.fc = torch.nn.Identity()
        _MODELS[key] = model.eval().to(device)
    return _MODELS[key]


def _physical_box(mask: sitk.Image, stats: sitk.LabelShapeStatisticsImageFilter) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest physical x/y/z of the ROI's voxels (their centres, plus half a voxel)."""
    x, y, z, sx, sy, sz = stats.GetBoundingBox(1)
    corners = [mask.TransformContinuousIndexToPhysicalPoint((i - 0.5, j - 0.5, k - 0.5))
               for i in (x, x + sx) for j in (y, y + sy) for k in (z, z + sz)]  # fmt: skip
    return np.min(corners, axis=0), np.max(corners, axis=0)


def _check_geometry(config: ResNet3DConfig) -> None:
    if config.crop_mm and (len(config.crop_mm) != 3 or min(config.crop_mm) <= 0):
        sizes = config.crop_mm
        raise UsageError(f"resnet3d crop_mm must be three positive sizes in mm (x/y/z) or empty, got {sizes!r}")
    if config.voxel_mm <= 0:
        raise UsageError(f"resnet3d voxel_mm must be positive, got {config.voxel_mm!r}")


class ResNet3DExtractor(Extractor):
    name = "resnet3d"
    uses_torch = True
    version = "1"
    Config = ResNet3DConfig
    cacheable = True
    imports = ("torchvision.models.video",)
    smoke_options: ClassVar[dict[str, str]] = {"weights": RANDOM, "voxel_mm": "16"}
    weights_source = staticmethod(weights_source)  # the published checkpoint (`bench weights lock --extractor`)

    def extract(self, cohort: Cohort, *args: Any, **kwargs: Any) -> FeatureBlock:
        # Resolve weights once, up front: a missing checkpoint is one clear error, not one per patient.
        _check_geometry(self.config)
        self._weights = resolve_weights(weights_source(), self.config.weights, self.name)
        return super().extract(cohort, *args, **kwargs)

    def weights_path(self) -> Path | None:
        if not hasattr(self, "_weights"):
            self._weights = resolve_weights(weights_source(), self.config.weights, self.name)
        return self._weights

    def extract_patient(self, record: PatientRecord) -> dict[str, float]:
        import torch

        from bench.data.imaging.study import Study

        study = Study(record.study_inputs(self.name), record.sample_id)
        mask = study.roi_mask(self.config.roi)
        image = study.image(self.config.modality)
        crop = crop_volume(image, mask, self.config)
        model = load_model(self.weights_path(), self.config.seed, self.config.device)
        with torch.no_grad():
            features = model(network_input(crop).to(self.config.device)).squeeze(0).cpu().numpy()
        return {f"r3d_{i:03d}": float(v) for i, v in enumerate(features)}

    def missing_inputs(self, inputs: StudyInputs | None) -> str:
        return image_needs(inputs, (self.config.modality,), self.config.roi)

    def input_files(self, inputs: StudyInputs | None) -> list[Path]:
        return image_files(inputs, self.config.modality, self.config.roi)

    def cache_inputs(self, record: PatientRecord) -> list[Path]:
        files = roi_inputs(record, self.config.modality, self.config.roi)
        weights = self.weights_path()
        if weights is not None:
            files.append(weights)
        return files
