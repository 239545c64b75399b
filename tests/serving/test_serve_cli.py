"""`healthpredict serve`: a real uvicorn server on loopback; refuses to start without a key."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from healthpredict.serving.examples import EXAMPLE_ENCOUNTER
from tests.serving.conftest import API_KEY, Champion

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).parent / "healthpredict")


def _environment(champion: Champion, tmp_path: Path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHPREDICT_")}
    return {
        **clean,
        "HEALTHPREDICT_DATA_DIR": str(champion.settings.data.data_dir),
        "HEALTHPREDICT_MONITORING_DB_URL": f"sqlite:///{tmp_path / 'log.db'}",
        "HEALTHPREDICT_ID_SALT": "cli-test-salt",
        **extra,
    }


def test_serve_refuses_to_start_without_an_api_key(champion: Champion, tmp_path: Path) -> None:
    result = subprocess.run(
        [CLI, "serve"],
        env=_environment(champion, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no API key configured: set HEALTHPREDICT_API_KEY" in result.stderr


def test_serve_answers_on_loopback_and_stops_cleanly(champion: Champion, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = _environment(champion, tmp_path, HEALTHPREDICT_API_KEY=API_KEY)
    server = subprocess.Popen(
        [CLI, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, server.communicate()[0]
            try:
                if httpx.get(f"{base}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server not ready"
            time.sleep(0.2)
        answer = httpx.post(
            f"{base}/predict", json=EXAMPLE_ENCOUNTER, headers={"X-API-Key": API_KEY}
        )
        assert answer.status_code == 200 and answer.json()["model_version"] == champion.version
        assert "server" not in answer.headers  # no version banner
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=30)[0]
    # A graceful stop: uvicorn drains, then re-raises SIGTERM so the exit status tells why.
    assert server.returncode in (0, -signal.SIGTERM) and "Finished server process" in output
    assert (
        "now serving" in output and API_KEY not in output and "Downloading artifacts" not in output
    )
