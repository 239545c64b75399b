"""Evaluation plots: ROC, precision-recall, calibration, feature importance (PNG files)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display.
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve

Curves = dict[str, np.ndarray]


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_roc(labels: np.ndarray, scores: Curves, path: Path) -> Path:
    """ROC curves of one or more models (``scores`` maps model name to probabilities)."""
    figure, axis = plt.subplots(figsize=(5, 5))
    for name, score in scores.items():
        fpr, tpr, _ = roc_curve(labels, score)
        axis.plot(fpr, tpr, label=name)
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test window")
    axis.legend(loc="lower right")
    return _save(figure, path)


def plot_precision_recall(labels: np.ndarray, scores: Curves, path: Path) -> Path:
    """Precision-recall curves, with the positive rate as the no-skill line."""
    figure, axis = plt.subplots(figsize=(5, 5))
    for name, score in scores.items():
        precision, recall, _ = precision_recall_curve(labels, score)
        axis.plot(recall, precision, label=name)
    axis.axhline(np.mean(labels), linestyle="--", color="grey", label="no skill")
    axis.set(xlabel="recall", ylabel="precision", title="Precision-recall, test window")
    axis.legend(loc="upper right")
    return _save(figure, path)


def plot_calibration(labels: np.ndarray, scores: Curves, path: Path) -> Path:
    """Reliability diagram on quantile bins (equal counts keep the sparse high-risk end honest)."""
    figure, axis = plt.subplots(figsize=(5, 5))
    for name, score in scores.items():
        observed, predicted = calibration_curve(labels, score, n_bins=10, strategy="quantile")
        axis.plot(predicted, observed, marker="o", label=name)
    top = max(float(np.max(s)) for s in scores.values())
    axis.plot([0, top], [0, top], linestyle="--", color="grey", label="perfect")
    axis.set(xlabel="predicted risk", ylabel="observed readmission rate", title="Calibration")
    axis.legend(loc="upper left")
    return _save(figure, path)


def plot_importance(importance: pd.Series, path: Path, top: int = 20) -> Path:
    """Horizontal bar chart of the ``top`` most important features."""
    shown = importance.head(top)[::-1]
    figure, axis = plt.subplots(figsize=(6, 0.3 * len(shown) + 1))
    axis.barh(shown.index, shown.to_numpy())
    axis.set(xlabel="importance", title=f"Top {len(shown)} features")
    return _save(figure, path)
