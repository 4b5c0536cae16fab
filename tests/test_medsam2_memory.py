"""The MedSAM2 memory extractor: weights routes, the direct route against sam2's video predictor, the CLI.

Every model here is randomly initialised (seeded): no checkpoint is downloaded.
One model is built per module and one set of embeddings of a synthetic study is
shared by the tests that only read it, to keep the file quick on two CPU cores.
"""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import sam2  # noqa: F401 - both are in the lock: a missing one fails, never skips
import torch

from feature_extractors import medsam2_memory as m2
from feature_extractors.medsam2_memory import MedSAM2Config, MedSAM2MemoryExtractor
from feature_extractors.slices import padded

CONFIG = MedSAM2Config(weights="random", max_slices=3, batch_size=4)


def synthetic_study(seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A small PET-like volume (SUV, z/y/x) with a bright 'spine' inside a larger 'skeleton' ROI."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:10, 0:40, 0:64]
    body = ((y - 20) / 16.0) ** 2 + ((x - 32) / 28.0) ** 2 < 1
    pet = np.where(body, 1.0 + 0.2 * rng.standard_normal(body.shape), 0.0)
    spine = (np.abs(y - 26) < 4) & (np.abs(x - 32) < 4) & (z >= 1) & (z <= 8)
    pet = np.where(spine, 3.0 + 0.5 * rng.standard_normal(body.shape), pet).astype(np.float32)
    # Both ROIs span the same slices, so with max_slices they are prompted on the same ones.
    skeleton = spine | ((np.abs(y - 12) < 3) & (np.abs(x - 32) < 20) & (z >= 2) & (z <= 7))
    return pet, {"skeleton": skeleton, "spine": spine}


@pytest.fixture(scope="module")
def model():
    return m2.build_model(None, seed=0)


@pytest.fixture(scope="module")
def reference(model) -> tuple[dict, int]:
    """Embeddings of both ROIs of the synthetic study, and how many slices the encoder saw."""
    volume, masks = synthetic_study()
    seen: list[int] = []
    real = model.forward_image

    def counting(images):
        seen.append(images.shape[0])
        return real(images)

    with mock.patch.object(model, "forward_image", counting):
        out = m2.embed_study(model, volume, masks, CONFIG)
    return out, sum(seen)


def test_shapes_finite_and_one_encoder_pass_for_two_rois(reference) -> None:
    out, encoded = reference
    for roi, arrays in out.items():
        d = len(arrays["slices"])
        assert 1 <= d <= CONFIG.max_slices, roi
        assert arrays["memory"].shape == (d, 64, 32, 32) and arrays["memory"].dtype == np.float16
        assert arrays["pooled"].shape == (d, 64)
        assert arrays["obj_ptr"].shape == (d, 256)
        assert arrays["obj_score"].shape == (d,)
        for name in ("memory", "pooled", "obj_ptr", "obj_score"):
            assert np.isfinite(arrays[name]).all(), (roi, name)
    union = set(out["skeleton"]["slices"]) | set(out["spine"]["slices"])
    assert encoded == len(union) < len(out["skeleton"]["slices"]) + len(out["spine"]["slices"])


def test_slice_selection_and_boxes() -> None:
    mask = np.zeros((20, 8, 16), bool)
    mask[3:15, 2:5, 4:12] = True
    assert m2.roi_slices(mask).tolist() == list(range(3, 15))
    assert m2.roi_slices(mask, stride=4).tolist() == [3, 7, 11]
    assert m2.roi_slices(mask, max_slices=3).tolist() == [3, 9, 14]  # positions 0, 5.5 -> 6, 11
    # Box on the 512-px grid: x from column 4 to 11 of 16, y from row 2 to 4 of 8.
    assert m2.slice_box(mask[5]).tolist() == [128.0, 128.0, 352.0, 256.0]


def test_checkpoint_route_is_bit_identical_and_seeds_are_deterministic(model, reference, tmp_path: Path) -> None:
    path = tmp_path / "MedSAM2_random.pt"
    torch.save({"model": model.state_dict()}, path)  # MedSAM2's checkpoint format
    loaded = m2.build_model(path, seed=123)  # the seed must not matter once weights are loaded
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    volume, masks = synthetic_study()
    again = m2.embed_study(loaded, volume, masks, CONFIG)
    for roi, arrays in reference[0].items():
        for name, value in arrays.items():
            assert np.array_equal(value, again[roi][name]), (roi, name)

    # The same seed builds the same weights (without touching the caller's RNG); another seed does not.
    m2._MODELS.clear()
    state = torch.get_rng_state()
    same = m2.build_model(None, seed=0).state_dict()
    assert torch.equal(state, torch.get_rng_state())
    other = m2.build_model(None, seed=1).state_dict()
    assert all(torch.equal(v, same[k]) for k, v in model.state_dict().items())
    assert not all(torch.equal(v, other[k]) for k, v in model.state_dict().items())


def test_direct_route_matches_video_predictor(model, reference) -> None:
    volume, masks = synthetic_study()
    video = m2.embed_roi_video_predictor(model, volume, masks["spine"], CONFIG)
    direct = reference[0]["spine"]
    assert np.array_equal(video["slices"], direct["slices"])
    ours = direct["memory"].astype(np.float32)
    # The predictor stores bfloat16; float16 here: both are compared as float32.
    rel = np.abs(ours - video["memory"]).mean() / np.abs(video["memory"]).mean()
    print(f"direct vs video predictor: relative mean abs diff {rel:.2e}")
    assert rel < 1e-2
    np.testing.assert_allclose(direct["obj_ptr"], video["obj_ptr"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(direct["obj_score"], video["obj_score"], rtol=1e-4, atol=1e-4)


def test_missing_weights_offline_say_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.plugins.weights import WeightsError
    from bench.testing import make_cohort

    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDSAM2_WEIGHTS", raising=False)

    # As on a machine without network, whatever this one has: the hub refuses every request, its cache is empty
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsError) as info:
        MedSAM2MemoryExtractor().extract(make_cohort(4), progress=False)
    message = str(info.value)
    for needed in ("MedSAM2_latest.pt", "https://huggingface.co/wanglab/MedSAM2", "--weights random"):
        assert needed in message


@pytest.mark.slow
def test_cli_run_and_cached_sequences(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic_data: Path) -> None:
    from bench.cache import FeatureCache
    from bench.data.datasets import load_cohort
    from bench.testing import run_cli, subset_manifest

    # Eight studies of the tiny cohort: the encoder is most of the cost, and the path is the same for 24.
    cohort_path = subset_manifest(synthetic_data / "synthetic_mm-tiny-seed0" / "manifest.yaml", 8, tmp_path / "c", "t8")
    env = {
        "BENCH_DATA_DIR": str(synthetic_data),
        "BENCH_CACHE_DIR": str(tmp_path / "cache"),
        "BENCH_SPLITS_DIR": str(tmp_path / "splits"),
    }
    assert run_cli("splits", "make", "--dataset", str(cohort_path), "--folds", "2", env=env).returncode == 0
    result = run_cli(
        "run", "--dataset", str(cohort_path), "--extractor", "medsam2_memory:max_slices=2", "--model", "coxnet",
        "--weights", "random", "--bootstrap", "50", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--quiet",
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "medsam2_memory[max_slices=2,random-init]" in result.stdout

    # The per-slice sequences come from the cache the run filled: no model is run again.
    for name, value in env.items():
        if name.startswith("BENCH_"):
            monkeypatch.setenv(name, value)
    cohort = load_cohort(str(cohort_path))
    extractor = MedSAM2MemoryExtractor(MedSAM2Config(weights="random", max_slices=2))
    with mock.patch.object(m2, "embed_study", side_effect=AssertionError("cache miss")):
        sequences = extractor.sequences(cohort)
        block = extractor.extract(cohort, progress=False, cache=FeatureCache.default())
    assert list(sequences) == list(cohort.sample_ids)
    for sid, seq in sequences.items():
        assert seq.shape == (2, 64) and np.isfinite(seq).all()
        np.testing.assert_allclose(block.frame.loc[sid].to_numpy(), seq.astype(float).mean(axis=0), rtol=1e-6)
    assert list(block.frame.columns) == [f"mem_{i:03d}" for i in range(64)]

    # pool=attention shares the cache entries: the per-slice vectors become a sequence block ...
    attention = MedSAM2MemoryExtractor(MedSAM2Config(weights="random", max_slices=2, pool="attention"))
    with mock.patch.object(m2, "embed_study", side_effect=AssertionError("cache miss")):
        seq_block = attention.extract(cohort, progress=False, cache=FeatureCache.default())
    assert seq_block.sequence.shape == (cohort.n, 2, 64) and seq_block.sequence_mask.all()
    for i, sid in enumerate(cohort.sample_ids):
        np.testing.assert_array_equal(seq_block.sequence[i], sequences[sid].astype(np.float64))

    # ... that DeepSurv pools by learned attention, fused with the clinical block, through the harness.
    from bench.protocol.runner import RunRequest, run

    with mock.patch.object(m2, "embed_study", side_effect=AssertionError("cache miss")):
        outcome = run(
            RunRequest(
                str(cohort_path),
                rows=(("medsam2_memory:max_slices=2,pool=attention+clinical", ("deepsurv:max_epochs=10",)),),
                weights="random",
                bootstrap=20,
                tracking_uri=f"sqlite:///{tmp_path / 'm2.db'}",
            )
        )
    (result,) = outcome.results
    assert result.extractor.label == "medsam2_memory[pool=attention,max_slices=2,random-init]+clinical"
    assert np.isfinite(result.evaluation.predictions["risk"]).all()
    assert len(result.evaluation.predictions) == cohort.n


def test_padded_sequences_mask_what_is_missing() -> None:
    sequences = {"a": np.ones((3, 4)), "b": 2 * np.ones((1, 4)), "c": 3 * np.ones((2, 4))}
    values, mask = padded(sequences, ["c", "a", "b"])
    assert values.shape == (3, 3, 4)
    np.testing.assert_array_equal(mask, [[1, 1, 0], [1, 1, 1], [1, 0, 0]])
    assert (values[~mask] == 0).all() and (values[0][:2] == 3).all() and (values[2][0] == 2).all()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
