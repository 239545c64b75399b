"""Policies decide from recorded signals; files are validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from healthpredict.monitoring.policy import (
    DriftPolicy,
    NeverPolicy,
    PolicyError,
    ScheduledPolicy,
    decide,
    describe,
    load_policies,
    select_policy,
)

ALARM = ["realised_performance: AUC 0.55 below 0.68"]


def test_never_never_retrains() -> None:
    assert decide(NeverPolicy(kind="never"), 3, ALARM, None).action == "none"


def test_scheduled_retrains_every_k_labelled_batches() -> None:
    policy = ScheduledPolicy(kind="scheduled", every=2)
    actions = [decide(policy, batch, [], None).action for batch in (1, 2, 3, 4)]
    assert actions == ["none", "retrain", "none", "retrain"]


def test_drift_retrains_on_a_chosen_signal_only() -> None:
    policy = DriftPolicy(kind="drift", signals=("realised_performance",), cooldown=0)
    assert decide(policy, 2, ALARM, None).action == "retrain"
    assert decide(policy, 2, ["data_drift: share 0.5"], None).action == "none"
    assert decide(policy, 2, [], None).action == "none"


def test_drift_cooldown_after_a_promotion() -> None:
    policy = DriftPolicy(kind="drift", cooldown=2)
    assert decide(policy, 5, ALARM, steps_since_promotion=2).action == "cooldown"
    assert decide(policy, 5, ALARM, steps_since_promotion=3).action == "retrain"


def test_no_labels_no_retrain() -> None:
    assert decide(ScheduledPolicy(kind="scheduled"), None, ALARM, None).action == "none"


def test_packaged_policies_load_and_describe_themselves() -> None:
    policies = load_policies(None)
    assert set(policies) >= {"never", "scheduled", "drift"}
    assert "cooldown" in describe(select_policy(policies, "drift"))


def test_unknown_policy_names_the_defined_ones() -> None:
    with pytest.raises(PolicyError, match=r"unknown policy 'sometimes'.*drift"):
        select_policy(load_policies(None), "sometimes")


@pytest.mark.parametrize(
    "text",
    ["p: {kind: drift, signals: [vibes]}", "p: {kind: scheduled, every: 0}", "p: [oops"],
)
def test_bad_policy_files_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError):
        load_policies(path)
