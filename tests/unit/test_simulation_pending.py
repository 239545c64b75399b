"""The pending record of a simulation step survives the trip to disk and back unchanged."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from healthpredict.pipelines.simulation_pending import (
    PendingStep,
    drop_predictions,
    load_pending,
    pending_paths,
    save_pending,
)
from healthpredict.pipelines.simulation_rows import StepRows


def _pending() -> PendingStep:
    now = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    features = {"age": "[70-80)", "time_in_hospital": 3, "a1c_result": None, "weight": 81.5}
    predictions = [
        {"request_id": "simulation:r:2", "position": i, "created_at": now, "model_name": "m",
         "model_version": "1", "probability": 0.125 * i, "risk_band": "low", "decision": i > 1,
         "features": features, "patient_key": "p1" if i else None, "encounter_key": f"e{i}"}
        for i in range(3)
    ]  # fmt: skip
    rows = StepRows(
        batch={"run": "r", "batch": 2, "n_set_aside": np.int64(4), "finished_at": now,
               "risk_quantiles": {"q50": np.float64(0.2)}, "alarms": ["data_drift: x"]},
        predictions=predictions,
        performance=None,
        models=[{"version": "1", "baseline": 0.61}],
    )  # fmt: skip
    return PendingStep(2, "decided", "1", None, rows, "batch 2: scored", 1, "retrain", ["s"])


def test_a_record_comes_back_as_it_was_written(tmp_path: Path) -> None:
    written = _pending()
    save_pending(tmp_path, written, predictions=True)
    read = load_pending(tmp_path, 2)
    assert read is not None
    assert read.rows.predictions == written.rows.predictions
    assert read.rows.batch == {**written.rows.batch, "n_set_aside": 4,
                               "risk_quantiles": {"q50": 0.2}}  # fmt: skip
    assert read.rows.batch["finished_at"] == written.rows.batch["finished_at"]
    assert (read.step, read.phase, read.action, read.labelled) == (2, "decided", "retrain", 1)
    assert read.rows.models == written.rows.models


def test_later_phases_rewrite_the_record_but_not_the_predictions(tmp_path: Path) -> None:
    written = _pending()
    save_pending(tmp_path, written, predictions=True)
    written.phase, written.challenger = "retrained", "3"
    save_pending(tmp_path, written, predictions=False)
    read = load_pending(tmp_path, 2)
    assert read is not None and read.challenger == "3" and len(read.rows.predictions) == 3
    written.phase = "committed"
    save_pending(tmp_path, written, predictions=False)
    drop_predictions(tmp_path, 2)
    assert not pending_paths(tmp_path, 2)[1].exists()
    committed = load_pending(tmp_path, 2)
    assert committed is not None and committed.rows.predictions == []
    assert load_pending(tmp_path, 3) is None
