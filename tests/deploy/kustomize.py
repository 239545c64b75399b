"""Finding a kustomize that builds the overlays, and building them (not a test module).

``kubectl kustomize`` is preferred; a standalone ``kustomize`` is the fallback (what .ci/run
installs from npm where no kubectl is present). Debian's own ``kubernetes-client`` is kubectl
1.20, whose embedded kustomize v2 rejects ``resources: [../../base]`` and ``patches:``, so
kubectl before 1.21 and kustomize before v4 are passed over rather than reported as overlay
errors.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

MIN_KUBECTL_MINOR = 21  # kubectl 1.21 embeds kustomize v4.
MIN_KUSTOMIZE_MAJOR = 4


def _run(command: list[str]) -> str | None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def _kubectl_is_recent(kubectl: str) -> bool:
    output = _run([kubectl, "version", "--client", "-o", "json"])
    if output is None:
        return False
    minor = json.loads(output).get("clientVersion", {}).get("minor", "0")
    return int(re.sub(r"\D", "", minor) or 0) >= MIN_KUBECTL_MINOR


def _kustomize_is_recent(kustomize: str) -> bool:
    # "v5.5.0" (v5) or "{Version:kustomize/v4.5.4 GitCommit:...}" (v4).
    match = re.search(r"v(\d+)\.", _run([kustomize, "version"]) or "")
    return match is not None and int(match[1]) >= MIN_KUSTOMIZE_MAJOR


@cache
def kustomize_command() -> tuple[str, ...] | None:
    """The command that builds a kustomization directory given as its last argument."""
    kubectl = shutil.which("kubectl")
    if kubectl and _kubectl_is_recent(kubectl):
        return (kubectl, "kustomize")
    kustomize = shutil.which("kustomize")
    if kustomize and _kustomize_is_recent(kustomize):
        return (kustomize, "build")
    return None


def build(command: tuple[str, ...], directory: Path) -> subprocess.CompletedProcess[str]:
    """Run the build; the caller checks the exit status and stderr."""
    return subprocess.run(
        [*command, str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
