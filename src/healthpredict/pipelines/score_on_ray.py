"""Flow: the scoring job on a Ray cluster, with Ray Data over a (partitioned) Parquet dataset.

The same :class:`~healthpredict.pipelines.score.BatchScorer` as on one machine runs in a pool
of Ray actors, one model load per actor. The driver resolves the version first (the champion
alias may move while the job runs; every worker scores with the same version). Each actor
returns its batch's scores and rejects as one table (the columns of both, the other's left
empty); the dataset is materialised once and written as two folders of Parquet parts, first
into staging folders that replace ``OUTPUT`` and its rejects folder only when both are written.

What differs from one machine: the input must be Parquet (a file or a folder of files); an
encounter id repeated is found within each worker's share of the input only; a rejected row's
``input_row`` is left empty (Ray Data gives a batch no position in its input); paths are those
every node can reach (a shared folder or an object store).
"""

from __future__ import annotations

import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from ray.data import Dataset
from ray.data.expressions import col

from healthpredict.data.tables import TableFileError
from healthpredict.modeling.tune import connect_ray
from healthpredict.pipelines.score import (
    REJECTION_REASON,
    REJECTS_SCHEMA,
    BatchScorer,
    ScoringReport,
    load_model,
    rejects_location,
    scores_schema,
)
from healthpredict.settings import Settings

ROWS_PER_CALL = 65_536
ACTOR_START_SECONDS = 600  # a worker's model load (download, compile, parity) must fit in
WORKER = "ray_worker"  # node id and process of the actor that scored a row (not written out)


class _ActorScorer:
    """A Ray actor's scorer: loads the model once, then scores every batch it is given."""

    def __init__(self, settings: Settings, version: str, reasons: int) -> None:
        import ray

        model = load_model(settings, version)
        self.scorer = BatchScorer.for_settings(model, settings, reasons)
        self.schema = combined_schema(reasons)
        self.worker = f"{ray.get_runtime_context().get_node_id()}:{os.getpid()}"

    def __call__(self, table: pa.Table) -> pa.Table:
        scored = self.scorer.score(table)
        rejects = scored.rejects.set_column(
            0, "input_row", pa.nulls(scored.rejects.num_rows, pa.int64())
        )
        both = pa.concat_tables([scored.scores, rejects], promote_options="permissive")
        both = both.append_column(WORKER, pa.array([self.worker] * both.num_rows, pa.string()))
        return both.select(self.schema.names).cast(self.schema)


def combined_schema(reasons: int) -> pa.Schema:
    """One row per input row: the score columns, then the reject columns (nullable)."""
    scores = scores_schema(reasons)
    fields = [*scores, *(f for f in REJECTS_SCHEMA if f.name not in scores.names)]
    return pa.schema([*fields, pa.field(WORKER, pa.string())])


@dataclass(frozen=True)
class _Folders:
    """The two output folders and their staging twins."""

    scores: Path
    rejects: Path
    token: str

    def staging(self, folder: Path) -> Path:
        return folder.with_name(f".{folder.name}.{self.token}.partial")

    def check(self) -> None:
        for folder in (self.scores, self.rejects):
            if folder.exists() and not folder.is_dir():
                raise TableFileError(f"{folder}: is a file; on Ray the output is a folder")
            if not folder.parent.is_dir() or not os.access(folder.parent, os.W_OK):
                raise TableFileError(f"{folder}: the folder {folder.parent} is not writable")

    def publish(self) -> None:
        """Swap both staged folders in (an old output is removed only after)."""
        for folder in (self.rejects, self.scores):
            old = folder.with_name(f".{folder.name}.{self.token}.old")
            if folder.exists():
                folder.rename(old)
            self.staging(folder).rename(folder)
            shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        for folder in (self.scores, self.rejects):
            shutil.rmtree(self.staging(folder), ignore_errors=True)


def score_on_ray(
    settings: Settings,
    source: str,
    output: str,
    address: str,
    model_version: str | None = None,
    reasons: int = 0,
    rejects: str | None = None,
) -> ScoringReport:
    """Score the Parquet dataset at ``source`` on the Ray cluster at ``address``.

    Raises:
        SearchError: The cluster cannot be reached.
        ScoringError, TableFileError: No model; an unwritable output.
    """
    import ray

    started = time.perf_counter()
    folders = _Folders(Path(output), Path(rejects or rejects_location(output)), uuid.uuid4().hex)
    folders.check()
    model = load_model(settings, model_version)  # the driver fixes the version for all workers
    connect_ray(address)
    report = ScoringReport(source, output, str(folders.rejects), model.version, model.fast_path)
    report.load_seconds = time.perf_counter() - started  # the driver's; each worker loads too
    try:
        # Work is handed out only once every actor has loaded its model: else the first one
        # ready takes every block of a small input and the other nodes idle. (A dataset keeps
        # the context it was created under.)
        context = ray.data.DataContext.get_current()
        context.wait_for_min_actors_s = ACTOR_START_SECONDS
        dataset = _scored(ray.data.read_parquet(source), settings, model.version, reasons)
        reason = col(REJECTION_REASON)
        scores, rejected = (
            dataset.filter(expr=reason.is_null()),
            dataset.filter(expr=reason.is_not_null()),
        )
        scores.select_columns(scores_schema(reasons).names).write_parquet(
            str(folders.staging(folders.scores))
        )
        rejected.select_columns(REJECTS_SCHEMA.names).write_parquet(
            str(folders.staging(folders.rejects))
        )
        for folder, schema in (
            (folders.scores, scores_schema(reasons)),
            (folders.rejects, REJECTS_SCHEMA),
        ):
            _at_least_empty(folders.staging(folder), schema)
        report.scored, report.rejected = scores.count(), rejected.count()
        report.workers = tuple(sorted(dataset.unique(WORKER)))
        report.rows = report.scored + report.rejected
        folders.publish()
    finally:
        folders.discard()
    report.seconds = time.perf_counter() - started
    return report


def _at_least_empty(folder: Path, schema: pa.Schema) -> None:
    """Ray writes no file for no rows: an empty part keeps the output readable, with its columns."""
    if not any(folder.glob("*.parquet")):
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(schema.empty_table(), folder / "empty.parquet")


def _scored(dataset: Dataset, settings: Settings, version: str, reasons: int) -> Dataset:
    """The dataset scored by a pool of actors (one model load each), materialised once."""
    import ray

    # One actor a CPU, all started at once: every node scores, each actor loads the model once.
    # The input is read and split first: actors holding every CPU leave none for other tasks.
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    read = dataset.materialize()
    # At least a block an actor, at most ROWS_PER_CALL rows a block (a call's batch).
    blocks = max(cpus, math.ceil(read.count() / ROWS_PER_CALL))
    split = read.repartition(blocks).materialize()  # before the actors hold every CPU
    return _mapped(split, settings, version, reasons, cpus)


def _mapped(dataset: Dataset, settings: Settings, version: str, reasons: int, cpus: int) -> Dataset:
    return dataset.map_batches(
        _ActorScorer,
        fn_constructor_args=(settings, version, reasons),
        batch_size=None,  # a whole block a call
        batch_format="pyarrow",
        concurrency=cpus,
        num_cpus=1,
    ).materialize()
