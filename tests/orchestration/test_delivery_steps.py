"""The delivery package without Airflow: tags, the command runner, the rollout patch, smoke tests.

The runner tests run real processes (``true``, ``false``, ``sleep``); the smoke tests call the
real service of :func:`live_service`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from healthpredict.delivery.commands import CommandError, CommandRunner, read_journal, tool
from healthpredict.delivery.release import Release, ReleaseError, check_tag, plan_release
from healthpredict.delivery.rollout import rollout_patch
from healthpredict.delivery.smoke import SmokeTestError, check_endpoint
from healthpredict.settings import Settings
from tests.orchestration.conftest import API_KEY, free_port

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
    return Settings(**{**values, **overrides})


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


def test_smoke_test_checks_the_served_version(tmp_path: Path, live_service: str) -> None:
    settings = _settings(tmp_path, delivery_smoke_timeout_seconds=10)
    served = check_endpoint(settings, live_service, "2")
    assert served["model_version"] == "2" and 0 <= served["probability"] <= 1
    with pytest.raises(SmokeTestError, match="serves model version 2, not the delivered version 1"):
        check_endpoint(settings, live_service, "1")


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
