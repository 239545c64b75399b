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
        cells = "".join(f"{str(reports[name].metrics[key]):<26}" for name in names)
        lines.append(f"  {label:<26}{cells}")
    return "\n".join(lines)


def format_subgroups(report: EvalReport) -> str:
    """ROC-AUC and PR-AUC per subgroup, to expose unequal performance."""
    lines = [f"  {'subgroup':<28}{'rows':>7}{'readm.':>8}  {'ROC-AUC':<22}{'PR-AUC':<22}"]
    for group in report.subgroups:
        name = f"{group.attribute}={group.value}"
        lines.append(f"  {name:<28}{group.n_rows:>7,}{group.n_positive:>8,}  "
                     f"{str(group.metrics['roc_auc']):<22}{str(group.metrics['pr_auc']):<22}")  # fmt: skip
    return "\n".join(lines)


def format_training_summary(summary: TrainingSummary) -> str:
    """The main job's summary: data, model, metrics with intervals, registry outcome."""
    report = summary.report
    level = f"{report.confidence_level:.0%}"
    registered = summary.registered
    alias = registered.alias or "no alias"
    return "\n".join([
        f"Trained on {summary.n_train:,} encounters ({summary.training_window}, data {summary.data_hash}) "
        f"in {summary.fit_seconds:.1f} s",
        f"Temporal test window: {report.n_rows:,} encounters, {report.n_patients:,} patients, "
        f"readmitted<30 {report.positive_rate:.2%}; {level} patient-grouped bootstrap intervals "
        f"({report.bootstrap_rounds} rounds); top risk = highest {report.top_fraction:.0%}",
        format_metrics_table({"LightGBM pipeline": report, "logistic baseline": summary.baseline_report}),
        "Subgroups (LightGBM pipeline):",
        format_subgroups(report),
        f"Registered {registered.name} version {registered.version} -> {alias}: {registered.reason}",
        f"  load it with: models:/{registered.name}@{registered.alias}" if registered.alias else "",
        f"  MLflow run {registered.run_id}",
    ]).rstrip()  # fmt: skip
