"""Hand-made run histories shaped like what a simulation leaves in the monitoring store.

Three policies replay the same seven batches: an older-population shift and a concept drift
start at batch 4, batch 3 is quarantined (missing columns) and the last batch's labels are
not known yet. Numbers are invented but in the range the real extract gives.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from healthpredict.monitoring.equity import GROUP_HISTORY_COLUMNS
from healthpredict.monitoring.history import BATCH_COLUMNS, RunHistory

FEATURES = (
    "age",
    "time_in_hospital",
    "num_medications",
    "num_lab_procedures",
    "number_inpatient",
    "number_diagnoses",
    "A1Cresult",
    "insulin",
    "discharge_disposition_id",
)
SHIFTED = ("age", "time_in_hospital", "num_medications")  # what the covariate shift moves
THRESHOLD = 0.1
QUARANTINE_REASON = "missing columns: A1Cresult, insulin"
POLICY_TEXT = {
    "never": "never retrain",
    "scheduled": "retrain every 2 batches",
    "drift": "retrain on drift alarm, cooldown 1 batch",
}
# Per policy: batch -> (outcome, challenger version) for each retrain it asks for.
RETRAINS = {
    "never": {},
    "scheduled": {2: ("refused", "2"), 4: ("promoted", "3"), 6: ("promoted", "4")},
    "drift": {4: ("promoted", "2")},
}


def make_history(
    policy: str = "drift",
    *,
    n_batches: int = 7,
    onset: int | None = 4,
    quarantined: tuple[int, ...] = (3,),
    scenario: str = "older_population, concept_insulin",
    labels_pending: int = 1,
    feature_drift: bool = True,
    groups: bool = True,
    name: str | None = None,
) -> RunHistory:
    """One run of ``policy``; ``onset`` is the first batch with ``scenario`` active (None: none).

    The last ``labels_pending`` batches have no realised AUC yet; neither have their group
    figures (``groups``: record them at all). From the onset, age [70-80) alarms.
    """
    rng = np.random.default_rng(sum(map(ord, policy)))
    rows, drift_rows, quantile_rows, group_rows = [], [], [], []
    version, fresh_model = "1", False
    for batch in range(1, n_batches + 1):
        active = onset is not None and batch >= onset
        scenarios = scenario if active else ""
        if batch in quarantined:
            rows.append(_quarantined_row(batch, scenarios))
            continue
        # A promoted model was trained on shifted data and its reference moved with it.
        shift = 1.0 if active and not fresh_model else 0.3 if active else 0.0
        drifts = _feature_drift(batch, shift, rng, first=batch == onset)
        drift_rows.extend(drifts)
        outcome, new_version = RETRAINS[policy].get(batch, ("", None))
        decision = "retrain" if new_version else "cooldown" if _cooling(policy, batch) else "none"
        auc = 0.685 - (0.06 if active and not fresh_model else 0.015 if active else 0.0)
        auc += float(rng.normal(0, 0.006))
        pending = batch > n_batches - labels_pending
        alarmed = active and not pending and groups
        if groups and not pending:
            group_rows.extend(_group_rows(batch, version, auc, harmed=active))
        n_drifted = sum(row["drifted"] for row in drifts)
        moved = [row["feature"] for row in drifts if row["status"] == "moved"]
        rows.append(
            {
                "batch": batch,
                "batch_name": f"batch_{batch:03d}",
                "status": "completed",
                "n_rows": 10_000,
                "scenarios": scenarios,
                "model_version": version,
                "drift_share": n_drifted / len(FEATURES),
                "n_drifted": n_drifted,
                "data_changed": bool(moved),
                "moved": ", ".join(moved),
                "dataset_drift": n_drifted >= 3,
                "prediction_drift": 0.02 + 0.08 * shift,
                "prediction_drift_detected": shift >= 1.0,
                "estimated_auc": 0.684 - 0.01 * shift + float(rng.normal(0, 0.003)),
                "realised_auc": math.nan if pending else auc,
                "realised_auc_low": math.nan if pending else auc - 0.021,
                "realised_auc_high": math.nan if pending else auc + 0.019,
                "estimate_error": math.nan if pending else 0.004,
                "alarm": n_drifted >= 3,
                "alarm_reasons": "data drift: 3 features" if n_drifted >= 3 else "",
                "group_alarms": "age [70-80)" if alarmed else "",
                "decision": decision,
                "outcome": outcome,
                "new_version": new_version or math.nan,  # NaN, as read_history leaves it
                "quarantine_reason": None,
            }
        )
        quantile_rows.append(_quantiles(batch, shift))
        if outcome == "promoted" and new_version:
            version, fresh_model = new_version, True
    return RunHistory(
        name=name or f"default-{policy}",
        policy=policy,
        policy_text=POLICY_TEXT[policy],
        scenario_set="default",
        batches=pd.DataFrame(rows, columns=list(BATCH_COLUMNS)),
        feature_drift=pd.DataFrame(
            drift_rows if feature_drift else [],
            columns=["batch", "feature", "statistic", "threshold", "drifted", "status"],
        ),
        prediction_quantiles=pd.DataFrame(
            quantile_rows, columns=["batch", "q05", "q25", "q50", "q75", "q95", "mean"]
        ),
        reference_auc=0.684,
        groups=pd.DataFrame(group_rows, columns=list(GROUP_HISTORY_COLUMNS)),
    )


def make_runs(**options: object) -> list[RunHistory]:
    """The never / scheduled / drift runs over the same batches (options go to each)."""
    return [make_history(policy, **options) for policy in ("never", "scheduled", "drift")]  # type: ignore[arg-type]


def _cooling(policy: str, batch: int) -> bool:
    return policy == "drift" and batch - 1 in RETRAINS["drift"]


def _quarantined_row(batch: int, scenarios: str) -> dict[str, object]:
    nothing = dict.fromkeys(BATCH_COLUMNS)
    nan_columns = ("drift_share", "prediction_drift", "estimated_auc")
    nan_columns += ("realised_auc", "realised_auc_low", "realised_auc_high", "estimate_error")
    return (
        nothing
        | dict.fromkeys(nan_columns, math.nan)
        | {
            "batch": batch,
            "batch_name": f"batch_{batch:03d}",
            "status": "quarantined",
            "n_rows": 10_000,
            "scenarios": scenarios,
            # None and NaN where nothing was measured, as read_history returns them.
            "n_drifted": math.nan,
            "dataset_drift": None,
            "data_changed": None,
            "moved": "",
            "prediction_drift_detected": None,
            "alarm": True,
            "alarm_reasons": "data quality",
            "group_alarms": "",
            "decision": "none",
            "outcome": "",
            "quarantine_reason": QUARANTINE_REASON,
            "new_version": math.nan,
        }
    )


# attribute -> (group, encounters, AUC offset from all patients); n=None: too few to tell.
GROUPS = {
    "age": (("[50-60)", 1800, 0.02), ("[60-70)", 2300, 0.0), ("[70-80)", 2600, -0.03)),
    "gender": (("Female", 5300, 0.0), ("Male", 4700, 0.0), ("Unknown/Invalid", None, 0.0)),
}
HARMED = ("age", "[70-80)")


def _group_rows(batch: int, version: str, auc: float, harmed: bool) -> list[dict[str, object]]:
    """``read_group_history`` rows of one batch: all patients, then each group."""
    rows = [_group_row(batch, version, "all", "all", 10_000, auc, 0.0, ())]
    for attribute, groups in GROUPS.items():
        for name, n, offset in groups:
            hit = harmed and (attribute, name) == HARMED
            alarms = (f"equity: {attribute} {name}: ROC-AUC below all patients",) if hit else ()
            rows.append(
                _group_row(
                    batch, version, attribute, name, n, auc + offset - 0.12 * hit, 0.0, alarms
                )
            )
    return rows


def _group_row(
    batch: int,
    version: str,
    attribute: str,
    name: str,
    n: int | None,
    auc: float,
    gap: float,
    alarms: tuple[str, ...],
) -> dict[str, object]:
    status = "too few" if n is None else "alarm" if alarms else "ok"
    width = math.nan if n is None else 0.8 / math.sqrt(n)
    figures = {
        "auc": auc if n else math.nan,
        "calibration_gap": gap + 0.01 if n else math.nan,
        "auc_vs_all": auc - 0.685 if n else math.nan,
        "gap_vs_all": 0.01 if n else math.nan,
        "flagged_share": 0.2 if n else math.nan,
    }
    row: dict[str, object] = {
        "window": batch,
        "version": version,
        "attribute": attribute,
        "group": name,
        "members": [name],
        "status": status,
        "n": n or 12,
        "n_patients": int((n or 12) * 0.9),
        "n_positive": int((n or 12) * 0.11),
        "observed_rate": 0.11,
        "predicted_rate": 0.10,
        "alarms": list(alarms),
        "known_at_window": batch + 1,
    }
    for measure, value in figures.items():
        row |= {measure: value, f"{measure}_low": value - width, f"{measure}_high": value + width}
    return row


def _feature_drift(
    batch: int, shift: float, rng: np.random.Generator, first: bool
) -> list[dict[str, object]]:
    rows = []
    for feature in FEATURES:
        moved = feature in SHIFTED
        statistic = THRESHOLD * (rng.uniform(0.15, 0.8) + (2.2 * shift if moved else 0.0))
        rows.append(
            {
                "batch": batch,
                "feature": feature,
                "statistic": statistic,
                "threshold": THRESHOLD,
                "drifted": statistic >= THRESHOLD,
                # Fields move at the onset, then keep their new state.
                "status": "steady" if statistic < THRESHOLD else "moved" if first else "settled",
            }
        )
    return rows


def _quantiles(batch: int, shift: float) -> dict[str, float]:
    up = 0.025 * shift
    return {
        "batch": batch,
        "q05": 0.035 + up / 2,
        "q25": 0.062 + up,
        "q50": 0.091 + up,
        "q75": 0.138 + up,
        "q95": 0.262 + 1.5 * up,
        "mean": 0.112 + up,
    }
