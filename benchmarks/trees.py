"""Raw tree scoring: LightGBM's own predict against the compiled scorer (serving/fastpath/trees.py).

On the registered champion when ``<data-dir>/mlflow.db`` exists (every calibration member's
booster, on records encoded by the serving encoder), else on a synthetic model of the same shape
(400 trees of 31 leaves on 122 columns with NaNs, said so in the output). Prints rows per second
of the raw scores of all boosters on a 100,000-row matrix for LightGBM (``num_threads`` 1 and 2)
and the compiled scorer (1 and 2 threads), each ratio to LightGBM measured in the same run
(the variants take turns, and each figure is the median of the rounds, so a busy machine slows
them alike), the parity, the compile time and the cached load time.

    .venv/bin/python benchmarks/trees.py [--data-dir data] [--rows 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from healthpredict.serving.fastpath.trees import (
    CompiledScorer,
    LightGBMScorer,
    compile_trees,
    parity,
)


def champion_boosters(data_dir: Path, rows: int) -> tuple[list[Any], np.ndarray, str]:
    """The champion's boosters and ``rows`` contract records encoded as the service does."""
    from healthpredict.modeling.registry import configure_tracking, load_pipeline
    from healthpredict.serving.examples import contract_records
    from healthpredict.serving.fastpath import compile_pipeline
    from healthpredict.settings import Settings

    settings = Settings.from_flat(data_dir=data_dir)
    configure_tracking(settings)
    pipeline = load_pipeline(f"models:/{settings.tracking.model_name}@champion")
    boosters = [m.estimator.booster_ for m in pipeline[-1].calibrated_classifiers_]
    matrix = compile_pipeline(pipeline).encode(contract_records(rows, seed=7))
    return boosters, matrix, f"champion of {data_dir / 'mlflow.db'}"


def synthetic_boosters(rows: int, features: int = 122) -> tuple[list[Any], np.ndarray, str]:
    """One booster of the champion's shape on synthetic data (no registry found)."""
    rng = np.random.default_rng(0)

    def draw(n: int) -> np.ndarray:
        matrix = rng.normal(size=(n, features))
        matrix[:, 40:] = (matrix[:, 40:] > 0.8).astype(float)  # one-hot columns, as encoded
        matrix[rng.random(matrix.shape) < 0.05] = np.nan
        return matrix

    train = draw(30_000)
    labels = np.nan_to_num(train[:, 0] - train[:, 1]) + rng.logistic(size=len(train)) > 1.5
    params = {"objective": "binary", "num_leaves": 31, "learning_rate": 0.03, "verbose": -1}
    params["min_child_samples"] = 100
    booster = lgb.train(params, lgb.Dataset(train, labels.astype(int)), 400)
    return [booster], draw(rows), "SYNTHETIC model (no data/mlflow.db: run `make demo`)"


def timed_rounds(variants: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of each variant, the variants taking turns in every round."""
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, action in variants.items():
            started = time.perf_counter()
            action()
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in seconds.items()}


def compile_all(boosters: list[Any], cache: Path) -> tuple[list[CompiledScorer], float]:
    started = time.perf_counter()
    scorers = [compile_trees(booster, cache) for booster in boosters]
    return scorers, time.perf_counter() - started


def main() -> None:
    """Load or build the boosters, compile, load from cache, time, print."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="Holds mlflow.db.")
    parser.add_argument("--rows", type=int, default=100_000, help="Rows of the scored matrix.")
    parser.add_argument("--rounds", type=int, default=5, help="Timed rounds per variant.")
    options = parser.parse_args()
    if (options.data_dir / "mlflow.db").exists():
        boosters, matrix, origin = champion_boosters(options.data_dir, options.rows)
    else:
        boosters, matrix, origin = synthetic_boosters(options.rows)
    trees = sum(b.num_trees() for b in boosters)
    print(f"model: {origin}")
    print(
        f"{len(boosters)} booster(s), {trees} trees in all, matrix {matrix.shape[0]:,} x "
        f"{matrix.shape[1]}, {np.isnan(matrix).mean():.1%} NaN; {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    with tempfile.TemporaryDirectory(prefix="healthpredict-trees-") as folder:
        compiled, compile_seconds = compile_all(boosters, Path(folder))
        cached, load_seconds = compile_all(boosters, Path(folder))
    assert not any(s.from_cache for s in compiled) and all(s.from_cache for s in cached)
    gap = max(parity(b, s, matrix, 2) for b, s in zip(boosters, cached, strict=True))
    print(f"compile {compile_seconds:.1f} s, cached load {load_seconds:.3f} s, parity {gap:.1e}")
    lightgbm = [LightGBMScorer(b) for b in boosters]
    variants = {
        f"{kind} {threads} thread{'s' * (threads > 1)}": (
            lambda s=scorers, t=threads: [x.raw_scores(matrix, t) for x in s]
        )
        for kind, scorers in (("LightGBM raw predict", lightgbm), ("compiled (lleaves)", cached))
        for threads in (1, 2)
    }
    medians = timed_rounds(variants, options.rounds)
    base1, base2 = (
        medians["LightGBM raw predict 1 thread"],
        medians["LightGBM raw predict 2 threads"],
    )
    print(f"{'variant':<32} {'rows/s':>12} {'vs LightGBM 1t':>15} {'vs LightGBM 2t':>15}")
    for name, seconds in medians.items():
        print(
            f"{name:<32} {len(matrix) / seconds:>12,.0f} {base1 / seconds:>14.2f}x "
            f"{base2 / seconds:>14.2f}x"
        )
    print(f"(median of {options.rounds} interleaved rounds; rows/s of all boosters' raw scores)")


if __name__ == "__main__":
    main()
