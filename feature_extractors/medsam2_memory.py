"""MedSAM2 memory embeddings: SAM2.1 Hiera-tiny at 512 px, prompted slice by slice with the ROI's box.

For every axial slice the ROI touches, the slice is encoded once, the ROI's bounding
box on that slice is given as a conditioning-frame prompt, and the memory encoder's
output (``maskmem_features``, [64, 32, 32]) is kept. The encoder pass does not depend
on the box, so one pass serves every ROI of a study (``embed_study``). Per study the
cache holds the per-slice memory features (float16), their spatial means [D, 64],
the object pointers [D, 256] and the object scores [D]; the feature vector is the
mean over slices of the per-slice means (``mem_000`` .. ``mem_063``).

Weights (``bench.plugins.weights``): a path, $MEDSAM2_WEIGHTS, ``MedSAM2_latest.pt`` of
``wanglab/MedSAM2`` in the Hugging Face hub's cache (at the commit the weights lock pins, if
it does), ours, else a download through ``huggingface_hub``; checked against the lock, and
recorded with every run by sha256 and hub commit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from bench.errors import UsageError
from bench.plugins.weights import RANDOM, WeightsError, WeightsSource, resolve_weights
from bench.plugins.weights_lock import sha256_of
from feature_extractors.base import (
    Increasing,
    Interval,
    Length,
    PatientRecord,
    option,
)
from feature_extractors.slices import SliceExtractor, roi_slices
from feature_extractors.slices import slice_box as pixel_box

WEIGHTS = WeightsSource(
    filename="MedSAM2_latest.pt",
    env_var="MEDSAM2_WEIGHTS",
    url="https://huggingface.co/wanglab/MedSAM2/resolve/main/MedSAM2_latest.pt",
    homepage="https://huggingface.co/wanglab/MedSAM2",
    hub_repo="wanglab/MedSAM2",  # through huggingface_hub: its cache first, the commit recorded with each run
)
CONFIG_FILE = "configs/sam2.1/sam2.1_hiera_t.yaml"
IMAGE_SIZE = 512
RESIZE = "bilinear"  # torch interpolate, align_corners=False
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PET_PERCENTILES = (0.5, 99.5)  # of the non-zero voxels
N_CHANNELS = 64  # memory-encoder output channels
# The model as MedSAM2 builds it (build_sam2_video_predictor with post-processing), except
# fill_hole_area=0: hole filling needs sam2's compiled extension, absent on CPU, so it is off
# everywhere to make CPU and GPU agree. The video-predictor class is a SAM2Base with the
# video API on top, so the same object serves the direct route and the reference route.
OVERRIDES = {
    "model._target_": "sam2.sam2_video_predictor.SAM2VideoPredictor",
    "model.image_size": IMAGE_SIZE,
    "model.memory_attention.layer.self_attention.feat_sizes": [32, 32],
    "model.memory_attention.layer.cross_attention.feat_sizes": [32, 32],
    "model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability": True,
    "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta": 0.05,
    "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh": 0.98,
    "model.binarize_mask_from_pts_for_mem_enc": True,
    "model.fill_hole_area": 0,
}


@dataclass(frozen=True)
class MedSAM2Config:
    modality: Literal["pet", "ct"] = "pet"  # which image is encoded
    roi: str = "skeleton"  # skeleton, spine, spine_dilated, or any mask_<roi> of the manifest
    # mean: average over slices and space (a flat vector for any model); attention: the per-slice vectors
    # [slices, 64], pooled by gated attention learned with the survival head (a model that reads sequences)
    pool: Literal["mean", "attention"] = "mean"
    weights: str = ""  # "" resolves path/env/cache/download; "random" = explicit random-init control; or a path
    seed: int = option(0, Interval(0, None, "left"))  # seeds the random initialisation (weights="random")
    device: Literal["cpu", "cuda"] = "cpu"  # where the model runs
    batch_size: int = option(8, Interval(1, None, "left"))  # slices per image-encoder batch
    dtype: Literal["float32", "bfloat16"] = "float32"  # bfloat16 autocast: faster, moves features ~13 %
    slice_stride: int = option(1, Interval(1, None, "left"))  # keep every n-th slice the ROI touches
    # 0 = all; else evenly subsample the ROI's slices to at most this many
    max_slices: int = option(0, Interval(0, None, "left"))
    # HU window for CT (lower/upper on the command line)
    ct_window: tuple[float, float] = option((-160.0, 240.0), Length(2), Increasing())


# ----------------------------------------------------------------------------------------- model


_MODELS: dict[tuple, Any] = {}


def build_model(weights: Path | None, seed: int = 0, device: str = "cpu", dtype: str = "float32"):
    """The MedSAM2 model in eval mode, built once per (weights, seed, device, dtype) in this process.

    Instantiated from the sam2 package's YAML with OmegaConf, so a Hydra already
    initialised by a host program is neither needed nor disturbed.
    """
    key = (str(weights) if weights is not None else None, seed if weights is None else None, device, dtype)
    if key not in _MODELS:
        import sam2
        import torch
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(Path(sam2.__file__).parent / CONFIG_FILE)
        for dotted, value in OVERRIDES.items():
            OmegaConf.update(cfg, dotted, value, force_add=True)
        OmegaConf.resolve(cfg)
        with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
            torch.manual_seed(seed)
            model = instantiate(cfg.model, _recursive_=True)
        if weights is not None:
            try:
                state = torch.load(weights, map_location="cpu", weights_only=True)["model"]
                model.load_state_dict(state, strict=True)
            except Exception as exc:  # no "model" entry, or its keys and shapes are another network's
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise WeightsError(f"medsam2_memory: {str(weights)!r} is not a MedSAM2 checkpoint ({first})") from exc
        _MODELS[key] = model.to(device).eval()
    return _MODELS[key]


# ------------------------------------------------------------------------------- preprocessing


def to_grey(volume: np.ndarray, modality: str, ct_window: tuple[float, float]) -> np.ndarray:
    """Intensities scaled to 0-255 as MedSAM2's preprocessing does (uint8, z/y/x)."""
    volume = np.asarray(volume, dtype=np.float32)
    if modality == "ct":
        lo, hi = float(ct_window[0]), float(ct_window[1])
    else:
        nonzero = volume[volume != 0]
        if nonzero.size == 0:
            return np.zeros(volume.shape, np.uint8)
        lo, hi = (float(v) for v in np.percentile(nonzero, PET_PERCENTILES))
    if hi <= lo:
        return np.zeros(volume.shape, np.uint8)
    scaled = (np.clip(volume, lo, hi) - lo) / (hi - lo) * 255.0
    return scaled.astype(np.uint8)


def slices_to_tensor(grey: np.ndarray, device: str):
    """[n, 3, 512, 512] float32: bilinear resize, grey to RGB, /255, ImageNet mean/std."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(grey, dtype=np.float32))[:, None].to(device)
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode=RESIZE, align_corners=False)
    x = x.expand(-1, 3, -1, -1) / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=device)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD, device=device)[None, :, None, None]
    return (x - mean) / std


def slice_box(mask_slice: np.ndarray) -> np.ndarray:
    """The ROI's bounding box [x0, y0, x1, y1] on one slice, in 512-px model coordinates (no jitter)."""
    h, w = mask_slice.shape
    return pixel_box(mask_slice) / np.array([w, h, w, h], dtype=np.float32) * IMAGE_SIZE


# ---------------------------------------------------------------------------------- embedding


def _autocast(device: str, dtype: str):
    import contextlib

    import torch

    if dtype == "bfloat16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def embed_study(model, volume: np.ndarray, masks: dict[str, np.ndarray], config: MedSAM2Config) -> dict[str, dict]:
    """Memory embeddings of one study for every ROI in ``masks``, encoding each slice once.

    ``volume`` is the modality's image (HU or SUV, z/y/x); every mask is on the same
    grid. Returns, per ROI, ``slices`` [D], ``memory`` [D, 64, 32, 32] float16,
    ``pooled`` [D, 64], ``obj_ptr`` [D, 256] and ``obj_score`` [D] (float32).
    """
    import torch

    grey = to_grey(volume, config.modality, config.ct_window)
    chosen = {roi: roi_slices(m, config.slice_stride, config.max_slices) for roi, m in masks.items()}
    union = np.unique(np.concatenate([c for c in chosen.values()] + [np.zeros(0, int)])).astype(int)
    per_roi: dict[str, dict[int, tuple]] = {roi: {} for roi in masks}
    with torch.inference_mode(), _autocast(config.device, config.dtype):
        for start in range(0, len(union), max(config.batch_size, 1)):
            batch = union[start : start + max(config.batch_size, 1)]
            images = slices_to_tensor(grey[batch], config.device)
            _, feats, pos, sizes = model._prepare_backbone_features(model.forward_image(images))
            for i, z in enumerate(batch):
                for roi, mask in masks.items():
                    if z in per_roi[roi] or z not in chosen[roi]:
                        continue
                    per_roi[roi][int(z)] = _track_one(model, feats, pos, sizes, i, slice_box(mask[z]), config.device)
    out = {}
    for roi in masks:
        order = [int(z) for z in chosen[roi]]
        if not order:
            raise UsageError(f"ROI {roi!r} is empty: no slice to prompt")
        memory = torch.stack([per_roi[roi][z][0] for z in order])
        out[roi] = {
            "slices": np.asarray(order, dtype=np.int64),
            "memory": memory.numpy().astype(np.float16),
            "pooled": memory.mean(dim=(2, 3)).numpy(),
            "obj_ptr": torch.stack([per_roi[roi][z][1] for z in order]).numpy(),
            "obj_score": np.asarray([per_roi[roi][z][2] for z in order], dtype=np.float32),
        }
    return out


def _track_one(model, feats, pos, sizes, i: int, box: np.ndarray, device: str) -> tuple:
    """One slice as an initial conditioning frame with a box prompt and no memory of other slices."""
    import torch

    points = torch.tensor(box, dtype=torch.float32, device=device).reshape(1, 2, 2)
    labels = torch.tensor([[2, 3]], dtype=torch.int32, device=device)  # a box is two points labelled 2 and 3
    out = model.track_step(
        frame_idx=0,
        is_init_cond_frame=True,
        current_vision_feats=[f[:, i : i + 1] for f in feats],
        current_vision_pos_embeds=[p[:, i : i + 1] for p in pos],
        feat_sizes=sizes,
        point_inputs={"point_coords": points, "point_labels": labels},
        mask_inputs=None,
        output_dict={"cond_frame_outputs": {}, "non_cond_frame_outputs": {}},
        num_frames=1,
        run_mem_encoder=True,
    )
    return (
        out["maskmem_features"][0].float().cpu(),
        out["obj_ptr"][0].float().cpu(),
        float(out["object_score_logits"].float().reshape(-1)[0]),
    )


def embed_roi_video_predictor(model, volume: np.ndarray, mask: np.ndarray, config: MedSAM2Config) -> dict:
    """The reference route: sam2's video-predictor API, a box on every slice, then propagate.

    This is how MedSAM2's own scripts run, and it is slow (each slice is encoded when its
    box is added and again when its memory is encoded during propagation); it is kept to
    check ``embed_study`` against and to time it. ``init_state`` only accepts a JPEG
    folder or an MP4, which would round our preprocessed slices through 8-bit RGB files,
    so its frame loader is replaced for the duration of the call by one that returns the
    same preprocessed tensor ``embed_study`` encodes (reported as a 512 x 512 video, so the
    predictor's coordinate normalisation leaves the 512-px boxes unchanged). Everything
    else (state, prompts, preflight memory encoding, propagation) is sam2's own code.
    The predictor stores memory features in bfloat16; they are returned as float32.
    """
    from unittest import mock

    import sam2.sam2_video_predictor as video_module
    import torch

    order = roi_slices(mask, config.slice_stride, config.max_slices)
    images = slices_to_tensor(to_grey(volume, config.modality, config.ct_window)[order], config.device)

    def frames(**_: Any):
        return images, IMAGE_SIZE, IMAGE_SIZE

    with torch.inference_mode(), _autocast(config.device, config.dtype):
        with mock.patch.object(video_module, "load_video_frames", frames):
            state = model.init_state(video_path="<preprocessed slices>")
        for k, z in enumerate(order):
            model.add_new_points_or_box(state, frame_idx=k, obj_id=1, box=slice_box(mask[z]))
        for _ in model.propagate_in_video(state):
            pass
    outputs = state["output_dict_per_obj"][0]["cond_frame_outputs"]
    frames_out = [outputs[k] for k in range(len(order))]
    memory = torch.cat([o["maskmem_features"].float().cpu() for o in frames_out])
    return {
        "slices": np.asarray(order, dtype=np.int64),
        "memory": memory.numpy(),
        "pooled": memory.mean(dim=(2, 3)).numpy(),
        "obj_ptr": torch.cat([o["obj_ptr"].float().cpu() for o in frames_out]).numpy(),
        "obj_score": np.asarray([float(o["object_score_logits"].float().reshape(-1)[0]) for o in frames_out]),
    }


# ---------------------------------------------------------------------------------- extractor


class MedSAM2MemoryExtractor(SliceExtractor):
    name = "medsam2_memory"
    version = "1"
    Config = MedSAM2Config
    feature_prefix = "mem"
    imports = ("sam2", "hydra.utils", "omegaconf")
    smoke_options: ClassVar[dict[str, str]] = {"weights": RANDOM, "max_slices": "2"}

    @staticmethod
    def weights_source() -> WeightsSource:
        """The published checkpoint (``bench weights lock --extractor medsam2_memory``)."""
        return WEIGHTS

    def __init__(self, config: MedSAM2Config | None = None):
        super().__init__(config)
        self._weights: Path | None = None
        self._resolved = False

    # -- weights and model

    def weights_path(self) -> Path | None:
        """The checkpoint (None for the explicit random control); raises WeightsError if there is none."""
        if not self._resolved:
            self._weights = resolve_weights(WEIGHTS, self.config.weights, self.name)
            self._resolved = True
        return self._weights

    def model(self):
        return build_model(self.weights_path(), self.config.seed, self.config.device, self.config.dtype)

    def _weights_id(self) -> str:
        path = self.weights_path()
        if path is None:
            return f"{RANDOM}:seed={self.config.seed}"
        return "sha256:" + sha256_of(path)

    def meta(self) -> dict[str, Any]:
        """What fixes the embeddings besides the options and the inputs (in the cache key and the entry)."""
        return {
            "weights": self._weights_id(),
            "model_config": CONFIG_FILE,
            "overrides": OVERRIDES,
            "image_size": IMAGE_SIZE,
            "resize": RESIZE,
            "ct_window": list(self.config.ct_window),
            "pet_percentiles": list(PET_PERCENTILES),
            "normalisation": [IMAGENET_MEAN, IMAGENET_STD],
        }

    # -- per patient

    def compute_entry(self, record: PatientRecord) -> dict[str, np.ndarray]:
        import SimpleITK as sitk

        from bench.data.imaging.study import Study

        study = Study(record.study_inputs(self.name), record.sample_id)
        image = study.image(self.config.modality)
        mask = sitk.GetArrayFromImage(study.roi_mask(self.config.roi)) > 0
        out = embed_study(self.model(), sitk.GetArrayFromImage(image), {self.config.roi: mask}, self.config)
        arrays = dict(out[self.config.roi])
        arrays["meta"] = np.array(json.dumps(self.meta(), sort_keys=True))
        return arrays

    def slice_vectors(self, entry: dict[str, np.ndarray]) -> np.ndarray:
        return entry["pooled"]  # each slice's memory features, averaged over space: [D, 64]
