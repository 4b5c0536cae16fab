"""Features and fits never depend on how many threads the machine gives them (see ``one_thread``)."""

from __future__ import annotations

import numpy as np
import pytest

from feature_extractors.base import one_thread, patient_records


def test_one_thread_limits_torch_and_blas_and_restores_them() -> None:
    import torch
    from threadpoolctl import threadpool_info

    torch.set_num_threads(2)
    with one_thread(uses_torch=True):
        assert torch.get_num_threads() == 1
        pools = threadpool_info()
        assert pools and all(pool["num_threads"] == 1 for pool in pools), pools
    assert torch.get_num_threads() == 2


@pytest.mark.slow
def test_medsam2_features_are_the_same_bits_at_one_and_two_threads(synthetic_data, monkeypatch) -> None:
    """Without the limit they differ in the last float32 bits (1.2e-7 measured), which DeepSurv amplifies."""
    import torch

    from bench.data.datasets import load_cohort
    from bench.plugins.specs import resolve_features

    monkeypatch.setenv("BENCH_DATA_DIR", str(synthetic_data))
    cohort = load_cohort("synthetic_mm_tiny")
    part = resolve_features("medsam2_memory:modality=pet,roi=spine_dilated,max_slices=1", "random").parts[0]
    extractor = part.cls(part.config)
    record = patient_records(cohort)[0]
    runs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)  # what the machine would give: one_thread overrides it
        runs.append(extractor.embeddings(record, None))  # no cache: computed each time
    for name in ("pooled",):
        assert np.array_equal(runs[0][name], runs[1][name])
