"""The monitor phase: what a window of the prediction log says, before and after outcomes arrive.

For the window itself: quality (the share of records the service refused, and the contract
checked again on what it logged: a window breaking it is quarantined with the reason), then,
for each model version that served in it, data drift against that version's own reference,
prediction drift against its baseline predictions, the label-free performance estimate and
their alarms. For earlier windows whose outcomes have arrived since they were last measured
(and the window itself, when outcomes come at once): realised performance and calibration,
with patient-grouped intervals, and the label alarms.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select

from healthpredict.data.prepare import TARGET
from healthpredict.data.pseudonym import ENCOUNTER_KEY, PATIENT_KEY
from healthpredict.loop.context import LoopContext
from healthpredict.loop.equity import attach_equity, split_equity
from healthpredict.loop.estimate import label_free_estimate, monitored_estimates
from healthpredict.loop.field_history import acknowledgements, previous_fields
from healthpredict.loop.pending import PendingWindow, WindowRows
from healthpredict.loop.windows import (
    MODEL_VERSION,
    PROBABILITY,
    Window,
    WindowLog,
    label_coverage,
    labelled,
    read_window,
)
from healthpredict.monitoring.drift import DriftResult, FieldDrift
from healthpredict.monitoring.field_state import FieldState, Verdicts, field_states, verdicts
from healthpredict.monitoring.fields import Check
from healthpredict.monitoring.performance import (
    RealisedPerformance,
    Recalibration,
    realised_performance,
)
from healthpredict.monitoring.quality import check_batch
from healthpredict.monitoring.tables import window_performance, windows
from healthpredict.settings import MonitoringSettings

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def monitor(context: LoopContext, window: Window, champion: str) -> PendingWindow:
    """Monitor ``window``: a new pending record (phase "monitored")."""
    started = time.perf_counter()
    log = read_window(context.engine, context.deployment, window)
    rows = WindowRows()
    pending = PendingWindow(window.number, "monitored", "empty", champion, rows)
    # Earlier windows' outcomes first: the estimate of this one is recalibrated on the newest.
    earlier = realised_rows(context, window, "", [], range(1, window.number))
    if log.empty:
        pending.text = f"{window.name}: nothing was served in this window"
    else:
        _monitor_served(context, log, pending, earlier)
    own = range(window.number, window.number + 1)
    rows.performance = earlier + realised_rows(context, window, pending.status, rows.versions, own)
    equity = split_equity(rows)
    for row in rows.performance:
        pending.text += (
            f"; outcomes of w{row['window']:03d}: AUC {_auc_text(row)} "
            f"({row['n_labelled']:,} labelled)"
        )
    pending.text += equity.text
    if rows.window is not None:
        rows.window["monitor_seconds"] = time.perf_counter() - started
        rows.window["equity_seconds"] = equity.seconds
    return pending


def _monitor_served(
    context: LoopContext, log: WindowLog, pending: PendingWindow, measured: list[dict[str, Any]]
) -> None:
    frame, window = log.predictions, log.window
    reason = quarantine_reason(log, context.settings.monitoring)
    versions = frame[MODEL_VERSION].value_counts()
    pending.status = "quarantined" if reason else "completed"
    pending.rows.window = {
        "deployment": context.deployment,
        "window": window.number,
        "window_start": window.start,
        "window_end": window.end,
        "status": pending.status,
        "n_predictions": len(frame),
        "n_rejected": len(log.rejected),
        "model_version": str(versions.index[0]) if len(versions) else None,
        "quarantine_reason": reason,
        "alarms": [f"quality: {reason}"] if reason else [],
        "report_path": None,
    }
    if reason:
        pending.text = f"{window.name}: quarantined ({reason})"
        return
    pending.text = f"{window.name}: {len(frame):,} predictions"
    if len(log.rejected):
        pending.text += f", {len(log.rejected):,} refused"
    for version in versions.index:
        served = frame[frame[MODEL_VERSION] == version].reset_index(drop=True)
        _monitor_version(context, window, str(version), served, pending, measured)
    alarms = [a for row in pending.rows.versions for a in row["alarms"]]
    pending.rows.window["alarms"] = alarms
    if alarms:
        pending.text += f"; alarms: {'; '.join(alarms)}"


def _monitor_version(
    context: LoopContext,
    window: Window,
    version: str,
    served: pd.DataFrame,
    pending: PendingWindow,
    measured: list[dict[str, Any]],
) -> None:
    probabilities = served[PROBABILITY].to_numpy(dtype=float)
    html = None
    if context.reports_dir is not None:
        html = context.reports_dir / f"w{window.number:03d}_v{version}.html"
    drift = context.drift_monitor(version).run(served, probabilities, html)
    engine, deployment, settings = context.engine, context.deployment, context.settings
    previous = previous_fields(engine, deployment, window.number, version)
    states = field_states(
        drift,
        window.number,
        previous,
        acknowledgements(engine, deployment, version),
        settings.training.seed,
    )
    verdict = verdicts(drift, states, previous, settings.monitoring.drift_share_alarm)
    estimate = label_free_estimate(context, version, window.number, probabilities, measured)
    baseline = context.profile(version).baseline_auc
    alarms = label_free_alarms(drift, states, verdict, estimate.raw, baseline, settings.monitoring)
    key = {"deployment": deployment, "window": window.number, "model_version": version}
    quantiles = np.quantile(probabilities, QUANTILES).tolist()
    pending.rows.versions.append(
        {
            **key,
            "n_predictions": len(served),
            "drift_share": verdict.weighted_share,
            "n_drifted": len(drift.drifted),
            "dataset_drift": verdict.input_drift,
            "data_changed": verdict.data_changed,
            "moved": list(verdict.moved),
            "prediction_drift": drift.prediction_statistic,
            "prediction_drift_detected": drift.prediction_drift,
            "estimated_auc": estimate.value,
            "estimated_auc_raw": estimate.raw,
            "estimate_basis": estimate.basis,
            "baseline_estimated_auc": baseline,
            "risk_quantiles": {
                **{f"q{round(q * 100):02d}": v for q, v in zip(QUANTILES, quantiles, strict=True)},
                "mean": float(probabilities.mean()),
            },
            "alarms": alarms,
        }
    )
    pending.rows.features.extend(_feature_row(key, f, states[f.feature]) for f in drift.features)
    if html is not None and pending.rows.window is not None:
        pending.rows.window["report_path"] = str(html)
    off = ", ".join(f.feature for f in drift.drifted[:3]) or "none"
    pending.text += (
        f"; v{version}: {len(drift.drifted)} field(s) off the reference ({off}), "
        f"{len(verdict.moved)} moved, estimated AUC {estimate.value:.3f}"
    )


def _feature_row(key: dict[str, Any], field: FieldDrift, state: FieldState) -> dict[str, Any]:
    acknowledgement = state.acknowledgement
    return {
        **key,
        "feature": field.feature,
        "statistic": field.statistic,
        "threshold": field.threshold,
        "drifted": field.drifted,
        "weight": field.weight,
        "method": field.method,
        "status": state.status.value,
        "since_window": state.since_window,
        "previous_statistic": state.previous_statistic,
        "previous_threshold": state.previous_threshold,
        "findings": [
            {"check": f.check.value, "value": f.value, "limit": f.limit, "detail": f.detail}
            for f in field.findings
        ],
        "counts": field.counts,
        "acknowledgement": None
        if acknowledgement is None
        else {
            "by": acknowledgement.by,
            "reason": acknowledgement.reason,
            "at": acknowledgement.at.isoformat(),
        },
    }


def quarantine_reason(log: WindowLog, monitoring: MonitoringSettings) -> str | None:
    """Why the window cannot be trusted, or None.

    Too many records refused by the service (an upstream change shows up as validation
    errors), or logged records breaking the contract (written by something that did not
    validate them).
    """
    served, refused = len(log.predictions), len(log.rejected)
    share = refused / (served + refused)
    tolerance = monitoring.quality_max_invalid_fraction
    if share > tolerance:
        counts = pd.Series([f for fields in log.rejected["fields"] for f in fields]).value_counts()
        worst = ", ".join(f"{name}: {count:,}" for name, count in counts.items())
        return (
            f"{share:.1%} of records were refused by the service (tolerance {tolerance:.1%}); "
            f"refused by field: {worst}"
        )
    if served == 0:
        return None
    return check_batch(log.predictions, tolerance).quarantine_reason


def label_free_alarms(
    drift: DriftResult,
    states: dict[str, FieldState],
    verdict: Verdicts,
    estimate: float,
    baseline: float,
    monitoring: MonitoringSettings,
) -> list[str]:
    """Alarms that need no outcome: the two data verdicts, prediction drift, a drop of the
    estimate (from the risks as served, against the baseline computed the same way)."""
    alarms = []
    if verdict.data_changed:
        moved = [f for f in drift.drifted if f.feature in verdict.moved]
        shown = "; ".join(f"{f.feature} ({_finding_text(f)})" for f in moved[:3])
        more = f"; and {len(moved) - 3} more" if len(moved) > 3 else ""
        alarms.append(f"data_changed: {len(moved)} field(s) moved: {shown}{more}")
    if verdict.input_drift:
        alarms.append(
            f"data_drift: fields off the reference carry {verdict.weighted_share:.2f} of the "
            f"model's split gain (moved: {', '.join(verdict.moved[:5])})"
        )
    if drift.prediction_drift:
        alarms.append(f"prediction_drift: PSI {drift.prediction_statistic:.3f}")
    if estimate < baseline - monitoring.estimated_auc_drop_alarm:
        alarms.append(f"estimated_performance: AUC {estimate:.3f} vs {baseline:.3f} baseline")
    return alarms


def _finding_text(field: FieldDrift) -> str:
    """The field's first finding, short: what check, how far past its limit."""
    finding = field.findings[0]
    if finding.check is Check.DISTRIBUTION:
        return f"{field.method} {field.statistic:.3f} > {field.threshold:.3f}"
    return f"{finding.check.value}: {finding.detail[:80]}"


def realised_rows(
    context: LoopContext,
    window: Window,
    status: str,
    versions: list[dict[str, Any]],
    numbers: range,
) -> list[dict[str, Any]]:
    """Realised performance of the windows of ``numbers`` up to ``window`` (whose own status
    is ``status`` and whose rows per version are ``versions``) whose outcomes changed since
    they were last measured, within the look-back, with the error of the estimate made when
    each was monitored. A quarantined window is never measured: what it served cannot be trusted to
    say how the model does.

    A window whose every encounter has its outcome cannot change any more, so the log is only
    read from the oldest window still waiting for outcomes.
    """
    first = max(1, window.number - context.settings.monitoring.performance_lookback_windows + 1)
    measured = _measured(context, first, window.number)
    complete = {n for n, (_, share) in measured.items() if share >= 1.0}
    waiting = [n for n in range(first, window.number + 1) if n not in complete and n in numbers]
    if not waiting:
        return []
    coverage = label_coverage(
        context.engine, context.deployment, context.clock, waiting[0], window.number
    )
    estimates = monitored_estimates(context, waiting, versions)
    rows = []
    for number, (served, known) in sorted(coverage.items()):
        if known == 0 or measured.get(number, (0, 0.0))[0] == known:
            continue
        own = status if number == window.number else window_status(context, number)
        if own == "quarantined":
            continue
        earlier = context.clock.window(number)
        frame = labelled(
            context.engine, context.deployment, earlier.start, earlier.end, features=False
        )
        for version, part in frame.groupby(MODEL_VERSION, sort=True):
            row = _performance_row(context, number, window.number, str(version), part, served)
            monitored = estimates.get((number, str(version)))
            row["monitored_estimate"] = monitored
            if monitored is not None and np.isfinite(row["roc_auc"]):
                row["estimate_error"] = monitored - row["roc_auc"]
            rows.append(row)
    return rows


def _measured(context: LoopContext, first: int, last: int) -> dict[int, tuple[int, float]]:
    """How many labelled encounters each window had when last measured, and their share."""
    table = window_performance
    query = select(table.c.window, table.c.n_labelled, table.c.labelled_share).where(
        table.c.deployment == context.deployment, table.c.window.between(first, last)
    )
    with context.engine.connect() as connection:
        found: dict[int, tuple[int, float]] = {}
        for number, n, share in connection.execute(query):
            count, total = found.get(number, (0, 0.0))
            found[number] = (count + int(n), total + float(share))
    return found


def _performance_row(
    context: LoopContext,
    number: int,
    known_at: int,
    version: str,
    frame: pd.DataFrame,
    served: int,
) -> dict[str, Any]:
    settings = context.settings
    groups = frame[PATIENT_KEY].fillna(frame[ENCOUNTER_KEY])  # no patient id sent: by encounter
    performance = realised_performance(
        frame[TARGET].to_numpy(),
        frame[PROBABILITY].to_numpy(dtype=float),
        groups,
        max(settings.training.bootstrap_rounds, 200),
        settings.training.confidence_level,
        settings.training.seed,
    )
    recalibration = Recalibration.fit(
        frame[TARGET].to_numpy(),
        frame[PROBABILITY].to_numpy(dtype=float),
        settings.monitoring.estimate_recalibration_min_rows,
    )
    auc, shortfall, gap = (
        performance.roc_auc,
        performance.auc_shortfall,
        performance.calibration_gap,
    )
    row = {
        "deployment": context.deployment,
        "window": number,
        "model_version": version,
        "known_at_window": known_at,
        "n_labelled": len(frame),
        "labelled_share": len(frame) / served if served else 0.0,
        "roc_auc": auc.estimate,
        "roc_auc_low": auc.low,
        "roc_auc_high": auc.high,
        "estimated_auc": performance.estimated_auc,
        "shortfall_low": shortfall.low,
        "shortfall_high": shortfall.high,
        "ece": performance.ece,
        "observed_rate": performance.observed_rate,
        "predicted_rate": performance.predicted_rate,
        "calibration_gap_low": gap.low,
        "calibration_gap_high": gap.high,
        "alarms": label_alarms(performance, settings.monitoring),
        "monitored_estimate": None,
        "estimate_error": None,
        "recalibration": None if recalibration is None else asdict(recalibration),
    }
    attach_equity(context, row, frame, groups)  # per patient group, on the same encounters
    return row


def label_alarms(performance: RealisedPerformance, monitoring: MonitoringSettings) -> list[str]:
    """Alarms that need outcomes: AUC surely below the estimate, calibration surely off."""
    alarms = []
    if performance.auc_shortfall.high < -monitoring.realised_auc_drop_alarm:
        alarms.append(
            f"realised_performance: AUC {performance.roc_auc} below the estimate "
            f"{performance.estimated_auc:.3f}"
        )
    gap, limit = performance.calibration_gap, monitoring.calibration_gap_alarm
    if gap.low > limit or gap.high < -limit:
        alarms.append(
            f"calibration: observed rate {performance.observed_rate:.3f} vs predicted "
            f"{performance.predicted_rate:.3f} (gap {gap})"
        )
    return alarms


def window_status(context: LoopContext, number: int) -> str | None:
    """The committed status of window ``number`` ("completed", "quarantined"), or None."""
    query = select(windows.c.status).where(
        windows.c.deployment == context.deployment, windows.c.window == number
    )
    with context.engine.connect() as connection:
        found = connection.execute(query).scalar()
    return None if found is None else str(found)


def _auc_text(row: dict[str, Any]) -> str:
    auc = row["roc_auc"]
    return "n/a" if auc is None or not np.isfinite(auc) else f"{auc:.3f}"
