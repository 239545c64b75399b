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

from collections.abc import Callable
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
    manifest = load_manifest(settings.data.prepared_dir)
    batches = [load_window(settings.data.prepared_dir, manifest, n) for n in manifest.batch_names]
    initial = load_window(settings.data.prepared_dir, manifest, INITIAL_WINDOW)
    return Stream("natural", initial, batches, manifest.data_hash)


def exchangeable_stream(settings: Settings, n_batches: int, batch_rows: int) -> Stream:
    """The exchangeable control: no drift by construction.

    The initial window's patients are split in two: one half is the reference (the initial
    model is trained on it), batches are random draws from the other half.

    Raises:
        LoopError: The pool is too small for batches of ``batch_rows``.
    """
    manifest = load_manifest(settings.data.prepared_dir)
    initial = load_window(settings.data.prepared_dir, manifest, INITIAL_WINDOW)
    reference, pool = split_patients(initial, settings.training.seed)
    if batch_rows > len(pool):
        raise LoopError(f"batches of {batch_rows:,} rows need a pool of more than {len(pool):,}")
    rng = np.random.default_rng(settings.training.seed)
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


_REPEAT = 10**7  # above any position in time; the k-th repeat of a row adds k times this


class StandInIds:
    """The stand-in ``encounter_id`` of every row a replay sends, batch after batch.

    A row's id is its position in time plus one the first time it is sent, and ``k * 10**7``
    more the k-th time after: a scenario that resamples a batch repeats rows, and the
    exchangeable control draws the same encounter into several batches; each repeat is an
    encounter of its own (alike, of the same patient), so no two sent encounters share an id
    and no outcome contradicts another. Batches are counted in order from the first, so a
    replay resumed at batch n gives the same ids as before.
    """

    def __init__(self, batch: Callable[[int], pd.DataFrame]):
        """Number the rows of ``batch(1)``, ``batch(2)``, ... as they are asked for."""
        self._batch = batch
        self._sent: dict[int, int] = {}
        self._ids: dict[int, pd.Series] = {}

    def __call__(self, number: int) -> pd.Series:
        """The ids of batch ``number``'s rows, in row order."""
        while len(self._ids) < number:
            self._ids[len(self._ids) + 1] = self._number(self._batch(len(self._ids) + 1))
        return self._ids[number]

    def _number(self, frame: pd.DataFrame) -> pd.Series:
        sequence = frame[SEQUENCE].astype("int64").reset_index(drop=True)
        earlier = sequence.map(self._sent).fillna(0).astype("int64")
        repeat = earlier + sequence.groupby(sequence).cumcount().astype("int64")
        counts = sequence.value_counts()
        for position, count in zip(counts.index.tolist(), counts.tolist(), strict=True):
            self._sent[position] = self._sent.get(position, 0) + count
        return sequence + 1 + repeat * _REPEAT


def encounter_id(frame: pd.DataFrame) -> pd.Series:
    """The stand-in ids of one batch sent on its own (see :class:`StandInIds`)."""
    return StandInIds(lambda _number: frame)(1)


def requests(
    batch: pd.DataFrame, ids: pd.Series, window: Window, patients: dict[str, int]
) -> list[dict[str, Any]]:
    """The prediction requests of one batch (its stand-in ``ids``), spread over ``window`` in
    time order."""
    records = records_of(batch)
    span = window.end - window.start
    order = np.argsort(batch[SEQUENCE].to_numpy(), kind="stable")
    stand_ins = ids.tolist()
    keys = batch[PATIENT_KEY].astype(str).tolist()
    for rank, row in enumerate(order):
        record = records[row]
        record["encounter_id"] = int(stand_ins[row])
        record["patient_nbr"] = patients[keys[row]]
        record[DISCHARGE_TIME] = (window.start + span * ((rank + 0.5) / len(order))).isoformat()
    return records


def outcomes(batch: pd.DataFrame, ids: pd.Series) -> list[dict[str, Any]]:
    """The batch's 30-day outcomes as a hospital sends them (labels as injected)."""
    return [
        {"encounter_id": int(e), "readmitted": bool(y)}
        for e, y in zip(ids, batch[TARGET], strict=True)
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
