"""Every page says what made it: versions of prognosis-bench, its plugins' distributions and the libraries used."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

from bench.plugins.labels import RowKey
from bench.report.provenance import describe, provenance

REPO = Path(__file__).resolve().parents[1]


def test_provenance_names_each_plugins_distribution_and_the_libraries_its_extras_need() -> None:
    record = provenance([RowKey.parse("medsam2_memory+clinical", "deepsurv"), RowKey.parse("example_noise", "coxph")])
    assert record["prognosis-bench"] == metadata.version("prognosis-bench")
    assert record["plugins"]["extractor example_noise"] == f"bench-example-plugin {metadata.version('bench-example-plugin')}"
    assert record["plugins"]["model deepsurv"].startswith("prognosis-bench ")
    libraries = record["libraries"]
    for name in ("scikit-survival", "torch", "sam2"):  # always, [deep] and [medsam2]
        assert libraries[name] == metadata.version(name)
    assert "pyradiomics-bhklab" not in libraries, "no radiomics row, no radiomics version"
    text = describe(record)
    assert "plugins from bench-example-plugin" in text and f"torch {metadata.version('torch')}" in text


def test_every_committed_page_states_its_versions_and_regeneration_command() -> None:
    for results in sorted((REPO / "leaderboards").glob("*.json")):
        body = json.loads(results.read_text())
        page = results.with_suffix(".md").read_text()
        assert f"| regenerate | `{body['source']}` |" in page, results.name
        assert "| made with | " in page
        if "provenance" in body:
            assert f"prognosis-bench {body['provenance']['prognosis-bench']}" in page
            assert f"scikit-survival {body['provenance']['libraries']['scikit-survival']}" in page
