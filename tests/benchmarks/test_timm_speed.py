"""Seconds per slice of two timm backbones and of MedSAM2's image encoder, on the same 512-px crops.

Not part of the default test run (`--benchmark-skip`); run with `make bench`.
The same eight 512 x 512 grey crops (a synthetic PET slice: body, spine, a few hot spots) go
through ``resnet18`` and ``convnext_tiny`` (timm, random init, up to the pre-logits embedding)
and through MedSAM2's Hiera image encoder (``forward_image``, random init), each normalised as
its extractor normalises, in one batch, with one thread as every extraction task computes
(``one_thread``). The `timm` extractor itself resizes crops to the model's input (224 px for
both backbones), so its real cost per slice is about a fifth of the 512-px number here.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("timm")
pytest.importorskip("sam2")

import torch

from feature_extractors import medsam2_memory as m2
from feature_extractors.base import one_thread
from feature_extractors.timm_backbone import build_model

from .conftest import TIMINGS

SLICES = 8
SIZE = 512
ROUTES = {  # benchmark name -> what it times
    "timm_resnet18_512px": "resnet18",
    "timm_convnext_tiny_512px": "convnext_tiny",
    "medsam2_encoder_512px": "MedSAM2 image encoder",
}


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """[SLICES, 512, 512] grey values in [0, 1]."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    body = ((y - 256) / 200.0) ** 2 + ((x - 256) / 240.0) ** 2 < 1
    spine = (np.abs(y - 330) < 30) & (np.abs(x - 256) < 30)
    out = []
    for _ in range(SLICES):
        plane = np.where(body, 0.15 + 0.03 * rng.standard_normal(body.shape), 0.0) + 0.3 * spine
        for cy, cx in rng.integers(100, 412, size=(3, 2)):
            plane += 0.5 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 200.0)
        out.append(np.clip(plane, 0, 1))
    return np.asarray(out, np.float32)


def _timm(name: str, crops: np.ndarray):
    from timm.data import resolve_model_data_config

    model = build_model(name, None, seed=0)
    data = resolve_model_data_config(model)
    mean = torch.tensor(data["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(data["std"]).view(1, 3, 1, 1)
    x = (torch.from_numpy(crops)[:, None].expand(-1, 3, -1, -1) - mean) / std

    def embed():
        with torch.inference_mode(), one_thread(uses_torch=True):
            return model.forward_head(model.forward_features(x), pre_logits=True)

    return embed


def _medsam2(crops: np.ndarray):
    model = m2.build_model(None, seed=0)
    x = m2.slices_to_tensor(crops * 255.0, "cpu")  # its own normalisation of 0-255 grey slices

    def embed():
        with torch.inference_mode(), one_thread(uses_torch=True):
            return model.forward_image(x)["vision_features"]

    return embed


@pytest.mark.parametrize("route", list(ROUTES))
def test_seconds_per_slice_on_512px_crops(route: str, benchmark, record, crops) -> None:
    embed = _medsam2(crops) if route.startswith("medsam2") else _timm(ROUTES[route], crops)
    embed()  # the first pass allocates; not timed
    out = benchmark.pedantic(embed, rounds=3, iterations=1)
    assert out.shape[0] == SLICES and torch.isfinite(out).all()
    record(route, benchmark)


def test_report_seconds_per_slice(capsys) -> None:
    if not set(ROUTES) <= set(TIMINGS):
        pytest.skip("needs the three per-slice benchmarks in the same run")
    per_slice = {name: TIMINGS[name] / SLICES for name in ROUTES}
    with capsys.disabled():
        print(f"\nseconds per {SIZE}-px slice, one thread, batches of {SLICES}: "
              + ", ".join(f"{ROUTES[n]} {s:.3f} s" for n, s in per_slice.items()))  # fmt: skip
    assert all(s > 0 for s in per_slice.values())
