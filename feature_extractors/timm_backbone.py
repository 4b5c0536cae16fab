"""Any timm 2D image model, slice by slice inside an ROI: the generic control for MedSAM2's memory.

Per study: the axial slices the ROI touches, chosen exactly as ``medsam2_memory`` chooses them
(``feature_extractors.slices``: ``slice_stride``, then ``max_slices``). On each, the ROI's box
grows by ``margin_mm`` and then to a square (in mm) about its centre; that crop of the image is
mapped to [0, 1] by a fixed window (PET: ``pet_window`` in SUV, CT: ``ct_window`` in HU; outside
the image counts as the window's low end), repeated to three channels, and given to timm's own
evaluation transform for the model: the input size, interpolation, mean and std of its data config
(``timm.data.resolve_model_data_config``), the whole square resized to the input (``crop_pct`` 1,
``crop_mode`` squash, so no part of the crop is cut off). The network's pre-logits embedding
(``forward_features``, then ``forward_head(..., pre_logits=True)``) of every slice is cached; the
features are its mean over slices (``timm_000`` ...), or with ``pool=attention`` the per-slice
vectors, for DeepSurv's attention over depth.

Weights: ``weights=random`` (``--weights random``) is an explicit random-initialisation control,
seeded by ``seed`` and labelled ``[random-init]``; a path is a checkpoint of that model (``.pth``
/ ``.pt`` with tensors only, or ``.safetensors``), loaded by timm itself
(``pretrained_cfg_overlay=dict(file=...)``); with neither, the model's default pretrained file in
the Hugging Face hub cache (or torch hub's, for older models) where timm keeps it. Nothing is
ever downloaded: without a file, the run stops with one line naming the file to get. The file's
sha256 (and, from the hub's cache, its commit) is recorded with every run (``bench.plugins.weights``).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from bench.errors import DataError, WeightsError
from bench.plugins.weights import RANDOM, check_checkpoint
from feature_extractors.base import Increasing, Interval, Length, PatientRecord, option
from feature_extractors.slices import SliceExtractor, crop, roi_slices, slice_box, square_window

# timm's evaluation transform, with the whole square crop resized to the model's input (nothing cut off)
TRANSFORM_OVERRIDES = {"crop_pct": 1.0, "crop_mode": "squash"}


@dataclass(frozen=True)
class TimmName:
    """A model name timm knows (``timm.list_models()``), optionally with a pretrained tag (``resnet50.a1_in1k``)."""

    whole: ClassVar[bool] = True

    def check(self, value: Any) -> bool:
        name = str(value)
        return name.split(".", 1)[0] in _architectures() and ("." not in name or name in _pretrained_tags())

    def requirement(self) -> str:
        return "a model name timm knows (`python -c 'import timm; print(timm.list_models())'`)"

    def hint(self, value: Any) -> str:
        close = difflib.get_close_matches(str(value), sorted(_architectures()), n=5, cutoff=0.6)
        return f"did you mean {', '.join(close)}?" if close else ""


@lru_cache(maxsize=1)
def _architectures() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


@lru_cache(maxsize=1)
def _pretrained_tags() -> frozenset[str]:
    import timm

    return frozenset(timm.list_pretrained())


@dataclass(frozen=True)
class TimmConfig:
    model: str = option("resnet50", TimmName())  # any timm model name (timm.list_models()), e.g. convnext_tiny
    modality: Literal["pet", "ct"] = "pet"  # which image is cropped
    roi: str = "skeleton"  # skeleton, spine, spine_dilated, or any mask_<roi> of the manifest
    # mean: average of the slices' embeddings (a flat vector for any model); attention: the per-slice embeddings
    # [slices, D], pooled by gated attention learned with the survival head (a model that reads sequences)
    pool: Literal["mean", "attention"] = "mean"
    weights: str = ""  # "" the model's pretrained file in timm's hub cache; "random" = explicit random-init; or a path
    seed: int = option(0, Interval(0, None, "left"))  # seeds the random initialisation (weights="random")
    device: Literal["cpu", "cuda"] = "cpu"  # where the model runs
    batch_size: int = option(16, Interval(1, None, "left"))  # slices per forward pass
    dtype: Literal["float32", "bfloat16"] = "float32"  # bfloat16 autocast: faster on a GPU, moves the features
    slice_stride: int = option(1, Interval(1, None, "left"))  # keep every n-th slice the ROI touches
    # 0 = all; else evenly subsample the ROI's slices to at most this many
    max_slices: int = option(0, Interval(0, None, "left"))
    margin_mm: float = option(10.0, Interval(0, None, "left"))  # context around the ROI's box on each slice
    # SUV mapped to [0, 1] (lower/upper on the command line); hotter uptake saturates
    pet_window: tuple[float, float] = option((0.0, 10.0), Length(2), Increasing())
    # HU mapped to [0, 1]: a bone window (level 300, width 1500), for the skeletal ROIs
    ct_window: tuple[float, float] = option((-450.0, 1050.0), Length(2), Increasing())


# ----------------------------------------------------------------------------------------- model


_MODELS: dict[tuple, Any] = {}


def build_model(name: str, weights: Path | None, seed: int = 0, device: str = "cpu"):
    """The timm model in eval mode, built once per (name, weights, seed, device) in this process."""
    key = (name, str(weights) if weights is not None else None, seed if weights is None else None, device)
    if key not in _MODELS:
        import timm
        import torch

        if weights is None:
            with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
                torch.manual_seed(seed)
                model = timm.create_model(name, pretrained=False)
        else:
            try:  # timm's own loader: .safetensors, or torch.load(weights_only=True) of the file
                model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
            except Exception as exc:  # keys or shapes of another network, or no tensors at all
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise WeightsError(f"timm: {str(weights)!r} is not a checkpoint of {name} ({first})") from exc
        _MODELS[key] = model.to(device).eval()
    return _MODELS[key]


def eval_transform(model):
    """timm's evaluation transform for ``model``: its data config, the square crop resized whole."""
    from timm.data import create_transform, resolve_model_data_config

    config = {**resolve_model_data_config(model), **TRANSFORM_OVERRIDES}
    return create_transform(**config, is_training=False)


def default_weights(name: str) -> Path:
    """The model's default pretrained file where timm keeps it (the Hugging Face hub cache, or torch hub's)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise WeightsError(f"timm: {name} has no pretrained weights in timm; pass a checkpoint with --weights PATH, "
                           f"or run a random-initialisation control with --weights {RANDOM}")  # fmt: skip
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ([cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else []) + [
            "model.safetensors", "pytorch_model.bin"
        ]:  # fmt: skip
            found = try_to_load_from_cache(hub_id, filename)
            if isinstance(found, str):
                return Path(found)
        where = f"https://huggingface.co/{hub_id} (model.safetensors)"
    else:
        url = getattr(cfg, "url", "") or ""
        if url:
            import torch

            cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
            if cached.is_file():
                return cached
        where = url or "the model's publisher"
    raise WeightsError(
        f"timm: no weights for {name} in timm's hub cache; get them from {where} and pass --weights PATH, "
        f"or run a random-initialisation control with --weights {RANDOM}"
    )


def resolve_timm_weights(name: str, requested: str) -> Path | None:
    """The checkpoint to load, or None for the explicit random control; never a download."""
    if requested == RANDOM:
        return None
    if not requested:
        path = default_weights(name)
    else:
        path = Path(requested).expanduser()
        if not path.exists():
            raise WeightsError(f"timm: weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        return _check_safetensors(path)
    return check_checkpoint(path, "timm")


def _check_safetensors(path: Path) -> Path:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as exc:  # noqa: BLE001 - any failure to read the header means the same to the user
        raise WeightsError(f"timm: weights file {str(path)!r} is not a readable .safetensors file ({exc})") from None
    return path


# ------------------------------------------------------------------------------------ embedding


def slice_crops(volume: np.ndarray, mask: np.ndarray, spacing: tuple[float, float], config: TimmConfig):
    """The chosen slices and their square crops mapped to [0, 1]: ``(slices [D], [crop (h, w) float32, ...])``."""
    low, high = config.pet_window if config.modality == "pet" else config.ct_window
    chosen = roi_slices(mask, config.slice_stride, config.max_slices)
    crops = []
    for z in chosen:
        window = square_window(slice_box(mask[z]), spacing, config.margin_mm)
        values = crop(np.asarray(volume[z], np.float32), window, fill=low)
        crops.append(((np.clip(values, low, high) - low) / (high - low)).astype(np.float32))
    return chosen, crops


def embed_crops(model, crops: list[np.ndarray], config: TimmConfig) -> np.ndarray:
    """[D, F] float32: each crop on three channels through timm's transform, then the pre-logits embedding."""
    import contextlib

    import torch

    transform = eval_transform(model)
    autocast = (torch.autocast(device_type=config.device, dtype=torch.bfloat16) if config.dtype == "bfloat16"
                else contextlib.nullcontext())  # fmt: skip
    out = []
    with torch.inference_mode(), autocast:
        for start in range(0, len(crops), config.batch_size):
            batch = [
                transform(torch.from_numpy(c)[None].expand(3, -1, -1)) for c in crops[start : start + config.batch_size]
            ]
            x = torch.stack(batch).to(config.device)
            out.append(model.forward_head(model.forward_features(x), pre_logits=True).float().cpu())
    return torch.cat(out).numpy()


# ---------------------------------------------------------------------------------- extractor


class TimmExtractor(SliceExtractor):
    name = "timm"
    version = "1"
    Config = TimmConfig
    feature_prefix = "timm"
    imports = ("timm", "timm.data", "huggingface_hub", "safetensors")
    smoke_options: ClassVar[dict[str, str]] = {"model": "resnet18", "weights": RANDOM, "max_slices": "2"}

    def __init__(self, config: TimmConfig | None = None):
        super().__init__(config)
        self._weights: Path | None = None
        self._resolved = False

    def weights_path(self) -> Path | None:
        """The checkpoint (None for the explicit random control); raises WeightsError if there is none."""
        if not self._resolved:
            self._weights = resolve_timm_weights(self.config.model, self.config.weights)
            self._resolved = True
        return self._weights

    def model(self):
        return build_model(self.config.model, self.weights_path(), self.config.seed, self.config.device)

    def meta(self) -> dict[str, Any]:
        import timm

        return {"timm": timm.__version__, "transform": TRANSFORM_OVERRIDES}

    def cache_inputs(self, record: PatientRecord) -> list[Path]:
        files = super().cache_inputs(record)
        weights = self.weights_path()
        if weights is not None:
            files.append(weights)  # its content is part of the key
        return files

    def compute_entry(self, record: PatientRecord) -> dict[str, np.ndarray]:
        import SimpleITK as sitk

        from bench.data.imaging.study import Study

        study = Study(record.study_inputs(self.name), record.sample_id)
        image = study.image(self.config.modality)
        mask = sitk.GetArrayFromImage(study.roi_mask(self.config.roi)) > 0
        if not mask.any():
            raise DataError(f"patient {record.sample_id!r}: ROI {self.config.roi!r} is empty: no slice to crop")
        spacing = tuple(float(s) for s in image.GetSpacing()[:2])
        slices, crops = slice_crops(sitk.GetArrayFromImage(image), mask, spacing, self.config)
        return {
            "slices": np.asarray(slices, dtype=np.int64),
            "embeddings": embed_crops(self.model(), crops, self.config),
            "meta": np.array(json.dumps(self.meta(), sort_keys=True)),
        }

    def slice_vectors(self, entry: dict[str, np.ndarray]) -> np.ndarray:
        return entry["embeddings"]  # each slice's pre-logits embedding: [D, F]
