"""The production streams a simulation replays: the natural timeline or the exchangeable control.

A :class:`Stream` is the initial champion's training data plus the batches that follow it.
The natural stream is the prepared timeline in time order. The exchangeable control splits the
initial window by patient and draws its batches from the half the reference does not hold, so
it has no drift by construction and any alarm on it is a false alarm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from healthpredict.data.pseudonym import PATIENT_KEY
from healthpredict.data.timeline import INITIAL_WINDOW, load_manifest, load_window
from healthpredict.settings import Settings


class SimulationError(RuntimeError):
    """The simulation cannot start or continue as asked (nothing is half-written)."""


@dataclass(frozen=True)
class Stream:
    """The initial champion's training data and the production batches that follow it."""

    kind: Literal["natural", "exchangeable"]
    reference: pd.DataFrame
    batches: list[pd.DataFrame]
    data_hash: str


def natural_stream(settings: Settings) -> Stream:
    """The prepared timeline in time order: initial window, then every batch."""
    manifest = load_manifest(settings.prepared_dir)
    load = lambda name: load_window(settings.prepared_dir, manifest, name)  # noqa: E731
    batches = [load(name) for name in manifest.batch_names]
    return Stream("natural", load(INITIAL_WINDOW), batches, manifest.data_hash)


def exchangeable_stream(settings: Settings, n_batches: int, batch_rows: int) -> Stream:
    """The exchangeable control: no drift by construction.

    The initial window's patients are split in two: one half is the reference (train the
    initial model on it), batches are random draws from the other half. Any alarm on such a
    stream is a false alarm.
    """
    manifest = load_manifest(settings.prepared_dir)
    initial = load_window(settings.prepared_dir, manifest, INITIAL_WINDOW)
    reference, pool = split_patients(initial, settings.seed)
    if batch_rows > len(pool):
        raise SimulationError(
            f"batches of {batch_rows:,} rows need a pool of more than {len(pool):,} rows"
        )
    rng = np.random.default_rng(settings.seed)
    batches = [
        pool.iloc[np.sort(rng.choice(len(pool), batch_rows, replace=False))].reset_index(drop=True)
        for _ in range(n_batches)
    ]
    return Stream("exchangeable", reference, batches, manifest.data_hash)


def split_patients(frame: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two halves of ``frame`` with no patient in both.

    Used for the control's reference/pool split and for the retrain's train/holdout split.
    """
    splitter = GroupShuffleSplit(n_splits=1, test_size=0.5, random_state=seed)
    first, second = next(splitter.split(frame, groups=frame[PATIENT_KEY]))
    return frame.iloc[first].reset_index(drop=True), frame.iloc[second].reset_index(drop=True)
