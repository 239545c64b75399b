"""The production streams a replay sends, and the requests and outcomes it makes of them.

A :class:`Stream` is the initial champion's training data plus the batches that follow it: the
prepared timeline in time order (natural), or the exchangeable control (batches drawn from the
half of the initial window's patients that the reference does not hold, so any alarm on it is
a false alarm). Batch ``n`` is replayed as monitoring window ``n``: its encounters are spread
over that window in time order and carry that time as their ``discharge_time``.

The prepared timeline keeps no identifier in clear, so a replay sends stand-ins the service
then hashes as it hashes real ones: the encounter's position in time as its ``encounter_id``
and a number per patient as its ``patient_nbr``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from healthpredict.data.prepare import TARGET
from healthpredict.data.pseudonym import PATIENT_KEY, SEQUENCE
from healthpredict.data.timeline import INITIAL_WINDOW, load_manifest, load_window
from healthpredict.loop.context import LoopError
from healthpredict.loop.models import ModelSlot
from healthpredict.loop.windows import Window, records_of
from healthpredict.serving.schemas import DISCHARGE_TIME
from healthpredict.settings import Settings


@dataclass(frozen=True)
class Stream:
    """The initial champion's training data and the production batches that follow it."""

    kind: Literal["natural", "exchangeable"]
    reference: pd.DataFrame
    batches: list[pd.DataFrame]
    data_hash: str

    @property
    def first_sequence(self) -> int:
        """The oldest encounter any batch holds."""
        return int(min(batch[SEQUENCE].min() for batch in self.batches))

    def patient_numbers(self) -> dict[str, int]:
        """A stand-in ``patient_nbr`` per patient key, stable for the whole stream."""
        keys = pd.concat([self.reference[PATIENT_KEY], *(b[PATIENT_KEY] for b in self.batches)])
        return {str(key): number for number, key in enumerate(pd.unique(keys), start=1)}


def natural_stream(settings: Settings) -> Stream:
    """The prepared timeline in time order: initial window, then every batch."""
    manifest = load_manifest(settings.prepared_dir)
    batches = [load_window(settings.prepared_dir, manifest, n) for n in manifest.batch_names]
    initial = load_window(settings.prepared_dir, manifest, INITIAL_WINDOW)
    return Stream("natural", initial, batches, manifest.data_hash)


def exchangeable_stream(settings: Settings, n_batches: int, batch_rows: int) -> Stream:
    """The exchangeable control: no drift by construction.

    The initial window's patients are split in two: one half is the reference (the initial
    model is trained on it), batches are random draws from the other half.

    Raises:
        LoopError: The pool is too small for batches of ``batch_rows``.
    """
    manifest = load_manifest(settings.prepared_dir)
    initial = load_window(settings.prepared_dir, manifest, INITIAL_WINDOW)
    reference, pool = split_patients(initial, settings.seed)
    if batch_rows > len(pool):
        raise LoopError(f"batches of {batch_rows:,} rows need a pool of more than {len(pool):,}")
    rng = np.random.default_rng(settings.seed)
    batches = [
        pool.iloc[np.sort(rng.choice(len(pool), batch_rows, replace=False))].reset_index(drop=True)
        for _ in range(n_batches)
    ]
    return Stream("exchangeable", reference, batches, manifest.data_hash)


def split_patients(frame: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two halves of ``frame`` with no patient in both."""
    splitter = GroupShuffleSplit(n_splits=1, test_size=0.5, random_state=seed)
    first, second = next(splitter.split(frame, groups=frame[PATIENT_KEY]))
    return frame.iloc[first].reset_index(drop=True), frame.iloc[second].reset_index(drop=True)


_REPEAT = 10**10  # above any position in time: repeats of a row get ids of their own


def encounter_id(frame: pd.DataFrame) -> pd.Series:
    """The stand-in ``encounter_id`` of each row: its position in time, from 1.

    A scenario that resamples a batch repeats some rows; each repeat is an encounter of its
    own (the same patient, alike), so the k-th repeat gets ``position + k * 10**10``.
    """
    sequence = frame[SEQUENCE].astype("int64")
    return sequence + 1 + sequence.groupby(sequence).cumcount().astype("int64") * _REPEAT


def requests(batch: pd.DataFrame, window: Window, patients: dict[str, int]) -> list[dict[str, Any]]:
    """The prediction requests of one batch, spread over ``window`` in time order."""
    records = records_of(batch)
    span = window.end - window.start
    order = np.argsort(batch[SEQUENCE].to_numpy(), kind="stable")
    ids = encounter_id(batch).tolist()
    keys = batch[PATIENT_KEY].astype(str).tolist()
    for rank, row in enumerate(order):
        record = records[row]
        record["encounter_id"] = int(ids[row])
        record["patient_nbr"] = patients[keys[row]]
        record[DISCHARGE_TIME] = (window.start + span * ((rank + 0.5) / len(order))).isoformat()
    return records


def outcomes(batch: pd.DataFrame) -> list[dict[str, Any]]:
    """The batch's 30-day outcomes as a hospital sends them (labels as injected)."""
    return [
        {"encounter_id": int(e), "readmitted": bool(y)}
        for e, y in zip(encounter_id(batch), batch[TARGET], strict=True)
    ]


def require_unseen(slot: ModelSlot, version: str, stream: Stream) -> None:
    """Refuse a start from a model that has seen the stream; name one that has not.

    Raises:
        LoopError: ``version`` was trained on production data or on encounters at or after
            the stream's first (its realised figures would be inflated).
    """
    if stream.kind == "exchangeable":
        return  # its initial model is trained here, on the other half of the patients
    first = stream.first_sequence
    reason = _seen(slot.tags(version), first)
    if reason is None:
        return
    clean = unseen_version(slot, stream)
    instead = (
        f"start from v{clean} instead (--initial-version {clean})"
        if clean
        else "train one on the initial window first (`healthpredict train`)"
    )
    raise LoopError(
        f"v{version} {reason}, and the replay starts at sequence {first:,}: it would score "
        f"encounters and patients it has already seen; {instead}"
    )


def unseen_version(slot: ModelSlot, stream: Stream) -> str | None:
    """The champion if it has not seen the stream, else the newest version that has not."""
    first, champion = stream.first_sequence, slot.champion_version()
    if stream.kind == "exchangeable" or _seen(slot.tags(champion), first) is None:
        return champion
    clean = [v for v in slot.versions() if _seen(slot.tags(v), first) is None]
    return clean[-1] if clean else None


def _seen(tags: dict[str, str], first: int) -> str | None:
    if tags.get("training_production"):
        return f"was trained on production data ({tags['training_production']})"
    window = tags.get("training_window", "")
    try:
        last = int(window.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return "records no training window"
    return None if last < first else f"was trained on encounters up to sequence {last:,}"
