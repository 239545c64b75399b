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


def _curves(lines: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[plt.Figure, plt.Axes]:
    """A square figure with one line per model (``lines``: name -> (x, y))."""
    figure, axis = plt.subplots(figsize=(5, 5))
    for name, (x, y) in lines.items():
        axis.plot(x, y, label=name)
    return figure, axis


def plot_roc(labels: np.ndarray, scores: Curves, path: Path) -> Path:
    """ROC curves of one or more models (``scores`` maps model name to probabilities)."""
    figure, axis = _curves({name: roc_curve(labels, s)[:2] for name, s in scores.items()})
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test window")
    axis.legend(loc="lower right")
    return _save(figure, path)


def plot_precision_recall(labels: np.ndarray, scores: Curves, path: Path) -> Path:
    """Precision-recall curves, with the positive rate as the no-skill line."""
    curves = {name: precision_recall_curve(labels, s)[:2] for name, s in scores.items()}
    figure, axis = _curves(
        {name: (recall, precision) for name, (precision, recall) in curves.items()}
    )
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
