"""Fixtures for the service tests: apps serving the real registered champion of
:mod:`tests.support.champion` (synthetic data)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from healthpredict.serving.app import create_app
from healthpredict.settings import Settings
from tests.support.champion import Champion

API_KEY = "test-api-key-0123456789"
ADMIN_KEY = "test-admin-key-9876543210"


def service_settings(base: Settings, tmp_path: Path, **overrides: object) -> Settings:
    """Serving settings on ``base``'s registry, with keys and a private prediction log."""
    values: dict[str, object] = {
        "api_key": API_KEY,
        "admin_key": ADMIN_KEY,
        "monitoring_db_url": f"sqlite:///{tmp_path / 'monitoring.db'}",
        "model_poll_seconds": 0.0,
        "log_flush_seconds": 0.05,
        "id_salt": "test-salt-not-secret",
    }
    # Through with_flat, not model_copy: keys must be validated into SecretStr.
    return base.with_flat(**{**values, **overrides})


def wait_ready(client: TestClient, timeout: float = 60.0) -> dict[str, Any]:
    """Poll /ready until the model is loaded; fail with the service's reason otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get("/ready")
        if answer.status_code == 200:
            return dict(answer.json())
        if time.monotonic() > deadline:
            pytest.fail(f"service not ready after {timeout}s: {answer.json()}")
        time.sleep(0.05)


@pytest.fixture
def client(champion: Champion, tmp_path: Path) -> Iterator[TestClient]:
    """A started service on the shared champion, ready, with the API key sent by default."""
    app = create_app(service_settings(champion.settings, tmp_path))
    with TestClient(app, headers={"X-API-Key": API_KEY}) as test_client:
        wait_ready(test_client)
        yield test_client
