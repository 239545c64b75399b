"""Retraining policies: when to retrain, on which window, decided from recorded signals.

A policy decides at each step about the batch whose labels have just arrived: retraining needs
those labels, so a label-free alarm raised when a batch was scored leads to a retrain once the
batch is labelled (``label_delay_batches`` later).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from healthpredict.errors import HealthPredictError

Signal = Literal[
    "data_changed",
    "data_drift",
    "prediction_drift",
    "estimated_performance",
    "realised_performance",
    "calibration",
    "equity",  # a patient group served surely worse than the population (monitoring/equity.py)
]
SIGNALS: tuple[str, ...] = get_args(Signal)


class PolicyError(HealthPredictError):
    """The policy file is missing or malformed, or names an unknown policy."""


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    window: Literal["expanding", "sliding"] = "expanding"
    window_rows: int | None = Field(
        default=None, ge=1000, description="Sliding window size; default: initial window size."
    )
    search: bool = False


class NeverPolicy(_Policy):
    """Keep the first champion for ever: the baseline every other policy must beat."""

    kind: Literal["never"]


class ScheduledPolicy(_Policy):
    """Retrain every ``every`` batches, whatever the monitors say."""

    kind: Literal["scheduled"]
    every: int = Field(default=1, ge=1)


class DriftPolicy(_Policy):
    """Retrain when a chosen signal alarmed on the newly labelled batch, with a cooldown."""

    kind: Literal["drift"]
    signals: tuple[Signal, ...] = SIGNALS  # type: ignore[assignment]
    cooldown: int = Field(default=1, ge=0, description="Steps after a promotion with none.")


Policy = Annotated[NeverPolicy | ScheduledPolicy | DriftPolicy, Field(discriminator="kind")]


def parse_policy(name: str, config: dict[str, object]) -> Policy:
    """One policy from its stored configuration (as ``model_dump`` wrote it).

    Raises:
        ValidationError: The configuration breaks the policy schema.
    """
    return _PolicyFile.model_validate({"policies": {name: config}}).policies[name]


class _PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policies: dict[str, Policy]


@dataclass(frozen=True)
class Decision:
    """What a policy decided at one step, and why."""

    action: Literal["none", "retrain", "cooldown"]
    reasons: tuple[str, ...]


def load_policies(path: Path | None) -> dict[str, Policy]:
    """All policies of a file by name; ``None`` reads the packaged ``policies.yaml``.

    Raises:
        PolicyError: Missing file, bad YAML, or a policy breaking the schema.
    """
    if path is None:
        text = resources.files("healthpredict.monitoring").joinpath("policies.yaml").read_text()
        origin = "the packaged policies"
    elif not path.is_file():
        raise PolicyError(f"policy file {path} does not exist")
    else:
        text, origin = path.read_text(), str(path)
    try:
        return _PolicyFile.model_validate({"policies": yaml.safe_load(text)}).policies
    except yaml.YAMLError as error:
        raise PolicyError(f"{origin} is not valid YAML: {error}") from error
    except ValidationError as error:
        raise PolicyError(f"{origin} breaks the policy schema: {error}") from error


def select_policy(policies: dict[str, Policy], name: str) -> Policy:
    """The policy called ``name``.

    Raises:
        PolicyError: No such policy.
    """
    if name not in policies:
        raise PolicyError(f"unknown policy {name!r}; defined: {', '.join(sorted(policies))}")
    return policies[name]


def describe(policy: Policy) -> str:
    """One line for tables and the dashboard."""
    window = f"{policy.window} window" + (" with search" if policy.search else "")
    if isinstance(policy, NeverPolicy):
        return "never retrain"
    if isinstance(policy, ScheduledPolicy):
        return f"retrain every {policy.every} batch(es), {window}"
    signals = ", ".join(s.replace("_", " ") for s in policy.signals)
    return f"retrain on alarm ({signals}), cooldown {policy.cooldown}, {window}"


def decide(
    policy: Policy,
    labelled_batch: int | None,
    alarms: list[str],
    steps_since_promotion: int | None,
) -> Decision:
    """Decide at one step.

    Args:
        policy: The policy in force.
        labelled_batch: Batch whose labels arrived at this step (None: no usable labels, e.g.
            too early or the batch was quarantined).
        alarms: Alarms about ``labelled_batch``, each ``"<signal>: <detail>"``.
        steps_since_promotion: Steps since the last promotion (None: none yet).
    """
    if labelled_batch is None or isinstance(policy, NeverPolicy):
        return Decision("none", ())
    if isinstance(policy, ScheduledPolicy):
        if labelled_batch % policy.every == 0:
            return Decision("retrain", (f"schedule: every {policy.every} batch(es)",))
        return Decision("none", ())
    triggering = tuple(a for a in alarms if a.split(":", 1)[0] in policy.signals)
    if not triggering:
        return Decision("none", ())
    if steps_since_promotion is not None and steps_since_promotion <= policy.cooldown:
        return Decision("cooldown", triggering)
    return Decision("retrain", triggering)
