"""Every overlay in deploy/k8s/overlays builds with kustomize and passes
``kubernetes-validate --strict`` against the Kubernetes the EC2 host's Kind runs and the newest
one the validator knows."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.deploy.conftest import OVERLAYS, Built
from tests.deploy.support import DEPLOY, unavailable

# Kind v0.24 (infra/healthpredict_infra/user_data.sh) runs Kubernetes 1.31.
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")


def _kubernetes_validate() -> str:
    found = shutil.which("kubernetes-validate") or str(
        Path(sys.executable).parent / "kubernetes-validate"
    )
    if not Path(found).exists():
        unavailable("kubernetes-validate not installed (it is in the dev extra)")
    return found


def test_both_clusters_have_an_overlay() -> None:
    assert {path.name for path in OVERLAYS} >= {"kind", "ec2"}


def test_builds_without_warnings(overlay: Built) -> None:
    # Deprecated fields (bases, patchesStrategicMerge, commonLabels) warn on stderr.
    assert not overlay.stderr.strip(), overlay.stderr
    kinds = {doc["kind"] for doc in overlay.documents}
    assert kinds >= {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }


def test_passes_kubernetes_validate_strict(overlay: Built, tmp_path: Path) -> None:
    manifest = tmp_path / f"{overlay.overlay}.yaml"
    manifest.write_text(overlay.text)
    versions = [arg for version in KUBERNETES_VERSIONS for arg in ("-k", version)]
    result = subprocess.run(
        [_kubernetes_validate(), "--strict", "--quiet", *versions, str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # A kind without a schema is only a WARN for the tool (exit 0): an unknown or misspelt
    # kind would slip through, so warnings fail here too.
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_no_secret_is_committed_or_generated(overlay: Built) -> None:
    assert not overlay.of_kind("Secret")
    for path in (DEPLOY / "k8s").rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            assert not (isinstance(doc, dict) and doc.get("kind") == "Secret"), path
            assert not (isinstance(doc, dict) and doc.get("secretGenerator")), path
