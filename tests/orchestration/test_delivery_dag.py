"""The delivery DAG with ``dag.test()``: dry runs against the real registry and a real service.

In a dry run the docker/kubectl/aws commands are recorded in the journal, while the smoke test
calls a real prediction service on loopback and the promotion moves the real alias. The last
tests run the commands for real, through stand-in docker/aws/kubectl executables: a cluster dry
run (docker and aws run, kubectl is only journaled), a push whose digest the registry does not
hold, and a rollout that never becomes ready. tests/delivery/test_delivery_push.py runs the
build and push with podman and a real registry.
"""

from __future__ import annotations

import base64
import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from healthpredict.delivery.commands import read_journal
from tests.support.airflow_env import environment, run_dag
from tests.support.dag_runs import API_KEY, Trained

# Airflow's task timeouts use SIGALRM, which would silence pytest-timeout's signal method.
pytestmark = pytest.mark.timeout(600, method="thread")
DELIVERY = "healthpredict_delivery"
MODEL = "health-predict-readmission"
REGISTRY = "000000000000.dkr.ecr.eu-west-1.amazonaws.com"
TAG = "0a1b2c3d"
IMAGE = f"{REGISTRY}/healthpredict:{TAG}"
DRY_RUN_COMMANDS = [
    "image-exists",  # unknown in a dry run, so the image is built...
    "build",
    "image-exists",  # ...and pushed
    "registry-login",
    "registry-login",
    "push",
    "record-revision",
    "roll-out",
    "rollout-status",
]


@pytest.fixture
def registry(trained: Trained) -> Iterator[Any]:
    """The trained registry with the aliases the training DAG left, set again before each
    test (the session's other tests share it and may have moved them) and after it."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{trained.data_dir.resolve() / 'mlflow.db'}")

    def as_trained() -> None:
        client.set_registered_model_alias(MODEL, "champion", trained.champion)
        client.set_registered_model_alias(MODEL, "challenger", trained.challenger)

    as_trained()
    yield client
    as_trained()


@pytest.fixture
def delivery_env(trained: Trained, live_service: str, tmp_path: Path) -> dict[str, str]:
    return {
        **trained.env,
        "HEALTHPREDICT_DELIVERY_DRY_RUN": "true",
        "HEALTHPREDICT_DELIVERY_REGISTRY": REGISTRY,
        "HEALTHPREDICT_DELIVERY_AWS_REGION": "eu-west-1",
        "HEALTHPREDICT_DELIVERY_SERVICE_URL": live_service,
        "HEALTHPREDICT_DELIVERY_JOURNAL_FILE": str(tmp_path / "journal.jsonl"),
        "HEALTHPREDICT_DELIVERY_SMOKE_TIMEOUT_SECONDS": "10",
        "HEALTHPREDICT_API_KEY": API_KEY,
    }


def _deliver(
    dagbag: Any, env: dict[str, str], image_tag: str, model_version: str
) -> tuple[str, dict[str, str], list[dict[str, Any]]]:
    with environment(env):
        run = run_dag(
            dagbag.dags[DELIVERY], {"image_tag": image_tag, "model_version": model_version}
        )
    return run.state, run.tasks, read_journal(Path(env["HEALTHPREDICT_DELIVERY_JOURNAL_FILE"]))


def _steps(journal: list[dict[str, Any]]) -> list[str]:
    return [event["step"] for event in journal if event["event"] == "command"]


def _aliases(client: Any) -> tuple[str, str | None]:
    champion = client.get_model_version_by_alias(MODEL, "champion").version
    challenger = client.get_registered_model(MODEL).aliases.get("challenger")
    return str(champion), None if challenger is None else str(challenger)


def test_dry_run_ships_and_promotes_only_after_the_smoke_test(
    dagbag: Any, delivery_env: dict[str, str], registry: Any
) -> None:
    champion, challenger = _aliases(registry)
    state, tasks, journal = _deliver(dagbag, delivery_env, TAG, str(challenger))
    assert state == "success", tasks
    assert tasks["roll_back"] == "skipped" and tasks["record_delivery"] == "success"
    assert _steps(journal) == DRY_RUN_COMMANDS
    commands = {e["step"]: e["argv"] for e in journal if e["event"] == "command"}
    assert not any(e.get("executed") for e in journal if e["event"] == "command")
    assert commands["build"][-1] == "." and IMAGE in commands["build"]
    assert commands["push"] == ["docker", "push", IMAGE]
    patch = json.loads(commands["roll-out"][commands["roll-out"].index("--patch") + 1])
    container = patch["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE
    assert container["env"] == [{"name": "HEALTHPREDICT_MODEL_VERSION", "value": challenger}]
    events = [e["event"] for e in journal]
    smoke, moved = events.index("smoke-test"), events.index("champion")
    assert journal[smoke]["passed"] and journal[smoke]["model_version"] == challenger
    last_command = max(i for i, event in enumerate(events) if event == "command")
    assert last_command < smoke < moved, "rolled out, then verified, then promoted"
    assert journal[moved]["moved"] and journal[moved]["previous"] == champion
    assert journal[-1] == {**journal[-1], "event": "delivered", "image": IMAGE}
    assert _aliases(registry) == (challenger, None)
    tags = registry.get_model_version(MODEL, challenger).tags
    assert tags["previous_champion"] == champion and tags["delivered_image"] == IMAGE


def test_failed_smoke_test_rolls_back_and_leaves_the_alias(
    dagbag: Any, delivery_env: dict[str, str], registry: Any
) -> None:
    before = _aliases(registry)
    env = {**delivery_env, "HEALTHPREDICT_API_KEY": "a-key-the-service-refuses-000"}
    state, tasks, journal = _deliver(dagbag, env, TAG, str(before[1]))
    assert state == "failed", tasks
    assert tasks["smoke_test"] == "failed" and tasks["promote_champion"] == "upstream_failed"
    assert tasks["record_delivery"] == "upstream_failed"
    assert tasks["roll_back"] == "success"
    assert _steps(journal) == [*DRY_RUN_COMMANDS, "roll-back", "rollout-status"]
    undo = next(e["argv"] for e in journal if e.get("step") == "roll-back")
    assert undo[-3:] == ["rollout", "undo", "deployment/healthpredict"]
    smoke = next(e for e in journal if e["event"] == "smoke-test")
    assert not smoke["passed"] and "401" in smoke["reason"]
    assert "champion" not in [e["event"] for e in journal]
    assert _aliases(registry) == before


@pytest.mark.parametrize("tag", ["latest", ""])
def test_bad_tag_is_refused_before_anything_runs(
    dagbag: Any, delivery_env: dict[str, str], registry: Any, tag: str
) -> None:
    before = _aliases(registry)
    state, tasks, journal = _deliver(dagbag, delivery_env, tag, str(before[1]))
    assert state == "failed", tasks
    assert tasks["plan"] == "failed" and tasks["build_image"] == "upstream_failed"
    assert _steps(journal) == []  # nothing built, pushed or rolled out
    assert [e["event"] for e in journal] == ["refused", "rollback"]
    assert journal[1]["rolled_back"] is False
    assert _aliases(registry) == before


DIGEST = "sha256:" + "5b34a91d" * 8
FAKE = """#!/bin/bash
# Stand-in for {name}: logs its arguments; ECR holds the pushed digest once pushed; the
# kubectl rollout never becomes ready.
echo "$(date +%s.%N) {name} $*" >> {log}
case "{name} $*" in
  "aws ecr describe-images"*)
    if [ -e {folder}/pushed ]; then echo {held}; exit 0; fi
    echo "ImageNotFoundException" >&2; exit 254 ;;
  "aws ecr get-login-password"*) echo "not-a-real-password" ;;
  "docker login"*) cat > {folder}/login-stdin ;;
  "docker push"*) touch {folder}/pushed; echo "{tag}: digest: {digest} size: 1234" ;;
  *"apply -f -"*) cat > {folder}/pull-secret.json ;;
  *"get deployment/"*) echo -n 7 ;;
  *"rollout undo"*) touch {folder}/undone ;;
  *"rollout status"*)
    if [ -e {folder}/undone ]; then echo "successfully rolled out"; exit 0; fi
    sleep 2; echo "error: timed out waiting for the condition" >&2; exit 1 ;;
esac
"""


def _fake_tools(folder: Path, held: str = DIGEST) -> dict[str, str]:
    """docker, aws and kubectl stand-ins; ECR holds ``held`` under the tag once it is pushed."""
    commands = {}
    for name in ("docker", "aws", "kubectl"):
        path = folder / name
        path.write_text(
            FAKE.format(
                name=name,
                log=folder / "calls.log",
                folder=folder,
                tag=TAG,
                digest=DIGEST,
                held=held,
            )
        )
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        commands[f"HEALTHPREDICT_DELIVERY_{name.upper()}_COMMAND"] = str(path)
    return commands


def _called(folder: Path) -> list[str]:
    log = folder / "calls.log"
    return [line.split(" ", 2)[1] for line in log.read_text().splitlines()] if log.exists() else []


def test_cluster_dry_run_builds_and_pushes_and_only_records_kubectl(
    dagbag: Any, delivery_env: dict[str, str], registry: Any, tmp_path: Path
) -> None:
    env = {
        **delivery_env,
        **_fake_tools(tmp_path),
        "HEALTHPREDICT_DELIVERY_DRY_RUN": "false",
        "HEALTHPREDICT_DELIVERY_CLUSTER_DRY_RUN": "true",
    }
    state, tasks, journal = _deliver(dagbag, env, TAG, "")
    assert state == "success", tasks
    assert set(_called(tmp_path)) == {"aws", "docker"}, "kubectl never ran"
    executed = {e["step"]: e["executed"] for e in journal if e["event"] == "command"}
    assert executed == {
        "image-exists": True,
        "build": True,
        "registry-login": True,
        "push": True,
        "push-digest": True,
        "record-revision": False,
        "roll-out": False,
        "rollout-status": False,
    }
    planned = next(e for e in journal if e["event"] == "planned")
    assert planned["dry_run"] is False and planned["cluster_dry_run"] is True


def test_a_push_the_registry_does_not_hold_fails_and_so_do_its_retries(
    delivery_env: dict[str, str], tmp_path: Path
) -> None:
    from healthpredict.delivery import rollout

    other = "sha256:" + "0" * 64
    env = {
        **delivery_env,
        **_fake_tools(tmp_path, held=other),
        "HEALTHPREDICT_DELIVERY_DRY_RUN": "false",
        "HEALTHPREDICT_DELIVERY_CLUSTER_DRY_RUN": "true",
    }
    with environment(env):
        release = rollout.plan(TAG, "")
        rollout.build_image(release)
        with pytest.raises(rollout.PushError, match=f"reported digest {DIGEST}.* holds {other}"):
            rollout.push_image(release)
        # A retry finds the tag: it must not skip the push into a rollout of the wrong image.
        with pytest.raises(rollout.PushError, match=f"pushed as {DIGEST}.* holds {other}"):
            rollout.push_image(release)
    journal = read_journal(Path(env["HEALTHPREDICT_DELIVERY_JOURNAL_FILE"]))
    pushed = next(e for e in journal if e["event"] == "pushed")
    assert (pushed["digest"], pushed["registry_digest"]) == (DIGEST, other)
    assert _called(tmp_path).count("docker") == 3, "build, login, push: once each"


def test_rollout_that_never_becomes_ready_is_rolled_back_within_its_timeout(
    dagbag: Any, delivery_env: dict[str, str], registry: Any, tmp_path: Path
) -> None:
    before = _aliases(registry)
    env = {
        **delivery_env,
        **_fake_tools(tmp_path),
        "HEALTHPREDICT_DELIVERY_DRY_RUN": "false",
        "HEALTHPREDICT_DELIVERY_ROLLOUT_TIMEOUT_SECONDS": "2",
        "HEALTHPREDICT_DELIVERY_PULL_SECRET": "ecr-pull",
    }
    started = time.monotonic()
    state, tasks, journal = _deliver(dagbag, env, TAG, str(before[1]))
    assert state == "failed", tasks
    assert tasks["wait_for_rollout"] == "failed" and tasks["smoke_test"] == "upstream_failed"
    assert tasks["roll_back"] == "success"
    calls = [line.split(" ", 1) for line in (tmp_path / "calls.log").read_text().splitlines()]
    said = [call for _, call in calls]
    assert said[-3].endswith("rollout status deployment/healthpredict --timeout=2s")
    assert said[-2].endswith("rollout undo deployment/healthpredict --to-revision=7")
    patched_at = float(next(at for at, call in calls if " patch " in call))
    undone_at = float(calls[-2][0])
    assert undone_at - patched_at < 2 + 10, "the rollback starts right after the timeout"
    assert (tmp_path / "login-stdin").read_text().strip() == "not-a-real-password"
    secret = json.loads((tmp_path / "pull-secret.json").read_text())
    assert secret["metadata"] == {"name": "ecr-pull", "namespace": "healthpredict"}
    login = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    assert login["auths"][REGISTRY]["password"] == "not-a-real-password"
    assert "not-a-real-password" not in json.dumps(journal)
    assert all(e["executed"] for e in journal if e["event"] == "command")
    pushed = next(e for e in journal if e["event"] == "pushed")
    assert pushed["digest"] == pushed["registry_digest"] == DIGEST
    assert _aliases(registry) == before
    assert time.monotonic() - started < 60


def test_smoke_test_checks_the_served_version(tmp_path: Path, live_service: str) -> None:
    """The smoke step on its own, against the live service serving the challenger v2.

    Here and not with the other delivery steps (tests/delivery): it needs the session's trained
    registry, which is only sound while the DAG tests run one after another.
    """
    from healthpredict.delivery.smoke import SmokeTestError, check_endpoint
    from healthpredict.settings import Settings

    settings = Settings.from_flat(
        data_dir=tmp_path,
        delivery_registry=REGISTRY,
        delivery_service_url=live_service,
        delivery_smoke_timeout_seconds=10,
        api_key=API_KEY,
    )
    served = check_endpoint(settings, live_service, "2")
    assert served["model_version"] == "2" and 0 <= served["probability"] <= 1
    with pytest.raises(SmokeTestError, match="serves model version 2, not the delivered version 1"):
        check_endpoint(settings, live_service, "1")
