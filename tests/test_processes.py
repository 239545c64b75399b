"""Child processes: waiting for an HTTP answer ends when the process dies; stopping takes the
whole group, also when SIGTERM is ignored."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from healthpredict.processes import log_tail, stop_process_group, wait_until_ok


@pytest.fixture
def answering_url() -> Iterator[str]:
    """A loopback server answering 200 to every GET."""

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/ready"
    server.shutdown()
    server.server_close()


def _child(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


def test_an_answering_server_ends_the_wait(answering_url: str) -> None:
    assert wait_until_ok(answering_url, timeout=10) is None


def test_a_dead_process_ends_the_wait_at_once() -> None:
    process = _child("raise SystemExit(3)")
    process.wait()
    started = time.monotonic()
    assert wait_until_ok("http://127.0.0.1:9/ready", timeout=30, process=process) == "exited (3)"
    assert time.monotonic() - started < 5


def test_nobody_listening_times_out() -> None:
    why = wait_until_ok("http://127.0.0.1:9/ready", timeout=0.5, interval=0.1)
    assert why == "did not answer 200 within 0s"


def test_stop_terminates_the_group() -> None:
    process = _child("import time; time.sleep(60)")
    assert stop_process_group(process, grace=10) == -15  # SIGTERM sufficed


def test_stop_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    process = _child(
        "import signal, time, pathlib; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"pathlib.Path({str(ready)!r}).touch(); time.sleep(60)"
    )
    deadline = time.monotonic() + 10
    while not ready.exists() and time.monotonic() < deadline:  # the handler is set
        time.sleep(0.02)
    assert stop_process_group(process, grace=0.2) == -9


def test_stopping_a_process_that_already_exited_is_harmless() -> None:
    process = _child("pass")
    os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
    assert stop_process_group(process, grace=1) == 0


def test_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    assert log_tail(log) == ""
    log.write_text("".join(f"line {n}\n" for n in range(50)))
    assert log_tail(log, lines=2) == "line 48\nline 49"
