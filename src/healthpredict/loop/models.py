"""Where the loop's model versions live: the MLflow registry, or a what-if run's folder.

A deployment's loop uses :class:`RegistrySlot`: challengers are registered with their
monitoring profile, the gate's decision is recorded and the champion alias moved through
:mod:`healthpredict.modeling.champion`, and the service follows the alias. What-if replays
(other policies for comparison, benchmarks) use :class:`~healthpredict.loop.folder.FolderSlot`,
which keeps versions and their profiles as files beside the run and never touches the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.pipeline import Pipeline

from healthpredict.errors import HealthPredictError
from healthpredict.modeling import champion
from healthpredict.modeling.champion import CHAMPION, current_version
from healthpredict.modeling.gate import GateDecision
from healthpredict.modeling.registry import configure_tracking, log_pipeline
from healthpredict.modeling.train import default_params
from healthpredict.pipelines import profile as profiles
from healthpredict.pipelines.profile import MonitoringProfile
from healthpredict.pipelines.train_and_register import PARAMS_ARTIFACT
from healthpredict.serving.model_store import LoadedModel, download_and_load, prepare_model
from healthpredict.settings import Settings

DEPLOYMENT_TAG, WINDOW_TAG = "loop_deployment", "loop_window"


@dataclass(frozen=True)
class NewModel:
    """A freshly trained pipeline and what to keep with it."""

    pipeline: Pipeline
    params: dict[str, Any]
    example: pd.DataFrame
    tags: dict[str, str]
    profile: MonitoringProfile


class SlotError(HealthPredictError):
    """The slot has no champion to start from, or lost a version it recorded."""


class ModelSlot(Protocol):
    """What the loop needs from wherever versions live."""

    kind: str

    def champion_version(self) -> str:
        """Version holding the champion role now."""
        ...

    def load(self, version: str) -> LoadedModel:
        """One version, ready to score exactly as the service scores."""
        ...

    def params(self, version: str) -> dict[str, Any]:
        """Hyper-parameters the version was trained with."""
        ...

    def profile(self, version: str) -> MonitoringProfile:
        """The version's monitoring profile."""
        ...

    def tags(self, version: str) -> dict[str, str]:
        """The version's tags (what it was trained on, among others)."""
        ...

    def versions(self) -> list[str]:
        """Every version, oldest first."""
        ...

    def find_challenger(self, deployment: str, window: int) -> str | None:
        """Version trained for ``window`` of ``deployment`` already (a retried phase reuses it)."""
        ...

    def add_challenger(self, model: NewModel, deployment: str, window: int) -> str:
        """Store a newly trained model as the challenger; return its version."""
        ...

    def record_gate(self, decision: GateDecision, deferred: bool = False) -> None:
        """Keep the gate's decision with both versions (``deferred``: a delivery promotes)."""
        ...

    def set_champion(self, version: str, previous: str | None, reason: str = "") -> None:
        """Give ``version`` the champion role (``previous`` is kept for a rollback; ``reason``
        is recorded when given)."""
        ...


class RegistrySlot:
    """Versions in the MLflow Model Registry under ``settings.tracking.model_name``."""

    kind = "registry"

    def __init__(self, settings: Settings):
        """Connect to the configured tracking server."""
        self.settings = settings
        configure_tracking(settings)
        self.client = MlflowClient()
        self.name = settings.tracking.model_name
        self._loaded: dict[str, LoadedModel] = {}

    def champion_version(self) -> str:
        """The version holding the ``champion`` alias."""
        version = current_version(self.client, self.name, CHAMPION)
        if version is None:
            raise SlotError(
                f"{self.name!r} has no champion: run `healthpredict train` (or demo) first"
            )
        return version

    def load(self, version: str) -> LoadedModel:
        """The version as the service loads it (fast path compiled and proven)."""
        if version not in self._loaded:
            pipeline = download_and_load(self.client, self.name, version, self.settings)
            registered = self.client.get_model_version(self.name, version)
            self._loaded[version] = prepare_model(
                self.name,
                version,
                "",
                registered.run_id or "",
                dict(registered.tags),
                pipeline,
                self.settings.compiled_trees_dir,
            )
        return self._loaded[version]

    def params(self, version: str) -> dict[str, Any]:
        """The params.json logged by training, or the packaged defaults for older versions."""
        run_id = self.client.get_model_version(self.name, version).run_id
        try:
            return dict(mlflow.artifacts.load_dict(f"runs:/{run_id}/{PARAMS_ARTIFACT}"))
        except (MlflowException, OSError):  # a version trained before params were logged
            return default_params()

    def profile(self, version: str) -> MonitoringProfile:
        """The profile logged with the version; one is written for a version from before
        profiles existed (see :func:`adopted_profile`)."""
        run_id = self.client.get_model_version(self.name, version).run_id or ""
        try:
            return profiles.load_from_run(run_id, self.settings.tracking_uri)
        except (MlflowException, OSError):
            made = adopted_profile(self.load(version).pipeline, self.settings, version)
            with mlflow.start_run(run_id=run_id):
                profiles.log_to_run(made)
            return made

    def tags(self, version: str) -> dict[str, str]:
        """The registered version's tags."""
        return dict(self.client.get_model_version(self.name, version).tags)

    def versions(self) -> list[str]:
        """Every registered version, oldest first."""
        found = self.client.search_model_versions(f"name = '{self.name}'")
        return sorted((str(v.version) for v in found), key=int)

    def find_challenger(self, deployment: str, window: int) -> str | None:
        """Version tagged with this deployment and window, if an interrupted phase made it."""
        found = self.client.search_model_versions(
            f"name = '{self.name}' and tags.{DEPLOYMENT_TAG} = '{deployment}' "
            f"and tags.{WINDOW_TAG} = '{window}'"
        )
        return str(found[0].version) if found else None

    def add_challenger(self, model: NewModel, deployment: str, window: int) -> str:
        """Log the pipeline and its profile, register, tag, and give the ``challenger`` alias."""
        tags = {**model.tags, DEPLOYMENT_TAG: deployment, WINDOW_TAG: str(window)}
        with mlflow.start_run(run_name=f"{deployment}-w{window:03d}"):
            mlflow.set_tags(tags)
            mlflow.log_dict(model.params, PARAMS_ARTIFACT)
            profiles.log_to_run(model.profile)
            uri = log_pipeline(model.pipeline, model.example)
        version = str(mlflow.register_model(uri, self.name).version)
        champion.make_challenger(self.client, self.name, version, tags)
        return version

    def record_gate(self, decision: GateDecision, deferred: bool = False) -> None:
        """The decision on both versions, audited, as ``healthpredict promote`` records it."""
        champion.record_gate_decision(self.client, self.name, decision, deferred=deferred)

    def set_champion(self, version: str, previous: str | None, reason: str = "") -> None:
        """Move the alias (the service follows it)."""
        if previous is None:
            champion.reinstate(self.client, self.name, version)
        else:
            tags = {champion.PROMOTION_REASON: reason} if reason else None
            champion.promote(self.client, self.name, version, tags)


def adopted_profile(pipeline: Pipeline, settings: Settings, version: str) -> MonitoringProfile:
    """A profile for a version registered without one, from the prepared timeline: the
    initial window as its reference and the first batch as its baseline, as training writes.

    Raises:
        SlotError: The prepared timeline is not there to build it from.
    """
    from healthpredict.data.timeline import INITIAL_WINDOW, TimelineError, load_manifest
    from healthpredict.data.timeline import load_window as window_of

    try:
        manifest = load_manifest(settings.data.prepared_dir)
        train = window_of(settings.data.prepared_dir, manifest, INITIAL_WINDOW)
        unseen = window_of(settings.data.prepared_dir, manifest, manifest.batch_names[0])
    except TimelineError as error:
        raise SlotError(
            f"v{version} has no monitoring profile and none can be built: {error}"
        ) from error
    return profiles.build(pipeline, train, unseen, settings.monitoring)
