"""The scripted walkthrough behind ``make walkthrough``: the whole story, narrated and recorded.

Set up, prepare, train, serve and call the API, replay production with injected drift and
retraining, let the service pick up the new champion, write the dashboard, tear down. Every
step prints a few lines of narration, then the exact commands it runs and their output. The
session is saved as an asciinema cast (``walkthrough/walkthrough.cast``) with a screenshot of
the dashboard (``walkthrough/dashboard.png``): the reproducible stand-in for a video.

Everything is written under ``walkthrough/`` (``HEALTHPREDICT_DATA_DIR=walkthrough/data``), so
the project's own ``data/`` is never touched; the data folder is removed at the end.

Usage: ``python scripts/walkthrough.py [--dry-run] [--keep-data] [--output-dir DIR]``
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# The helpers are sibling scripts, not a package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from walkthrough_cast import CastRecorder
from walkthrough_service import (
    ROOT,
    VENV_BIN,
    Session,
    StepError,
    free_port,
    placeholders,
    screenshot_dashboard,
    start_server,
    stop_server,
)

TITLE, RESET = "\x1b[1;36m", "\x1b[0m"
PREDICT = (
    'curl -s -X POST {url}/predict -H "X-API-Key: $HEALTHPREDICT_API_KEY" '
    "-H 'content-type: application/json' -d @examples/encounter.json"
)
SUMMARY = (
    "python -c 'import json, sys; a = json.load(sys.stdin); "
    'print("model version", a["model_version"], "| probability", round(a["probability"], 3), '
    '"| risk band", a["risk_band"])\''
)


@dataclass(frozen=True)
class Action:
    """Python work inside a step (starting the server, a screenshot), with a label for --dry-run."""

    label: str
    run: Callable[[Session], None]


@dataclass(frozen=True)
class Step:
    """One chapter of the story: narration, then shell commands and actions, in order."""

    title: str
    narration: tuple[str, ...]
    items: tuple[str | Action, ...]


def build_steps() -> list[Step]:
    """The story, in order."""
    return [
        Step(
            "Set up",
            (
                "One command creates .venv and installs the locked dependencies (a no-op when",
                "nothing changed). Everything here goes to walkthrough/data, never to data/,",
                "and starts from an empty folder (a failed run leaves its data for a look).",
            ),
            (
                "rm -rf {data}",
                "make --no-print-directory install",
                "healthpredict config | grep -E '^(data_source|data_dir|tracking_uri)'",
            ),
        ),
        Step(
            "Prepare the data",
            (
                "Open the raw extract, check every row against the written contract, clean,",
                "replace patient ids by salted hashes, and cut the timeline: the oldest 30 %",
                "trains the first model, seven later batches play production.",
            ),
            ("healthpredict data prepare",),
        ),
        Step(
            "Train, evaluate, register",
            (
                "One scikit-learn pipeline (features + calibrated LightGBM) and a logistic",
                "baseline, evaluated on the newest 20 % with patient-grouped bootstrap intervals.",
                "The first good model becomes the champion in the MLflow registry.",
            ),
            ("healthpredict train",),
        ),
        Step(
            "Serve the champion and call the API",
            (
                "The service loads the registry's champion and answers with a calibrated risk,",
                "a risk band, a decision and the reasons. Without the API key: 401.",
            ),
            (
                Action(
                    "start `healthpredict serve` on a free loopback port, wait for /ready",
                    start_server,
                ),
                PREDICT + " | python -m json.tool",
                "curl -s -o /dev/null -w 'without a key: HTTP %{{http_code}}\\n' "
                "-X POST {url}/predict -H 'content-type: application/json' "
                "-d @examples/encounter.json",
            ),
        ),
        Step(
            "Inject drift and watch the retraining",
            (
                "Replay seven weeks of traffic with injected drift: older patients (week 2),",
                "HbA1c recoded upstream (week 3: the service refuses those records, the window",
                "is quarantined), a follow-up programme changing who is readmitted (from week 4),",
                "a readmission surge (week 6). First a what-if that never retrains (in process,",
                "registry untouched), then the real one: the replay starts its own service, sends",
                "each week through /predict/batch, posts the outcomes a week later to /outcomes,",
                "and monitors each window of the service's log; alarms retrain, the gate decides.",
            ),
            ("healthpredict simulate --policy never --what-if", "healthpredict simulate"),
        ),
        Step(
            "The running service picks up the new champion",
            (
                "If the gate promoted a challenger, the service swaps to it without a restart",
                "(deployed, it checks the alias every 30 s; here the admin call does it now).",
            ),
            (
                'curl -s -X POST {url}/admin/reload -H "X-Admin-Key: $HEALTHPREDICT_ADMIN_KEY"'
                " | python -c 'import json, sys; print(json.load(sys.stdin)[\"outcome\"])'",
                PREDICT + " | " + SUMMARY,
                Action("stop the service", stop_server),
            ),
        ),
        Step(
            "Open the dashboard",
            (
                "Drift, estimated and realised AUC, decisions and model versions per batch,",
                "in one self-contained HTML page, kept beside the recording with a screenshot.",
            ),
            (
                "healthpredict report",
                Action(
                    "screenshot the dashboard in headless Chromium (Playwright)",
                    screenshot_dashboard,
                ),
                "cp {data}/reports/simulation/dashboard.html {out}/",
            ),
        ),
        Step(
            "Tear down",
            ("Stop everything started here and delete the walkthrough's data folder.",),
            (Action("stop the service if it still runs", stop_server), "rm -rf {data}"),
        ),
    ]


def environment(data_dir: Path) -> dict[str, str]:
    """The commands' environment: the venv first, own data folder, fresh keys, quick settings."""
    env = dict(os.environ)
    env |= {
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",  # lines reach the recording as they happen
        "HEALTHPREDICT_DATA_DIR": str(data_dir),
        "HEALTHPREDICT_API_KEY": secrets.token_urlsafe(32),
        "HEALTHPREDICT_ADMIN_KEY": secrets.token_urlsafe(32),
        # Fewer resamples and folds than the defaults: the same story in fewer minutes.
        "HEALTHPREDICT_BOOTSTRAP_ROUNDS": env.get("HEALTHPREDICT_BOOTSTRAP_ROUNDS", "200"),
        "HEALTHPREDICT_CV_FOLDS": env.get("HEALTHPREDICT_CV_FOLDS", "3"),
        # The service only reloads on the admin call: no registry polling while the
        # simulation writes to the same SQLite store.
        "HEALTHPREDICT_MODEL_POLL_SECONDS": "0",
    }
    return env


def narrate(recorder: CastRecorder, number: int, total: int, step: Step) -> None:
    """The step's title and narration, with a moment to read them in the replay."""
    recorder.line()
    recorder.line(f"{TITLE}== {number}/{total} {step.title} =={RESET}")
    for sentence in step.narration:
        recorder.line(f"   {sentence}")
    recorder.pause(3.0)


def dry_run(steps: list[Step], output_dir: Path) -> None:
    """List the steps, their narration and what each would run, and run nothing."""
    for number, step in enumerate(steps, start=1):
        print(f"{number}. {step.title}")
        for sentence in step.narration:
            print(f"     {sentence}")
        for item in step.items:
            if isinstance(item, Action):
                print(f"   [{item.label}]")
            else:
                values = placeholders(output_dir, "http://127.0.0.1:<port>")
                print(f"   $ {item.format(**values)}")


def play(steps: list[Step], session: Session) -> None:
    """Run every step in order; the first failure stops the story."""
    for number, step in enumerate(steps, start=1):
        narrate(session.recorder, number, len(steps), step)
        for item in step.items:
            if isinstance(item, str):
                session.run(item)
            else:
                item.run(session)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, then list or play the walkthrough; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="list the steps, run nothing")
    parser.add_argument("--keep-data", action="store_true", help="skip deleting the data")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "walkthrough")
    options = parser.parse_args(argv)
    steps = build_steps()
    if options.keep_data:
        steps = steps[:-1]
    if options.dry_run:
        dry_run(steps, options.output_dir.resolve())
        return 0
    output_dir = options.output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    recorder = CastRecorder(title="Health Predict: the walkthrough")
    session = Session(output_dir, recorder, environment(output_dir / "data"), free_port())
    started = time.monotonic()
    try:
        play(steps, session)
        status = 0
    except (StepError, OSError) as error:
        recorder.line(f"\nwalkthrough stopped: {error} (data kept in {session.data_dir})")
        status = 1
    finally:
        stop_server(session)
        cast = recorder.save(output_dir / "walkthrough.cast")
    minutes = (time.monotonic() - started) / 60
    print(f"\nrecording: {cast} ({minutes:.1f} min; replay: asciinema play {cast})")
    return status


if __name__ == "__main__":
    sys.exit(main())
