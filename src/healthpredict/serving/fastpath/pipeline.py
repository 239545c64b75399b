"""Low-latency scoring of plain records with exactly the registered pipeline's numbers.

``pipeline.predict_proba`` on a one-row DataFrame costs milliseconds, almost all of it pandas
and scikit-learn bookkeeping. :func:`compile_pipeline` turns the fitted pipeline into
:class:`CompiledModel`: the compiled
:class:`~healthpredict.serving.fastpath.encoder.RecordEncoder`; for each calibration member,
the leaf each row reaches in each tree (one LightGBM traversal), the raw score as the sum of
those leaves' exact values in tree order, and the calibrator (sigmoid:
``expit(-(a * raw + b))``; isotonic: ``np.interp`` on its fitted thresholds); then the mean
over members, as ``CalibratedClassifierCV`` does (one member when ``ensemble=False``). The
same leaves give the per-row attributions. :func:`check_parity` compares the two paths.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.pipeline import Pipeline

from healthpredict.data.columnar import CodedBatch, check_batch, code_batch
from healthpredict.data.schema import FEATURE_COLUMNS
from healthpredict.serving.fastpath.columnar import encode_batch
from healthpredict.serving.fastpath.encoder import (
    FastPathError,
    Record,
    RecordEncoder,
    compile_encoder,
)
from healthpredict.serving.fastpath.explain import LeafTables, concatenate, leaf_tables
from healthpredict.serving.fastpath.single_row import SingleRowLeaves
from healthpredict.serving.fastpath.trees import (
    LightGBMScorer,
    TreeCompileError,
    TreeScorer,
    compile_trees,
)

logger = logging.getLogger(__name__)

# Probabilities are identical up to float rounding of np.interp versus scipy's interp1d.
PARITY_ATOL = 1e-9
# One thread per call for small inputs: the service parallelises across requests, and
# LightGBM's thread pool costs more than it gains on a few rows.
_SMALL_BATCH = 256
# From this many rows, probabilities without attributions come from the tree scorer (compiled
# where it could be); below, the leaf path's lower call overhead wins.
_TREE_SCORER_ROWS = 256
_SINGLE_ROW_PROBES = 100


@dataclass(frozen=True)
class _Calibrator:
    """A fitted sigmoid (Platt) or isotonic calibrator, on plain numpy."""

    method: str
    slope: float = 0.0
    intercept: float = 0.0
    thresholds: np.ndarray | None = None
    values: np.ndarray | None = None

    @classmethod
    def of(cls, calibrator: Any, method: str) -> _Calibrator:
        """Read the fitted parameters of scikit-learn's calibrator."""
        if method == "sigmoid":
            return cls(method, slope=float(calibrator.a_), intercept=float(calibrator.b_))
        if method == "isotonic":
            return cls(method, thresholds=calibrator.X_thresholds_, values=calibrator.y_thresholds_)
        raise FastPathError(f"no fast path for calibration method {method!r}")

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        if self.method == "sigmoid":
            return np.asarray(expit(-(self.slope * raw + self.intercept)))
        # As IsotonicRegression.predict: clip to the fitted range, then interpolate.
        return np.interp(raw, self.thresholds, self.values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Member:
    """One calibration member: a booster, its leaf tables, and its calibrator."""

    booster: Any
    tables: LeafTables
    calibrator: _Calibrator
    single_row: SingleRowLeaves
    trees: TreeScorer

    def leaves(self, matrix: np.ndarray) -> np.ndarray:
        """Leaf index of every row in every tree (one traversal, the cost of a prediction)."""
        if len(matrix) == 1:
            return self.single_row(matrix[0])[np.newaxis, :]
        threads = 1 if len(matrix) <= _SMALL_BATCH else 0
        return self.booster.predict(matrix, pred_leaf=True, num_threads=threads)

    def probability(self, raw: np.ndarray) -> np.ndarray:
        """The calibrated probability of raw scores."""
        return self.calibrator(raw)


@dataclass(frozen=True)
class CompiledModel:
    """The fitted pipeline as encoder + boosters + calibrators, on plain numpy."""

    encoder: RecordEncoder
    members: tuple[_Member, ...]
    groups: tuple[str, ...]
    group_matrix: np.ndarray
    all_trees: LeafTables

    def encode(self, records: Sequence[Record]) -> np.ndarray:
        """Feature matrix of ``records`` (see :class:`RecordEncoder`)."""
        return self.encoder.encode(records)

    def encode_batch(self, batch: CodedBatch) -> np.ndarray:
        """Feature matrix of a checked coded batch (see
        :mod:`healthpredict.serving.fastpath.columnar`)."""
        return encode_batch(self.encoder, batch)

    def score(
        self, matrix: np.ndarray, explain: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Calibrated risk per row and, when asked, path attributions by request field.

        Attributions are averaged over the calibration members, on the boosters'
        uncalibrated log-odds scale (see :mod:`healthpredict.serving.fastpath.explain`).
        """
        probability = np.zeros(len(matrix))
        leaves = []
        for member in self.members:
            if explain or len(matrix) < _TREE_SCORER_ROWS:
                leaves.append(member.leaves(matrix))
                raw = member.tables.raw_scores(leaves[-1])
            else:
                raw = member.trees.raw_scores(matrix, threads=0)
            probability += member.probability(raw)
        attributions = None
        if explain:
            # One gather over every member's trees: a third of the cost of one per member.
            attributions = self.all_trees.attributions(np.hstack(leaves)) / len(self.members)
        return probability / len(self.members), attributions

    def predict(self, records: Sequence[Record]) -> np.ndarray:
        """Calibrated probability of 30-day readmission for each record."""
        return self.score(self.encode(records))[0]

    def shap(self, matrix: np.ndarray) -> np.ndarray:
        """Exact Tree SHAP by request field, averaged over members (slower; log-odds scale)."""
        threads = 1 if len(matrix) <= _SMALL_BATCH else 0
        total = np.zeros((len(matrix), matrix.shape[1] + 1))
        for member in self.members:
            total += member.booster.predict(matrix, pred_contrib=True, num_threads=threads)
        return (total[:, :-1] / len(self.members)) @ self.group_matrix


def compile_pipeline(pipeline: Pipeline, trees_cache: Path | None = None) -> CompiledModel:
    """Compile a fitted ``Pipeline([features, CalibratedClassifierCV(LGBMClassifier)])``.

    With ``trees_cache``, each booster's trees are also compiled to native code (lleaves,
    cached there); a booster that cannot be compiled is scored by LightGBM itself.

    Raises:
        FastPathError: The pipeline does not have that shape (e.g. the logistic baseline).
    """
    model = pipeline[-1]
    members = getattr(model, "calibrated_classifiers_", None)
    method = getattr(model, "method", None)
    if not members or method not in ("sigmoid", "isotonic"):
        raise FastPathError("the fast path needs CalibratedClassifierCV(sigmoid or isotonic)")
    if not isinstance(pipeline, Pipeline) or len(pipeline) != 2:
        raise FastPathError("expected Pipeline([features, model])")
    encoder = compile_encoder(pipeline[0])
    groups, matrix = _group_matrix(encoder)
    feature_group = matrix.argmax(axis=1)
    compiled_members = []
    for member in members:
        estimator = member.estimator
        if not hasattr(estimator, "booster_") or len(member.calibrators) != 1:
            raise FastPathError("every calibration member must be one binary LightGBM model")
        if list(estimator.feature_name_) != [_lgbm_name(n) for n in encoder.feature_names]:
            raise FastPathError("the boosters' features differ from the encoder's output")
        calibrator = member.calibrators[0]
        tables = leaf_tables(estimator.booster_, feature_group, len(groups))
        booster = estimator.booster_
        compiled_members.append(
            _Member(
                booster,
                tables,
                _Calibrator.of(calibrator, method),
                SingleRowLeaves(booster),
                tree_scorer(booster, trees_cache),
            )
        )
    all_trees = concatenate([m.tables for m in compiled_members])
    return CompiledModel(encoder, tuple(compiled_members), groups, matrix, all_trees)


def tree_scorer(booster: Any, cache: Path | None) -> TreeScorer:
    """The booster compiled into ``cache``, else (no cache, or it cannot be) LightGBM itself."""
    if cache is None:
        return LightGBMScorer(booster)
    try:
        return compile_trees(booster, cache)
    except TreeCompileError as error:
        logger.warning("trees not compiled, LightGBM scores them: %s", error)
        return LightGBMScorer(booster)


def _lgbm_name(name: str) -> str:
    """LightGBM replaces JSON special characters in feature names by underscores."""
    return "".join("_" if c in '",:[]{}' else c for c in name).replace(" ", "_")


def _group_matrix(encoder: RecordEncoder) -> tuple[tuple[str, ...], np.ndarray]:
    """0/1 matrix summing output features into their request fields."""
    sources = [encoder.source_of(name) for name in encoder.feature_names]
    groups = tuple(dict.fromkeys(sources))
    matrix = np.zeros((len(sources), len(groups)))
    for row, source in enumerate(sources):
        matrix[row, groups.index(source)] = 1.0
    return groups, matrix


def records_frame(records: Sequence[Record]) -> pd.DataFrame:
    """The records as the pipeline's input frame (contract feature columns, in order)."""
    return pd.DataFrame.from_records(list(records), columns=list(FEATURE_COLUMNS))


def check_parity(pipeline: Pipeline, compiled: CompiledModel, records: Sequence[Record]) -> float:
    """Largest absolute probability difference between the fast paths and the pipeline.

    Raises:
        FastPathError: The difference exceeds :data:`PARITY_ATOL`.
    """
    frame = records_frame(records)
    expected = pipeline.predict_proba(frame)[:, 1]
    # Every fast route: records, the single-row C API for the first ones, and the columnar one.
    one_by_one = [compiled.predict([record])[0] for record in records[:_SINGLE_ROW_PROBES]]
    checked = check_batch(code_batch(frame, FEATURE_COLUMNS))
    if len(checked.rejected_rows):
        raise FastPathError(f"probe records break the contract: {checked.reasons[0]}")
    columnar = compiled.score(compiled.encode_batch(checked.valid))[0]
    gaps = (
        compiled.predict(records) - expected,
        np.asarray(one_by_one) - expected[: len(one_by_one)],
        columnar - expected,
    )
    gap = float(max(np.max(np.abs(g), initial=0.0) for g in gaps))
    if not gap <= PARITY_ATOL:
        raise FastPathError(f"fast path differs from the pipeline by {gap:.3g} (> {PARITY_ATOL})")
    return gap
