"""Fixtures for the deployment tests: the compose file (raw and interpolated) and the
Kubernetes overlays as built by kustomize. Everything is read or built once per session."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.deploy.interpolation import interpolate, read_dotenv
from tests.deploy.kustomize import build, kustomize_command
from tests.deploy.support import DEPLOY, SHARED, unavailable

COMPOSE_DIR = DEPLOY / "compose"
OVERLAYS = sorted(path.parent for path in (DEPLOY / "k8s/overlays").glob("*/kustomization.yaml"))


def load_init_env() -> ModuleType:
    """deploy/compose/init_env.py, a script rather than a package module."""
    spec = importlib.util.spec_from_file_location("init_env", COMPOSE_DIR / "init_env.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def compose_raw() -> dict[str, Any]:
    """compose.yaml as written (anchors and merge keys resolved by the YAML loader)."""
    return yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())


@pytest.fixture(scope="session")
def env_example() -> dict[str, str]:
    """The variables of .env.example with their committed values (secrets empty)."""
    return read_dotenv((COMPOSE_DIR / ".env.example").read_text())


@pytest.fixture(scope="session")
def filled_env() -> dict[str, str]:
    """.env.example with every secret filled the way init_env.py fills it."""
    init_env = load_init_env()
    text = init_env.fill((COMPOSE_DIR / ".env.example").read_text(), init_env.new_secret)
    return read_dotenv(text)


@pytest.fixture(scope="session")
def compose(compose_raw: dict[str, Any], filled_env: dict[str, str]) -> dict[str, Any]:
    """The compose model as Compose sees it with a complete .env file."""
    return interpolate(compose_raw, filled_env)


@pytest.fixture(scope="session")
def compose_schema() -> dict[str, Any]:
    """The Compose Specification's JSON schema, kept in ../shared/schemas."""
    path = SHARED / "schemas" / "compose-spec.json"
    if not path.exists():
        unavailable(f"compose schema not found at {path}")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class Built:
    """One overlay's kustomize output: the YAML text and its documents."""

    overlay: str
    text: str
    stderr: str
    documents: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        """The documents of one kind."""
        return [doc for doc in self.documents if doc["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        """The single document of ``kind``."""
        (doc,) = self.of_kind(kind)
        return doc


@pytest.fixture(scope="session")
def built_overlays() -> dict[str, Built]:
    """Every overlay built once, by kubectl kustomize (or kustomize build)."""
    command = kustomize_command()
    if command is None:
        unavailable(
            "no kubectl >= 1.21 or kustomize >= 4 on PATH to build deploy/k8s/overlays "
            "(.ci/run installs kustomize where missing)"
        )
    built = {}
    for overlay in OVERLAYS:
        result = build(command, overlay)
        assert result.returncode == 0, f"{' '.join(command)} {overlay}: {result.stderr}"
        documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        built[overlay.name] = Built(overlay.name, result.stdout, result.stderr, documents)
    return built


@pytest.fixture(params=[path.name for path in OVERLAYS])
def overlay(request: pytest.FixtureRequest, built_overlays: dict[str, Built]) -> Built:
    """Each built overlay in turn."""
    return built_overlays[request.param]


def overlay_dir(name: str) -> Path:
    """Source folder of an overlay."""
    return DEPLOY / "k8s" / "overlays" / name
