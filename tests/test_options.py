"""Option constraints: declared with each option, checked before any work, for any plugin's config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import feature_extractors.base
import feature_extractors.clinical
import survival_models.base
from bench.cli import main
from bench.errors import PluginLoadError, UsageError
from bench.plugins.options import (
    AnyOf,
    ExistingFile,
    Increasing,
    Interval,
    Length,
    OneOf,
    build_config,
    check_config,
    option,
)
from bench.plugins.registry import EXTRACTORS, MODELS, Registry

PLUGINS = [(EXTRACTORS, name) for name in EXTRACTORS.names()] + [(MODELS, name) for name in MODELS.names()]


def _load(registry: Registry, name: str) -> Any:
    try:
        return registry.load(name)
    except PluginLoadError as exc:  # every registered plugin is installed by the lock: one that is not is a failure
        pytest.fail(str(exc))


@pytest.mark.parametrize("registry, name", PLUGINS, ids=[f"{r.kind}-{n}" for r, n in PLUGINS])
def test_defaults_meet_every_declared_constraint(registry: Registry, name: str) -> None:
    config = _load(registry, name).Config()
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        for constraint in f.metadata.get("constraints", ()):
            assert constraint.requirement(), f"{name}.{f.name}: {constraint!r} says nothing"
            if value is None:
                continue
            per_item = isinstance(value, tuple) and not getattr(constraint, "whole", False)
            for item in value if per_item else [value]:
                assert constraint.check(item), f"{name}.{f.name} default {value!r} is not {constraint.requirement()}"


def test_the_defaults_test_reads_the_constraints_the_built_ins_declare() -> None:
    """Were the constraints kept under another key, the test above would loop over nothing and pass."""
    constrained = {
        f"{registry.kind} {name}": [f.name for f in dataclasses.fields(_load(registry, name).Config)
                                    if f.metadata.get("constraints")]
        for registry, name in PLUGINS
    }  # fmt: skip
    declaring = ["model coxnet", "model coxph", "model deepsurv", "model gbsa", "model rsf", "extractor radiomics",
                 "extractor resnet3d", "extractor medsam2_memory", "extractor timm"]  # fmt: skip
    assert all(constrained[plugin] for plugin in declaring), constrained
    assert "alpha" in constrained["model coxnet"] and "bin_width_pet" in constrained["extractor radiomics"]


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every extraction, fit and cohort load; a run refused for its options must do none."""
    from bench.protocol import runner

    calls: list[str] = []

    def recorder(what: str, real: Any = None) -> Any:
        def record(*args: Any, **kwargs: Any) -> Any:
            calls.append(what)
            if real is None:
                raise AssertionError(f"{what} ran")
            return real(*args, **kwargs)

        return record

    monkeypatch.setattr(feature_extractors.base.Extractor, "extract", recorder("Extractor.extract"))
    monkeypatch.setattr(feature_extractors.clinical.ClinicalExtractor, "extract", recorder("ClinicalExtractor.extract"))
    monkeypatch.setattr(survival_models.base.SurvivalModel, "fit", recorder("SurvivalModel.fit"))
    monkeypatch.setattr(survival_models.base.SksurvModel, "fit", recorder("SksurvModel.fit"))
    monkeypatch.setattr(runner, "load_cohort", recorder("load_cohort", runner.load_cohort))
    return calls


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_cli_refuses_an_out_of_range_model_option_before_any_work(
    tmp_path: Path, no_work: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "m.db"
    argv = ["run", "--dataset", "gbsg2", "--model", "coxnet:alpha=-1", "--tracking-uri", f"sqlite:///{store}"]
    assert main(argv) == 2
    line = _one_line_error(capsys)
    assert "model 'coxnet' option alpha must be in (0, inf), got -1.0" in line
    assert no_work == []
    assert not store.exists()


def test_cli_refuses_an_out_of_range_extractor_option_before_the_cohort_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_work: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    monkeypatch.setenv("BENCH_DATA_DIR", str(data))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(cache))
    store = tmp_path / "m.db"
    argv = [
        "run", "--dataset", "synthetic_mm_tiny", "--extractor", "radiomics:bin_width_pet=-1", "--model", "coxph",
        "--tracking-uri", f"sqlite:///{store}",
    ]  # fmt: skip
    assert main(argv) == 2
    line = _one_line_error(capsys)
    assert "extractor 'radiomics' option bin_width_pet must be in (0, inf), got -1.0" in line
    assert no_work == []
    assert list(data.iterdir()) == [], "the synthetic cohort was generated before the options were checked"
    assert not cache.exists() or list(cache.iterdir()) == []
    assert not store.exists()


# --------------------------------------------------------------------------- outside plugins' configs


@dataclass(frozen=True)
class OutsideConfig:
    """What a third-party plugin may declare, with the names re-exported by the base modules."""

    rate: float = feature_extractors.base.option(0.5, feature_extractors.base.Interval(0, 1, "right"))  # a fraction
    kernel: str = survival_models.base.option("rbf", survival_models.base.OneOf("rbf", "linear"))  # kernel
    sizes: tuple[int, ...] = option((4, 8), Length(at_least=1), Interval(1, None, "left"), Increasing())  # widths
    depth: int | None = option(None, Interval(1, None, "left"))  # None: unlimited
    table: str = option("", ExistingFile())  # an optional lookup table
    plain: int = -7  # declared without constraints: only its type is checked


@dataclass(frozen=True)
class PlainConfig:
    size: int = 3  # no constraints anywhere
    name: str = "x"  # any text


def test_outside_config_constraints_are_checked(tmp_path: Path) -> None:
    owner = "extractor 'outside'"
    assert build_config(OutsideConfig, {}, owner) == OutsideConfig()
    with pytest.raises(UsageError, match=r"^extractor 'outside' option rate must be in \(0, 1\], got 1\.5$"):
        build_config(OutsideConfig, {"rate": "1.5"}, owner)
    with pytest.raises(UsageError, match=r"option kernel must be one of rbf, linear, got 'poly'"):
        build_config(OutsideConfig, {"kernel": "poly"}, owner)
    with pytest.raises(UsageError, match=r"option sizes must have every item in \[1, inf\), got 0 in \(0, 8\)"):
        build_config(OutsideConfig, {"sizes": "0/8"}, owner)
    with pytest.raises(UsageError, match=r"option sizes must be strictly increasing, got \(8, 4\)"):
        build_config(OutsideConfig, {"sizes": "8/4"}, owner)
    with pytest.raises(UsageError, match=r"option sizes must be at least 1 item long"):
        build_config(OutsideConfig, {"sizes": ""}, owner)
    with pytest.raises(UsageError, match=r"option depth must be in \[1, inf\), got 0"):
        build_config(OutsideConfig, {"depth": "0"}, owner)
    with pytest.raises(UsageError, match=r"option table must be an existing file .*, got '.*missing.csv'"):
        build_config(OutsideConfig, {"table": str(tmp_path / "missing.csv")}, owner)
    (tmp_path / "table.csv").write_text("a\n")
    config = build_config(OutsideConfig, {"table": str(tmp_path / "table.csv"), "depth": "none", "plain": "-9"}, owner)
    assert (config.depth, config.plain) == (None, -9)
    with pytest.raises(UsageError, match=r"option rate must be in \(0, 1\], got -0\.1"):  # typed values too
        build_config(OutsideConfig, {"rate": -0.1}, owner)


def test_config_without_constraints_works_as_before() -> None:
    assert build_config(PlainConfig, {"size": "-100", "name": ""}, "model 'plain'") == PlainConfig(-100, "")
    check_config(PlainConfig(size=-1), "model 'plain'")
    with pytest.raises(UsageError, match="must be int"):
        build_config(PlainConfig, {"size": "many"}, "model 'plain'")


def test_option_rejects_what_is_not_a_constraint() -> None:
    with pytest.raises(TypeError, match="check"):
        option(1, (0, 10))


# --------------------------------------------------------------------------- the vocabulary


@pytest.mark.parametrize(
    "interval, text",
    [
        (Interval(0, None, "neither"), "(0, inf)"),
        (Interval(1, None, "left"), "[1, inf)"),
        (Interval(0, 1, "right"), "(0, 1]"),
        (Interval(0.0, 1.0, "left"), "[0, 1)"),
        (Interval(None, -1, "right"), "(-inf, -1]"),
        (Interval(None, None, "both"), "(-inf, inf)"),
        (Interval(0.25, 2**32 - 1, "both"), "[0.25, 4294967295]"),
    ],
)
def test_interval_describe(interval: Interval, text: str) -> None:
    assert interval.describe() == text
    assert interval.requirement() == f"in {text}"


def test_interval_bounds_and_what_counts_as_a_number() -> None:
    unit = Interval(0, 1, "right")
    assert [unit.check(v) for v in (0, 1e-12, 0.5, 1, 1.0 + 1e-12)] == [False, True, True, True, False]
    assert unit.check("0.5") and not unit.check("sqrt")  # text that reads as a number (str | float options)
    assert not unit.check(True)  # a bool is not a number
    assert not unit.check(float("nan"))
    assert Interval(0, None, "left").check(10**400)  # big ints compare exactly, no overflow
    with pytest.raises(ValueError):
        Interval(1, 0, "both")
    with pytest.raises(ValueError):
        Interval(0, 1, "open")  # type: ignore[arg-type]


def test_boundary_values_pass_where_the_interval_is_closed() -> None:
    coxnet = _load(MODELS, "coxnet")
    assert build_config(coxnet.Config, {"l1_ratio": "1"}, "model 'coxnet'").l1_ratio == 1.0
    with pytest.raises(UsageError, match=r"l1_ratio must be in \(0, 1\], got 0\.0"):
        build_config(coxnet.Config, {"l1_ratio": "0"}, "model 'coxnet'")
    coxph = _load(MODELS, "coxph")
    assert build_config(coxph.Config, {"alpha": "0"}, "model 'coxph'").alpha == 0.0


def test_alternatives_and_shapes() -> None:
    max_features = AnyOf(OneOf("sqrt", "log2"), Interval(0, 1, "right"))
    assert [max_features.check(v) for v in ("sqrt", "0.5", 0.5, "2", "abc")] == [True, True, True, False, False]
    assert max_features.requirement() == "one of sqrt, log2 or in (0, 1]"
    assert not max_features.whole and AnyOf(Length(2), Increasing()).whole
    assert Length(3).check((1, 2, 3)) and not Length(3).check((1, 2)) and not Length(3).check(3)
    assert Length(at_least=1, at_most=3).requirement().startswith("1 to 3 items long")
    assert Length(1).requirement().startswith("1 item long")
    assert Increasing().check((-160.0, 240.0)) and not Increasing().check((1, 1))
    assert ExistingFile().check("") and not ExistingFile().check(".") and not ExistingFile().check(3)


def test_rsf_max_features_rejects_text_that_is_neither_a_rule_nor_a_fraction() -> None:
    rsf = _load(MODELS, "rsf")
    assert build_config(rsf.Config, {"max_features": "0.5"}, "model 'rsf'").max_features == "0.5"  # label unchanged
    assert build_config(rsf.Config, {"max_features": "none"}, "model 'rsf'").max_features is None
    with pytest.raises(UsageError, match=r"max_features must be one of sqrt, log2 or in \(0, 1\], got 'half'"):
        build_config(rsf.Config, {"max_features": "half"}, "model 'rsf'")


@pytest.mark.parametrize(
    "registry, name, options, words",
    [
        (EXTRACTORS, "resnet3d", {"crop_mm": "320/240"}, "crop_mm must be empty or 3 items long"),
        (EXTRACTORS, "resnet3d", {"crop_mm": "320/0/480"}, r"crop_mm must have every item in \(0, inf\)"),
        (EXTRACTORS, "resnet3d", {"voxel_mm": "0"}, r"voxel_mm must be in \(0, inf\)"),
        (
            EXTRACTORS,
            "radiomics",
            {"feature_classes": "firstorder/glcmm"},
            "feature_classes must have every item one of firstorder",
        ),
        (EXTRACTORS, "radiomics", {"params_file": "no/such/params.yaml"}, "params_file must be an existing file"),
        (EXTRACTORS, "medsam2_memory", {"ct_window": "240/-160"}, "ct_window must be strictly increasing"),
        (EXTRACTORS, "medsam2_memory", {"batch_size": "0"}, r"batch_size must be in \[1, inf\)"),
        (MODELS, "deepsurv", {"dropout": "1"}, r"dropout must be in \[0, 1\), got 1\.0"),
        (MODELS, "rsf", {"n_jobs": "0"}, r"n_jobs must be in \[1, inf\) or in \(-inf, -1\], got 0"),
        (MODELS, "gbsa", {"subsample": "0"}, r"subsample must be in \(0, 1\]"),
    ],
)
def test_built_in_constraints_name_the_option_and_its_range(
    registry: Registry, name: str, options: dict[str, str], words: str
) -> None:
    cls = _load(registry, name)
    with pytest.raises(UsageError, match=rf"^{registry.kind} '{name}' option {words}"):
        build_config(cls.Config, options, f"{registry.kind} {name!r}")
