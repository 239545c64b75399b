"""The OpenAPI document is exact: schemathesis' command line, with every check, against the real
service (``healthpredict serve`` under uvicorn on a free loopback port) finds nothing.

Each check compares what the service answers with what its own ``/openapi.json`` says: status
codes, media types, response headers and bodies, security requirements (a request without its
key must be refused, a request with it accepted), valid data accepted and invalid data refused.
A second run serves no model and has no admin key, so the documented 503 and 403 answers are
exercised too. Bounded: a fixed number of examples per operation and a fixed seed. The keys
reach schemathesis through its configuration file's environment placeholders, never its
command line, and are masked in anything shown.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import ADMIN_KEY, API_KEY, Champion

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
EXAMPLES_PER_OPERATION = 25
SEED = 20261
SCHEMATHESIS_CONFIG = """\
[headers]
X-API-Key = "${CONTRACT_API_KEY}"
X-Admin-Key = "${CONTRACT_ADMIN_KEY}"
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _masked(text: str) -> str:
    return text.replace(API_KEY, "***").replace(ADMIN_KEY, "***")


@contextmanager
def served(champion: Champion, folder: Path, **settings: str) -> Iterator[str]:
    """``healthpredict serve`` on a free loopback port until its first registry check is done."""
    port = _free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHPREDICT_")}
    env = {
        **clean,
        "HEALTHPREDICT_DATA_DIR": str(champion.settings.data.data_dir),
        "HEALTHPREDICT_MONITORING_DB_URL": f"sqlite:///{folder / 'monitoring.db'}",
        "HEALTHPREDICT_ID_SALT": "contract-test-salt",
        "HEALTHPREDICT_API_KEY": API_KEY,
        "HEALTHPREDICT_MAX_BATCH_SIZE": "20",  # keeps generated batches cheap to score
        **{f"HEALTHPREDICT_{name.upper()}": value for name, value in settings.items()},
    }
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(
        [str(BIN / "healthpredict"), "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_checked(base, server, folder / "server.log")
        yield base
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _wait_checked(base: str, server: subprocess.Popen[bytes], log: Path) -> None:
    """Until the model store's first registry check has finished: loaded, or failed."""
    deadline = time.monotonic() + 120
    while True:
        assert server.poll() is None, _masked(log.read_text())
        try:
            ready = httpx.get(f"{base}/ready", timeout=5)
            if ready.status_code == 200 or "no model loaded yet" not in ready.json()["reason"]:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "service not started: " + _masked(log.read_text())
        time.sleep(0.2)


def run_schemathesis(base: str, folder: Path, *options: str) -> None:
    """``schemathesis run <base>/openapi.json --checks all``; fails showing its report."""
    config = folder / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    command = [
        str(BIN / "schemathesis"),
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{base}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--seed",
        str(SEED),
        "--report-dir",
        str(folder / "report"),
        *options,
    ]
    env = {**os.environ, "CONTRACT_API_KEY": API_KEY, "CONTRACT_ADMIN_KEY": ADMIN_KEY}
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=150, cwd=folder
    )
    report = _masked(result.stdout + result.stderr)
    assert result.returncode == 0, f"schemathesis found problems:\n{report}"
    assert "Operations:       8 selected / 8 total" in report, report


def _served_count(base: str, endpoint: str, status: int) -> float:
    """How many requests to ``endpoint`` the service answered with ``status`` (from /metrics)."""
    text = httpx.get(f"{base}/metrics").text
    series = rf'endpoint="{re.escape(endpoint)}",method="\w+",status="{status}"'
    pattern = rf"healthpredict_requests_total{{{series}}} (\S+)"
    return sum(float(count) for count in re.findall(pattern, text))


def test_the_document_matches_the_service(champion: Champion, tmp_path: Path) -> None:
    with served(champion, tmp_path, admin_key=ADMIN_KEY) as base:
        run_schemathesis(base, tmp_path)
        # The keys were sent: the authorised answers were really exercised, not only 401s.
        for endpoint in ("/predict", "/predict/batch", "/outcomes", "/model", "/admin/reload"):
            assert _served_count(base, endpoint, 200) > 0, endpoint
        assert _served_count(base, "/predict", 422) > 0  # and refused invalid data


def test_the_document_matches_the_service_without_model_or_admin_key(
    champion: Champion, tmp_path: Path
) -> None:
    with served(champion, tmp_path, model_name="no-such-model") as base:
        assert httpx.get(f"{base}/ready").status_code == 503
        # Here 503 is the documented answer of the prediction endpoints and /ready: every
        # other check runs, and the answers must match the documented 503 and 403 bodies.
        run_schemathesis(base, tmp_path, "--exclude-checks", "not_a_server_error")
        assert _served_count(base, "/predict", 503) > 0
        assert _served_count(base, "/admin/reload", 403) > 0
