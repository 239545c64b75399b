"""The Kind overlay, rendered by kustomize, run under ``podman kube play`` with the built image.

No Kubernetes API server can run on these machines; ``podman kube play`` runs the Deployment's
pod from the same YAML. What it does not act on is listed here (and in
docs/orchestration_and_delivery.md), not hidden: the Namespace, ServiceAccount, Service,
HorizontalPodAutoscaler and PodDisruptionBudget are left out, and of the pod's probes podman
4.3 keeps only the liveness probe (as a health check), so readiness is checked here through the
published port, as the probe would. Three things are given for this machine only, and said so:
the registry's address (the overlay's ``http://mlflow:5000`` names a cluster service), a host
port on loopback (podman 4.3 has no ``--publish`` for kube play), and the Secret, created as a
podman secret holding the Secret's ``data`` (podman 4.3 cannot read the Secrets it stores from
YAML: containers/podman#16269).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from healthpredict.delivery import engine
from healthpredict.loop.service import free_port
from healthpredict.serving.examples import EXAMPLE_ENCOUNTER
from tests.deploy.support import ROOT
from tests.support.containers import (
    Registry,
    engine_name,
    kustomize_or_skip,
    run_engine,
)

pytestmark = pytest.mark.containers
OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "kind"
PLAYED = {"Deployment", "ConfigMap"}
NOT_PLAYED = {
    "Namespace",
    "ServiceAccount",
    "Service",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
}
SECRET = "healthpredict-secrets"
API_KEY = "kube-play-key-0123456789"


def _rendered() -> list[dict[str, Any]]:
    built = subprocess.run(
        [*kustomize_or_skip(), str(OVERLAY)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return list(yaml.safe_load_all(built.stdout))


def _for_this_machine(documents: list[dict[str, Any]], registry: Registry, port: int) -> list:
    """The played documents, with the three machine-only values of the module docstring."""
    played = [document for document in documents if document["kind"] in PLAYED]
    for document in played:
        if document["kind"] == "ConfigMap":
            document["data"]["HEALTHPREDICT_MLFLOW_TRACKING_URI"] = registry.url_from_container
            document["data"]["HEALTHPREDICT_MODEL_NAME"] = registry.env["HEALTHPREDICT_MODEL_NAME"]
        else:
            container = document["spec"]["template"]["spec"]["containers"][0]
            container["ports"][0].update(hostPort=port, hostIP="127.0.0.1")
    return played


@pytest.fixture(scope="module")
def pod(
    service_image: engine.Built, registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if engine_name() != "podman":
        pytest.skip("kube play is podman's")
    documents = _rendered()
    assert {d["kind"] for d in documents} == PLAYED | NOT_PLAYED  # a new kind must be listed
    port, folder = free_port(), tmp_path_factory.mktemp("kube-play")
    played = folder / "kind.yaml"
    played.write_text(yaml.safe_dump_all(_for_this_machine(documents, registry, port)))
    data = {
        "HEALTHPREDICT_API_KEY": API_KEY,
        "HEALTHPREDICT_ID_SALT": f"salt-{uuid.uuid4().hex}",
        "HEALTHPREDICT_MONITORING_DB_URL": "sqlite:////var/lib/healthpredict/monitoring.db",
    }
    secret = folder / "secret.json"
    secret.write_text(
        json.dumps({k: base64.b64encode(v.encode()).decode() for k, v in data.items()})
    )
    run_engine("secret", "rm", SECRET, check=False)
    run_engine("secret", "create", SECRET, str(secret))
    run_engine("kube", "play", "--replace", str(played), timeout=300)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        run_engine("kube", "down", str(played), check=False)
        run_engine("secret", "rm", SECRET, check=False)
        Path(secret).unlink(missing_ok=True)


def _container() -> dict[str, Any]:
    names = run_engine(
        "ps", "--filter", "label=app.kubernetes.io/name=healthpredict", "--format", "{{.Names}}"
    ).stdout.split()
    service = [n for n in names if n.endswith("-service")]
    assert service, f"no service container in the pod: {names}"
    return json.loads(run_engine("inspect", service[0]).stdout)[0]


def test_the_pod_becomes_ready_and_answers_on_loopback(pod: str) -> None:
    deadline, last = time.monotonic() + 180, ""
    while time.monotonic() < deadline:
        try:
            answer = requests.get(f"{pod}/ready", timeout=5)
            if answer.status_code == 200:
                break
            last = answer.text
        except requests.RequestException as error:
            last = str(error)
        time.sleep(1)
    else:
        pytest.fail(f"the pod never became ready: {last[:500]}")
    predicted = requests.post(
        f"{pod}/predict", json=EXAMPLE_ENCOUNTER, headers={"X-API-Key": API_KEY}, timeout=30
    )
    assert predicted.status_code == 200 and 0 <= predicted.json()["probability"] <= 1


def test_the_pod_keeps_the_deployment_s_hardening(pod: str) -> None:
    inspected = _container()
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert inspected["Config"]["User"].split(":")[0] == "10001"
    # What the service process really has: no capability at all, no way to gain privileges.
    status = run_engine("exec", inspected["Name"], "cat", "/proc/1/status").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert int(fields["CapEff"].strip(), 16) == 0 and fields["NoNewPrivs"].strip() == "1"
