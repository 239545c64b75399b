"""Cutting the timeline, persisting it atomically, and patient-grouped folds."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pytest

from healthpredict.data import timeline as timeline_module
from healthpredict.data.prepare import TARGET, clean
from healthpredict.data.pseudonym import PATIENT_KEY, SEQUENCE, pseudonymise
from healthpredict.data.timeline import (
    INITIAL_WINDOW,
    TimelineError,
    cut_timeline,
    grouped_folds,
    load_manifest,
    load_test_window,
    load_window,
    write_timeline,
)
from healthpredict.data.validate import validate_raw
from tests.synthetic import make_raw_frame

EXTRAS = {
    "source": "test",
    "source_sha256": "0" * 64,
    "config": {},
    "validation": "",
    "cleaning": "",
}


@pytest.fixture
def ordered() -> pd.DataFrame:
    cleaned, _ = clean(validate_raw(make_raw_frame(1000, seed=3)).valid)
    return pseudonymise(cleaned, b"salt")


def test_windows_cover_everything_once_in_time_order(ordered: pd.DataFrame) -> None:
    cut = cut_timeline(ordered, 0.5, 4, 0.2)
    pieces = [cut.initial, *cut.batches]
    assert len(cut.batches) == 4
    combined = pd.concat(pieces)
    assert list(combined[SEQUENCE]) == list(ordered[SEQUENCE])
    assert all(p[SEQUENCE].iloc[-1] < q[SEQUENCE].iloc[0] for p, q in itertools.pairwise(pieces))
    assert len(cut.initial) == round(len(ordered) * 0.5)


def test_test_window_is_newest_and_outside_training(ordered: pd.DataFrame) -> None:
    cut = cut_timeline(ordered, 0.8, 2, 0.2)
    assert cut.test_start_sequence > cut.initial[SEQUENCE].max()
    with pytest.raises(TimelineError, match="overlap"):
        cut_timeline(ordered, 0.9, 2, 0.2)


def test_too_many_batches_is_refused(ordered: pd.DataFrame) -> None:
    with pytest.raises(TimelineError, match="non-empty batches"):
        cut_timeline(ordered.head(10), 0.5, 8, 0.2)


def test_round_trip_with_manifest(ordered: pd.DataFrame, tmp_path: Path) -> None:
    cut = cut_timeline(ordered, 0.6, 3, 0.2)
    manifest = write_timeline(cut, tmp_path / "prepared", EXTRAS, pd.DataFrame({"x": []}))
    loaded = load_manifest(tmp_path / "prepared")
    assert loaded == manifest and loaded.data_hash == manifest.data_hash
    assert loaded.batch_names == ["batch_001", "batch_002", "batch_003"]
    initial = load_window(tmp_path / "prepared", loaded, INITIAL_WINDOW)
    pd.testing.assert_frame_equal(initial, cut.initial)
    test = load_test_window(tmp_path / "prepared", loaded)
    assert len(test) == round(len(ordered) * 0.2)
    assert test[SEQUENCE].min() == cut.test_start_sequence
    assert sum(w.positives for w in loaded.windows) == ordered[TARGET].sum()


def test_tampered_window_is_detected(ordered: pd.DataFrame, tmp_path: Path) -> None:
    manifest = write_timeline(
        cut_timeline(ordered, 0.6, 2, 0.2), tmp_path / "p", EXTRAS, pd.DataFrame()
    )
    ordered.head(3).to_parquet(tmp_path / "p" / "batch_001.parquet")
    with pytest.raises(TimelineError, match="differs from the manifest"):
        load_window(tmp_path / "p", manifest, "batch_001")


def test_failed_write_leaves_previous_timeline_intact(
    ordered: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "prepared"
    first = write_timeline(cut_timeline(ordered, 0.6, 2, 0.2), directory, EXTRAS, pd.DataFrame())
    real_write = timeline_module._write_window

    def failing(name: str, frame: pd.DataFrame, folder: Path) -> object:
        if name == "batch_002":
            raise OSError("disk full")
        return real_write(name, frame, folder)

    monkeypatch.setattr(timeline_module, "_write_window", failing)
    with pytest.raises(OSError, match="disk full"):
        write_timeline(cut_timeline(ordered, 0.5, 4, 0.2), directory, EXTRAS, pd.DataFrame())
    assert load_manifest(directory) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_missing_timeline_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(TimelineError, match="healthpredict data prepare"):
        load_manifest(tmp_path / "nothing")


def test_no_patient_in_two_folds(ordered: pd.DataFrame) -> None:
    folds = grouped_folds(ordered[TARGET], ordered[PATIENT_KEY], n_splits=5, seed=0)
    assert len(folds) == 5
    seen: set[str] = set()
    for _, held_out in folds:
        patients = set(ordered[PATIENT_KEY].iloc[held_out])
        assert not patients & seen
        seen |= patients
    assert seen == set(ordered[PATIENT_KEY])
