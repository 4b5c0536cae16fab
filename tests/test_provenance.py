"""Every page says what made it: versions of prognosis-bench, its plugins' distributions and the libraries used."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

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


PAGES = sorted((REPO / "leaderboards").glob("*.md"))


def test_there_are_committed_pages_to_check() -> None:
    assert {p.stem for p in PAGES} >= {"gbsg2", "synthetic_mm", "synthetic_mm_paper"}, "the tests below check none"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_every_committed_page_states_its_versions_and_regeneration_command(page: Path) -> None:
    """Every page, old or new, names what made it: no page may say "not recorded" (regenerate it instead)."""
    results = page.with_suffix(".json")
    assert results.is_file(), f"{page.name} has no results file beside it"
    body = json.loads(results.read_text())
    text = page.read_text()
    assert f"| regenerate | `{body['source']}` |" in text, results.name
    assert "| made with | " in text
    record = body.get("provenance")
    assert record, f"{results.name} records no versions; regenerate it with: {body['source']}"
    libraries = record["libraries"]
    assert record["prognosis-bench"] and libraries.get("scikit-survival"), record  # every metric is sksurv's
    (made_with,) = [line for line in text.splitlines() if line.startswith("| made with | ")]
    assert "not recorded" not in made_with, made_with
    assert f"prognosis-bench {record['prognosis-bench']}" in made_with, made_with
    for name, version in libraries.items():
        assert version and f"{name} {version}" in made_with, (name, made_with)
    for plugin, distribution in record["plugins"].items():
        assert f"{plugin.split(' ', 1)[1]} ({distribution})" in made_with, (plugin, made_with)
    # The versions stated are those of the rows: each row's plugins are recorded with their distribution.
    if body["format"].startswith("prognosis-bench-robustness/"):  # a robustness page: extractors, no models
        for extractor in body["extractors"]:
            assert f"extractor {RowKey.parse(extractor['label'], 'coxph').features[0].name}" in record["plugins"]
        return
    for row in body["rows"]:
        key = RowKey.parse(row["extractor"], row["model"])
        for kind, label in [*(("extractor", part) for part in key.features), ("model", key.model)]:
            assert f"{kind} {label.name}" in record["plugins"], (row["extractor"], row["model"], record["plugins"])
    assert f"prognosis-bench {body['provenance']['prognosis-bench']}" in text
    assert f"scikit-survival {body['provenance']['libraries']['scikit-survival']}" in text
