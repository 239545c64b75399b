"""The retrain and gate phases: from the labelled window the policy acted on to a gated challenger.

**Retrain** trains a challenger on the initial window plus the labelled
production encounters up to that window (features as logged, labels from ``outcomes``; a
quarantined window's encounters are left out), keeping half the labelled window's patients
out. **Gate** compares champion and challenger on those held-out patients, whom neither model
has seen, with the paired patient-grouped bootstrap; a passing challenger becomes champion at
once when the loop owns the alias, otherwise the verdict is recorded and a delivery moves the
alias after a verified rollout. A failed retrain or gate is recorded and leaves the champion
serving.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select

from healthpredict.data.columnar import contract_batch
from healthpredict.data.prepare import TARGET
from healthpredict.data.pseudonym import ENCOUNTER_KEY, PATIENT_KEY, SEQUENCE
from healthpredict.data.schema import FEATURE_COLUMNS
from healthpredict.loop.context import LoopContext, run_key
from healthpredict.loop.models import NewModel
from healthpredict.loop.pending import PendingWindow, jsonable
from healthpredict.loop.windows import OCCURRED_AT, labelled
from healthpredict.modeling.gate import GateDecision, GatePolicy
from healthpredict.modeling.gate import decide as decide_gate
from healthpredict.modeling.train import ModelKind, features_of, fit_model
from healthpredict.monitoring.store import mask_url
from healthpredict.monitoring.tables import windows
from healthpredict.pipelines.profile import build as build_profile

logger = logging.getLogger(__name__)


def retrain_phase(context: LoopContext, pending: PendingWindow) -> None:
    """Train the challenger (or find the one an interrupted attempt registered)."""
    if pending.action != "retrain" or pending.challenger is not None or pending.outcome:
        return
    assert pending.labelled is not None  # a retrain needs labels
    try:
        challenger = context.slot.find_challenger(run_key(context), pending.window)
        if challenger is None:
            challenger = _train(context, pending)
        pending.challenger = challenger
    except Exception as error:  # a failed retrain must leave the champion serving
        _failed(context, pending, "retrain", error)


def _train(context: LoopContext, pending: PendingWindow) -> str:
    train, holdout, production = training_data(context, pending.labelled or 0)
    params = _retrain_params(context, train, pending.champion)
    settings = context.settings
    fitted = fit_model(
        ModelKind.LIGHTGBM, train, params, settings.training.cv_folds, settings.training.seed
    )
    profile = build_profile(fitted.pipeline, train, holdout, settings.monitoring, production)
    tags = {"training_production": production, "deployment": context.deployment}
    initial = train[SEQUENCE].dropna() if SEQUENCE in train else pd.Series(dtype=float)
    if len(initial):
        tags["training_window"] = f"sequence {int(initial.min())}-{int(initial.max())}"
    new = NewModel(fitted.pipeline, params, features_of(train).head(5), tags, profile)
    version = context.slot.add_challenger(new, run_key(context), pending.window)
    pending.text += f"; retrained v{version} on {profile.training.describe()}"
    return version


def training_data(
    context: LoopContext, labelled_window: int
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Initial window + labelled production encounters up to ``labelled_window``, the held-out
    half of that window's patients, and which production windows the training set holds."""
    production, numbers = _production(context, context.clock.origin, labelled_window)
    latest = production[numbers == labelled_window]
    held_out = _held_out(context, latest, labelled_window)
    earlier = production[numbers < labelled_window]
    train = pd.concat([context.initial_data(), earlier, latest[~held_out]], ignore_index=True)
    if context.policy.window == "sliding":
        size = context.policy.window_rows or len(context.initial_data())
        train = train.tail(size).reset_index(drop=True)
    kept = sorted(set(numbers.tolist()))
    described = f"{context.deployment} windows {kept[0]}-{kept[-1]}" if kept else ""
    return train, latest[held_out].reset_index(drop=True), described


def gate_holdout(context: LoopContext, labelled_window: int) -> pd.DataFrame:
    """The held-out half of the labelled window's patients (as :func:`training_data` keeps
    them out of training)."""
    start = context.clock.window(labelled_window).start
    latest, _ = _production(context, start, labelled_window)
    return latest[_held_out(context, latest, labelled_window)].reset_index(drop=True)


def _production(context: LoopContext, start: datetime, last: int) -> tuple[pd.DataFrame, pd.Series]:
    """Labelled encounters of completed windows from ``start`` to window ``last``, and the
    window of each (a quarantined window's encounters never train or gate)."""
    end = context.clock.window(last).end
    frame = labelled(context.engine, context.deployment, start, end)
    numbers = context.clock.numbers(frame[OCCURRED_AT])
    with context.engine.connect() as connection:
        bad = set(
            connection.execute(
                select(windows.c.window).where(
                    windows.c.deployment == context.deployment, windows.c.status != "completed"
                )
            ).scalars()
        )
    usable = ~numbers.isin(bad)
    frame, numbers = frame[usable].reset_index(drop=True), numbers[usable].reset_index(drop=True)
    # No patient id sent: each encounter is its own group.
    frame[PATIENT_KEY] = frame[PATIENT_KEY].fillna(frame[ENCOUNTER_KEY])
    return frame, numbers


def _held_out(context: LoopContext, latest: pd.DataFrame, number: int) -> np.ndarray:
    return holdout_patients(latest[PATIENT_KEY], context.settings.training.seed + number)


def holdout_patients(patients: pd.Series, seed: int) -> np.ndarray:
    """Half of the patients, chosen by a keyed hash of each patient alone.

    The choice of one patient does not depend on who else is in the window, so outcomes that
    arrive between the retrain and the gate can enlarge the held-out half but never move a
    patient the challenger was trained on into it.
    """
    salt = str(seed).encode()
    return np.array(
        [
            hashlib.blake2b(str(p).encode(), key=salt, digest_size=1).digest()[0] % 2 == 1
            for p in patients
        ],
        dtype=bool,
    )


def _retrain_params(context: LoopContext, train: pd.DataFrame, champion: str) -> dict[str, Any]:
    """The champion's hyper-parameters, or a new search's when the policy asks for one."""
    if not context.policy.search:
        return context.slot.params(champion)
    from healthpredict.pipelines.tune_and_register import searched_params

    return searched_params(train, context.settings)


def gate_phase(context: LoopContext, pending: PendingWindow, promote: bool) -> None:
    """Gate the challenger on the held-out patients; promote it, or only record the verdict."""
    challenger = pending.challenger
    if pending.action != "retrain" or challenger is None or pending.outcome:
        return
    try:
        holdout = gate_holdout(context, pending.labelled or 0)
        decision = _gate(context, holdout, pending.labelled or 0, pending.champion, challenger)
        context.slot.record_gate(decision, deferred=not promote)
        if decision.promote and promote:
            context.slot.set_champion(challenger, pending.champion)
            pending.champion_after = challenger
        profile = context.slot.profile(challenger)
        training = profile.training
        row = model_row(
            context,
            challenger,
            pending.window,
            training.describe(),
            training.rows,
            profile.baseline_auc,
        )
        pending.rows.models.append(row)
        verdict = ("promoted" if promote else "passed") if decision.promote else "refused"
        pending.outcome, pending.gate = verdict, jsonable(decision.to_dict())
        pending.text += f"; gate: {verdict} v{challenger} ({decision.reason})"
    except Exception as error:  # a failed gate must leave the champion serving
        _failed(context, pending, "gate", error)


def _gate(
    context: LoopContext,
    holdout: pd.DataFrame,
    labelled_window: int,
    champion: str,
    challenger: str,
) -> GateDecision:
    settings = context.settings
    batch = contract_batch(holdout.loc[:, list(FEATURE_COLUMNS)])
    scores = [
        context.slot.load(v).score_batch(batch, "none").probabilities
        for v in (champion, challenger)
    ]
    return decide_gate(
        holdout[TARGET].to_numpy(),
        (scores[0], scores[1]),
        holdout[PATIENT_KEY],
        GatePolicy.from_settings(settings.gate, settings.training, settings.monitoring),
        (champion, challenger),
        f"w{labelled_window:03d}: the half of its labelled patients held out of training",
        attributes=holdout,
    )


def model_row(
    context: LoopContext,
    version: str,
    window: int,
    training: str,
    rows: int,
    baseline: float | None,
) -> dict[str, Any]:
    """A version the deployment trained (or started from, or adopted), with its training data."""
    return {
        "deployment": context.deployment,
        "version": version,
        "trained_at_window": window,
        "training_rows": rows,
        "training_data": training[:400],
        "baseline_estimated_auc": baseline,
        "created_at": datetime.now(UTC),
    }


def _failed(context: LoopContext, pending: PendingWindow, what: str, error: Exception) -> None:
    """Record a failed retrain or gate; under an orchestrator an unreachable registry fails
    the task instead, so that it is retried."""
    if not context.owns_champion:
        from healthpredict.modeling.tracking import require_tracking_server

        require_tracking_server(context.settings)
    logger.exception(
        "%s at window %d failed; v%s keeps serving", what, pending.window, pending.champion
    )
    pending.outcome = "failed"
    # Stored and shown on the dashboard: a database or tracking URL must not carry its password.
    pending.error = mask_url(f"{type(error).__name__}: {error}")[:2000]
    pending.text += f"; {what} failed: {pending.error[:200]}"
