"""The promotion gate's statistics and rules, on synthetic scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from healthpredict.modeling.gate import GateDecision, GatePolicy, compare, decide, verdict

POLICY = GatePolicy(min_auc_gain=0.005, loss_tolerance=0.0, max_ece_increase=0.01, rounds=300)


@pytest.fixture
def outcome() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    labels = (rng.random(6000) < 0.12).astype(float)
    signal = labels + rng.normal(0, 1.2, len(labels))
    groups = rng.integers(0, 4500, len(labels))
    return labels, signal, groups


def _probabilities(score: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(score - 2.2)))


def test_clearly_better_challenger_is_promoted(outcome: tuple[np.ndarray, ...]) -> None:
    labels, signal, groups = outcome
    noisy = signal + np.random.default_rng(1).normal(0, 1.5, len(labels))
    comparison = compare(labels, _probabilities(noisy), _probabilities(signal), groups, POLICY)
    promote, reason = verdict(comparison, POLICY)
    assert comparison.auc_gain.low > 0.02
    assert comparison.challenger_roc_auc > comparison.champion_roc_auc
    assert promote and "reaches the margin" in reason


def test_clearly_worse_challenger_is_refused(outcome: tuple[np.ndarray, ...]) -> None:
    labels, signal, groups = outcome
    noisy = signal + np.random.default_rng(1).normal(0, 1.5, len(labels))
    comparison = compare(labels, _probabilities(signal), _probabilities(noisy), groups, POLICY)
    promote, reason = verdict(comparison, POLICY)
    assert comparison.auc_gain.high < 0
    assert not promote and "below the required margin" in reason


def test_indistinguishable_challenger_is_refused(outcome: tuple[np.ndarray, ...]) -> None:
    labels, signal, groups = outcome
    # A tiny perturbation: gain inside the noise, even if its point estimate is positive.
    jitter = signal + np.random.default_rng(3).normal(0, 0.05, len(labels))
    lenient = GatePolicy(min_auc_gain=0.0, loss_tolerance=0.0, max_ece_increase=0.01, rounds=300)
    comparison = compare(labels, _probabilities(signal), _probabilities(jitter), groups, lenient)
    assert comparison.auc_gain.low < 0 < comparison.auc_gain.high
    promote, reason = verdict(comparison, lenient)
    assert not promote and ("not shown to be better" in reason or "below" in reason)


def test_worse_calibration_blocks_promotion(outcome: tuple[np.ndarray, ...]) -> None:
    labels, signal, groups = outcome
    noisy = signal + np.random.default_rng(1).normal(0, 1.5, len(labels))
    overconfident = np.clip(_probabilities(signal) * 2.5, 0, 1)  # same ranking, bad risks
    comparison = compare(labels, _probabilities(noisy), overconfident, groups, POLICY)
    promote, reason = verdict(comparison, POLICY)
    assert comparison.auc_gain.low > 0
    assert not promote and "calibration error rises" in reason


def test_the_bootstrap_is_paired(outcome: tuple[np.ndarray, ...]) -> None:
    labels, signal, groups = outcome
    same = _probabilities(signal)
    comparison = compare(labels, same, same.copy(), groups, POLICY)
    # Identical models: every paired resample gives exactly zero difference.
    assert comparison.auc_gain.low == comparison.auc_gain.high == 0.0


def _groups_case(harmed_share: float) -> tuple[np.ndarray, ...]:
    """A challenger better for everyone except one age band (``harmed_share`` of the rows),
    for which its risks are noise."""
    rng = np.random.default_rng(11)
    n = 8000
    labels = (rng.random(n) < 0.12).astype(float)
    signal = labels + rng.normal(0, 1.0, n)
    patients = rng.integers(0, 6000, n)
    harmed = rng.random(n) < harmed_share
    ages = np.where(harmed, "[80-90)", rng.choice(["[50-60)", "[60-70)", "[70-80)"], n))
    champion = _probabilities(signal + rng.normal(0, 1.2, n))
    better = _probabilities(signal + rng.normal(0, 0.4, n))
    challenger = np.where(harmed, rng.random(n), better)
    return labels, champion, challenger, patients, ages


def _attributes(ages: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"age": ages, "gender": "Female", "race": "Caucasian"})


def _decide_groups_case(harmed_share: float) -> GateDecision:
    """The gate on :func:`_groups_case`, its patients' age bands as the group attribute."""
    labels, champion, challenger, patients, ages = _groups_case(harmed_share)
    return decide(
        labels,
        (champion, challenger),
        pd.Series(patients),
        POLICY,
        ("1", "2"),
        "w003",
        attributes=_attributes(ages),
    )


def test_a_challenger_better_on_average_but_worse_for_a_group_is_refused() -> None:
    decision = _decide_groups_case(0.15)
    assert decision.auc_gain.low > POLICY.min_auc_gain  # better on average, surely
    assert not decision.promote
    assert "surely worse for age [80-90)" in decision.reason
    worse = [g for g in decision.groups if g.status == "worse"]
    assert [(g.attribute, g.group) for g in worse] == [("age", "[80-90)")]
    assert worse[0].auc_gain.high < -POLICY.group_margin
    assert "age [80-90)" in decision.as_tags()["gate_groups"]
    recorded = decision.to_dict()["groups"]  # what the decision's JSON record holds
    assert {g["group"] for g in recorded} >= {"[80-90)", "[50-60)", "Female", "Caucasian"}


def test_a_group_too_small_to_tell_does_not_block() -> None:
    decision = _decide_groups_case(0.01)  # about 80 encounters in the harmed band
    small = [g for g in decision.groups if "[80-90)" in g.members]
    assert small and small[0].status != "worse"
    assert decision.promote, decision.reason
    assert "no group surely worse" in decision.reason


def test_the_group_comparison_uses_the_populations_draws() -> None:
    labels, champion, challenger, patients, ages = _groups_case(0.15)
    comparison = compare(labels, champion, challenger, patients, POLICY, _attributes(ages))
    [everyone] = [g for g in comparison.groups if g.attribute == "gender"]  # one group: all
    assert everyone.n_rows == len(labels)
    assert everyone.auc_gain.estimate == pytest.approx(comparison.auc_gain.estimate)
    assert everyone.auc_gain.low == pytest.approx(comparison.auc_gain.low)
    assert everyone.auc_gain.high == pytest.approx(comparison.auc_gain.high)


def test_bad_group_settings_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'postcode' is not a contract column"):
        GatePolicy(0.005, 0.0, 0.01, group_attributes=("postcode",))
    with pytest.raises(ValueError, match="group margin must lie in"):
        GatePolicy(0.005, 0.0, 0.01, group_margin=0.7)
