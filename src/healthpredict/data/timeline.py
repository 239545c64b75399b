"""The timeline: an initial training window, then production batches, persisted with a manifest.

Encounters are ordered by ``encounter_id`` (the extract's proxy for time). The oldest share forms
the initial training window; the rest is cut into production batches that arrive later. The
temporal test window is the newest ``test_fraction`` of encounters: it lies inside the batches
and never overlaps the training window.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from healthpredict.data.prepare import TARGET
from healthpredict.data.pseudonym import SEQUENCE
from healthpredict.errors import HealthPredictError

MANIFEST_FILE = "manifest.json"
INITIAL_WINDOW = "initial"


class TimelineError(HealthPredictError):
    """The prepared timeline is missing, inconsistent, or cannot be cut as asked."""


@dataclass(frozen=True)
class WindowInfo:
    """One persisted slice of the timeline."""

    name: str
    file: str
    rows: int
    positives: int
    first_sequence: int
    last_sequence: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What was prepared, from what, and the checksum of every file."""

    source: str
    source_sha256: str
    created_at: str
    test_start_sequence: int
    windows: list[WindowInfo]
    config: dict[str, float | int]
    validation: str
    cleaning: str
    rejected_rows: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def data_hash(self) -> str:
        """A short hash identifying exactly this data: source plus every window's checksum."""
        payload = json.dumps([self.source_sha256, [w.sha256 for w in self.windows]])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def window(self, name: str) -> WindowInfo:
        """Return the window called ``name``."""
        for info in self.windows:
            if info.name == name:
                return info
        raise TimelineError(f"the manifest has no window {name!r}")

    @property
    def batch_names(self) -> list[str]:
        """Names of the production batches, in time order."""
        return [w.name for w in self.windows if w.name != INITIAL_WINDOW]

    def to_json(self) -> str:
        """Serialise, with the derived data hash for readers of the file."""
        return json.dumps({**asdict(self), "data_hash": self.data_hash}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse a manifest written by :meth:`to_json`."""
        payload = json.loads(text)
        payload.pop("data_hash", None)
        payload["windows"] = [WindowInfo(**w) for w in payload["windows"]]
        return cls(**payload)


@dataclass(frozen=True)
class Timeline:
    """The cut timeline in memory."""

    initial: pd.DataFrame
    batches: list[pd.DataFrame]
    test_start_sequence: int


def cut_timeline(
    ordered: pd.DataFrame, initial_fraction: float, n_batches: int, test_fraction: float
) -> Timeline:
    """Cut time-ordered encounters into the initial window and ``n_batches`` later batches.

    Raises:
        TimelineError: Too few rows for the requested cut, or the test window would overlap
            the initial window.
    """
    n_rows = len(ordered)
    n_initial = round(n_rows * initial_fraction)
    n_test = round(n_rows * test_fraction)
    if n_initial + n_test > n_rows:
        raise TimelineError("the test window would overlap the initial training window")
    if n_initial < 1 or n_rows - n_initial < n_batches:
        raise TimelineError(
            f"{n_rows:,} encounters cannot make an initial window of {initial_fraction:.0%} "
            f"and {n_batches} non-empty batches"
        )
    boundaries = np.linspace(n_initial, n_rows, n_batches + 1).round().astype(int)
    batches = [ordered.iloc[a:b].reset_index(drop=True) for a, b in itertools.pairwise(boundaries)]
    test_start = int(ordered[SEQUENCE].iloc[n_rows - n_test])
    return Timeline(ordered.iloc[:n_initial].reset_index(drop=True), batches, test_start)


def batch_name(index: int) -> str:
    """Name of production batch ``index`` (1-based), sortable as text."""
    return f"batch_{index:03d}"


def write_timeline(
    timeline: Timeline, directory: Path, extras: dict[str, object], rejected: pd.DataFrame
) -> Manifest:
    """Persist the timeline as Parquet plus ``manifest.json``, replacing any earlier one whole.

    Everything is written to a sibling folder first and swapped in at the end, so an error or a
    killed process never leaves a half-written timeline in ``directory``.
    """
    staging = directory.with_name(directory.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        frames = {INITIAL_WINDOW: timeline.initial}
        frames |= {batch_name(i + 1): b for i, b in enumerate(timeline.batches)}
        windows = [_write_window(name, frame, staging) for name, frame in frames.items()]
        rejected.to_parquet(staging / "rejected.parquet", index=False)
        manifest = Manifest(
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            test_start_sequence=timeline.test_start_sequence,
            windows=windows,
            rejected_rows=len(rejected),
            **extras,  # type: ignore[arg-type]
        )
        (staging / MANIFEST_FILE).write_text(manifest.to_json())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _swap_in(staging, directory)
    return manifest


def _write_window(name: str, frame: pd.DataFrame, directory: Path) -> WindowInfo:
    path = directory / f"{name}.parquet"
    frame.to_parquet(path, index=False)
    return WindowInfo(
        name=name,
        file=path.name,
        rows=len(frame),
        positives=int(frame[TARGET].sum()),
        first_sequence=int(frame[SEQUENCE].iloc[0]),
        last_sequence=int(frame[SEQUENCE].iloc[-1]),
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def _swap_in(staging: Path, directory: Path) -> None:
    retired = directory.with_name(directory.name + ".retired")
    shutil.rmtree(retired, ignore_errors=True)
    if directory.exists():
        directory.rename(retired)
    staging.rename(directory)
    shutil.rmtree(retired, ignore_errors=True)


def load_manifest(directory: Path) -> Manifest:
    """Read the manifest of a prepared timeline."""
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise TimelineError(f"no prepared data in {directory}: run `healthpredict data prepare`")
    return Manifest.from_json(path.read_text())


def load_window(directory: Path, manifest: Manifest, name: str) -> pd.DataFrame:
    """Load one window, checking it is the file the manifest describes."""
    info = manifest.window(name)
    path = directory / info.file
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != info.sha256:
        raise TimelineError(f"{path} is missing or differs from the manifest: prepare again")
    return pd.read_parquet(path)


def load_test_window(directory: Path, manifest: Manifest) -> pd.DataFrame:
    """The temporal test window: the newest encounters, from the batches that hold them."""
    holding = [
        w.name for w in manifest.windows[1:] if w.last_sequence >= manifest.test_start_sequence
    ]
    frame = pd.concat([load_window(directory, manifest, name) for name in holding])
    return frame[frame[SEQUENCE] >= manifest.test_start_sequence].reset_index(drop=True)


def patient_groups(patient_keys: pd.Series) -> np.ndarray:
    """Integer group labels for scikit-learn splitters.

    GroupKFold(shuffle=True) takes about a minute on 60k string keys and milliseconds on codes.
    """
    codes, _ = pd.factorize(patient_keys)
    return codes


def grouped_folds(
    target: pd.Series, groups: pd.Series, n_splits: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Patient-grouped folds: no patient appears in two folds.

    Not stratified: StratifiedGroupKFold takes seconds on 60k patients, and folds of thousands
    of encounters hold the 11 % positive rate closely anyway.
    """
    splitter = GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(target)), target, patient_groups(groups)))
