"""The delivery package without Airflow: tags, registry settings, the command runner, the build
command, the registry's HTTP API, the rollout patch, smoke tests.

The runner tests run real processes (``true``, ``false``, ``sleep``); the registry tests ask a
small registry stand-in on loopback (its logins as Docker Hub or GHCR ask for them). The smoke
test against a live service is with the delivery DAG's tests, which train the registry it
serves (tests/orchestration/test_delivery_dag.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from healthpredict.delivery.commands import CommandError, CommandRunner, read_journal, tool
from healthpredict.delivery.registry import RegistryError, manifest_digest, manifest_url
from healthpredict.delivery.release import Release, ReleaseError, check_tag, plan_release
from healthpredict.delivery.rollout import build_command, rollout_patch
from healthpredict.delivery.smoke import SmokeTestError, check_endpoint
from healthpredict.settings import Settings
from tests.support.dag_runs import API_KEY, free_port

GOOD_TAGS = ["0a1b2c3", "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567", "v1.2.3", "1.0.0-rc.1"]
BAD_TAGS = [
    "",
    "latest",
    "LATEST",
    "main",
    "v1",
    "0A1B2C3",
    "abc",
    "v1.2.3;rm -rf /",
    "$(reboot)",
    "0a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
    "v1.2.3 ",
    "../v1.2.3",
]


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "delivery_registry": "000000000000.dkr.ecr.eu-west-1.amazonaws.com",
        "delivery_service_url": "http://127.0.0.1:1",
        "api_key": API_KEY,
    }
    return Settings.from_flat(**{**values, **overrides})


@pytest.mark.parametrize("tag", GOOD_TAGS)
def test_immutable_tags_are_accepted(tag: str) -> None:
    assert check_tag(tag) == tag


@pytest.mark.parametrize("tag", BAD_TAGS)
def test_empty_mutable_or_malformed_tags_are_refused(tag: str) -> None:
    with pytest.raises(ReleaseError, match="tag"):
        check_tag(tag)


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("delivery_registry", "REGISTRY"),
        ("delivery_service_url", "SERVICE_URL"),
        ("api_key", "API_KEY"),
    ],
)
def test_a_release_needs_a_registry_an_endpoint_and_a_key(
    tmp_path: Path, missing: str, message: str
) -> None:
    with pytest.raises(ReleaseError, match=message):
        plan_release(_settings(tmp_path, **{missing: None}), "0a1b2c3", "2")


def test_model_version_must_be_a_number(tmp_path: Path) -> None:
    with pytest.raises(ReleaseError, match="version"):
        plan_release(_settings(tmp_path), "0a1b2c3", "champion")
    release = plan_release(_settings(tmp_path), "0a1b2c3", "")
    assert release.model_version is None
    assert release.image == "000000000000.dkr.ecr.eu-west-1.amazonaws.com/healthpredict:0a1b2c3"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"delivery_registry": "127.0.0.1:5000"}, "not an ECR registry.*REGISTRY_LOGIN"),
        ({"delivery_registry_login": "password"}, "REGISTRY_USERNAME and .*REGISTRY_PASSWORD"),
        (
            {"delivery_registry_login": "none", "delivery_pull_secret": "ecr-pull"},
            "PULL_SECRET needs a registry login",
        ),
        (
            {
                "delivery_registry": "registry.example.org",
                "delivery_registry_login": "none",
                "delivery_registry_insecure": True,
            },
            "INSECURE is refused for registry.example.org",
        ),
        ({"delivery_build_host_sources": True}, "HOST_SOURCES needs podman"),
    ],
)
def test_registry_and_build_settings_that_cannot_work_are_refused(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ReleaseError, match=message):
        plan_release(_settings(tmp_path, **overrides), "0a1b2c3", None)


@pytest.mark.parametrize("registry", ["127.0.0.1:5000", "localhost:5000/team", "[::1]:5000"])
def test_plain_http_is_allowed_for_a_registry_on_loopback(tmp_path: Path, registry: str) -> None:
    settings = _settings(
        tmp_path,
        delivery_registry=registry,
        delivery_registry_login="none",
        delivery_registry_insecure=True,
    )
    release = plan_release(settings, "0a1b2c3", None)
    assert release.image == f"{registry}/healthpredict:0a1b2c3"
    assert manifest_url(settings, "0a1b2c3").startswith(f"http://{registry.split('/')[0]}/v2/")


def test_a_cluster_dry_run_records_only_the_kubectl_steps(tmp_path: Path) -> None:
    settings = _settings(tmp_path, delivery_cluster_dry_run=True)
    assert not CommandRunner.from_settings(settings).dry_run
    assert CommandRunner.from_settings(settings, cluster=True).dry_run
    everything = _settings(tmp_path, delivery_dry_run=True)
    assert CommandRunner.from_settings(everything).dry_run


def test_podman_builds_keep_the_healthcheck_and_can_use_the_machine_sources(
    tmp_path: Path,
) -> None:
    release = Release("0a1b2c3", "127.0.0.1:5000/healthpredict:0a1b2c3", None)
    docker = build_command(_settings(tmp_path), release)
    assert docker[:2] == ["docker", "build"] and "--format" not in docker and "-v" not in docker
    settings = _settings(
        tmp_path,
        delivery_docker_command="podman",
        delivery_build_host_sources=True,
        delivery_base_image="localhost/base:1",
    )
    podman = build_command(settings, release)
    assert podman[podman.index("--format") + 1] == "docker"
    assert "/etc/ssl/certs:/etc/ssl/certs:ro" in podman  # for the build only, never copied
    assert podman[podman.index("--build-arg") + 1] == "PYTHON_IMAGE=localhost/base:1"
    assert podman[-1] == "."


MANIFEST = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}'
DIGEST = f"sha256:{hashlib.sha256(MANIFEST).hexdigest()}"
USER, PASSWORD, TOKEN = "ci-bot", "a-registry-password", "a-registry-token"


class _Registry(BaseHTTPRequestHandler):
    """/v2/bearer/...: a token service's login (Docker Hub, GHCR); /v2/basic/...: htpasswd's."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        given = self.headers.get("Authorization")
        if url.path == "/token":
            scope = parse_qs(url.query).get("scope")
            if given != basic or scope != ["repository:bearer/healthpredict:pull"]:
                return self._send(401, b"{}")
            return self._send(200, json.dumps({"token": TOKEN}).encode())
        kind, tag = url.path.split("/")[2], url.path.rsplit("/", 1)[-1]
        if kind == "bearer" and given != f"Bearer {TOKEN}":
            realm = f'realm="http://{self.headers["Host"]}/token",service="test"'
            scope = 'scope="repository:bearer/healthpredict:pull"'
            return self._send(401, b"{}", {"WWW-Authenticate": f"Bearer {realm},{scope}"})
        if kind == "basic" and given != basic:
            return self._send(401, b"{}", {"WWW-Authenticate": 'Basic realm="test"'})
        if tag == "0a1b2c4":
            return self._send(404, b'{"errors": [{"code": "MANIFEST_UNKNOWN"}]}')
        stated = DIGEST if tag == "0a1b2c3" else "sha256:" + "0" * 64
        return self._send(200, MANIFEST, {"Docker-Content-Digest": stated})

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def registry_standin() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _registry_settings(tmp_path: Path, registry: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "delivery_registry": registry,
        "delivery_registry_insecure": True,
        "delivery_registry_login": "password",
        "delivery_registry_username": USER,
        "delivery_registry_password": PASSWORD,
    }
    return _settings(tmp_path, **{**values, **overrides})


@pytest.mark.parametrize("login", ["bearer", "basic"])
def test_the_registry_digest_is_read_with_the_login_it_asks_for(
    tmp_path: Path, registry_standin: str, login: str
) -> None:
    settings = _registry_settings(tmp_path, f"{registry_standin}/{login}")
    assert manifest_digest(settings, manifest_url(settings, "0a1b2c3")) == DIGEST
    assert manifest_digest(settings, manifest_url(settings, "0a1b2c4")) is None  # no such tag


def test_a_refused_login_or_a_wrong_digest_is_an_error(
    tmp_path: Path, registry_standin: str
) -> None:
    wrong = _registry_settings(
        tmp_path, f"{registry_standin}/basic", delivery_registry_password="x"
    )
    with pytest.raises(RegistryError, match=r"refused the login .*REGISTRY_LOGIN"):
        manifest_digest(wrong, manifest_url(wrong, "0a1b2c3"))
    anonymous = _registry_settings(
        tmp_path, f"{registry_standin}/bearer", delivery_registry_login="none"
    )
    with pytest.raises(RegistryError, match="refused the anonymous request"):
        manifest_digest(anonymous, manifest_url(anonymous, "0a1b2c3"))
    settings = _registry_settings(tmp_path, f"{registry_standin}/basic")
    with pytest.raises(RegistryError, match=f"states sha256:0{{64}}, its manifest is {DIGEST}"):
        manifest_digest(settings, manifest_url(settings, "0a1b2c5"))


def test_rollout_is_one_patch_of_image_and_pinned_version(tmp_path: Path) -> None:
    release = Release("0a1b2c3", "registry/healthpredict:0a1b2c3", "7")
    patch = rollout_patch(_settings(tmp_path), release)
    (container,) = patch["spec"]["template"]["spec"]["containers"]
    assert container == {
        "name": "service",
        "image": "registry/healthpredict:0a1b2c3",
        "env": [{"name": "HEALTHPREDICT_MODEL_VERSION", "value": "7"}],
    }
    assert "0a1b2c3" in patch["metadata"]["annotations"]["kubernetes.io/change-cause"]
    image_only = rollout_patch(_settings(tmp_path), Release("0a1b2c3", "r/h:0a1b2c3", None))
    assert "env" not in image_only["spec"]["template"]["spec"]["containers"][0]


def test_dry_run_records_instead_of_running(tmp_path: Path) -> None:
    runner = CommandRunner(tmp_path / "journal.jsonl", dry_run=True, default_timeout=5)
    marker = tmp_path / "ran"
    result = runner.run("build", ["touch", str(marker)], stdin="secret")
    assert not result.executed and not marker.exists()
    assert runner.query("image-exists", ["true"]) is None  # unknown in a dry run
    (first, second) = read_journal(tmp_path / "journal.jsonl")
    assert first["argv"] == ["touch", str(marker)] and first["executed"] is False
    assert second["step"] == "image-exists"
    assert "secret" not in (tmp_path / "journal.jsonl").read_text()


def test_failures_and_missing_tools_are_clear_errors(tmp_path: Path) -> None:
    runner = CommandRunner(tmp_path / "journal.jsonl", dry_run=False, default_timeout=5)
    assert runner.run("ok", ["true"]).returncode == 0
    with pytest.raises(CommandError, match=r"push: `sh -c .*` exited with 3: denied"):
        runner.run("push", ["sh", "-c", "echo denied >&2; exit 3"])
    with pytest.raises(CommandError, match="cannot run 'no-such-docker'"):
        runner.run("build", ["no-such-docker", "build"])
    assert runner.query("image-exists", ["false"]) is None
    assert tool("minikube kubectl --") == ["minikube", "kubectl", "--"]


def test_a_hanging_command_and_its_children_are_stopped_at_the_timeout(tmp_path: Path) -> None:
    runner = CommandRunner(tmp_path / "journal.jsonl", dry_run=False, default_timeout=5)
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(CommandError, match="did not finish within 1s"):
        runner.run(
            "rollout-status", ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], timeout=1
        )
    assert time.monotonic() - started < 8
    child = int(pid_file.read_text())
    assert not _running(child), "the command's child process outlived the timeout"
    assert read_journal(tmp_path / "journal.jsonl")[-1]["timed_out"] == 1


def _running(pid: int) -> bool:
    """Alive and not a zombie (a container's init may never reap orphans)."""
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def test_smoke_test_fails_on_an_unreachable_endpoint(tmp_path: Path) -> None:
    settings = _settings(tmp_path, delivery_smoke_timeout_seconds=1)
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SmokeTestError, match=r"/ready did not answer 200 within 1s"):
        check_endpoint(settings, url, None)


def test_smoke_example_is_the_documented_one() -> None:
    from healthpredict.delivery.smoke import example

    documented = Path(__file__).resolve().parents[2] / "examples" / "encounter.json"
    assert example(Settings()) == json.loads(documented.read_text())


def test_task_modules_import_without_heavy_libraries() -> None:
    """DAG files import these at parse time, which the DAG processor does every few seconds."""
    modules = [
        "healthpredict.orchestration.training",
        "healthpredict.orchestration.monitoring",
        "healthpredict.orchestration.gate",
        "healthpredict.orchestration.policy",
        "healthpredict.delivery.rollout",
        "healthpredict.delivery.smoke",
        "healthpredict.delivery.promotion",
    ]
    code = (
        f"import sys; import {', '.join(modules)}; "
        "print([m for m in ('mlflow', 'pandas', 'sklearn', 'ray', 'lightgbm') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
