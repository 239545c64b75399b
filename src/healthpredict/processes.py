"""Child processes that serve HTTP: wait until one answers, read its log's tail, stop its group.

Shared by the replay's service process, the delivery commands, the benchmarks and the
integration tests' servers; each caller turns a failure into its own error.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

# How long the last check (one GET) may take, and how long a SIGKILLed group gets to go.
_REQUEST_TIMEOUT_SECONDS = 2.0
KILL_WAIT_SECONDS = 10.0


def wait_until_ok(
    url: str,
    timeout: float,
    process: subprocess.Popen[Any] | None = None,
    interval: float = 0.25,
) -> str | None:
    """Poll ``url`` until it answers 200, the deadline passes, or ``process`` exits.

    Args:
        url: What to GET, e.g. ``http://127.0.0.1:8000/ready``.
        timeout: Seconds to keep trying.
        process: The server's process, if it is ours: its exit ends the wait at once.
        interval: Seconds between tries.

    Returns:
        None when ``url`` answered 200; else why not, as a phrase to follow a name
        ("exited (1)", "did not answer 200 within 180s").
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return f"exited ({process.returncode})"
        try:
            if requests.get(url, timeout=_REQUEST_TIMEOUT_SECONDS).status_code == 200:
                return None
        except requests.RequestException:
            pass  # not listening yet
        time.sleep(interval)
    return f"did not answer 200 within {timeout:.0f}s"


def stop_process_group(
    process: subprocess.Popen[Any], grace: float, kill_wait: float | None = KILL_WAIT_SECONDS
) -> int | None:
    """SIGTERM the process's group, SIGKILL what is left after ``grace`` seconds.

    The process must have been started with ``start_new_session=True`` (its own group), so
    that helpers it spawned go with it. The group is signalled even when the leader has
    already exited: its helpers may not have.

    Args:
        process: The group's leader.
        grace: Seconds it gets to exit after SIGTERM.
        kill_wait: Seconds to wait after SIGKILL (None: until it has gone).

    Returns:
        Its exit status; None if it outlived even the SIGKILL wait.
    """
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, kill_wait)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            # communicate(), not wait(): it drains pipes the process could block writing to.
            process.communicate(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    return process.poll()


def log_tail(log: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a process's log ("" when there is none yet)."""
    if not log.is_file():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
