"""Plain-text summaries for the terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from healthpredict.modeling.evaluate import EvalReport

if TYPE_CHECKING:
    from healthpredict.loop.replay import ReplayResult
    from healthpredict.modeling.gate import GateDecision
    from healthpredict.monitoring.history import RunHistory
    from healthpredict.pipelines.prepare_data import PreparationSummary
    from healthpredict.pipelines.train_and_register import TrainingSummary
    from healthpredict.pipelines.tune_and_register import TuneSummary

METRIC_LABELS = {
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
    "brier": "Brier score",
    "ece": "calibration error (ECE)",
    "precision_at_top": "precision, top risk",
    "recall_at_top": "recall, top risk",
}


def format_preparation_summary(summary: PreparationSummary) -> str:
    """Where the prepared data went, what the contract and cleaning did, and each window."""
    manifest = summary.manifest
    lines = [
        f"Prepared data in {summary.directory} (data hash {manifest.data_hash})",
        f"  contract: {summary.validation.summary()}",
        f"  cleaning: {summary.cleaning.summary()}",
    ]
    for window in manifest.windows:
        rate = window.positives / window.rows
        lines.append(f"  {window.name:<10} {window.rows:>7,} rows  readmitted<30 {rate:6.2%}")
    return "\n".join(lines)


def format_metrics_table(reports: dict[str, EvalReport]) -> str:
    """Side-by-side metric table of several reports, each cell ``estimate [low, high]``."""
    names = list(reports)
    header = f"  {'metric':<26}" + "".join(f"{name:<26}" for name in names)
    lines = [header]
    for key, label in METRIC_LABELS.items():
        cells = "".join(f"{reports[name].metrics[key]!s:<26}" for name in names)
        lines.append(f"  {label:<26}{cells}")
    return "\n".join(lines)


def format_subgroups(report: EvalReport) -> str:
    """ROC-AUC and PR-AUC per subgroup, to expose unequal performance."""
    lines = [f"  {'subgroup':<28}{'rows':>7}{'readm.':>8}  {'ROC-AUC':<22}{'PR-AUC':<22}"]
    for group in report.subgroups:
        name = f"{group.attribute}={group.value}"
        lines.append(
            f"  {name:<28}{group.n_rows:>7,}{group.n_positive:>8,}  "
            f"{group.metrics['roc_auc']!s:<22}{group.metrics['pr_auc']!s:<22}"
        )
    return "\n".join(lines)


def format_training_summary(summary: TrainingSummary) -> str:
    """The main job's summary: data, model, metrics with intervals, registry outcome."""
    report, registered = summary.report, summary.registered
    level = f"{report.confidence_level:.0%}"
    lines = [
        f"Trained on {summary.n_train:,} encounters ({summary.training_window}, "
        f"data {summary.data_hash}) in {summary.fit_seconds:.1f} s",
        f"Temporal test window: {report.n_rows:,} encounters, {report.n_patients:,} patients, "
        f"readmitted<30 {report.positive_rate:.2%}; {level} patient-grouped bootstrap "
        f"intervals ({report.bootstrap_rounds} rounds); top risk = highest "
        f"{report.top_fraction:.0%}",
        format_metrics_table(
            {"LightGBM pipeline": report, "logistic baseline": summary.baseline_report}
        ),
        "Subgroups (LightGBM pipeline):",
        format_subgroups(report),
        f"Registered {registered.name} version {registered.version} -> "
        f"{registered.alias or 'no alias'}: {registered.reason}",
    ]
    if registered.alias:
        lines.append(f"  load it with: models:/{registered.name}@{registered.alias}")
    lines.append(f"  MLflow run {registered.run_id}")
    return "\n".join(lines)


def format_search_summary(summary: TuneSummary) -> str:
    """What the search did, then the refitted candidate's training summary."""
    search = summary.search
    best = search.best
    lines = [
        f"Search: {len(search.trials)} trials in {search.wall_seconds:.0f} s, "
        f"{search.n_stopped_early} stopped early; best mean CV ROC-AUC "
        f"{best.mean_score:.4f} over {search.n_folds} patient-grouped folds "
        f"(MLflow run {summary.search_run_id})",
        "  best configuration: "
        + ", ".join(f"{k}={_short(v)}" for part in best.config.values() for k, v in part.items()),
        format_training_summary(summary.training),
    ]
    return "\n".join(lines)


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_gate_decision(decision: GateDecision) -> str:
    """The gate's verdict with both scores, the interval and the rule that decided."""
    verdict = "PROMOTED" if decision.promote else "NOT PROMOTED"
    level = f"{decision.policy.confidence_level:.0%}"
    return "\n".join(
        [
            f"Gate on {decision.window} ({decision.n_rows:,} encounters, "
            f"{decision.n_patients:,} patients): challenger v{decision.challenger_version} "
            f"{verdict}",
            f"  ROC-AUC: champion v{decision.champion_version} {decision.champion_roc_auc:.4f}, "
            f"challenger {decision.challenger_roc_auc:.4f}; gain {decision.auc_gain} "
            f"({level} paired patient-grouped bootstrap, {decision.policy.rounds} rounds)",
            f"  ECE: champion {decision.champion_ece:.4f}, challenger "
            f"{decision.challenger_ece:.4f}; increase {decision.ece_increase}",
            f"  rule: gain >= {decision.policy.min_auc_gain:.3f}, interval above "
            f"-{decision.policy.loss_tolerance:.3f}, ECE increase <= "
            f"{decision.policy.max_ece_increase:.3f}",
            f"  reason: {decision.reason}",
        ]
    )


def format_batch_table(history: RunHistory) -> str:
    """Per-window table of a deployment or replay: both data verdicts (fields that moved; the
    split-gain share off the reference, starred when it is input drift), estimated and realised
    AUC with the estimate's error, decision, model, and the patient groups with an equity
    alarm (measured on that window once its outcomes arrived)."""
    lines = [
        f"run {history.name}: {history.policy_text}; scenarios: {history.scenario_set}",
        f"{'window':<18}{'status':<12}{'scenario':<24}{'moved':>6}{'inputs':>7}{'est AUC':>9}"
        f"{'realised AUC':>24}{'error':>7}  {'decision':<22}{'model':>6}  group alarms",
    ]
    for row in history.batches.to_dict("records"):
        lines.append(_batch_line(row))
    quarantined = history.batches.loc[history.batches["status"] == "quarantined", "batch_name"]
    lines.append(
        f"{history.retrains} retrain(s), {history.promotions} promotion(s); "
        f"quarantined: {', '.join(quarantined) or 'none'}"
    )
    return "\n".join(lines)


def _batch_line(row: dict[Any, Any]) -> str:
    def number(value: Any) -> str:
        return "-" if value is None or value != value else f"{value:.3f}"

    if row["status"] == "quarantined":
        realised = "not monitored"
    elif row["realised_auc"] == row["realised_auc"]:
        realised = (
            f"{number(row['realised_auc'])} [{number(row['realised_auc_low'])}, "
            f"{number(row['realised_auc_high'])}]"
        )
    else:
        realised = "labels pending"
    decision = row["decision"] if not row["outcome"] else f"{row['decision']}: {row['outcome']}"
    if row["outcome"] == "promoted":
        decision += f" v{row['new_version']}"
    scenario = str(row["scenarios"] or "-")[:23]
    moved = str(len(row["moved"].split(", "))) if row["moved"] else "-"
    inputs = number(row["drift_share"])[:-1] if row["drift_share"] == row["drift_share"] else "-"
    if row["dataset_drift"] is True:
        inputs += "*"
    error = row["estimate_error"]
    error_text = "-" if error != error else f"{error:+.3f}"
    model = f"v{row['model_version']}" if row["model_version"] else "-"
    groups = row["group_alarms"] if isinstance(row["group_alarms"], str) else ""
    return (
        f"{row['batch_name']:<18}{row['status']:<12}{scenario:<24}{moved:>6}{inputs:>7}"
        f"{number(row['estimated_auc']):>9}{realised:>24}{error_text:>7}  {decision:<22}"
        f"{model:>6}  {groups or '-'}"
    )


def format_replay_speed(result: ReplayResult) -> str:
    """How fast a replay's traffic went."""
    if not result.serve_seconds:
        return f"replay: nothing left to send; {result.seconds:.0f} s in all"
    records_per_second = result.records / result.serve_seconds
    return (
        f"replay: {result.records:,} records in {result.requests:,} requests, "
        f"{result.requests_per_second:.1f} requests/s ({records_per_second:,.0f} records/s) "
        f"while sending; {result.seconds:.0f} s in all"
    )
