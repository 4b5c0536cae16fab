"""The resnet3d extractor: physical cropping, seeded and loaded weights, the weights policy, the CLI."""

from __future__ import annotations

import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from bench.data.inputs import StudyInputs
from bench.plugins.weights import WeightsError
from bench.testing import make_cohort, run_cli
from feature_extractors import resnet3d
from feature_extractors.base import PatientRecord
from feature_extractors.resnet3d import (
    KINETICS_MEAN,
    KINETICS_STD,
    ResNet3DConfig,
    ResNet3DExtractor,
    crop_volume,
)

# A phantom in physical mm: a bright cube (SUV 8) inside a mask box (SUV 1 elsewhere). Every box edge
# lies on a voxel boundary of both test grids, so the mask's centroid is exactly the box centre on each.
CUBE = ((10.0, 30.0), (0.0, 20.0), (-10.0, 10.0))  # x, y, z
MASK_BOX = ((-10.0, 50.0), (-20.0, 40.0), (-30.0, 30.0))
GRIDS = {
    "fine": {"spacing": (2.0, 2.0, 2.0), "origin": (-49.0, -39.0, -39.0), "size": (60, 50, 40)},
    "anisotropic": {"spacing": (4.0, 5.0, 2.5), "origin": (-48.0, -37.5, -38.75), "size": (30, 20, 32)},
}
SMALL = {"crop_mm": (64.0, 64.0, 64.0), "voxel_mm": 4.0, "roi": "phantom"}  # a 16^3 crop: fast on CPU


def _inside(points: np.ndarray, box) -> np.ndarray:
    return np.all([(points[..., a] > lo) & (points[..., a] < hi) for a, (lo, hi) in enumerate(box)], axis=0)


def _phantom(spacing, origin, size) -> tuple[sitk.Image, sitk.Image]:
    """PET (SUV) and mask images of the phantom on one grid, values set at voxel centres."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1)  # x, y, z
    centres = np.asarray(origin) + idx * np.asarray(spacing)
    pet = np.where(_inside(centres, CUBE), 8.0, 1.0).astype(np.float32)
    mask = _inside(centres, MASK_BOX).astype(np.uint8)
    images = []
    for array in (pet, mask):
        image = sitk.GetImageFromArray(np.transpose(array, (2, 1, 0)).copy())  # (x, y, z) -> sitk's (z, y, x)
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        images.append(image)
    return images[0], images[1]


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> PatientRecord:
    """One patient of the phantom on disk, with its mask supplied (no CT needed)."""
    folder = tmp_path_factory.mktemp("phantom")
    pet, mask = _phantom(**GRIDS["fine"])
    sitk.WriteImage(pet, str(folder / "pet.nii.gz"))
    sitk.WriteImage(mask, str(folder / "mask.nii.gz"))
    inputs = StudyInputs(pet=folder / "pet.nii.gz", masks={"phantom": folder / "mask.nii.gz"})
    return PatientRecord("S1", "P1", None, inputs)


def _features(record: PatientRecord, **options) -> dict[str, float]:
    return ResNet3DExtractor(ResNet3DConfig(**{**SMALL, **options})).extract_patient(record)


def test_crop_is_physical_whatever_the_input_grid() -> None:
    config = ResNet3DConfig(crop_mm=(40.0, 40.0, 40.0), voxel_mm=5.0)
    # Crop voxel centres, from the mask box's centre; none lies within 2.5 mm of a cube face.
    centre = np.array([(lo + hi) / 2 for lo, hi in MASK_BOX])
    axes = [centre[a] - 17.5 + 5.0 * np.arange(8) for a in range(3)]
    zz, yy, xx = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    expected = np.where(_inside(np.stack([xx, yy, zz], axis=-1), CUBE), 0.8, 0.1)  # SUV / 10
    for name, grid in GRIDS.items():
        crop = crop_volume(*_phantom(**grid), config)
        assert crop.shape == (8, 8, 8) and crop.dtype == np.float32
        np.testing.assert_allclose(crop, expected, atol=1e-5, err_msg=f"grid {name}")


def test_crop_background_outside_the_mask_and_the_image() -> None:
    pet, mask = _phantom(**GRIDS["fine"])
    big = ResNet3DConfig(crop_mm=(200.0, 200.0, 200.0), voxel_mm=10.0)
    assert crop_volume(pet, mask, big).min() == 0.0  # beyond the mask and the image: background
    kept = crop_volume(pet, mask, ResNet3DConfig(crop_mm=(200.0, 200.0, 200.0), voxel_mm=10.0, mask_outside=False))
    assert (kept > 0).sum() > (crop_volume(pet, mask, big) > 0).sum()
    ct = sitk.Cast(pet * 250.0 - 1000.0, sitk.sitkFloat32)  # SUV 1 -> -750 HU, SUV 8 -> 1000 HU
    crop = crop_volume(ct, mask, ResNet3DConfig(modality="ct", crop_mm=(40.0, 40.0, 40.0), voxel_mm=5.0))
    assert set(np.round(np.unique(crop), 4)) == {0.125, 1.0}


def test_kinetics_normalisation_is_torchvision_s() -> None:
    from torchvision.models.video import R3D_18_Weights

    transforms = R3D_18_Weights.KINETICS400_V1.transforms()
    assert tuple(transforms.mean) == KINETICS_MEAN and tuple(transforms.std) == KINETICS_STD


def test_random_init_is_seeded(record: PatientRecord) -> None:
    first = _features(record, weights="random", seed=0)
    assert list(first) == [f"r3d_{i:03d}" for i in range(512)]
    assert np.isfinite(list(first.values())).all()
    assert _features(record, weights="random", seed=0) == first
    resnet3d._MODELS.clear()  # the model is cached per process: rebuilding from the seed must agree too
    assert _features(record, weights="random", seed=0) == first
    other = _features(record, weights="random", seed=1)
    assert not np.allclose(list(other.values()), list(first.values()))


def test_saved_random_model_loads_from_a_path(record: PatientRecord, tmp_path: Path) -> None:
    from torchvision.models.video import r3d_18

    torch.manual_seed(3)
    path = tmp_path / "r3d_random.pth"
    torch.save(r3d_18(weights=None).state_dict(), path)  # with its fc, as the real checkpoint has
    assert _features(record, weights=str(path)) == _features(record, weights="random", seed=3)


def test_missing_weights_say_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("RESNET3D_WEIGHTS", raising=False)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")  # never download 130 MB in a test, even where it could

    monkeypatch.setattr(torch.hub, "urlopen", offline)  # the download goes through torch hub
    with pytest.raises(WeightsError) as info:
        ResNet3DExtractor().extract(make_cohort(n_patients=3), progress=False)
    message = str(info.value)
    assert "r3d_18-b3b3357e.pth" in message
    assert "https://pytorch.org/vision/stable/models/video_resnet.html" in message
    assert "--weights random" in message


def test_resnet3d_runs_through_bench_on_the_tiny_cohort(tmp_path: Path, synthetic_data: Path) -> None:
    from bench.testing import subset_manifest

    # Eight studies of the tiny cohort: the skeleton masks and the network are most of the cost, the path is the same
    cohort = subset_manifest(synthetic_data / "synthetic_mm-tiny-seed0" / "manifest.yaml", 8, tmp_path / "c", "t8")
    env = {"BENCH_DATA_DIR": str(synthetic_data), "BENCH_CACHE_DIR": str(tmp_path / "cache"),
           "BENCH_SPLITS_DIR": str(tmp_path / "splits")}  # fmt: skip
    assert run_cli("splits", "make", "--dataset", str(cohort), "--folds", "2", env=env).returncode == 0
    start = time.perf_counter()
    result = run_cli(
        "run", "--dataset", str(cohort), "--extractor", "resnet3d:voxel_mm=16", "--model", "coxnet:alpha=1",
        "--weights", "random", "--bootstrap", "50", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--quiet",
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "resnet3d[voxel_mm=16.0,random-init]" in result.stdout
    assert len(list((tmp_path / "cache" / "features").rglob("*.npz"))) == 8
    print(f"CLI run took {time.perf_counter() - start:.1f} s")


def test_the_default_crop_follows_the_roi(tmp_path: Path) -> None:
    """A 3 cm ROI gets a crop of its own size plus the margin, not a whole-body box of air."""
    image = sitk.Image([60, 60, 40], sitk.sitkFloat32)
    image.SetSpacing((2.0, 2.0, 3.0))
    image.SetOrigin((-50.0, 20.0, 100.0))
    mask = sitk.Image([60, 60, 40], sitk.sitkUInt8)
    mask.CopyInformation(image)
    mask[20:35, 25:40, 10:20] = 1  # 30 x 30 x 30 mm
    image += 5.0
    config = ResNet3DConfig(voxel_mm=2.0, margin_mm=5.0)
    crop = crop_volume(image, mask, config)
    assert crop.shape == (20, 20, 20), "(30 + 2 x 5) mm at 2 mm per voxel on every axis"
    inside = crop > 0
    assert inside[5:15, 5:15, 5:15].all() and inside.sum() == 15**3, "the ROI fills the middle, margins are background"
    tiny = crop_volume(image, mask, ResNet3DConfig(voxel_mm=6.0, margin_mm=0.0))
    assert min(tiny.shape) >= 16, "never fewer voxels than the network's strides need"
