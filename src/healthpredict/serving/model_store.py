"""The model the service answers with, and how it is replaced while the service runs.

:class:`ModelStore` resolves ``models:/<name>@champion`` in the registry, loads that exact
version, compiles its fast path and proves it against the pipeline, and only then swaps it in
with one reference assignment, which is atomic: a request sees the old model or the new one,
never a mix. A version that fails to load is remembered and reported; the old model keeps
serving.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from sklearn.pipeline import Pipeline

from healthpredict.data.columnar import CodedBatch, contract_batch
from healthpredict.data.schema import FEATURE_COLUMNS
from healthpredict.modeling.registry import CHAMPION, load_pipeline
from healthpredict.monitoring.store import mask_url
from healthpredict.serving.examples import contract_records
from healthpredict.serving.fastpath import (
    CompiledModel,
    FastPathError,
    Record,
    check_parity,
    compile_pipeline,
    records_frame,
)
from healthpredict.settings import Settings

logger = logging.getLogger(__name__)
PARITY_PROBES = 500
# From this many records a request is encoded column by column (measured: 1,000 records in half
# the time of record by record; below a few hundred the record encoder's lower overhead wins).
COLUMNAR_ROWS = 256
# Tags copied from the registered version into GET /model.
PUBLIC_TAGS = ("data_hash", "training_window", "model_kind", "promotion_reason")


Explanation = Literal["path", "shap", "none"]


@dataclass(frozen=True)
class Scores:
    """Risks of a list of records, with attributions and the feature matrix when computed."""

    probabilities: np.ndarray
    attributions: np.ndarray | None
    matrix: np.ndarray | None


@dataclass(frozen=True)
class LoadedModel:
    """One registered version, ready to score."""

    name: str
    version: str
    alias: str
    run_id: str
    tags: dict[str, str]
    pipeline: Pipeline
    compiled: CompiledModel | None
    fast_path: str
    loaded_at: datetime

    def score(self, records: Sequence[Record], explain: Explanation) -> Scores:
        """Risk per record by the fast path when it passed its parity check, else the pipeline.

        Attributions (by request field, log-odds scale) need the fast path; without it, or
        with ``explain="none"``, they are None.
        """
        if self.compiled is None:
            frame = records_frame(records)
            return Scores(np.asarray(self.pipeline.predict_proba(frame)[:, 1]), None, None)
        if len(records) >= COLUMNAR_ROWS:
            return self.score_batch(contract_batch(records), explain)
        return _scored(self.compiled, self.compiled.encode(records), explain)

    def score_batch(self, batch: CodedBatch, explain: Explanation) -> Scores:
        """As :meth:`score`, for a coded batch already checked against the contract (the
        columnar path of batch jobs, ``/predict/batch`` and the monitoring loop)."""
        if batch.n_rows == 0:  # every row of a batch rejected: LightGBM refuses empty input
            return Scores(np.zeros(0), None, None)
        if self.compiled is None:
            frame = batch.frame(FEATURE_COLUMNS)
            return Scores(np.asarray(self.pipeline.predict_proba(frame)[:, 1]), None, None)
        return _scored(self.compiled, self.compiled.encode_batch(batch), explain)


def _scored(compiled: CompiledModel, matrix: np.ndarray, explain: Explanation) -> Scores:
    """Risks of a feature matrix by the fast path, with the attributions asked for."""
    probability, attributions = compiled.score(matrix, explain=explain == "path")
    if explain == "shap":
        attributions = compiled.shap(matrix)
    return Scores(probability, attributions, matrix)


@dataclass
class StoreStatus:
    """What the last refresh found; shown by ``/ready`` and ``/model``."""

    last_check: datetime | None = None
    last_error: str | None = None
    failed_version: str | None = None
    loading_version: str | None = None
    reload_failures: int = 0
    history: list[str] = field(default_factory=list)


Loader = Callable[[MlflowClient, str, str, Settings], Pipeline]


def prepare_model(
    name: str,
    version: str,
    alias: str,
    run_id: str,
    tags: dict[str, str],
    pipeline: Pipeline,
    trees_cache: Path | None = None,
) -> LoadedModel:
    """Compile and prove the fast path; a model the pipeline cannot score is rejected.

    Everything that scores like the service (the service itself, the simulation, the batch
    job) builds its :class:`LoadedModel` here; ``trees_cache`` (the setting
    ``compiled_trees_dir``) compiles the trees too.
    """
    probes = contract_records(PARITY_PROBES, seed=int(version) if version.isdigit() else 0)
    pipeline.predict_proba(records_frame(probes[:5]))  # raises if the model cannot score
    try:
        compiled: CompiledModel | None = compile_pipeline(pipeline, trees_cache)
        gap = check_parity(pipeline, compiled, probes)  # type: ignore[arg-type]
        trees = "+".join(sorted({m.trees.backend for m in compiled.members}))  # type: ignore[union-attr]
        note = (
            f"fast path on (trees: {trees}); max |difference| to the pipeline {gap:.1e} "
            f"on {len(probes)} probes"
        )
    except FastPathError as error:
        compiled, note = None, f"fast path off ({error}); serving through the pipeline"
        logger.warning("%s version %s: %s", name, version, note)
    kept = {k: v for k, v in tags.items() if k in PUBLIC_TAGS or k.startswith("test_")}
    return LoadedModel(
        name, version, alias, run_id, kept, pipeline, compiled, note, datetime.now(UTC)
    )


def download_and_load(
    client: MlflowClient, name: str, version: str, settings: Settings
) -> Pipeline:
    """Load one exact registered version without touching MLflow's process-wide URIs."""
    uri = client.get_model_version_download_uri(name, version)
    with tempfile.TemporaryDirectory(prefix="healthpredict-model-") as folder:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=folder, tracking_uri=settings.tracking_uri
        )
        return load_pipeline(local)


def find_version(client: MlflowClient, name: str, alias: str, pinned: str | None) -> ModelVersion:
    """The registered version ``pinned``, else the one holding ``alias``.

    Raises:
        LookupError: There is no such version (the message names what is missing).
        MlflowException: The registry cannot be read.
    """
    try:
        if pinned:
            return client.get_model_version(name, pinned)
        return client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException as error:
        code = str(getattr(error, "error_code", ""))
        if "RESOURCE_DOES_NOT_EXIST" not in code and "not found" not in str(error):
            raise
        missing = (
            f"{name!r} has no version {pinned}"
            if pinned
            else f"no version of {name!r} holds the alias {alias!r}"
        )
        raise LookupError(missing) from error


class ModelStore:
    """Holds the current model; refreshes it from the registry on demand or periodically."""

    def __init__(
        self, settings: Settings, loader: Loader = download_and_load, alias: str = CHAMPION
    ):
        """Create an empty store; nothing is loaded until :meth:`refresh` or :meth:`start`."""
        self.settings = settings
        self.alias = alias
        self.current: LoadedModel | None = None
        self.status = StoreStatus()
        self._loader = loader
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_swap: Callable[[LoadedModel], None] | None = None

    def refresh(self) -> str:
        """Load the version holding the alias if it is not the one served; return what happened.

        Never raises: a registry or load failure is recorded in :attr:`status` and logged,
        and the model being served (if any) stays.
        """
        with self._refresh_lock:
            self.status.last_check = datetime.now(UTC)
            try:
                outcome = self._refresh_locked()
            except Exception as error:  # registry down, broken artifact, failed parity...
                outcome = self._record_failure(error)
            self.status.history = [*self.status.history[-9:], outcome]
            return outcome

    def _refresh_locked(self) -> str:
        client = MlflowClient(
            tracking_uri=self.settings.tracking_uri, registry_uri=self.settings.tracking_uri
        )
        name = self.settings.tracking.model_name
        # A pinned version (set by a delivery rollout) wins over the alias it follows.
        registered = find_version(client, name, self.alias, self.settings.serving.model_version)
        version = str(registered.version)
        if self.current is not None and self.current.version == version:
            self.status.last_error, self.status.failed_version = None, None
            return f"version {version} already served"
        self.status.loading_version = version
        pipeline = self._loader(client, name, version, self.settings)
        model = self._prepare(
            name, version, registered.run_id or "", dict(registered.tags), pipeline
        )
        previous, self.current = self.current, model  # the atomic swap
        self.status.last_error, self.status.failed_version = None, None
        self.status.loading_version = None
        if self.on_swap is not None:
            self.on_swap(model)
        old = previous.version if previous else "none"
        logger.info("now serving %s version %s (was %s); %s", name, version, old, model.fast_path)
        return f"now serving version {version} (was {old})"

    def _prepare(
        self, name: str, version: str, run_id: str, tags: dict[str, str], pipeline: Pipeline
    ) -> LoadedModel:
        trees = self.settings.compiled_trees_dir
        return prepare_model(name, version, self.alias, run_id, tags, pipeline, trees)

    def _record_failure(self, error: Exception) -> str:
        message = mask_url(f"{type(error).__name__}: {error}")[:500]
        self.status.last_error = message
        self.status.reload_failures += 1
        serving = (
            f"still serving version {self.current.version}" if self.current else "no model loaded"
        )
        version, self.status.loading_version = self.status.loading_version, None
        self.status.failed_version = version
        prefix = f"loading version {version} failed" if version else "registry check failed"
        logger.error("%s: %s; %s", prefix, message, serving)
        return f"{prefix}: {message}; {serving}"

    def start(self, poll_seconds: float) -> None:
        """Load in the background now, then check the alias every ``poll_seconds`` (0: once)."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._poll, args=(poll_seconds,), name="model-store", daemon=True
        )
        self._thread.start()

    def _poll(self, poll_seconds: float) -> None:
        self.refresh()
        while poll_seconds > 0 and not self._stop.wait(poll_seconds):
            self.refresh()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling (a load in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
