"""Flow: score a whole file of encounters with a registered model (``healthpredict score``).

The input (CSV or Parquet, any location :mod:`healthpredict.data.tables` reads) is read in
batches; each batch is coded, checked against the contract one distinct value at a time, and
scored by the model's columnar fast path (:meth:`LoadedModel.score_batch`), so no Python runs
per row except to hash the encounter id. Rows that break the contract go to the rejects file
with their reasons. Both outputs are published only when every batch has been scored.
:class:`BatchScorer` is the whole per-batch step; the Ray runner
(:mod:`healthpredict.pipelines.score_on_ray`) runs the same one in its workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from mlflow import MlflowClient

from healthpredict.data.columnar import CheckedBatch, CodedBatch, check_batch, code_batch
from healthpredict.data.pseudonym import ENCOUNTER_KEY, keyed_hashes, load_or_create_salt
from healthpredict.data.schema import FEATURE_COLUMNS
from healthpredict.data.tables import ParquetOutput, open_table, publish_together, read_batches
from healthpredict.errors import HealthPredictError
from healthpredict.modeling.registry import CHAMPION
from healthpredict.serving.model_store import (
    LoadedModel,
    download_and_load,
    find_version,
    prepare_model,
)
from healthpredict.settings import Settings

BATCH_ROWS = 65_536  # bounds memory (about 70 MB of features a batch), amortises the calls
REQUIRED = ("encounter_id", *FEATURE_COLUMNS)
REJECTION_REASON = "rejection_reason"
INPUT_ROW = "input_row"
REASON_TYPE = pa.list_(pa.struct([("feature", pa.string()), ("contribution", pa.float64())]))
SCORES_SCHEMA = pa.schema(
    [
        (ENCOUNTER_KEY, pa.string()),
        ("probability", pa.float64()),
        ("risk_band", pa.string()),
        ("decision", pa.bool_()),
        ("model_version", pa.string()),
    ]
)
# What a rejected row keeps: where it was, its hashed id, why, and its fields as they came
# (the identifiers only hashed: the rejects file holds no direct identifier either).
REJECTS_SCHEMA = pa.schema(
    [
        (INPUT_ROW, pa.int64()),
        (ENCOUNTER_KEY, pa.string()),
        (REJECTION_REASON, pa.string()),
        *[(name, pa.string()) for name in FEATURE_COLUMNS],
    ]
)


class ScoringError(HealthPredictError):
    """The job cannot run: no such model, or an input or output it cannot use."""


def scores_schema(reasons: int) -> pa.Schema:
    """The output's columns; with reasons, a list of (feature, contribution) per row."""
    return SCORES_SCHEMA.append(pa.field("reasons", REASON_TYPE)) if reasons else SCORES_SCHEMA


def rejects_location(output: str) -> str:
    """Where the rejects go by default: beside the output, ``<name>.rejects.parquet``."""
    stem = output.removesuffix(".parquet").removesuffix(".pq")
    return f"{stem}.rejects.parquet"


@dataclass(frozen=True)
class ScoredBatch:
    """One batch's output rows and rejected rows."""

    scores: pa.Table
    rejects: pa.Table
    violations_by_column: dict[str, int]


@dataclass
class BatchScorer:
    """Scores batches of one input with one model version; remembers the ids already seen."""

    model: LoadedModel
    salt: bytes
    decision_threshold: float
    band_edges: tuple[float, ...]
    band_names: tuple[str, ...]
    reasons: int = 0
    seen_ids: set[object] = field(default_factory=set)

    @classmethod
    def for_settings(cls, model: LoadedModel, settings: Settings, reasons: int) -> BatchScorer:
        """A scorer with the service's decision threshold, risk bands and id salt."""
        return cls(
            model,
            load_or_create_salt(settings),
            settings.serving.decision_threshold,
            tuple(settings.serving.risk_band_edges),
            tuple(settings.serving.risk_band_names),
            reasons,
        )

    def score(self, table: pa.Table, first_row: int = 0) -> ScoredBatch:
        """Score ``table`` (rows ``first_row`` on of the input).

        Raises:
            ContractError: A contract column is missing from the input.
        """
        coded = code_batch(table, REQUIRED)
        checked = check_batch(coded, self.seen_ids)
        return ScoredBatch(
            self._scores(checked.valid),
            self._rejects(coded, checked, first_row),
            checked.violations_by_column,
        )

    def _scores(self, valid: CodedBatch) -> pa.Table:
        scores = self.model.score_batch(valid, "path" if self.reasons else "none")
        probability = scores.probabilities
        bands = np.asarray(self.band_names)[np.searchsorted(self.band_edges, probability, "right")]
        columns = [
            pa.array(self._keys(valid["encounter_id"].rows()), pa.string()),
            pa.array(probability, pa.float64()),
            pa.array(bands, pa.string()),
            pa.array(probability >= self.decision_threshold, pa.bool_()),
            pa.array(np.full(valid.n_rows, self.model.version), pa.string()),
        ]
        if self.reasons:
            columns.append(self._reasons(scores.attributions, valid.n_rows))
        return pa.Table.from_arrays(columns, schema=scores_schema(self.reasons))

    def _keys(self, ids: list[object]) -> list[str | None]:
        keys = iter(keyed_hashes([str(v) for v in ids if v is not None], self.salt))
        return [None if v is None else next(keys) for v in ids]

    def _reasons(self, attributions: np.ndarray | None, rows: int) -> pa.Array:
        """The ``reasons`` strongest contributions of each row, strongest first (none that are
        exactly zero)."""
        compiled = self.model.compiled
        if attributions is None or compiled is None:
            return pa.array([[] for _ in range(rows)], REASON_TYPE)
        k = min(self.reasons, attributions.shape[1])
        order = np.argsort(-np.abs(attributions), axis=1, kind="stable")[:, :k]
        strength = np.take_along_axis(attributions, order, axis=1)
        kept = strength != 0.0
        offsets = np.concatenate([[0], np.cumsum(kept.sum(axis=1))]).astype(np.int32)
        features = pa.array(np.asarray(compiled.groups, dtype=object)[order[kept]], pa.string())
        values = pa.StructArray.from_arrays(
            [features, pa.array(strength[kept], pa.float64())], names=["feature", "contribution"]
        )
        return pa.ListArray.from_arrays(pa.array(offsets), values, type=REASON_TYPE)

    def _rejects(self, coded: CodedBatch, checked: CheckedBatch, first_row: int) -> pa.Table:
        rows = checked.rejected_rows
        rejected = coded.select(rows)
        as_came = {name: [_shown(v) for v in rejected[name].rows()] for name in FEATURE_COLUMNS}
        return pa.Table.from_pydict(
            {
                INPUT_ROW: (rows + first_row + 1).tolist(),  # 1 = the first row under the header
                ENCOUNTER_KEY: self._keys(rejected["encounter_id"].rows()),
                REJECTION_REASON: checked.reasons,
                **as_came,
            },
            schema=REJECTS_SCHEMA,
        )


def _shown(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass
class ScoringReport:
    """What a scoring job did."""

    source: str
    output: str
    rejects: str
    model_version: str
    fast_path: str
    rows: int = 0
    scored: int = 0
    rejected: int = 0
    violations_by_column: dict[str, int] = field(default_factory=dict)
    load_seconds: float = 0.0  # fetching the model, compiling its fast path, proving parity
    seconds: float = 0.0  # the whole job, the model's load included
    workers: tuple[str, ...] = ()  # on Ray: "<node id>:<pid>" of each actor (one model load)

    def add(self, batch: ScoredBatch) -> None:
        """Count one scored batch."""
        self.scored += batch.scores.num_rows
        self.rejected += batch.rejects.num_rows
        self.rows += batch.scores.num_rows + batch.rejects.num_rows
        for column, count in batch.violations_by_column.items():
            self.violations_by_column[column] = self.violations_by_column.get(column, 0) + count

    def summary(self) -> str:
        """One paragraph: counts, where they went, the model and the speed."""
        scoring = self.seconds - self.load_seconds
        rate = self.rows / scoring if scoring > 0 else 0.0
        text = (
            f"{self.rows:,} rows read from {self.source}: {self.scored:,} scored by version "
            f"{self.model_version} into {self.output}, {self.rejected:,} rejected into "
            f"{self.rejects}; {self.seconds:.1f} s ({self.load_seconds:.1f} s loading the model, "
            f"then {rate:,.0f} rows/s)"
        )
        if self.workers:
            nodes = {worker.split(":")[0] for worker in self.workers}
            text += f"; on {len(self.workers)} Ray workers on {len(nodes)} nodes"
        if self.violations_by_column:
            ranked = sorted(self.violations_by_column.items(), key=lambda item: -item[1])
            text += "; violations by column: " + ", ".join(f"{c}: {n:,}" for c, n in ranked)
        return text


def load_model(settings: Settings, version: str | None) -> LoadedModel:
    """The registered version ``version``, else the champion, with its fast path proven.

    Raises:
        ScoringError: No such version, or no champion.
    """
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    name = settings.tracking.model_name
    try:
        registered = find_version(client, name, CHAMPION, version)
    except LookupError as error:
        fix = "list them in MLflow" if version else "train one first: healthpredict train"
        raise ScoringError(f"{error}; {fix}") from error
    found = str(registered.version)
    pipeline = download_and_load(client, name, found, settings)
    tags = dict(registered.tags)
    trees = settings.compiled_trees_dir
    return prepare_model(name, found, CHAMPION, registered.run_id or "", tags, pipeline, trees)


def score_file(
    settings: Settings,
    source: str,
    output: str,
    model_version: str | None = None,
    reasons: int = 0,
    rejects: str | None = None,
    on_batch: Callable[[int, int | None], None] | None = None,
) -> ScoringReport:
    """Score every row of ``source`` into ``output`` (Parquet), rejects beside it.

    ``on_batch(rows_done, rows_total)`` is called after each batch (the total is known for
    Parquet only). Nothing is written unless the whole input was scored.

    Raises:
        ScoringError, TableFileError, ContractError: No model, an unreadable input, an
            unwritable output, or a contract column missing from the input.
    """
    started = time.perf_counter()
    table_source = open_table(source)
    outputs = ParquetOutput(output), ParquetOutput(rejects or rejects_location(output))
    for destination in outputs:
        destination.check_writable()
    model = load_model(settings, model_version)
    scorer = BatchScorer.for_settings(model, settings, reasons)
    report = ScoringReport(source, output, outputs[1].location, model.version, model.fast_path)
    report.load_seconds = time.perf_counter() - started
    try:
        for table in read_batches(table_source, BATCH_ROWS):
            scored = scorer.score(table, first_row=report.rows)
            outputs[0].write(scored.scores)
            outputs[1].write(scored.rejects)
            report.add(scored)
            if on_batch is not None:
                on_batch(report.rows, table_source.rows)
        publish_together([(outputs[0], scores_schema(reasons)), (outputs[1], REJECTS_SCHEMA)])
    finally:
        for destination in outputs:
            destination.discard()
    report.seconds = time.perf_counter() - started
    return report
