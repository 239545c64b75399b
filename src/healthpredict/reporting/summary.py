"""Plain-text summaries for the terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from healthpredict.modeling.evaluate import EvalReport

if TYPE_CHECKING:
    from healthpredict.pipelines.train_and_register import TrainingSummary

METRIC_LABELS = {
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
    "brier": "Brier score",
    "ece": "calibration error (ECE)",
    "precision_at_top": "precision, top risk",
    "recall_at_top": "recall, top risk",
}


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
