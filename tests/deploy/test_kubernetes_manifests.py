"""What the built manifests of every overlay promise: a locked-down pod, zero-downtime
rollouts, probes on the right paths, pinned images, and settings that exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from healthpredict.settings import Settings
from tests.deploy.conftest import Built
from tests.deploy.support import DEPLOY, ROOT

SECRET_NAME = "healthpredict-secrets"
DOCS = ROOT / "docs" / "orchestration_and_delivery.md"


def _pod(built: Built) -> dict[str, Any]:
    return built.one("Deployment")["spec"]["template"]


def _container(built: Built) -> dict[str, Any]:
    (container,) = _pod(built)["spec"]["containers"]
    return container


def test_pod_runs_non_root_with_the_runtime_default_seccomp_profile(overlay: Built) -> None:
    spec = _pod(overlay)["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")


def test_container_is_locked_down(overlay: Built) -> None:
    context = _container(overlay)["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert not context.get("privileged")


def test_writable_paths_are_bounded_empty_dirs(overlay: Built) -> None:
    volumes = {v["name"]: v for v in _pod(overlay)["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in _container(overlay)["volumeMounts"]}
    assert "/tmp" in mounts  # model downloads (tempfile) under a read-only root
    for name in mounts.values():
        assert volumes[name].get("emptyDir", {}).get("sizeLimit"), name


def test_rolling_update_never_drops_below_the_wanted_replicas(overlay: Built) -> None:
    strategy = overlay.one("Deployment")["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert strategy["rollingUpdate"]["maxSurge"] >= 1


def test_probes_use_the_right_paths_on_the_served_port(overlay: Built) -> None:
    container = _container(overlay)
    (port,) = container["ports"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in {port["name"], port["containerPort"]}


def test_resources_are_requested_and_limited(overlay: Built) -> None:
    resources = _container(overlay)["resources"]
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[bound]), bound


def test_image_is_pinned_never_latest(overlay: Built) -> None:
    image = _container(overlay)["image"]
    repository, _, tag = image.partition("@")[0].rpartition(":")
    assert repository and "/" not in tag and tag != "latest", image
    assert re.search(r"\d", tag), image
    assert _container(overlay)["imagePullPolicy"] == "IfNotPresent"


def test_service_pdb_and_hpa_target_the_deployment(overlay: Built) -> None:
    deployment = overlay.one("Deployment")
    labels = _pod(overlay)["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    service = overlay.one("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"] for p in _container(overlay)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    pdb = overlay.one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = overlay.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    # The autoscaler owns the count: a replicas field would reset it on every apply.
    assert "replicas" not in deployment["spec"]
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_settings_come_from_the_config_map_and_the_uncommitted_secret(overlay: Built) -> None:
    container, fields = _container(overlay), set(Settings.flat_fields())
    (config_map,) = overlay.of_kind("ConfigMap")
    assert container["envFrom"] == [{"configMapRef": {"name": config_map["metadata"]["name"]}}]
    for key in config_map["data"]:
        assert key.removeprefix("HEALTHPREDICT_").lower() in fields, key
        assert not re.search(r"KEY|SALT|PASSWORD|SECRET|DB_URL", key), f"{key} is a secret"
    refs = [env["valueFrom"]["secretKeyRef"] for env in container["env"]]
    assert {ref["name"] for ref in refs} == {SECRET_NAME}
    for ref in refs:
        assert ref["key"].removeprefix("HEALTHPREDICT_").lower() in fields, ref["key"]
    assert not [env for env in container["env"] if "value" in env], "literal env values"


def test_docs_create_the_secret_with_every_key_the_pod_reads(overlay: Built) -> None:
    text = DOCS.read_text()
    command = text[text.index(f"create secret generic {SECRET_NAME}") :].split("\n\n")[0]
    for env in _container(overlay)["env"]:
        assert f"--from-literal={env['valueFrom']['secretKeyRef']['key']}=" in command


def test_namespace_enforces_the_restricted_pod_security_standard(overlay: Built) -> None:
    namespace = overlay.one("Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in overlay.documents:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace["metadata"]["name"]


def test_kind_overlay_runs_one_local_replica(built_overlays: dict[str, Built]) -> None:
    kind = built_overlays["kind"]
    assert kind.one("HorizontalPodAutoscaler")["spec"]["minReplicas"] == 1
    assert kind.one("Service")["spec"]["type"] == "ClusterIP"  # reached by port-forward
    image = _container(kind)["image"]
    assert image.startswith("healthpredict-service:"), "the image kind load puts on the node"


def test_ec2_overlay_pulls_from_ecr_and_publishes_the_api_port(
    built_overlays: dict[str, Built],
) -> None:
    ec2 = built_overlays["ec2"]
    image = _container(ec2)["image"]
    assert re.fullmatch(
        r"\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com/healthpredict:[\w.-]+", image
    ), image
    assert _pod(ec2)["spec"]["imagePullSecrets"] == [{"name": "ecr-pull"}]
    assert ec2.one("HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2
    (port,) = ec2.one("Service")["spec"]["ports"]
    cluster = yaml.safe_load((DEPLOY / "k8s/kind-cluster-ec2.yaml").read_text())
    (mapping,) = cluster["nodes"][0]["extraPortMappings"]
    # NodePort -> Kind node -> the instance's port 8000, which the security group opens.
    assert ec2.one("Service")["spec"]["type"] == "NodePort"
    assert mapping["containerPort"] == port["nodePort"] and mapping["hostPort"] == 8000


def test_every_overlay_source_folder_has_a_kustomization() -> None:
    for folder in (DEPLOY / "k8s/overlays").iterdir():
        assert Path(folder / "kustomization.yaml").is_file(), folder
