"""Where a simulation keeps its model versions: the MLflow registry, or a folder.

The main run uses :class:`RegistrySlot`: challengers are registered, the gate's decision is
tagged and audited as by ``healthpredict promote``, promotion moves the ``champion`` alias, and
the champion is loaded by the service's own :class:`ModelStore`, so what the simulation scores
with is what the service would serve. What-if runs (other policies for comparison, benchmarks)
use :class:`FolderSlot`, which keeps versions as files beside the run and never touches the
registry's aliases.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cloudpickle
import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.pipeline import Pipeline

from healthpredict.modeling.gate import GateDecision
from healthpredict.modeling.registry import (
    CHALLENGER,
    CHAMPION,
    configure_tracking,
    current_version,
    log_pipeline,
)
from healthpredict.modeling.train import default_params
from healthpredict.orchestration.gate import GATE_CHAMPION_TAG
from healthpredict.pipelines.promote import move_champion, record_decision
from healthpredict.pipelines.train_and_register import PARAMS_ARTIFACT
from healthpredict.serving.model_store import (
    LoadedModel,
    ModelStore,
    download_and_load,
    prepare_model,
)
from healthpredict.settings import Settings

RUN_TAG, STEP_TAG = "simulation_run", "simulation_step"


@dataclass(frozen=True)
class NewModel:
    """A freshly trained pipeline and what to keep with it."""

    pipeline: Pipeline
    params: dict[str, Any]
    example: pd.DataFrame
    tags: dict[str, str]


class SlotError(RuntimeError):
    """The slot has no champion to start from, or lost a version it recorded."""


class ModelSlot(Protocol):
    """What the simulation needs from wherever versions live."""

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

    def find_challenger(self, run: str, step: int) -> str | None:
        """Version trained by ``run`` at ``step`` already (a resumed step reuses it)."""
        ...

    def add_challenger(self, model: NewModel, run: str, step: int) -> str:
        """Store a newly trained model as the challenger; return its version."""
        ...

    def record_gate(self, decision: GateDecision, deferred: bool = False) -> None:
        """Keep the gate's decision with both versions (``deferred``: a delivery promotes)."""
        ...

    def set_champion(self, version: str, previous: str | None) -> None:
        """Give ``version`` the champion role (``previous`` is kept for a rollback)."""
        ...


class RegistrySlot:
    """Versions in the MLflow Model Registry under ``settings.model_name``."""

    kind = "registry"

    def __init__(self, settings: Settings):
        """Connect to the configured tracking server."""
        self.settings = settings
        configure_tracking(settings)
        self.client = MlflowClient()
        self.name = settings.model_name
        self._store = ModelStore(settings)
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
        """The champion through the service's ModelStore; any other version directly."""
        if version not in self._loaded:
            self._store.refresh()  # exactly what the service does when the alias moves
            served = self._store.current
            if served is not None and served.version == version:
                self._loaded[version] = served
            else:
                pipeline = download_and_load(self.client, self.name, version, self.settings)
                mv = self.client.get_model_version(self.name, version)
                tags = dict(mv.tags)
                self._loaded[version] = prepare_model(
                    self.name, version, "", mv.run_id or "", tags, pipeline
                )
        return self._loaded[version]

    def params(self, version: str) -> dict[str, Any]:
        """The params.json logged by training, or the packaged defaults for older versions."""
        run_id = self.client.get_model_version(self.name, version).run_id
        try:
            return dict(mlflow.artifacts.load_dict(f"runs:/{run_id}/{PARAMS_ARTIFACT}"))
        except (MlflowException, OSError):  # a version trained before params were logged
            return default_params()

    def find_challenger(self, run: str, step: int) -> str | None:
        """Version tagged with this run and step, if a killed run registered it already."""
        found = self.client.search_model_versions(
            f"name = '{self.name}' and tags.{RUN_TAG} = '{run}' and tags.{STEP_TAG} = '{step}'"
        )
        return str(found[0].version) if found else None

    def add_challenger(self, model: NewModel, run: str, step: int) -> str:
        """Log, register, tag, and give the ``challenger`` alias."""
        all_tags = {**model.tags, RUN_TAG: run, STEP_TAG: str(step)}
        with mlflow.start_run(run_name=f"{run}-step-{step}"):
            mlflow.set_tags(all_tags)
            mlflow.log_dict(model.params, PARAMS_ARTIFACT)
            uri = log_pipeline(model.pipeline, model.example)
        version = str(mlflow.register_model(uri, self.name).version)
        for key, value in all_tags.items():
            self.client.set_model_version_tag(self.name, version, key, value)
        self.client.set_registered_model_alias(self.name, CHALLENGER, version)
        return version

    def record_gate(self, decision: GateDecision, deferred: bool = False) -> None:
        """Tags on both versions plus a ``promotion-gate`` audit run, as ``promote`` does, and
        the champion measured against, which a delivery checks before it moves the alias."""
        record_decision(self.client, self.name, decision)
        version = decision.challenger_version
        if deferred:  # the alias is left to a delivery pipeline
            outcome = "passed the gate; champion once delivered" if decision.promote else "refused"
            reason = f"{outcome}: {decision.reason}"
            self.client.set_model_version_tag(self.name, version, "promotion_reason", reason)
        # Written last: the delivery trusts a verdict only once this tag is there.
        self.client.set_model_version_tag(
            self.name, version, GATE_CHAMPION_TAG, decision.champion_version
        )

    def set_champion(self, version: str, previous: str | None) -> None:
        """Move the alias (the service's ModelStore picks it up on its next poll)."""
        if previous is None:
            self.client.set_registered_model_alias(self.name, CHAMPION, version)
        else:
            move_champion(self.client, self.name, version, previous)


class FolderSlot:
    """Versions as cloudpickle files in a folder, with a small JSON index."""

    kind = "folder"

    def __init__(self, folder: Path, model_name: str):
        """Use (or create) ``folder``."""
        self.folder = folder
        self.name = model_name
        folder.mkdir(parents=True, exist_ok=True)
        self._loaded: dict[str, LoadedModel] = {}

    @property
    def _index_path(self) -> Path:
        return self.folder / "versions.json"

    def _index(self) -> dict[str, Any]:
        if not self._index_path.is_file():
            return {"champion": None, "versions": {}}
        return dict(json.loads(self._index_path.read_text()))

    def _write_index(self, index: dict[str, Any]) -> None:
        _atomic_write(self._index_path, json.dumps(index, indent=2).encode())

    def seed(self, pipeline: Pipeline, params: dict[str, Any], tags: dict[str, str]) -> str:
        """Store the first champion (version 1) unless there is one already."""
        index = self._index()
        if index["champion"] is None:
            version = self._store(pipeline, params, {**tags, STEP_TAG: "0"})
            index = self._index()
            index["champion"] = version
            self._write_index(index)
        return str(index["champion"])

    def reset(self) -> None:
        """Forget every version but the seed (version 1), which becomes champion again."""
        index = self._index()
        if not index["versions"]:
            return
        for version in list(index["versions"]):
            if version != "1":
                (self.folder / f"v{version}.pkl").unlink(missing_ok=True)
                del index["versions"][version]
        index["champion"] = "1"
        self._write_index(index)
        self._loaded.clear()

    def has_champion(self) -> bool:
        """Whether :meth:`seed` has run."""
        return self._index()["champion"] is not None

    def champion_version(self) -> str:
        """The version recorded as champion in the index."""
        champion = self._index()["champion"]
        if champion is None:
            raise SlotError(f"{self.folder} holds no champion yet")
        return str(champion)

    def load(self, version: str) -> LoadedModel:
        """Unpickle a version and prepare it as the service would."""
        if version not in self._loaded:
            path = self.folder / f"v{version}.pkl"
            if not path.is_file():
                raise SlotError(f"version {version} is missing from {self.folder}")
            pipeline = cloudpickle.loads(path.read_bytes())
            tags = self._index()["versions"][version]["tags"]
            self._loaded[version] = prepare_model(self.name, version, "", "", tags, pipeline)
        return self._loaded[version]

    def params(self, version: str) -> dict[str, Any]:
        """Hyper-parameters stored with the version."""
        return dict(self._index()["versions"][version]["params"])

    def find_challenger(self, run: str, step: int) -> str | None:
        """Version stored for this run and step, if any."""
        for version, entry in self._index()["versions"].items():
            tags = entry["tags"]
            if tags.get(RUN_TAG) == run and tags.get(STEP_TAG) == str(step):
                return str(version)
        return None

    def add_challenger(self, model: NewModel, run: str, step: int) -> str:
        """Store the model file first, then index it (a crash leaves at most an orphan file)."""
        tags = {**model.tags, RUN_TAG: run, STEP_TAG: str(step)}
        return self._store(model.pipeline, model.params, tags)

    def _store(self, pipeline: Pipeline, params: dict[str, Any], tags: dict[str, str]) -> str:
        index = self._index()
        version = str(len(index["versions"]) + 1)
        _atomic_write(self.folder / f"v{version}.pkl", cloudpickle.dumps(pipeline))
        index["versions"][version] = {"params": params, "tags": tags}
        self._write_index(index)
        return version

    def record_gate(self, decision: GateDecision, deferred: bool = False) -> None:
        """Keep the decision in the index beside both versions."""
        index = self._index()
        for version in (decision.champion_version, decision.challenger_version):
            index["versions"][version]["tags"].update(decision.as_tags())
        self._write_index(index)

    def set_champion(self, version: str, previous: str | None) -> None:
        """Record the new champion in the index."""
        index = self._index()
        index["champion"] = version
        self._write_index(index)


def _atomic_write(path: Path, payload: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(handle, "wb") as file:
        file.write(payload)
    os.replace(temporary, path)
