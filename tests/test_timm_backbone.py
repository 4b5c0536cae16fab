"""The timm extractor: timm's own model and transform on the ROI's slice crops, its weights policy, its CLI.

The reference embeddings come from timm called here directly: a model built by ``timm.create_model``
with the same seed, and timm's evaluation transform for its data config. The real PET is
``tests/data/ibsi_sts`` (read in place); the CLI runs use the tiny synthetic cohort.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import timm
import torch
import yaml
from timm.data import create_transform, resolve_model_data_config

from bench.data.datasets import load_cohort
from bench.errors import UsageError, WeightsError
from bench.plugins.options import build_config
from bench.testing import run_cli, subset_manifest
from feature_extractors.base import one_thread, patient_records
from feature_extractors.slices import crop, square_window
from feature_extractors.timm_backbone import TimmConfig, TimmExtractor, build_model, slice_crops

from data_paths import STS_NIFTI as STS


def _config(**options: str) -> TimmConfig:
    return build_config(TimmConfig, {"model": "resnet18", "weights": "random", **options}, "extractor 'timm'")


def _sts_cohort(root: Path, pids: list[str]):
    """A user manifest over real PET studies, the tumour contour drawn on the PET as ROI ``gtv``."""
    rows = [{"patient_id": pid, "pet": str(STS / pid / "PET_image.nii.gz"), "mask_gtv": str(STS / pid / "PET_mask.nii.gz"),
             "time": 100 + 50 * i, "event": i % 2} for i, pid in enumerate(pids)]  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "patients.csv", index=False)
    header = {"name": "sts_pet", "table": "patients.csv", "horizons": [120], "tau": 200, "pet_units": "suv"}
    (root / "manifest.yaml").write_text(yaml.safe_dump(header))
    return load_cohort(str(root / "manifest.yaml"))


def test_per_slice_embeddings_equal_timm_called_directly_on_the_same_crops(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    cohort = _sts_cohort(tmp_path / "sts", ["STS_001"])
    config = _config(seed="3", roi="gtv")
    with one_thread(uses_torch=True):
        entry = TimmExtractor(config).compute_entry(patient_records(cohort)[0])

    pet = sitk.ReadImage(str(STS / "STS_001" / "PET_image.nii.gz"))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(STS / "STS_001" / "PET_mask.nii.gz"))) > 0
    touched = np.flatnonzero(mask.any(axis=(1, 2)))
    assert entry["slices"].tolist() == touched.tolist(), "every axial slice the tumour touches, in order"
    _, crops = slice_crops(sitk.GetArrayFromImage(pet), mask, pet.GetSpacing()[:2], config)

    torch.manual_seed(3)
    model = timm.create_model("resnet18", pretrained=False).eval()
    data = resolve_model_data_config(model)
    assert data["input_size"] == (3, 224, 224) and data["interpolation"] == "bicubic"
    transform = create_transform(**{**data, "crop_pct": 1.0, "crop_mode": "squash"}, is_training=False)
    with torch.inference_mode(), one_thread(uses_torch=True):
        x = torch.stack([transform(torch.from_numpy(c)[None].repeat(3, 1, 1)) for c in crops])
        assert x.shape == (len(touched), 3, 224, 224)
        reference = model.forward_head(model.forward_features(x), pre_logits=True).numpy()

    assert entry["embeddings"].shape == (len(touched), model.num_features)
    assert np.abs(entry["embeddings"] - reference).max() <= 1e-5
    assert np.abs(reference).max() > 1e-3, "a test on all-zero embeddings would prove nothing"
    for c in crops:  # the windowed crops: SUV 0..10 to 0..1, the tumour's uptake inside
        assert c.min() >= 0 and c.max() <= 1 and c.max() > 0.1


def test_the_crop_is_the_rois_box_plus_margin_made_square_in_millimetres() -> None:
    plane = np.arange(40 * 50, dtype=np.float32).reshape(40, 50)  # y, x
    roi = np.zeros_like(plane, dtype=bool)
    roi[10:14, 20:30] = True  # 10 px wide (x), 4 px tall (y)
    box = np.array([20, 10, 29, 13], dtype=np.float32)
    # 1 x 2 mm pixels: 10 mm wide, 8 mm tall; + 2 x 5 mm margin -> a 20 mm square: 20 px in x, 10 px in y
    xs, ys, xe, ye = square_window(box, (1.0, 2.0), 5.0)
    assert (xe - xs, ye - ys) == (20, 10)
    assert ((xs + xe - 1) / 2, (ys + ye - 1) / 2) == (24.5, 11.5), "centred on the box"
    cut = crop(plane, (xs, ys, xe, ye), fill=-1.0)
    assert np.array_equal(cut, plane[ys:ye, xs:xe]) and roi[ys:ye, xs:xe].sum() == roi.sum()
    # Past the image's edge: the outside is the fill value, the inside the image
    edge = crop(plane, (45, -3, 55, 2), fill=-1.0)
    assert edge.shape == (5, 10)
    assert (edge[:3] == -1).all() and (edge[:, 5:] == -1).all()
    assert np.array_equal(edge[3:, :5], plane[0:2, 45:50])
    assert math.isclose(square_window(np.array([0, 0, 0, 0.0]), (0.5, 0.5), 0.0)[2], 1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, synthetic_data: Path):
    """Two studies of the tiny synthetic cohort, with their own feature cache."""
    root = tmp_path_factory.mktemp("timm")
    manifest = subset_manifest(synthetic_data / "synthetic_mm-tiny-seed0" / "manifest.yaml", 2, root / "c", "two")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_DATA_DIR", str(synthetic_data))
        mp.setenv("BENCH_CACHE_DIR", str(root / "cache"))
        yield load_cohort(str(manifest))


def _embeddings(config: TimmConfig, cohort) -> list[np.ndarray]:
    extractor = TimmExtractor(config)
    with one_thread(uses_torch=True):
        return [extractor.compute_entry(r)["embeddings"] for r in patient_records(cohort)]


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_checkpoint_saved_from_the_model_gives_bit_identical_embeddings(suffix: str, tiny, tmp_path: Path) -> None:
    random_init = _config(seed="7", max_slices="2", roi="spine")
    state = build_model("resnet18", None, seed=7).state_dict()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    expected = _embeddings(random_init, tiny)
    loaded = _embeddings(_config(weights=str(path), max_slices="2", roi="spine"), tiny)
    assert all(np.array_equal(a, b) for a, b in zip(expected, loaded, strict=True))
    assert not np.array_equal(expected[0], _embeddings(_config(seed="8", max_slices="2", roi="spine"), tiny)[0])


def test_a_checkpoint_of_another_model_or_no_weights_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    other = tmp_path / "resnet34.pth"
    torch.save(build_model("resnet34", None).state_dict(), other)
    with pytest.raises(WeightsError, match=r"resnet34\.pth' is not a checkpoint of resnet18"):
        TimmExtractor(_config(weights=str(other))).model()
    with pytest.raises(WeightsError, match="does not exist"):
        TimmExtractor(_config(weights=str(tmp_path / "missing.pth"))).weights_path()
    # Without a file: timm's hub cache is looked in, never the network; an empty cache names what to get
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsError) as caught:
        TimmExtractor(_config(weights="", model="convnext_tiny")).weights_path()
    message = str(caught.value)
    assert "https://huggingface.co/timm/convnext_tiny" in message and "--weights random" in message
    assert "\n" not in message


def test_the_default_weights_are_found_in_timms_hub_cache(tmp_path: Path, monkeypatch) -> None:
    """A model file where huggingface_hub keeps it (its cache layout, written here as a download would) is used."""
    from huggingface_hub.constants import REPO_ID_SEPARATOR
    from safetensors.torch import save_file

    hub_id = timm.models.get_pretrained_cfg("resnet18").hf_hub_id
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / f"models{REPO_ID_SEPARATOR}{hub_id.replace('/', REPO_ID_SEPARATOR)}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True)
    saved = repo / "snapshots" / revision / "model.safetensors"
    save_file({k: v.contiguous() for k, v in build_model("resnet18", None, seed=5).state_dict().items()}, str(saved))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    assert TimmExtractor(_config(weights="")).weights_path() == saved


def test_an_unknown_model_name_is_refused_with_the_closest_names() -> None:
    with pytest.raises(UsageError, match="got 'resnet19'; did you mean .*resnet18"):
        _config(model="resnet19")
    assert _config(model="resnet50.a1_in1k").model == "resnet50.a1_in1k", "a pretrained tag timm knows"
    with pytest.raises(UsageError, match="resnet50.nope"):
        _config(model="resnet50.nope")


def test_an_unknown_model_exits_2_before_any_image_is_read(tmp_path: Path) -> None:
    """Every image of the manifest is unreadable: the one line is about the model name, so no image was read."""
    rows = []
    for i in range(4):
        for kind in ("pet", "spine"):
            (tmp_path / f"p{i}_{kind}.nii.gz").write_bytes(b"not an image")
        rows.append({"patient_id": f"p{i}", "pet": f"p{i}_pet.nii.gz", "mask_spine": f"p{i}_spine.nii.gz",
                     "time": 100 + i, "event": i % 2})  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "patients.csv", index=False)
    header = {"name": "junk", "table": "patients.csv", "horizons": [50], "tau": 100, "pet_units": "suv"}
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(header))
    result = run_cli("run", "--dataset", str(tmp_path / "manifest.yaml"), "--extractor",
                     "timm:model=resnet19,roi=spine", "--model", "coxnet", "--weights", "random", "--tracking-uri",
                     f"sqlite:///{tmp_path / 'm.db'}", env={"BENCH_CACHE_DIR": str(tmp_path / "cache")})  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "'resnet19'" in result.stderr and "resnet18" in result.stderr and "nii.gz" not in result.stderr
    assert not (tmp_path / "cache" / "features").exists() and not (tmp_path / "m.db").exists()


def test_bench_run_labels_random_init_and_attention_pooling_trains_deepsurv(
    tmp_path: Path, synthetic_data: Path
) -> None:
    env = {"BENCH_DATA_DIR": str(synthetic_data), "BENCH_CACHE_DIR": str(tmp_path / "cache")}
    common = ["--weights", "random", "--bootstrap", "20", "--quiet", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    flat = run_cli("run", "--dataset", "synthetic_mm_tiny", "--extractor", "timm:model=resnet18,max_slices=2",
                   "--model", "coxnet", *common, env=env)  # fmt: skip
    assert flat.returncode == 0, flat.stderr[-2000:]
    assert "timm[model=resnet18,max_slices=2,random-init]" in flat.stdout
    entries = sorted((tmp_path / "cache" / "features").rglob("*.npz"))
    assert len(entries) == 24
    # pool=attention reads the same entries (no image again) as per-slice sequences, which DeepSurv pools by depth
    before = {p: p.stat().st_mtime_ns for p in entries}
    seq = run_cli("run", "--dataset", "synthetic_mm_tiny", "--extractor",
                  "timm:model=resnet18,max_slices=2,pool=attention", "--model", "deepsurv", *common, env=env)  # fmt: skip
    assert seq.returncode == 0, seq.stderr[-2000:]
    assert "timm[model=resnet18,pool=attention,max_slices=2,random-init]" in seq.stdout and "deepsurv" in seq.stdout
    assert {p: p.stat().st_mtime_ns for p in sorted((tmp_path / "cache" / "features").rglob("*.npz"))} == before
