"""Per-row contributions of a LightGBM booster from one leaf lookup per tree.

Exact Tree SHAP (``pred_contrib=True``) costs milliseconds per row for a calibrated ensemble of
thousands of trees, more than the whole prediction budget. Path attributions (Saabas: each
split on the row's path credits its feature with the change in the node's expected value)
depend only on the leaf the row reaches, so they are tabulated once per leaf when a model is
loaded; serving then needs only ``pred_leaf`` (the cost of one prediction) and a table gather.
Like SHAP they add up exactly: base value + contributions = the booster's raw score. Unlike
SHAP they are not consistent (they favour splits near the leaves); ``explanation=shap`` asks
for exact Tree SHAP when that matters more than latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_ROW_CHUNK = 64  # bounds the (rows, trees, groups) temporary of a gather


@dataclass(frozen=True)
class LeafTables:
    """Per (tree, leaf): the leaf value and the path attributions by feature group."""

    values: np.ndarray
    contributions: np.ndarray
    offsets: np.ndarray
    base: float

    def raw_scores(self, leaves: np.ndarray) -> np.ndarray:
        """Raw scores of rows from their leaf indices, summed in tree order like LightGBM."""
        gathered = self.values[leaves + self.offsets]
        return np.cumsum(gathered, axis=1)[:, -1]

    def attributions(self, leaves: np.ndarray) -> np.ndarray:
        """``(rows, groups)`` path attributions of rows from their leaf indices."""
        index = leaves + self.offsets
        out = np.empty((len(leaves), self.contributions.shape[1]))
        for start in range(0, len(leaves), _ROW_CHUNK):
            chunk = index[start : start + _ROW_CHUNK]
            out[start : start + _ROW_CHUNK] = self.contributions[chunk].sum(
                axis=1, dtype=np.float64
            )
        return out


def leaf_tables(booster: Any, feature_group: np.ndarray, n_groups: int) -> LeafTables:
    """Tabulate every leaf of ``booster`` (a fitted binary ``lightgbm.Booster``).

    Args:
        booster: The model.
        feature_group: For each model feature, the index of the group it is credited to.
        n_groups: Number of groups.
    """
    trees = booster.dump_model()["tree_info"]
    width = max(tree["num_leaves"] for tree in trees)
    values = np.zeros(len(trees) * width)
    # float32 halves the memory a gather reads; attributions need no more than 7 digits.
    contributions = np.zeros((len(trees) * width, n_groups), dtype=np.float32)
    base = 0.0
    for t, tree in enumerate(trees):
        # Exact doubles from the booster; the JSON dump rounds some values.
        exact = [booster.get_leaf_output(t, leaf) for leaf in range(tree["num_leaves"])]
        values[t * width : t * width + len(exact)] = exact
        root = _annotate(tree["tree_structure"], exact)
        base += root["mean"]
        _credit(root, np.zeros(n_groups), feature_group, contributions[t * width : (t + 1) * width])
    offsets = np.arange(len(trees)) * width
    return LeafTables(values, contributions, offsets, base)


def _annotate(node: dict[str, Any], exact: list[float]) -> dict[str, Any]:
    """Give every node the mean value of its leaves over training rows (its expected value)."""
    if "leaf_index" in node or "split_feature" not in node:
        leaf = int(node.get("leaf_index", 0))
        # Training rows per leaf, as LightGBM's own Tree SHAP weighs them: the base values
        # of both explanations are then the same expected raw score.
        weight = float(node.get("leaf_count") or 1.0)
        return {"leaf": leaf, "mean": exact[leaf], "weight": weight}
    left = _annotate(node["left_child"], exact)
    right = _annotate(node["right_child"], exact)
    weight = left["weight"] + right["weight"]
    mean = (left["weight"] * left["mean"] + right["weight"] * right["mean"]) / weight
    return {
        "feature": int(node["split_feature"]),
        "left": left,
        "right": right,
        "mean": mean,
        "weight": weight,
    }


def _credit(
    node: dict[str, Any], path: np.ndarray, feature_group: np.ndarray, out: np.ndarray
) -> None:
    """Write the accumulated path attribution of every leaf under ``node`` into ``out``."""
    if "leaf" in node:
        out[node["leaf"]] = path
        return
    group = feature_group[node["feature"]]
    for child in (node["left"], node["right"]):
        step = path.copy()
        step[group] += child["mean"] - node["mean"]
        _credit(child, step, feature_group, out)


def concatenate(tables: list[LeafTables]) -> LeafTables:
    """One table over the trees of several boosters (leaves are then concatenated likewise)."""
    sizes = [len(t.values) for t in tables]
    starts = np.cumsum([0, *sizes[:-1]])
    offsets = np.concatenate([t.offsets + start for t, start in zip(tables, starts, strict=True)])
    return LeafTables(
        np.concatenate([t.values for t in tables]),
        np.concatenate([t.contributions for t in tables]),
        offsets,
        float(sum(t.base for t in tables)),
    )
