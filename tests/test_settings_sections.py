"""Settings in sections: every environment variable of the flat Settings still sets its field;
settings are built and copied by flat name; the flat view rebuilds them in a child process."""

from __future__ import annotations

import types
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from typer.testing import CliRunner

from healthpredict.cli import app
from healthpredict.loop.service import settings_environment
from healthpredict.settings import Settings, get_settings

# Every variable name of the flat Settings (HEALTHPREDICT_<NAME>) and the field it sets now.
FLAT_NAMES = {
    "data_source": "data.data_source",
    "data_sha256": "data.data_sha256",
    "data_dir": "data.data_dir",
    "max_invalid_fraction": "data.max_invalid_fraction",
    "id_salt": "data.id_salt",
    "initial_window_fraction": "data.initial_window_fraction",
    "n_batches": "data.n_batches",
    "test_fraction": "data.test_fraction",
    "cv_folds": "training.cv_folds",
    "seed": "training.seed",
    "bootstrap_rounds": "training.bootstrap_rounds",
    "confidence_level": "training.confidence_level",
    "top_risk_fraction": "training.top_risk_fraction",
    "min_champion_roc_auc": "training.min_champion_roc_auc",
    "mlflow_tracking_uri": "tracking.mlflow_tracking_uri",
    "mlflow_artifact_location": "tracking.mlflow_artifact_location",
    "experiment_name": "tracking.experiment_name",
    "model_name": "tracking.model_name",
    "ray_address": "search.ray_address",
    "search_space_file": "search.search_space_file",
    "tune_trials": "search.tune_trials",
    "tune_time_budget_seconds": "search.tune_time_budget_seconds",
    "tune_folds": "search.tune_folds",
    "tune_concurrency": "search.tune_concurrency",
    "gate_window": "gate.window",
    "gate_min_auc_gain": "gate.min_auc_gain",
    "gate_loss_tolerance": "gate.loss_tolerance",
    "gate_max_ece_increase": "gate.max_ece_increase",
    "gate_group_margin": "gate.group_margin",
    "gate_group_min_encounters": "gate.group_min_encounters",
    "gate_group_min_positives": "gate.group_min_positives",
    "api_key": "serving.api_key",
    "admin_key": "serving.admin_key",
    "serve_host": "serving.serve_host",
    "serve_port": "serving.serve_port",
    "decision_threshold": "serving.decision_threshold",
    "risk_band_edges": "serving.risk_band_edges",
    "risk_band_names": "serving.risk_band_names",
    "max_batch_size": "serving.max_batch_size",
    "max_outcomes_per_request": "serving.max_outcomes_per_request",
    "max_body_bytes": "serving.max_body_bytes",
    "cors_origins": "serving.cors_origins",
    "model_version": "serving.model_version",
    "model_poll_seconds": "serving.model_poll_seconds",
    "top_contributions": "serving.top_contributions",
    "tree_compiler": "serving.tree_compiler",
    "log_flush_seconds": "serving.log_flush_seconds",
    "log_flush_rows": "serving.log_flush_rows",
    "monitoring_db_url": "monitoring.monitoring_db_url",
    "deployment": "monitoring.deployment",
    "monitor_origin": "monitoring.monitor_origin",
    "monitor_window_days": "monitoring.monitor_window_days",
    "min_labelled_share": "monitoring.min_labelled_share",
    "performance_lookback_windows": "monitoring.performance_lookback_windows",
    "scenarios_file": "monitoring.scenarios_file",
    "policies_file": "monitoring.policies_file",
    "policy": "monitoring.policy",
    "label_delay_batches": "monitoring.label_delay_batches",
    "drift_false_alarm_rate": "monitoring.drift_false_alarm_rate",
    "drift_share_alarm": "monitoring.drift_share_alarm",
    "prediction_drift_threshold": "monitoring.prediction_drift_threshold",
    "estimated_auc_drop_alarm": "monitoring.estimated_auc_drop_alarm",
    "estimate_recalibration_min_rows": "monitoring.estimate_recalibration_min_rows",
    "realised_auc_drop_alarm": "monitoring.realised_auc_drop_alarm",
    "calibration_gap_alarm": "monitoring.calibration_gap_alarm",
    "equity_attributes": "monitoring.equity_attributes",
    "equity_min_group_encounters": "monitoring.equity_min_group_encounters",
    "equity_min_group_positives": "monitoring.equity_min_group_positives",
    "equity_auc_margin": "monitoring.equity_auc_margin",
    "equity_calibration_margin": "monitoring.equity_calibration_margin",
    "quality_max_invalid_fraction": "monitoring.quality_max_invalid_fraction",
    "reference_rows": "monitoring.reference_rows",
    "delivery_dry_run": "delivery.dry_run",
    "delivery_cluster_dry_run": "delivery.cluster_dry_run",
    "delivery_journal_file": "delivery.journal_file",
    "delivery_docker_command": "delivery.docker_command",
    "delivery_kubectl_command": "delivery.kubectl_command",
    "delivery_aws_command": "delivery.aws_command",
    "delivery_registry": "delivery.registry",
    "delivery_repository": "delivery.repository",
    "delivery_registry_login": "delivery.registry_login",
    "delivery_registry_username": "delivery.registry_username",
    "delivery_registry_password": "delivery.registry_password",
    "delivery_registry_insecure": "delivery.registry_insecure",
    "delivery_aws_region": "delivery.aws_region",
    "delivery_image_tag": "delivery.image_tag",
    "delivery_dockerfile": "delivery.dockerfile",
    "delivery_build_context": "delivery.build_context",
    "delivery_base_image": "delivery.base_image",
    "delivery_build_host_sources": "delivery.build_host_sources",
    "delivery_kube_context": "delivery.kube_context",
    "delivery_namespace": "delivery.namespace",
    "delivery_deployment": "delivery.deployment",
    "delivery_container": "delivery.container",
    "delivery_pull_secret": "delivery.pull_secret",
    "delivery_model_version_env": "delivery.model_version_env",
    "delivery_command_timeout_seconds": "delivery.command_timeout_seconds",
    "delivery_build_timeout_seconds": "delivery.build_timeout_seconds",
    "delivery_rollout_timeout_seconds": "delivery.rollout_timeout_seconds",
    "delivery_service_url": "delivery.service_url",
    "delivery_smoke_timeout_seconds": "delivery.smoke_timeout_seconds",
    "delivery_smoke_example": "delivery.smoke_example",
}
# Values the generic rule below cannot make valid (patterns, choices, lists, cross-checks).
CHANGED = {
    "gate_window": "batch_002",
    "model_version": "7",
    "tree_compiler": "lightgbm",
    "delivery_registry_login": "none",
    "risk_band_edges": "[0.2, 0.3]",
    "risk_band_names": '["a", "b", "c"]',
    "cors_origins": '["https://ward.example"]',
    "equity_attributes": '["age"]',
    "monitor_origin": "2025-03-01T00:00:00+00:00",
}


def _field(path: str) -> FieldInfo:
    section, attribute = path.split(".")
    section_class = Settings.model_fields[section].annotation
    assert isinstance(section_class, type) and issubclass(section_class, BaseModel)
    return section_class.model_fields[attribute]


def _changed(name: str, info: FieldInfo) -> str:
    """An environment value for ``name`` that is valid and differs from its default."""
    if name in CHANGED:
        return CHANGED[name]
    default, annotation = info.default, info.annotation
    if isinstance(default, bool):
        return str(not default).lower()
    if isinstance(default, int):
        return str(default + 1)
    if isinstance(default, float):
        return str(default * 0.9 if default else 0.5)
    if isinstance(default, Path):
        return str(default / "elsewhere")
    if isinstance(default, str):
        return f"{default}-changed"
    optional = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else ()
    if SecretStr in optional:
        return "not-the-default-secret"
    return "/elsewhere" if Path in optional else "elsewhere"


def _plain(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def test_every_flat_name_has_its_field() -> None:
    fields = Settings.flat_fields()
    assert set(fields) == set(FLAT_NAMES)
    for name, field in fields.items():
        assert f"{field.section}.{field.attribute}" == FLAT_NAMES[name]
        assert field.env == f"HEALTHPREDICT_{name.upper()}"


@pytest.mark.parametrize("name", list(FLAT_NAMES))
def test_each_old_environment_variable_sets_its_section_field(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, env = FLAT_NAMES[name], f"HEALTHPREDICT_{name.upper()}"
    section, attribute = path.split(".")
    info = _field(path)
    monkeypatch.delenv(env, raising=False)  # the test set-up pins a few (data source, trees)
    assert _plain(getattr(getattr(Settings(), section), attribute)) == _plain(info.default)
    monkeypatch.setenv(env, _changed(name, info))
    value = getattr(getattr(Settings(), section), attribute)
    assert _plain(value) != _plain(info.default)
    assert Settings().flat()[name] == value


def test_flat_names_build_settings_on_top_of_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HEALTHPREDICT_SEED", "7")
    settings = Settings.from_flat(gate_min_auc_gain=0.02, delivery_registry="r.example")
    assert settings.gate.min_auc_gain == 0.02 and settings.delivery.registry == "r.example"
    assert settings.training.seed == 7
    with pytest.raises(TypeError, match="no such setting: min_auc_gain"):
        Settings.from_flat(min_auc_gain=0.02)


def test_a_copy_by_flat_name_is_validated_and_leaves_the_original() -> None:
    original = Settings()
    copy = original.with_flat(deployment="canary", api_key="k" * 20)
    assert copy.monitoring.deployment == "canary" and original.monitoring.deployment != "canary"
    assert isinstance(copy.serving.api_key, SecretStr)
    assert copy.gate is original.gate  # sections not named are shared, not rebuilt
    with pytest.raises(ValidationError, match="serve_port"):
        original.with_flat(serve_port=0)


def test_cross_section_rules_still_hold() -> None:
    # batch 7 of 7 ends where the timeline ends: inside the temporal test window.
    with pytest.raises(ValidationError, match="gate_window batch_007"):
        Settings.from_flat(gate_window="batch_007")
    with pytest.raises(ValidationError, match="must not exceed 1"):
        Settings.from_flat(initial_window_fraction=0.9, test_fraction=0.2)
    naive = Settings.from_flat(monitor_origin=datetime(2024, 5, 1))
    assert naive.monitoring.monitor_origin == datetime(2024, 5, 1, tzinfo=UTC)


def test_the_child_environment_rebuilds_the_same_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = Settings.from_flat(
        data_dir=tmp_path.resolve(),
        gate_min_auc_gain=0.02,
        delivery_registry="r.example",
        id_salt="salt",
        equity_attributes=["age"],
        monitor_origin=datetime(2025, 3, 1, tzinfo=UTC),
        api_key="k" * 20,
    )
    for name, value in settings_environment(settings).items():
        monkeypatch.setenv(name, value)
    rebuilt = Settings()
    skipped = {"api_key", "admin_key", "model_version"}  # the child gets its own

    def comparable(values: dict[str, Any]) -> dict[str, Any]:
        return {
            name: value.resolve() if isinstance(value, Path) else _plain(value)
            for name, value in values.items()
            if name not in skipped
        }

    assert comparable(rebuilt.flat()) == comparable(settings.flat())
    assert rebuilt.serving.api_key is None


def test_config_prints_flat_names_with_secrets_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALTHPREDICT_DELIVERY_REGISTRY_PASSWORD", "hunter2-not-shown")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    assert "gate_min_auc_gain = 0.005" in result.output
    assert "delivery_registry_password = **********" in result.output
    assert "hunter2" not in result.output
