"""Record a terminal session as an asciinema cast (format v2), without a pseudo-terminal.

The walkthrough prints everything through :class:`CastRecorder`, which echoes to the real
terminal and keeps each chunk with its time since the start. The file is JSON lines: a header,
then ``[seconds, "o", text]`` events; ``asciinema play`` and the web player replay it.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

CAST_VERSION = 2
# Players shorten any pause longer than this: a two-minute training shows as a short wait.
IDLE_TIME_LIMIT_SECONDS = 3.0


@dataclass
class CastRecorder:
    """Echo text to a terminal and keep it, timestamped, for the cast."""

    title: str
    width: int = 120
    height: int = 36
    echo_to: TextIO | None = field(default_factory=lambda: sys.stdout)
    events: list[tuple[float, str]] = field(default_factory=list)
    _started: float = field(default_factory=time.monotonic)
    _started_at: int = field(default_factory=lambda: int(time.time()))
    _offset: float = 0.0

    def write(self, text: str) -> None:
        """Show ``text`` now and record it at the current time."""
        if self.echo_to is not None:
            self.echo_to.write(text)
            self.echo_to.flush()
        # A real terminal turns LF into CR LF; the recording must say so for players.
        recorded = text.replace("\r\n", "\n").replace("\n", "\r\n")
        self.events.append((self._now(), recorded))

    def line(self, text: str = "") -> None:
        """Write one line."""
        self.write(text + "\n")

    def pause(self, seconds: float) -> None:
        """Give a viewer reading time in the replay, without making the live run wait."""
        self._offset += seconds

    def save(self, path: Path) -> Path:
        """Write the cast file (header line, then one JSON array per event)."""
        header = {
            "version": CAST_VERSION,
            "width": self.width,
            "height": self.height,
            "timestamp": self._started_at,
            "idle_time_limit": IDLE_TIME_LIMIT_SECONDS,
            "title": self.title,
            "env": {"SHELL": "/bin/bash", "TERM": "xterm-256color"},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as handle:
            handle.write(json.dumps(header) + "\n")
            for seconds, text in self.events:
                handle.write(json.dumps([round(seconds, 6), "o", text]) + "\n")
        return path

    def _now(self) -> float:
        return time.monotonic() - self._started + self._offset
