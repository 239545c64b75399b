"""The walkthrough's moving parts: running shell commands, the service, the screenshot.

Used by ``scripts/walkthrough.py``; every command's output goes through the cast recorder.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from walkthrough_cast import CastRecorder

from healthpredict.reporting.browser import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
READY_TIMEOUT_SECONDS = 180.0
STOP_TIMEOUT_SECONDS = 20.0
COMMAND, RESET = "\x1b[1;33m", "\x1b[0m"


def shown(path: Path) -> str:
    """A path as the narration shows it: relative to the repository when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def placeholders(output_dir: Path, url: str) -> dict[str, str]:
    """Values of a command template's placeholders, quoted for the shell."""
    return {
        "url": url,
        "out": shlex.quote(shown(output_dir)),
        "data": shlex.quote(shown(output_dir / "data")),
    }


class StepError(RuntimeError):
    """A command or an action of the walkthrough failed."""


@dataclass
class Session:
    """What the steps share: where to write, the recorder, the environment, the server."""

    output_dir: Path
    recorder: CastRecorder
    env: dict[str, str]
    port: int
    server: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        """The walkthrough's own HEALTHPREDICT_DATA_DIR."""
        return self.output_dir / "data"

    @property
    def url(self) -> str:
        """Base URL of the service."""
        return f"http://127.0.0.1:{self.port}"

    def placeholders(self) -> dict[str, str]:
        """What a command template may name: {url}, {data} and {out} (the output folder)."""
        return placeholders(self.output_dir, self.url)

    def run(self, template: str) -> None:
        """Show a shell command, run it from the repository root, stream its output."""
        command = template.format(**self.placeholders())
        self.recorder.line(f"{COMMAND}$ {command}{RESET}")
        process = subprocess.Popen(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            self.recorder.write(line)
        if process.wait() != 0:
            raise StepError(f"`{command}` exited with status {process.returncode}")


def start_server(session: Session) -> None:
    """Start ``healthpredict serve`` in the background and wait until /ready answers 200."""
    log = (session.output_dir / "serve.log").open("wb")
    session.recorder.line(
        f"{COMMAND}$ healthpredict serve --port {session.port} &"
        f"   # HEALTHPREDICT_API_KEY and _ADMIN_KEY: freshly generated{RESET}"
    )
    session.server = subprocess.Popen(
        [str(VENV_BIN / "healthpredict"), "serve", "--port", str(session.port)],
        cwd=ROOT,
        env=session.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped as a whole, and only it
    )
    wait_ready(session)


def wait_ready(session: Session) -> None:
    """Poll /ready; fail early if the server dies, late if it never becomes ready."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        assert session.server is not None
        if session.server.poll() is not None:
            raise StepError(f"the service exited early: see {session.output_dir / 'serve.log'}")
        try:
            with urllib.request.urlopen(f"{session.url}/ready", timeout=5) as answer:
                if answer.status == 200:
                    session.recorder.line(f"service ready on {session.url}")
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # still loading the model: not ready yet
        time.sleep(1.0)
    raise StepError(f"the service was not ready within {READY_TIMEOUT_SECONDS:.0f} s")


def stop_server(session: Session) -> None:
    """Stop the service started here (its process group), politely first."""
    server, session.server = session.server, None
    if server is None or server.poll() is not None:
        return
    session.recorder.line(f"{COMMAND}$ kill {server.pid}   # the service{RESET}")
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def screenshot_dashboard(session: Session) -> None:
    """Open the dashboard in headless Chromium, wait for every chart, save a full-page PNG."""
    from playwright.sync_api import sync_playwright

    from healthpredict.reporting.dashboard import CHART_IDS

    page_file = session.data_dir / "reports" / "simulation" / "dashboard.html"
    target = session.output_dir / "dashboard.png"
    if not CHROMIUM.exists():
        raise StepError(f"{CHROMIUM} is not installed (Debian package chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.goto(page_file.resolve().as_uri(), wait_until="load")
            page.wait_for_function(
                "ids => ids.every(id => document.querySelector(`#${id} .main-svg`))",
                arg=list(CHART_IDS),
                timeout=30_000,
            )
            page.screenshot(path=str(target), full_page=True)
        finally:
            browser.close()
    session.recorder.line(f"screenshot of the dashboard: {shown(target)}")


def free_port() -> int:
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
