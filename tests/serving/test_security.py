"""Keys (required, constant-time, never logged), admin separation, CORS closed by default."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from healthpredict.serving.app import create_app
from healthpredict.serving.examples import EXAMPLE_ENCOUNTER
from healthpredict.serving.security import ServingConfigError
from tests.serving.conftest import ADMIN_KEY, API_KEY, Champion, service_settings, wait_ready

pytestmark = pytest.mark.integration
PROTECTED = [("POST", "/predict"), ("POST", "/predict/batch"), ("GET", "/model")]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize(
    "key", [None, "wrong-key-0123456789", ADMIN_KEY, API_KEY + "x", "ü".encode("latin-1") * 20]
)
def test_prediction_endpoints_need_the_api_key(
    client: TestClient, method: str, path: str, key: str | bytes | None
) -> None:
    headers = {"X-API-Key": key} if key is not None else {}
    client.headers.pop("X-API-Key")
    answer = client.request(method, path, json=EXAMPLE_ENCOUNTER, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["detail"] == "missing or invalid X-API-Key header"
    assert answer.headers["www-authenticate"] == "X-API-Key"


def test_open_endpoints(client: TestClient) -> None:
    client.headers.pop("X-API-Key")
    for path in ("/health", "/ready", "/metrics", "/openapi.json", "/docs"):
        assert client.get(path).status_code == 200, path


def test_reload_needs_the_admin_key_not_the_api_key(client: TestClient) -> None:
    assert client.post("/admin/reload").status_code == 401  # the API key is not enough
    wrong = client.post("/admin/reload", headers={"X-Admin-Key": API_KEY})
    assert wrong.status_code == 401
    right = client.post("/admin/reload", headers={"X-Admin-Key": ADMIN_KEY})
    assert right.status_code == 200
    assert "already served" in right.json()["outcome"]


def test_reload_is_disabled_without_an_admin_key(champion: Champion, tmp_path: Path) -> None:
    app = create_app(service_settings(champion.settings, tmp_path, admin_key=None))
    with TestClient(app) as client:
        answer = client.post("/admin/reload", headers={"X-Admin-Key": ADMIN_KEY})
    assert answer.status_code == 403
    assert "HEALTHPREDICT_ADMIN_KEY is not set" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"api_key": None}, "no API key configured"),
        ({"api_key": "short"}, "HEALTHPREDICT_API_KEY must be at least 16"),
        ({"admin_key": "short"}, "HEALTHPREDICT_ADMIN_KEY must be at least 16"),
        ({"admin_key": API_KEY}, "must differ"),
    ],
)
def test_unsafe_key_configuration_refuses_to_start(
    champion: Champion, tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ServingConfigError, match=message) as raised:
        create_app(service_settings(champion.settings, tmp_path, **overrides))
    assert API_KEY not in str(raised.value)


def test_cors_is_closed_by_default(client: TestClient) -> None:
    preflight = client.options(
        "/predict",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    plain = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in plain.headers


def test_cors_allows_only_configured_origins(champion: Champion, tmp_path: Path) -> None:
    settings = service_settings(champion.settings, tmp_path, cors_origins=["https://ward.example"])
    with TestClient(create_app(settings)) as client:
        ok = client.options(
            "/predict",
            headers={"Origin": "https://ward.example", "Access-Control-Request-Method": "POST"},
        )
        assert ok.headers["access-control-allow-origin"] == "https://ward.example"
        other = client.options(
            "/predict",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in other.headers


def test_keys_never_reach_logs_or_answers(
    champion: Champion, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(service_settings(champion.settings, tmp_path))
    with TestClient(app) as client:
        wait_ready(client)
        answers = [
            client.post("/predict", json=EXAMPLE_ENCOUNTER, headers={"X-API-Key": API_KEY}),
            client.post("/predict", json=EXAMPLE_ENCOUNTER, headers={"X-API-Key": API_KEY[:-1]}),
            client.get("/model", headers={"X-API-Key": API_KEY}),
            client.post("/admin/reload", headers={"X-Admin-Key": ADMIN_KEY}),
            client.get("/metrics"),
        ]
    assert [a.status_code for a in answers] == [200, 401, 200, 200, 200]
    everything = caplog.text + "".join(a.text for a in answers)
    assert (
        API_KEY not in everything and API_KEY[:-1] not in everything and ADMIN_KEY not in everything
    )
    assert "SecretStr('**********')" in repr(app.state.service.settings.serving.api_key)
