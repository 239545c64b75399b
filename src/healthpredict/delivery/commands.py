"""Run the external commands of a delivery (docker, kubectl, aws), or record them in a dry run.

Every command is an argument list (never a shell line: a tag or a name cannot inject anything),
runs in its own process group with a timeout, and is written to a JSON-lines journal with what
came of it. In a dry run nothing runs: the journal shows what would have run, in order, which
is how the delivery DAG is tested on a machine without Docker or a cluster. A cluster dry run
records only the kubectl commands: the image steps run for real, which is how the build and push
are tested on a machine with a container engine and a registry but no cluster.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from healthpredict.errors import HealthPredictError
from healthpredict.processes import stop_process_group
from healthpredict.settings import Settings

logger = logging.getLogger(__name__)
# Time a command gets to exit after SIGTERM before it is killed.
_TERMINATE_GRACE_SECONDS = 5.0
_OUTPUT_TAIL = 600


class CommandError(HealthPredictError):
    """A delivery command failed, timed out, or could not be started."""


@dataclass(frozen=True)
class CommandResult:
    """What one command did; ``executed`` is False in a dry run."""

    step: str
    argv: list[str]
    executed: bool
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def journal_path(settings: Settings) -> Path:
    """The journal file in force."""
    return settings.delivery.journal_file or settings.data.data_dir / "delivery" / "journal.jsonl"


def tool(command: str) -> list[str]:
    """A configured tool as an argument prefix ('minikube kubectl --' is three arguments)."""
    argv = shlex.split(command)
    if not argv:
        raise CommandError("an empty command is configured for docker, kubectl or aws")
    return argv


class CommandRunner:
    """Runs commands with timeouts, or records them when ``dry_run`` is set."""

    def __init__(self, journal: Path, dry_run: bool, default_timeout: float):
        """Create a runner writing to ``journal``; nothing is written until a command runs."""
        self.journal = journal
        self.dry_run = dry_run
        self.default_timeout = default_timeout

    @classmethod
    def from_settings(cls, settings: Settings, *, cluster: bool = False) -> CommandRunner:
        """The runner the settings describe; ``cluster`` for the kubectl steps, which a cluster
        dry run records while the image steps run."""
        dry_run = settings.delivery.dry_run or (cluster and settings.delivery.cluster_dry_run)
        return cls(journal_path(settings), dry_run, settings.delivery.command_timeout_seconds)

    def run(
        self,
        step: str,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        stdin: str | None = None,
        check: bool = True,
    ) -> CommandResult:
        """Run ``argv`` (or record it in a dry run); raise CommandError if it fails and ``check``.

        ``stdin`` carries secrets (a registry password): it is never written to the journal.
        """
        argv = [str(arg) for arg in argv]
        if self.dry_run:
            result = CommandResult(step, argv, False, 0, "", "", 0.0)
        else:
            result = self._execute(step, argv, timeout or self.default_timeout, stdin)
        # A failure keeps the end of what it said (secrets go in on stdin, never out).
        failed = {"output": _tail(result.stderr or result.stdout)} if result.returncode else {}
        self.note(
            "command",
            step=step,
            argv=argv,
            executed=result.executed,
            returncode=result.returncode,
            seconds=round(result.seconds, 3),
            **failed,
        )
        if check and result.returncode != 0:
            raise CommandError(
                f"{step}: `{shlex.join(argv)}` exited with {result.returncode}: "
                f"{_tail(result.stderr or result.stdout)}"
            )
        return result

    def query(self, step: str, argv: Sequence[str], timeout: float | None = None) -> str | None:
        """A read-only question (does the image exist? which revision?): its output on success.

        Returns None when the command fails, and in a dry run, where the answer is unknown;
        callers then take the path that changes the most, so a dry run shows every command.
        """
        result = self.run(step, argv, timeout=timeout, check=False)
        if not result.executed or result.returncode != 0:
            return None
        return result.stdout

    def ask(self, step: str, question: Callable[[], str | None], **fields: Any) -> str | None:
        """A read-only question that is not a command (a registry's HTTP API), journaled.

        Like :meth:`query`, unknown (None) in a dry run, where nothing is asked. Errors are
        journaled and raised: a registry that cannot be asked cannot be pushed to either.
        """
        if self.dry_run:
            self.note("question", step=step, executed=False, **fields)
            return None
        started = time.monotonic()
        try:
            answer = question()
        except Exception as error:
            self.note("question", step=step, executed=True, error=str(error), **fields)
            raise
        seconds = round(time.monotonic() - started, 3)
        self.note("question", step=step, executed=True, answer=answer, seconds=seconds, **fields)
        return answer

    def note(self, event: str, **fields: Any) -> None:
        """Append one event to the journal (commands, checks, the alias move)."""
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        record = {"time": datetime.now(UTC).isoformat(), "event": event, **fields}
        with self.journal.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str) + "\n")

    def _execute(
        self, step: str, argv: list[str], timeout: float, stdin: str | None
    ) -> CommandResult:
        logger.info("%s: %s", step, shlex.join(argv))
        started = time.monotonic()
        try:
            # A new session: on a timeout the whole group goes (docker build spawns helpers).
            process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        except OSError as error:
            raise CommandError(
                f"{step}: cannot run {argv[0]!r} ({error.strerror}); configure it with the "
                "HEALTHPREDICT_DELIVERY_*_COMMAND settings"
            ) from error
        try:
            stdout, stderr = process.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired as error:
            stop_process_group(process, _TERMINATE_GRACE_SECONDS, kill_wait=None)
            self.note("command", step=step, argv=argv, executed=True, timed_out=timeout)
            raise CommandError(
                f"{step}: `{shlex.join(argv)}` did not finish within {timeout:.0f}s and was stopped"
            ) from error
        return CommandResult(
            step, argv, True, process.returncode, stdout, stderr, time.monotonic() - started
        )


def _tail(text: str) -> str:
    text = " ".join(text.split())
    return text[-_OUTPUT_TAIL:] if text else "(no output)"


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The journal's events, oldest first (empty when nothing was recorded)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
