"""Register a training run's model exactly once, even when an attempt died half-way.

:func:`healthpredict.modeling.registry.register` writes the version, then its tags, then its
alias, so a version that a failure interrupted never holds an alias. A retry finds that
version by its run id: complete (tagged) versions are reused, an interrupted one is deleted
and the model registered again, so no untagged version stays behind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from healthpredict.settings import Settings

if TYPE_CHECKING:
    from healthpredict.modeling.evaluate import EvalReport

EVALUATION_FILE = "evaluation.json"
EVALUATION_ARTIFACT = f"evaluation/{EVALUATION_FILE}"
# Written by register() before the alias; a version without it was interrupted.
COMPLETE_TAG = "promotion_reason"
# Run tags copied onto the registered version.
_VERSION_TAGS = ("data_hash", "training_window", "search_run_id", "selected_by", "training_key")


def register_once(settings: Settings, run_id: str, model_uri: str) -> dict[str, Any]:
    """Register the model of ``run_id`` unless a complete version of it exists; describe it."""
    import mlflow
    from mlflow import MlflowClient

    from healthpredict.modeling.registry import configure_tracking, register

    configure_tracking(settings)
    client, name = MlflowClient(), settings.tracking.model_name
    for found in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"):
        # Searches do not return aliases; the version itself does.
        version = client.get_model_version(name, str(found.version))
        if version.aliases or COMPLETE_TAG in version.tags:
            return _described(str(version.version), list(version.aliases), run_id, reused=True)
        client.delete_model_version(name, str(version.version))
    run = client.get_run(run_id)
    report = report_from_dict(mlflow.artifacts.load_dict(f"runs:/{run_id}/{EVALUATION_ARTIFACT}"))
    tags = {key: run.data.tags[key] for key in _VERSION_TAGS if key in run.data.tags}
    registered = register(model_uri, run_id, settings, report, {**tags, "model_kind": "lightgbm"})
    aliases = [registered.alias] if registered.alias else []
    return _described(registered.version, aliases, run_id, reused=False)


def report_from_dict(data: dict[str, Any]) -> EvalReport:
    """Rebuild an EvalReport from its evaluation.json."""
    from healthpredict.modeling.evaluate import EvalReport, Interval, SubgroupReport

    def intervals(values: dict[str, Any]) -> dict[str, Interval]:
        return {name: Interval(**interval) for name, interval in values.items()}

    subgroups = [
        SubgroupReport(**{**group, "metrics": intervals(group["metrics"])})
        for group in data.get("subgroups", [])
    ]
    fields = {k: v for k, v in data.items() if k not in ("metrics", "subgroups")}
    return EvalReport(**fields, metrics=intervals(data["metrics"]), subgroups=subgroups)


def _described(version: str, aliases: list[str], run_id: str, *, reused: bool) -> dict[str, Any]:
    # One alias at most: registration gives champion or challenger, never both.
    return {
        "version": version,
        "alias": aliases[0] if aliases else None,
        "run_id": run_id,
        "reused": reused,
    }
