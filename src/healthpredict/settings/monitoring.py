"""The monitoring section: the monitoring store, windows, drift and label alarms, equity,
policies and replays (docs/monitoring_and_retraining.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from healthpredict.settings.sections import _Section


class MonitoringSettings(_Section):
    """The monitoring-and-retraining loop and the store it reads and writes."""

    # Secret: a PostgreSQL URL carries its password.
    monitoring_db_url: SecretStr | None = Field(
        default=None,
        description="Prediction log database; default sqlite:///<data_dir>/monitoring.db.",
    )
    deployment: str = Field(
        default="production",
        min_length=1,
        max_length=120,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:+-]*$",
        description="Name of this service's prediction log in the monitoring store; the monitor, "
        "outcomes and the loop read and write that deployment's rows only.",
    )
    monitor_origin: datetime = Field(
        default=datetime(2024, 1, 1, tzinfo=UTC),
        description="Start of monitoring window 1 (ISO 8601); windows follow each other from "
        "here. A replay's simulated clock starts here too.",
    )
    monitor_window_days: float = Field(
        default=7.0,
        gt=0.0,
        le=366.0,
        description="Length of a monitoring window, in days of encounter time (the requests' "
        "discharge_time, else the time they were served).",
    )
    min_labelled_share: float = Field(
        default=0.8,
        gt=0.0,
        le=1.0,
        description="Share of a window's predictions with an outcome at which the window counts "
        "as labelled: its label alarms reach the policy and its encounters can train and gate.",
    )
    performance_lookback_windows: int = Field(
        default=12,
        ge=1,
        le=520,
        description="How many windows back a monitor run looks for newly arrived outcomes.",
    )
    scenarios_file: Path | None = Field(
        default=None,
        description="Drift scenario set (YAML) a replay injects; default: the packaged "
        "scenarios/default.yaml.",
    )
    policies_file: Path | None = Field(
        default=None,
        description="Retraining policies (YAML); default: the packaged policies.yaml.",
    )
    policy: str = Field(
        default="drift",
        description="Retraining policy of the loop (`monitor`, `simulate`, the monitoring DAG), "
        "by name.",
    )
    label_delay_batches: int = Field(
        default=1,
        ge=0,
        le=10,
        description="In a replay: windows after a batch is served before its outcomes are sent.",
    )
    drift_false_alarm_rate: float = Field(
        default=0.05,
        gt=0.0,
        lt=0.5,
        description="Chance that any check of any contract field flags a batch drawn from the "
        "reference's population (family-wise; each field's thresholds are calibrated for it).",
    )
    drift_share_alarm: float = Field(
        default=0.3,
        gt=0.0,
        le=1.0,
        description="Share of the model's split gain that raises the input-drift alarm "
        "(`data_drift`, the signal a retraining policy may listen to): carried by the fields "
        "that moved in the window, or newly reached by the fields off the reference.",
    )
    prediction_drift_threshold: float = Field(
        default=0.1,
        gt=0.0,
        description="Population stability index of the predicted risk that raises an alarm.",
    )
    estimated_auc_drop_alarm: float = Field(
        default=0.03,
        gt=0.0,
        description="Drop of the label-free AUC estimate below the reference that raises an alarm.",
    )
    estimate_recalibration_min_rows: int = Field(
        default=500,
        ge=20,
        description="Fewest labelled encounters of a window that recalibrate the label-free "
        "estimate of later windows (fewer: too noisy to correct anything).",
    )
    realised_auc_drop_alarm: float = Field(
        default=0.02,
        ge=0.0,
        description="Realised AUC below the label-free estimate by more than this, with the "
        "whole interval below, raises a concept-drift alarm.",
    )
    calibration_gap_alarm: float = Field(
        default=0.02,
        ge=0.0,
        description="Observed minus predicted readmission rate beyond this, with the whole "
        "interval beyond, raises a calibration alarm.",
    )
    equity_attributes: list[str] = Field(
        default=["age", "gender", "race"],
        min_length=1,
        description="Contract columns whose groups are measured per window once outcomes "
        "arrive (realised AUC, calibration gap, flagged share) and compared at the gate.",
    )
    equity_min_group_encounters: int = Field(
        default=200,
        ge=20,
        description="Fewest encounters of a group in a window measured on its own; smaller "
        "groups are pooled (age bands with their neighbours, other values together) or, still "
        "too small, reported as too few to tell.",
    )
    equity_min_group_positives: int = Field(
        default=20,
        ge=5,
        description="Fewest readmissions (and non-readmissions) of a group in a window measured "
        "on its own; fewer: pooled, or too few to tell.",
    )
    equity_auc_margin: float = Field(
        default=0.05,
        gt=0.0,
        lt=0.5,
        description="A group's realised ROC-AUC below the whole population's by more than this, "
        "with the whole interval of the difference below, raises an equity alarm.",
    )
    equity_calibration_margin: float = Field(
        default=0.03,
        gt=0.0,
        lt=0.5,
        description="A group's calibration gap (observed minus predicted rate) differing from "
        "the whole population's by more than this, with the whole interval beyond, raises an "
        "equity alarm.",
    )
    quality_max_invalid_fraction: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="Share of contract-violating rows above which a batch is quarantined; "
        "fewer are set aside and the rest is scored.",
    )
    reference_rows: int = Field(
        default=20_000,
        ge=1000,
        description="Most rows of the champion's training data kept as the drift reference.",
    )

    @model_validator(mode="after")
    def _equity_attributes_known(self) -> MonitoringSettings:
        from healthpredict.modeling.groups import GroupAttributeError, check_attributes

        try:
            check_attributes(self.equity_attributes)
        except GroupAttributeError as error:
            raise ValueError(f"equity_attributes: {error}") from error
        return self

    @model_validator(mode="after")
    def _origin_is_aware(self) -> MonitoringSettings:
        # A naive origin would be read as local time on one machine and UTC on another.
        if self.monitor_origin.tzinfo is None:
            self.monitor_origin = self.monitor_origin.replace(tzinfo=UTC)
        return self
