"""A what-if run's model versions: files in a folder beside the run, the registry untouched.

Each version is a cloudpickle file with its monitoring profile beside it, indexed by a small
JSON file written atomically after the files, so a crash leaves at most an orphan file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cloudpickle

from healthpredict.files import write_atomically
from healthpredict.loop.models import DEPLOYMENT_TAG, WINDOW_TAG, NewModel, SlotError
from healthpredict.modeling.gate import GateDecision
from healthpredict.pipelines import profile as profiles
from healthpredict.pipelines.profile import MonitoringProfile
from healthpredict.serving.model_store import LoadedModel, prepare_model


class FolderSlot:
    """Versions as cloudpickle files in a folder, with a small JSON index."""

    kind = "folder"

    def __init__(self, folder: Path, model_name: str, trees_cache: Path | None = None):
        """Use (or create) ``folder``; ``trees_cache`` compiles the trees of loaded versions."""
        self.folder = folder
        self.name = model_name
        self.trees_cache = trees_cache
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
        write_atomically(self._index_path, json.dumps(index, indent=2))

    def seed(self, model: NewModel) -> str:
        """Store the first champion (version 1) unless there is one already."""
        index = self._index()
        if index["champion"] is None:
            version = self._store(model, {**model.tags, WINDOW_TAG: "0"})
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
        held = self._index()["champion"]
        if held is None:
            raise SlotError(f"{self.folder} holds no champion yet")
        return str(held)

    def load(self, version: str) -> LoadedModel:
        """Unpickle a version and prepare it as the service would."""
        if version not in self._loaded:
            path = self.folder / f"v{version}.pkl"
            if not path.is_file():
                raise SlotError(f"version {version} is missing from {self.folder}")
            pipeline = cloudpickle.loads(path.read_bytes())
            self._loaded[version] = prepare_model(
                self.name, version, "", "", self.tags(version), pipeline, self.trees_cache
            )
        return self._loaded[version]

    def params(self, version: str) -> dict[str, Any]:
        """Hyper-parameters stored with the version."""
        return dict(self._index()["versions"][version]["params"])

    def profile(self, version: str) -> MonitoringProfile:
        """The profile stored beside the version."""
        return profiles.load(self.folder / f"v{version}_monitoring")

    def tags(self, version: str) -> dict[str, str]:
        """Tags stored with the version."""
        return dict(self._index()["versions"][version]["tags"])

    def versions(self) -> list[str]:
        """Every stored version, oldest first."""
        return sorted(self._index()["versions"], key=int)

    def find_challenger(self, deployment: str, window: int) -> str | None:
        """Version stored for this deployment and window, if any."""
        for version, entry in self._index()["versions"].items():
            tags = entry["tags"]
            if tags.get(DEPLOYMENT_TAG) == deployment and tags.get(WINDOW_TAG) == str(window):
                return str(version)
        return None

    def add_challenger(self, model: NewModel, deployment: str, window: int) -> str:
        """Store the model and its profile first, then index it (a crash leaves at most an
        orphan file)."""
        return self._store(
            model, {**model.tags, DEPLOYMENT_TAG: deployment, WINDOW_TAG: str(window)}
        )

    def _store(self, model: NewModel, tags: dict[str, str]) -> str:
        index = self._index()
        version = str(len(index["versions"]) + 1)
        profiles.save(model.profile, self.folder / f"v{version}_monitoring")
        write_atomically(self.folder / f"v{version}.pkl", cloudpickle.dumps(model.pipeline))
        index["versions"][version] = {"params": model.params, "tags": tags}
        self._write_index(index)
        return version

    def record_gate(self, decision: GateDecision, deferred: bool = False) -> None:
        """Keep the decision in the index beside both versions."""
        index = self._index()
        for version in (decision.champion_version, decision.challenger_version):
            index["versions"][version]["tags"].update(decision.as_tags())
        self._write_index(index)

    def set_champion(self, version: str, previous: str | None, reason: str = "") -> None:
        """Record the new champion in the index."""
        index = self._index()
        index["champion"] = version
        self._write_index(index)
