"""Which window's outcomes the policy acts on: the newest labelled one not acted on before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from healthpredict.loop.context import LoopContext
from healthpredict.loop.decide import decide_phase, newly_labelled
from healthpredict.loop.pending import PendingWindow, WindowRows
from healthpredict.loop.windows import WindowClock
from healthpredict.monitoring.policy import load_policies
from healthpredict.monitoring.store import make_engine
from healthpredict.monitoring.tables import create_schema, decisions, window_performance, windows
from healthpredict.settings import Settings

NOW = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture
def context(tmp_path: Path) -> LoopContext:
    engine = make_engine(f"sqlite:///{tmp_path / 's.db'}")
    create_schema(engine)
    settings = Settings.from_flat(data_dir=tmp_path)
    return LoopContext(
        settings,
        engine,
        "d",
        WindowClock.from_settings(settings.monitoring),
        "drift",
        load_policies(None)["drift"],
        slot=None,
        initial_data=lambda: None,  # type: ignore[arg-type]
        owns_champion=True,
    )


def _window(number: int, status: str = "completed", alarms: list[str] | None = None) -> dict:
    start = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=7 * (number - 1))
    return {
        "deployment": "d",
        "window": number,
        "window_start": start,
        "window_end": start + timedelta(days=7),
        "status": status,
        "n_predictions": 10,
        "n_rejected": 0,
        "model_version": "1",
        "champion_after": "1",
        "scenarios": "",
        "alarms": alarms or [],
        "finished_at": NOW,
    }


def _performance(number: int, share: float, alarms: list[str] | None = None) -> dict[str, Any]:
    return {
        "deployment": "d",
        "window": number,
        "model_version": "1",
        "known_at_window": number,
        "n_labelled": int(share * 10),
        "labelled_share": share,
        "estimated_auc": 0.6,
        "ece": 0.01,
        "observed_rate": 0.1,
        "predicted_rate": 0.1,
        "alarms": alarms or [],
    }


def _decision(number: int, labelled: int | None, outcome: str = "") -> dict[str, Any]:
    return {
        "deployment": "d",
        "window": number,
        "labelled_window": labelled,
        "action": "none",
        "reasons": [],
        "outcome": outcome,
        "champion_version": "1",
        "decided_at": NOW,
    }


def _insert(context: LoopContext, table: Any, rows: list[dict[str, Any]]) -> None:
    with context.engine.begin() as connection:
        connection.execute(insert(table), rows)


def _pending(number: int, status: str = "completed") -> PendingWindow:
    return PendingWindow(number, "monitored", status, "1", WindowRows(window=_window(number)))


def test_the_newest_labelled_window_not_acted_on(context: LoopContext) -> None:
    _insert(context, windows, [_window(1), _window(2), _window(3, "quarantined"), _window(4)])
    _insert(
        context,
        window_performance,
        [_performance(1, 1.0), _performance(2, 0.9), _performance(4, 0.5)],
    )
    _insert(context, decisions, [_decision(2, 1)])
    assert newly_labelled(context, _pending(5)) == 2  # 4 is not labelled enough yet
    _insert(context, decisions, [_decision(3, 2)])
    assert newly_labelled(context, _pending(5)) is None  # 2 was acted on; 3 is quarantined


def test_labels_measured_in_an_empty_window_reach_the_next_decision(context: LoopContext) -> None:
    alarm = "realised_performance: AUC 0.55 below the estimate 0.62"
    _insert(context, windows, [_window(1, alarms=["prediction_drift: PSI 0.2"])])
    # Window 2 had no traffic: it measured window 1's outcomes and decided nothing.
    _insert(context, window_performance, [_performance(1, 1.0, [alarm])])
    empty = _pending(2, status="empty")
    decide_phase(context, empty)
    assert empty.labelled is None and empty.action == "none"
    nxt = _pending(3)
    decide_phase(context, nxt)
    assert nxt.labelled == 1 and nxt.action == "retrain"
    assert nxt.reasons == ["prediction_drift: PSI 0.2", alarm]


def test_a_promotion_starts_the_cooldown(context: LoopContext) -> None:
    alarm = "calibration: observed rate 0.2 vs predicted 0.1"
    _insert(context, windows, [_window(1), _window(2)])
    _insert(context, window_performance, [_performance(2, 1.0, [alarm])])
    _insert(context, decisions, [_decision(2, 1, outcome="promoted")])
    pending = _pending(3)
    decide_phase(context, pending)
    assert pending.labelled == 2 and pending.action == "cooldown"
