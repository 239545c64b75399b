"""`make walkthrough` stays runnable: its steps, the commands they call, and its recording format.

The walkthrough itself takes minutes and is run by hand (docs/walkthrough.md); these checks
take a second and catch a renamed command, a broken script, or an unplayable recording.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import typer

from healthpredict.cli import app

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "walkthrough.py"
STORY = (
    "Set up",
    "Prepare the data",
    "Train",
    "Serve",
    "drift",
    "new champion",
    "dashboard",
    "Tear down",
)


def _script_module(name: str) -> ModuleType:
    # The walkthrough's helpers are sibling scripts, imported the way the script imports them.
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))
    return importlib.import_module(name)


def test_dry_run_lists_the_story_and_runs_nothing(tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--output-dir", str(output)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    titles = re.findall(r"^(\d+)\. (.+)$", result.stdout, flags=re.MULTILINE)
    assert [int(number) for number, _ in titles] == list(range(1, len(STORY) + 1))
    for (_, title), expected in zip(titles, STORY, strict=True):
        assert expected in title
    for command in ("data prepare", "train", "simulate", "report", "/predict", "/admin/reload"):
        assert command in result.stdout, f"--dry-run does not show {command!r}"
    assert not output.exists(), "--dry-run must not write anything"


def test_keep_data_skips_the_tear_down() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--keep-data"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "Tear down" not in result.stdout


def test_every_healthpredict_command_of_the_story_exists() -> None:
    walkthrough = _script_module("walkthrough")
    root = typer.main.get_command(app)
    commands = [item for step in walkthrough.build_steps() for item in step.items]
    used = [c.split("|")[0].split() for c in commands if isinstance(c, str)]
    for words in (w for w in used if w and w[0] == "healthpredict"):
        group = root
        for word in words[1:]:
            if word.startswith("-"):
                break
            # Typer vendors its own click: look for subcommands rather than a click class.
            subcommands = getattr(group, "commands", {})
            assert word in subcommands, f"`{' '.join(words)}`: no command {word!r}"
            group = subcommands[word]


def test_recording_is_an_asciinema_v2_cast(tmp_path: Path) -> None:
    recorder = _script_module("walkthrough_cast").CastRecorder(title="test", echo_to=None)
    recorder.line("first")
    recorder.pause(2.0)
    recorder.write("second\nthird\n")
    path = recorder.save(tmp_path / "session.cast")

    header, *events = [json.loads(line) for line in path.read_text().splitlines()]
    assert header["version"] == 2
    assert header["width"] > 0 and header["height"] > 0
    assert [kind for _, kind, _ in events] == ["o", "o"]
    assert events[0][2] == "first\r\n"
    assert events[1][2] == "second\r\nthird\r\n", "a player needs CR LF line ends"
    assert events[1][0] - events[0][0] >= 2.0, "a pause gives reading time in the replay"


@pytest.mark.parametrize(
    ("path", "pattern"),
    [
        ("Makefile", r"^walkthrough: install.*\n\t\$\(PYTHON\) scripts/walkthrough\.py"),
        (".gitignore", r"^/walkthrough/$"),
    ],
)
def test_make_target_and_ignored_output(path: str, pattern: str) -> None:
    assert re.search(pattern, (ROOT / path).read_text(), flags=re.MULTILINE)
