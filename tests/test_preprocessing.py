"""In-fold preprocessing learns from the training rows only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.data.cohort import ColumnSpec
from bench.errors import DataError
from bench.protocol.preprocessing import BlockPreprocessor, FoldPreprocessor
from feature_extractors.base import FeatureBlock

COLUMNS = {
    "age": ColumnSpec("numeric"),
    "grade": ColumnSpec("ordinal", ("I", "II", "III")),
    "site": ColumnSpec("categorical", ("bone", "liver", "lung")),
}


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [50.0, 60.0, np.nan, 70.0, 1000.0, np.nan],
            "grade": ["I", "III", "II", None, "III", "I"],
            "site": ["bone", "liver", None, "liver", "lung", "kidney"],
        }
    )


def test_statistics_come_from_the_training_rows() -> None:
    frame = _frame()
    pre = BlockPreprocessor(COLUMNS).fit(frame.iloc[:4])
    assert pre.medians_["age"] == 60.0  # the test row's 1000 does not move it
    filled = np.array([50.0, 60.0, 60.0, 70.0])
    assert pre.means_["age"] == pytest.approx(filled.mean())
    assert pre.scales_["age"] == pytest.approx(filled.std())
    assert pre.feature_names_ == ["age", "grade", "site=liver"]  # lung never seen in training

    X = pre.transform(frame)
    assert X[2, 0] == pytest.approx((60.0 - filled.mean()) / filled.std())  # imputed with the training median
    assert X[4, 0] == pytest.approx((1000.0 - filled.mean()) / filled.std())
    assert X[:, 2].tolist() == [0, 1, 1, 1, 0, 0]  # missing -> training mode (liver); unseen -> reference


def test_ordinal_keeps_declared_order() -> None:
    frame = pd.DataFrame({"grade": ["I", "II", "III", "II"]})
    pre = BlockPreprocessor({"grade": COLUMNS["grade"]}).fit(frame)
    codes = pre.transform(frame)[:, 0]
    assert codes[0] < codes[1] < codes[2] and codes[1] == codes[3]


def test_undeclared_ordinal_level_is_an_error() -> None:
    frame = pd.DataFrame({"grade": ["I", "IV"]})
    with pytest.raises(DataError, match=r"undeclared level\(s\) \['IV'\]"):
        BlockPreprocessor({"grade": COLUMNS["grade"]}).fit(frame)


def test_changing_test_rows_never_changes_training_features() -> None:
    frame = _frame()
    block = FeatureBlock("clinical", frame, COLUMNS)
    train, test = np.arange(4), np.arange(4, 6)
    before = FoldPreprocessor([block]).fit_transform(train)
    shuffled = frame.copy()
    shuffled.loc[test, "age"] = [-5.0, 99999.0]
    shuffled.loc[test, "site"] = ["lung", "lung"]
    after = FoldPreprocessor([FeatureBlock("clinical", shuffled, COLUMNS)]).fit_transform(train)
    np.testing.assert_array_equal(before, after)


def test_fusion_prefixes_block_names() -> None:
    a = FeatureBlock("clinical", pd.DataFrame({"age": [1.0, 2.0, 3.0]}), {"age": ColumnSpec("numeric")})
    b = FeatureBlock("noise", pd.DataFrame({"x": [3.0, 1.0, 2.0]}), {"x": ColumnSpec("numeric")})
    pre = FoldPreprocessor([a, b])
    X = pre.fit_transform(np.arange(3))
    assert pre.feature_names == ["clinical:age", "noise:x"]
    assert X.shape == (3, 2)


def test_infinite_feature_names_the_sample() -> None:
    frame = pd.DataFrame({"x": [1.0, np.inf, 2.0]}, index=["a", "b", "c"])
    with pytest.raises(DataError, match="feature 'x' of sample 'b' is infinite"):
        BlockPreprocessor({"x": ColumnSpec("numeric")}).fit(frame)
