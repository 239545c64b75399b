"""Hot swap: the alias moves, the service follows without failing a request; broken versions
are refused and the old model keeps serving; a registry that is down at start is survivable."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pytest
import uvicorn
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from healthpredict.data.timeline import INITIAL_WINDOW, load_manifest, load_window
from healthpredict.modeling.registry import (
    CHAMPION,
    configure_tracking,
    load_pipeline,
    log_pipeline,
)
from healthpredict.modeling.train import ModelKind, default_params, features_of, fit_model
from healthpredict.serving.app import create_app
from healthpredict.serving.examples import EXAMPLE_ENCOUNTER
from healthpredict.serving.fastpath import records_frame
from tests.serving.conftest import (
    ADMIN_KEY,
    API_KEY,
    Champion,
    service_settings,
    wait_ready,
)
from tests.support.champion import make_champion

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Champion:
    """A champion these tests may move the alias of (not shared with other modules)."""
    return make_champion(tmp_path_factory.mktemp("swap"), rows=2000, seed=5)


def register_variant(champion: Champion, n_estimators: int) -> str:
    """Train a visibly different LightGBM pipeline and register it (no alias)."""
    settings = champion.settings
    train = load_window(
        settings.data.prepared_dir, load_manifest(settings.data.prepared_dir), INITIAL_WINDOW
    )
    params = default_params()
    params["lightgbm"] = {**params["lightgbm"], "n_estimators": n_estimators}
    model = fit_model(
        ModelKind.LIGHTGBM, train, params, settings.training.cv_folds, settings.training.seed
    )
    configure_tracking(settings)
    with mlflow.start_run(run_name=f"variant-{n_estimators}"):
        uri = log_pipeline(model.pipeline, features_of(train).head(5))
    return str(mlflow.register_model(uri, settings.tracking.model_name).version)


def register_broken(champion: Champion, folder: Path) -> str:
    """Register a copy of the champion whose pickled pipeline is corrupt."""
    client = _client(champion)
    source = client.get_model_version_download_uri(
        champion.settings.tracking.model_name, champion.version
    )
    broken = folder / "broken-model"
    shutil.copytree(
        mlflow.artifacts.download_artifacts(source, tracking_uri=champion.settings.tracking_uri),
        broken,
    )
    (broken / "model.pkl").write_bytes(b"this is not a pickle")
    version = client.create_model_version(champion.settings.tracking.model_name, broken.as_uri())
    return str(version.version)


def _client(champion: Champion) -> MlflowClient:
    uri = champion.settings.tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _move_alias(champion: Champion, version: str) -> None:
    _client(champion).set_registered_model_alias(
        champion.settings.tracking.model_name, CHAMPION, version
    )


@pytest.fixture
def live_server(registry: Champion, tmp_path: Path) -> Iterator[str]:
    """The app under a real uvicorn server on loopback (concurrent clients, real sockets)."""
    _move_alias(registry, registry.version)
    app = create_app(service_settings(registry.settings, tmp_path))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while httpx.get(f"{base}/ready").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    yield base
    server.should_exit = True
    thread.join(10)


def test_swap_under_concurrent_requests_fails_no_request(
    registry: Champion, live_server: str
) -> None:
    new = register_variant(registry, n_estimators=60)
    expected = {v: _probability(registry, v) for v in (registry.version, new)}
    assert abs(expected[new] - expected[registry.version]) > 1e-6  # the swap is observable
    seen: list[list[tuple[str, float, int]]] = [[] for _ in range(6)]
    stop = threading.Event()

    def hammer(out: list[tuple[str, float, int]]) -> None:
        with httpx.Client(base_url=live_server, headers={"X-API-Key": API_KEY}, timeout=30) as http:
            while not stop.is_set():
                answer = http.post("/predict", json=EXAMPLE_ENCOUNTER)
                body = answer.json() if answer.status_code == 200 else {}
                out.append(
                    (
                        body.get("model_version", "?"),
                        body.get("probability", -1.0),
                        answer.status_code,
                    )
                )

    threads = [threading.Thread(target=hammer, args=(out,)) for out in seen]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    _move_alias(registry, new)
    reload = httpx.post(
        f"{live_server}/admin/reload", headers={"X-Admin-Key": ADMIN_KEY}, timeout=120
    )
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert reload.status_code == 200 and f"now serving version {new}" in reload.json()["outcome"]
    answers = [a for out in seen for a in out]
    assert len(answers) > 50 and {status for _, _, status in answers} == {200}
    assert {version for version, _, _ in answers} == {registry.version, new}
    for out in seen:  # each client moves from old to new once, never back
        versions = [version for version, _, _ in out]
        assert versions == sorted(versions, key=lambda v: v == new)
    for version, probability, _ in answers:  # each answer is wholly one model's
        assert probability == pytest.approx(expected[version], abs=1e-9)


def _probability(champion: Champion, version: str) -> float:
    configure_tracking(champion.settings)
    pipeline = load_pipeline(f"models:/{champion.settings.tracking.model_name}/{version}")
    return float(pipeline.predict_proba(records_frame([EXAMPLE_ENCOUNTER]))[0, 1])


def test_broken_new_version_keeps_the_old_one_serving(
    registry: Champion, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _move_alias(registry, registry.version)
    broken = register_broken(registry, tmp_path)
    app = create_app(service_settings(registry.settings, tmp_path))
    with TestClient(app, headers={"X-API-Key": API_KEY}) as client:
        wait_ready(client)
        _move_alias(registry, broken)
        outcome = client.post("/admin/reload", headers={"X-Admin-Key": ADMIN_KEY}).json()["outcome"]
        assert f"loading version {broken} failed" in outcome
        assert f"still serving version {registry.version}" in outcome
        model = client.get("/model").json()
        assert model["version"] == registry.version
        assert model["registry"]["failed_version"] == broken and model["registry"]["last_error"]
        assert model["registry"]["loading_version"] is None
        answer = client.post("/predict", json=EXAMPLE_ENCOUNTER)
        assert answer.status_code == 200 and answer.json()["model_version"] == registry.version
        assert client.get("/ready").status_code == 200
        assert "healthpredict_model_reload_failures_total 1.0" in client.get("/metrics").text
        _move_alias(registry, registry.version)  # rolled back: the error clears
        assert (
            "already served"
            in client.post("/admin/reload", headers={"X-Admin-Key": ADMIN_KEY}).json()["outcome"]
        )
        assert client.get("/model").json()["registry"]["last_error"] is None
    assert any(f"loading version {broken} failed" in r.getMessage() for r in caplog.records)


def test_periodic_check_follows_the_alias(registry: Champion, tmp_path: Path) -> None:
    _move_alias(registry, registry.version)
    newer = register_variant(registry, n_estimators=40)
    app = create_app(service_settings(registry.settings, tmp_path, model_poll_seconds=0.2))
    with TestClient(app, headers={"X-API-Key": API_KEY}) as client:
        wait_ready(client)
        assert client.get("/model").json()["version"] == registry.version
        _move_alias(registry, newer)
        deadline = time.monotonic() + 30
        while client.get("/model").json().get("version") != newer:
            assert time.monotonic() < deadline, "the poller never picked up the new champion"
            time.sleep(0.1)
        assert client.post("/predict", json=EXAMPLE_ENCOUNTER).json()["model_version"] == newer
    _move_alias(registry, registry.version)


def test_registry_down_at_start(
    champion: Champion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    settings = service_settings(
        champion.settings, tmp_path, mlflow_tracking_uri="http://127.0.0.1:9"
    )
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        assert client.get("/health").status_code == 200
        deadline = time.monotonic() + 30
        while app_checked(client) is False:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["reason"].startswith("no model loaded:")
        answer = client.post("/predict", json=EXAMPLE_ENCOUNTER)
        assert answer.status_code == 503 and "no model loaded" in answer.json()["detail"]
        assert answer.headers["retry-after"] == "5"
        assert client.get("/model").json()["loaded"] is False


def app_checked(client: TestClient) -> bool:
    """Whether the first registry check has finished."""
    return client.get("/model").json()["registry"]["last_check"] is not None and bool(
        client.get("/model").json()["registry"]["last_error"]
    )


def test_no_champion_yet(champion: Champion, tmp_path: Path) -> None:
    settings = service_settings(champion.settings, tmp_path, model_name="no-such-model")
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        deadline = time.monotonic() + 30
        while not app_checked(client):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        reason = client.get("/ready").json()["reason"]
        assert "no version of 'no-such-model' holds the alias 'champion'" in reason
        assert client.post("/predict", json=EXAMPLE_ENCOUNTER).status_code == 503


def test_a_pinned_version_is_served_whatever_the_alias(registry: Champion, tmp_path: Path) -> None:
    _move_alias(registry, registry.version)
    pinned = register_variant(registry, n_estimators=30)
    settings = service_settings(registry.settings, tmp_path, model_version=pinned)
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        wait_ready(client)
        assert client.get("/model").json()["version"] == pinned
        assert client.post("/predict", json=EXAMPLE_ENCOUNTER).json()["model_version"] == pinned
    missing = service_settings(registry.settings, tmp_path, model_version="999")
    app = create_app(missing)
    with TestClient(app, headers={"X-API-Key": API_KEY}) as client:
        assert client.get("/ready").status_code == 503
        assert "has no version 999" in app.state.service.store.refresh()
