"""Weights are verified, never silently swapped: torch hub's hash prefix, the Hugging Face hub's cache and commit,
the weights lock (``bench weights lock``), and the sha256 every run records. Nothing here reaches the internet:
downloads come from a server on 127.0.0.1, hub files from a cache laid out as huggingface_hub lays it out.
Every expected hash is computed here with hashlib, never taken from the code under test."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.errors import WeightsError
from bench.plugins.labels import RowKey
from bench.plugins.weights import WeightsSource, resolve_weights, used_weights
from bench.plugins.weights_lock import LockEntry, WeightsFile, hub_origin, write_entry
from bench.report.provenance import describe, provenance
from bench.testing import run_cli, subset_manifest

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _checkpoint(path: Path, seed: int = 0) -> Path:
    """A small, valid state-dict checkpoint (tensors only) whose bytes depend on ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"weight": torch.randn(4, 3, generator=generator)}}, path)
    return path


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Own caches and lock (none yet), and a hub that refuses every request: only local files can be found.

    Only ``BENCH_*`` variables change, so that ``run_cli`` still forks its invocations (see ``bench.testing``);
    huggingface_hub reads HF_HUB_OFFLINE at import, so it is set where it is read.
    """
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BENCH_WEIGHTS_LOCK", str(tmp_path / "weights.lock.json"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("MEDSAM2_WEIGHTS", raising=False)
    monkeypatch.delenv("RESNET3D_WEIGHTS", raising=False)
    return tmp_path


# ------------------------------------------------------------------------- torch hub: the name's hash prefix


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no request log on the test's stderr
        pass


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """(folder, base URL): files put in the folder are served over HTTP on 127.0.0.1; torch hub's cache is ours."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "www"
    folder.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _published(folder: Path, base: str, original: Path, prefix: str) -> WeightsSource:
    """``original``'s bytes published as ``tiny-<prefix>.pth`` (torch hub's naming), and its source."""
    name = f"tiny-{prefix}.pth"
    (folder / name).write_bytes(original.read_bytes())
    return WeightsSource(name, "BENCH_TEST_NO_SUCH_WEIGHTS", f"{base}/{name}", "https://example.org/tiny")


def test_a_download_whose_hash_prefix_matches_its_name_is_accepted_and_one_that_does_not_is_refused(
    server, tmp_path: Path
) -> None:
    folder, base = server
    original = _checkpoint(tmp_path / "original.pth")
    digest = _sha256(original)
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"

    right = _published(folder, base, original, digest[:8])
    path = resolve_weights(right, "", "tiny")
    assert path == checkpoints / right.filename and _sha256(path) == digest  # downloaded into torch hub's cache

    wrong_prefix = "00000000" if not digest.startswith("00000000") else "11111111"
    wrong = _published(folder, base, original, wrong_prefix)
    with pytest.raises(WeightsError) as refused:
        resolve_weights(wrong, "", "tiny")
    message = str(refused.value)
    assert "\n" not in message and message.startswith("tiny: ")
    assert digest[:16] in message and wrong_prefix in message and wrong.url in message
    assert not (checkpoints / wrong.filename).exists(), "a refused download leaves no file behind"


def test_a_file_in_torch_hubs_cache_is_checked_against_its_names_prefix(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = _checkpoint(tmp_path / "torch" / "hub" / "checkpoints" / "tiny-00000000.pth")
    digest = _sha256(cached)
    assert not digest.startswith("00000000")
    source = WeightsSource(cached.name, "BENCH_TEST_NO_SUCH_WEIGHTS", "http://127.0.0.1:9/never", "https://x",
                           locations=(cached,))  # fmt: skip
    with pytest.raises(WeightsError) as refused:
        resolve_weights(source, "", "tiny")
    message = str(refused.value)
    assert "\n" not in message and digest[:16] in message and "its published name says 00000000" in message


# ----------------------------------------------------------------------- the Hugging Face hub: cache and commit


def _hub_file(tmp_path: Path, commit: str = COMMIT, seed: int = 0, main: bool = True) -> Path:
    """MedSAM2_latest.pt in the hub's cache layout (snapshots/<commit>/, refs/main), as a download leaves it."""
    repo = tmp_path / "hub" / "models--wanglab--MedSAM2"
    path = _checkpoint(repo / "snapshots" / commit / "MedSAM2_latest.pt", seed)
    if main:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
    return path


def test_medsam2_weights_come_from_the_hubs_cache_with_their_commit(tmp_path: Path) -> None:
    from feature_extractors.medsam2_memory import MedSAM2Config, MedSAM2MemoryExtractor

    cached = _hub_file(tmp_path)
    extractor = MedSAM2MemoryExtractor(MedSAM2Config())
    assert extractor.weights_path() == cached  # offline: found in the cache, no request made
    recorded = used_weights(extractor)
    assert recorded == WeightsFile("MedSAM2_latest.pt", _sha256(cached), "wanglab/MedSAM2", COMMIT)
    assert recorded.params("extractor") == {
        "extractor.weights.file": "MedSAM2_latest.pt",
        "extractor.weights.sha256": _sha256(cached),
        "extractor.weights.repo": "wanglab/MedSAM2",
        "extractor.weights.revision": COMMIT,
    }
    assert extractor.meta()["weights"] == "sha256:" + _sha256(cached)  # the cache key's hash: the same file's
    assert hub_origin(tmp_path / "elsewhere" / "MedSAM2_latest.pt") == ("", "")


def test_a_locked_commit_is_the_one_used_and_a_locked_hash_refuses_another_file(tmp_path: Path) -> None:
    from feature_extractors.medsam2_memory import WEIGHTS

    main_file = _hub_file(tmp_path, COMMIT, seed=0)
    pinned = _hub_file(tmp_path, OTHER_COMMIT, seed=1, main=False)
    write_entry(LockEntry("MedSAM2_latest.pt", "huggingface:wanglab/MedSAM2/MedSAM2_latest.pt", OTHER_COMMIT,
                          _sha256(pinned)))  # fmt: skip
    assert resolve_weights(WEIGHTS, "", "medsam2_memory") == pinned  # not refs/main's snapshot

    write_entry(LockEntry("MedSAM2_latest.pt", "huggingface:wanglab/MedSAM2/MedSAM2_latest.pt", COMMIT,
                          _sha256(pinned)))  # fmt: skip
    with pytest.raises(WeightsError) as refused:
        resolve_weights(WEIGHTS, "", "medsam2_memory")
    message = str(refused.value)
    assert "\n" not in message and _sha256(main_file)[:16] in message and _sha256(pinned)[:16] in message
    assert "bench weights lock" in message


def test_without_a_cached_file_or_a_network_the_error_says_what_to_do(tmp_path: Path) -> None:
    from feature_extractors.medsam2_memory import WEIGHTS

    with pytest.raises(WeightsError) as missing:
        resolve_weights(WEIGHTS, "", "medsam2_memory")
    message = str(missing.value)
    assert "\n" not in message
    for needed in ("MedSAM2_latest.pt", "https://huggingface.co/wanglab/MedSAM2", "--weights random"):
        assert needed in message


# ------------------------------------------------------------------------------------- bench weights lock


def test_bench_weights_lock_records_the_hubs_file_with_its_commit(tmp_path: Path, capsys) -> None:
    cached = _hub_file(tmp_path)
    assert main(["weights", "lock", "--extractor", "medsam2_memory"]) == 0
    body = json.loads((tmp_path / "weights.lock.json").read_text())
    assert body["weights"] == [{
        "name": "MedSAM2_latest.pt", "source": "huggingface:wanglab/MedSAM2/MedSAM2_latest.pt", "revision": COMMIT,
        "sha256": _sha256(cached), "extractor": "medsam2_memory",
    }]  # fmt: skip
    assert _sha256(cached) in capsys.readouterr().out
    assert main(["weights", "lock", "--extractor", "clinical"]) == 2
    assert "has no weights" in capsys.readouterr().err


def test_the_committed_lock_reads_and_holds_only_known_hashes() -> None:
    from bench.plugins.weights_lock import read_lock

    repo = Path(__file__).resolve().parents[1]
    entries = read_lock(repo / "weights.lock.json")
    r3d = entries["r3d_18-b3b3357e.pth"]
    assert r3d.sha256_prefix == "b3b3357e" and r3d.source.endswith("/r3d_18-b3b3357e.pth")
    for entry in entries.values():
        assert entry.sha256 or entry.sha256_prefix, entry


def test_a_locked_file_that_changed_stops_a_run_with_one_line(tmp_path: Path) -> None:
    mine = _checkpoint(tmp_path / "mine.pth", seed=0)
    env = {"BENCH_WEIGHTS_LOCK": str(tmp_path / "weights.lock.json"), "BENCH_CACHE_DIR": str(tmp_path / "cache")}
    locked = run_cli("weights", "lock", "--weights", str(mine), env=env)
    assert locked.returncode == 0, locked.stderr
    (entry,) = json.loads((tmp_path / "weights.lock.json").read_text())["weights"]
    assert entry["name"] == "mine.pth" and entry["sha256"] == _sha256(mine) and entry["revision"] is None
    before = _sha256(mine)

    _checkpoint(mine, seed=1)  # another file under the locked name
    ran = run_cli("run", "--dataset", "veterans", "--extractor", "resnet3d", "--weights", str(mine), "--quiet",
                  "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", env=env)  # fmt: skip
    assert ran.returncode == 2, ran.stderr
    (line,) = ran.stderr.strip().splitlines()
    assert before[:16] in line and _sha256(mine)[:16] in line and "bench weights lock" in line
    assert not (tmp_path / "m.db").exists(), "refused before any work"


# ----------------------------------------------------------------------------------- recorded with every run


def test_the_page_names_the_weights_file_only_for_rows_that_loaded_one() -> None:
    keys = [RowKey.parse("resnet3d", "coxph")]
    plain = provenance(keys)
    assert "weights" not in plain and "weights:" not in describe(plain)
    record = {"name": "r3d.pth", "sha256": "ab" * 32, "repo": "me/r3d", "revision": COMMIT}
    made = provenance(keys, {"resnet3d": record, "medsam2_memory": {"name": "x", "sha256": "cd" * 32}})
    assert made["weights"] == {"resnet3d": record}, "only the labels of the rows"
    stated = f"; weights: resnet3d r3d.pth sha256 {'ab' * 8} (me/r3d at {COMMIT[:12]})"
    assert describe(made) == describe(plain) + stated


@pytest.mark.slow
def test_a_run_records_its_weights_files_hash_and_commit_in_mlflow_and_on_the_page(
    tmp_path: Path, synthetic_data: Path
) -> None:
    """A checkpoint in a hub cache's layout, given with --weights: its sha256 and commit reach MLflow, the results
    file and the page's `made with` row."""
    from mlflow.tracking import MlflowClient
    from torchvision.models.video import r3d_18

    from bench.report.leaderboard import render
    from bench.report.results import load_results

    weights = tmp_path / "hub" / "models--me--r3d" / "snapshots" / COMMIT / "r3d_random.pth"
    weights.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(r3d_18(weights=None).state_dict(), weights)
    digest = _sha256(weights)
    cohort = subset_manifest(synthetic_data / "synthetic_mm-tiny-seed0" / "manifest.yaml", 5, tmp_path / "c", "t5")
    env = {"BENCH_DATA_DIR": str(synthetic_data), "BENCH_CACHE_DIR": str(tmp_path / "cache"),
           "BENCH_SPLITS_DIR": str(tmp_path / "splits")}  # fmt: skip
    assert run_cli("splits", "make", "--dataset", str(cohort), "--folds", "2", env=env).returncode == 0
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    ran = run_cli("run", "--dataset", str(cohort), "--extractor", "resnet3d:voxel_mm=16", "--model",
                  "coxnet:alpha=1", "--weights", str(weights), "--bootstrap", "20", "--tracking-uri", uri, "--quiet",
                  "--results", str(tmp_path / "r.json"), "--output-json", str(tmp_path / "o.json"),
                  env=env)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    (row,) = json.loads((tmp_path / "o.json").read_text())["results"]
    params = MlflowClient(uri).get_run(row["run_id"]).data.params
    assert params["extractor.weights.sha256"] == digest and params["extractor.weights.revision"] == COMMIT
    assert params["extractor.weights.repo"] == "me/r3d" and params["extractor.weights.file"] == "r3d_random.pth"
    recorded = json.loads((tmp_path / "r.json").read_text())["provenance"]["weights"]
    file = {"name": "r3d_random.pth", "sha256": digest, "repo": "me/r3d", "revision": COMMIT}
    assert recorded == {"resnet3d[voxel_mm=16.0]": file}
    page = render(load_results(tmp_path / "r.json"))  # the page as `bench leaderboard --from` renders it
    (made_with,) = [line for line in page.splitlines() if line.startswith("| made with |")]
    stated = f"weights: resnet3d[voxel_mm=16.0] r3d_random.pth sha256 {digest[:16]} (me/r3d at {COMMIT[:12]})"
    assert stated in made_with, made_with
