"""Batch scoring figures: the `healthpredict score` job on 100,000 real encounters from Parquet.

Prints, from one run on the champion of ``--data-dir`` (``make demo`` writes one):

1. the job end to end (read Parquet, check the contract, encode, score, hash the ids, write
   Parquet), its model load apart, in rows/s;
2. its parts on the same rows: reading, coding and checking, encoding, the trees (with the
   compiled predictor, and with LightGBM in its place), the rest (keys, bands, writing);
3. LightGBM's own raw predict of the same boosters on the same matrix, and the job's ratio to
   it (the issue's goal: at least 2x);
4. the same job on a two-node Ray cluster started on loopback (``ray start``, one CPU a node),
   over the input cut into 8 Parquet files, and its ratio to one process.

The rows are the real extract's encounters, checked by ``data validate``'s contract, in the
contract's names, as a hospital's nightly file would hold them.

    make benchmark-scoring    # or: .venv/bin/python benchmarks/scoring.py [--data-dir data]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from healthpredict.data.columnar import check_batch, code_batch
from healthpredict.data.source import open_raw
from healthpredict.data.validate import validate_raw
from healthpredict.pipelines.score import REQUIRED, BatchScorer, load_model, score_file
from healthpredict.settings import Settings

ROWS = 100_000
REPEATS = 3  # each timing is the median of this many runs
RAY_FILES = 8
TREES = "trees + calibration (the job's)"


def median_seconds(action: Callable[[], object], repeats: int = REPEATS) -> float:
    """The median wall time of ``action`` over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def encounters(settings: Settings, rows: int) -> pd.DataFrame:
    """The first ``rows`` valid encounters of the extract, typed, in the contract's names."""
    valid = validate_raw(open_raw(settings.data.data_source).frame, with_label=False).valid
    return valid.head(rows).reset_index(drop=True)


def rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:>10,.0f} rows/s ({seconds:.3f} s)"


def job(settings: Settings, source: Path, folder: Path) -> tuple[float, float]:
    """The job's median scoring time (model load apart) and its load time."""
    reports = [score_file(settings, str(source), str(folder / "scores.parquet")) for _ in range(3)]
    scoring = statistics.median(r.seconds - r.load_seconds for r in reports)
    return scoring, statistics.median(r.load_seconds for r in reports)


def parts(settings: Settings, source: Path, rows: int) -> dict[str, float]:
    """Median seconds of each part of the job on the same rows (one batch of all of them)."""
    model = load_model(settings, None)
    compiled = model.compiled
    if compiled is None:
        sys.exit(f"the champion has no fast path ({model.fast_path})")
    table = pq.read_table(source)
    checked = check_batch(code_batch(table, REQUIRED))
    matrix = compiled.encode_batch(checked.valid)
    boosters = [member.booster for member in compiled.members]
    scorer = BatchScorer.for_settings(model, settings, 0)
    figures = {
        "read Parquet": median_seconds(lambda: pq.read_table(source)),
        "code + check the contract": median_seconds(
            lambda: check_batch(code_batch(table, REQUIRED))
        ),
        "encode (columnar)": median_seconds(lambda: compiled.encode_batch(checked.valid)),
        TREES: median_seconds(lambda: compiled.score(matrix)),
        "LightGBM raw predict, same boosters": median_seconds(
            lambda: [b.predict(matrix, raw_score=True) for b in boosters]
        ),
        "whole batch step (BatchScorer.score)": median_seconds(lambda: scorer.score(table)),
    }
    trees = sum(b.num_trees() for b in boosters)
    print(
        f"  champion v{model.version}: {len(boosters)} boosters, {trees} trees, "
        f"{matrix.shape[1]} features; {model.fast_path}"
    )
    return figures


def on_ray(settings: Settings, frame: pd.DataFrame, folder: Path) -> float:
    """Seconds of the job on a two-node local cluster (model loads and actor starts included)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.ray_cluster import LocalRayCluster

    from healthpredict.pipelines.score_on_ray import score_on_ray

    parts_folder = folder / "parts"
    parts_folder.mkdir()
    for index, chunk in enumerate(np.array_split(frame, RAY_FILES)):
        chunk.to_parquet(parts_folder / f"part-{index}.parquet")
    with LocalRayCluster(num_cpus=1, workers=1) as cluster, cluster.driver():
        report = score_on_ray(settings, str(parts_folder), str(folder / "ray-out"), cluster.address)
    print(f"  {report.summary()}")
    return report.seconds


def main() -> None:
    """Measure and print every figure of the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--no-ray", action="store_true", help="Skip the two-node cluster run.")
    options = parser.parse_args()
    if not (options.data_dir / "mlflow.db").exists():
        sys.exit(f"no registry in {options.data_dir}: run `healthpredict demo` first")
    settings = Settings.from_flat(data_dir=options.data_dir)
    with tempfile.TemporaryDirectory(prefix="hp-scoring-") as name:
        folder = Path(name)
        frame = encounters(settings, options.rows)
        source = folder / "encounters.parquet"
        frame.to_parquet(source)
        rows = len(frame)
        print(f"== {rows:,} real encounters from Parquet ({source.stat().st_size / 1e6:.1f} MB)")
        print("== 1. the job end to end (healthpredict score), model load apart")
        scoring, load = job(settings, source, folder)
        print(f"  {'job':<40} {rate(rows, scoring)}; model load {load:.1f} s")
        print("== 2. its parts on the same rows (one batch)")
        figures = parts(settings, source, rows)
        for label, seconds in figures.items():
            print(f"  {label:<40} {rate(rows, seconds)}")
        lightgbm = figures["LightGBM raw predict, same boosters"]
        print("== 3. against LightGBM's own raw predict on the same matrix")
        print(f"  job / LightGBM raw predict: {lightgbm / scoring:.2f}x (goal: at least 2x)")
        print(f"  trees part / LightGBM raw predict: {lightgbm / figures[TREES]:.2f}x")
        if options.no_ray:
            return
        print("== 4. the same job on a two-node Ray cluster on loopback (1 CPU a node)")
        ray_seconds = on_ray(settings, frame, folder)
        single = scoring + load
        print(
            f"  two nodes {rate(rows, ray_seconds)}; one process, load included "
            f"{rate(rows, single)}; ratio {single / ray_seconds:.2f}x"
        )


if __name__ == "__main__":
    main()
