"""In-fold preprocessing: everything learnable here is fit on the training fold only.

Numeric columns: median imputation, then standardisation. Ordinal columns: coded
by their declared level order, then treated as numeric. Categorical columns:
most-frequent imputation, then one-hot with the first level dropped (as
scikit-survival's OneHotEncoder does, so Cox models stay identifiable).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.data.cohort import ColumnSpec
from bench.errors import DataError, ModelError


@dataclass
class BlockPreprocessor:
    """Fit on one feature block's training rows, then transform any rows of it."""

    columns: dict[str, ColumnSpec]
    prefix: str = ""
    medians_: dict[str, float] = field(default_factory=dict)
    means_: dict[str, float] = field(default_factory=dict)
    scales_: dict[str, float] = field(default_factory=dict)
    levels_: dict[str, list[str]] = field(default_factory=dict)
    modes_: dict[str, str] = field(default_factory=dict)
    feature_names_: list[str] = field(default_factory=list)

    def fit(self, frame: pd.DataFrame) -> BlockPreprocessor:
        self.feature_names_ = []
        for col, spec in self.columns.items():
            if spec.kind == "categorical":
                values = frame[col].dropna().astype(str)
                if values.empty:
                    raise DataError(f"column {col!r} has no value in the training fold")
                declared = [c for c in spec.categories if c in set(values)] if spec.categories else []
                levels = declared or sorted(values.unique())
                mode = values.value_counts().sort_index().idxmax()
                self.levels_[col] = levels
                self.modes_[col] = mode
                self.feature_names_ += [f"{self.prefix}{col}={lv}" for lv in levels[1:]]
            else:
                numeric = self._numeric(frame[col], col, spec)
                median = float(np.nanmedian(numeric)) if np.isfinite(numeric).any() else np.nan
                if not np.isfinite(median):
                    raise DataError(f"column {col!r} has no value in the training fold")
                filled = np.where(np.isfinite(numeric), numeric, median)
                scale = float(filled.std())
                self.medians_[col] = median
                self.means_[col] = float(filled.mean())
                self.scales_[col] = scale if scale > 0 else 1.0
                self.feature_names_.append(f"{self.prefix}{col}")
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        parts = []
        for col, spec in self.columns.items():
            if spec.kind == "categorical":
                values = frame[col].astype(object).where(frame[col].notna(), self.modes_[col]).astype(str)
                # A level unseen in training encodes as the reference level (all zeros).
                onehot = [(values == level).to_numpy(float)[:, None] for level in self.levels_[col][1:]]
                parts.extend(onehot)
            else:
                numeric = self._numeric(frame[col], col, spec)
                filled = np.where(np.isfinite(numeric), numeric, self.medians_[col])
                parts.append(((filled - self.means_[col]) / self.scales_[col])[:, None])
        return np.hstack(parts) if parts else np.empty((len(frame), 0))

    @staticmethod
    def _numeric(series: pd.Series, col: str, spec: ColumnSpec) -> np.ndarray:
        if spec.kind == "ordinal":
            order = {level: i for i, level in enumerate(spec.categories)}
            unknown = set(series.dropna().astype(str)) - set(order)
            if unknown:
                raise DataError(
                    f"ordinal column {col!r} has undeclared level(s) {sorted(unknown)}; "
                    f"declared: {list(spec.categories)}"
                )
            return series.map(lambda v: np.nan if v is None or v != v else order[str(v)]).to_numpy(float)
        try:
            values = pd.to_numeric(series, errors="raise").to_numpy(float)
        except (ValueError, TypeError) as exc:
            raise DataError(f"numeric column {col!r} holds a non-number: {exc}") from exc
        infinite = np.isinf(values)
        if infinite.any():
            sample = series.index[np.flatnonzero(infinite)[0]]
            raise DataError(f"feature {col!r} of sample {sample!r} is infinite; fix the extractor or the table")
        return values


@dataclass
class SequencePreprocessor:
    """Standardise each per-slice feature over the real slices of the training rows; padding stays 0.

    Output columns: the sequence flattened slice-major, then one mask flag per slice
    (the layout ``survival_models.base.BlockLayout`` describes).
    """

    prefix: str = ""
    means_: np.ndarray | None = None
    scales_: np.ndarray | None = None
    feature_names_: list[str] = field(default_factory=list)

    def fit(self, values: np.ndarray, mask: np.ndarray) -> SequencePreprocessor:
        real = values[mask]
        self.means_ = real.mean(axis=0)
        scales = real.std(axis=0)
        self.scales_ = np.where(scales > 0, scales, 1.0)
        slices, features = values.shape[1:]
        self.feature_names_ = [f"{self.prefix}s{d}:f{k}" for d in range(slices) for k in range(features)]
        self.feature_names_ += [f"{self.prefix}s{d}:mask" for d in range(slices)]
        return self

    def transform(self, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        scaled = np.where(mask[..., None], (values - self.means_) / self.scales_, 0.0)
        return np.hstack([scaled.reshape(len(values), -1), mask.astype(float)])


class FoldPreprocessor:
    """Preprocess several feature blocks, each on its own, and join them (late fusion)."""

    def __init__(self, blocks: list):
        self.blocks = blocks
        multi = len(blocks) > 1
        self.parts = [
            SequencePreprocessor(f"{b.name}:" if multi else "")
            if b.sequence is not None
            else BlockPreprocessor(b.columns, prefix=f"{b.name}:" if multi else "")
            for b in blocks
        ]

    def fit_transform(self, train_index: np.ndarray) -> np.ndarray:
        from bench.protocol.robustness import robust_columns

        for i, block in enumerate(self.blocks):
            if block.min_icc is not None:  # the robust columns of this fold: chosen on its training rows alone
                kept = robust_columns(block, train_index)
                if not kept:
                    raise ModelError(f"no feature of {block.name!r} reaches min_icc={block.min_icc:g} on the "
                                    "training patients of a fold; lower min_icc")  # fmt: skip
                self.parts[i] = BlockPreprocessor({c: block.columns[c] for c in kept}, self.parts[i].prefix)
        for block, part in zip(self.blocks, self.parts):
            part.fit(*self._inputs(block, train_index))
        return self.transform(train_index)

    def transform(self, index: np.ndarray) -> np.ndarray:
        return np.hstack([p.transform(*self._inputs(b, index)) for b, p in zip(self.blocks, self.parts)])

    @staticmethod
    def _inputs(block, index: np.ndarray) -> tuple:
        if block.sequence is not None:
            return block.sequence[index], block.sequence_mask[index]
        return (block.frame.iloc[index],)

    @property
    def feature_names(self) -> list[str]:
        return [n for p in self.parts for n in p.feature_names_]

    @property
    def layout(self) -> tuple:
        """Where each block's columns are, for models that treat blocks or sequences separately (after fit)."""
        from survival_models.base import BlockLayout

        out, start = [], 0
        for block, part in zip(self.blocks, self.parts):
            stop = start + len(part.feature_names_)
            shape = tuple(block.sequence.shape[1:]) if block.sequence is not None else None
            out.append(BlockLayout(block.name, start, stop, shape))
            start = stop
        return tuple(out)
