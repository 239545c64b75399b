"""NannyML's CBPE and univariate drift over a folder of parquet files; runs in .venv/tools/nannyml.

    .venv/tools/nannyml/bin/python benchmarks/nannyml/run_nannyml.py FOLDER

FOLDER holds spec.json ({"continuous": [...], "categorical": [...], "chunk_size": int,
"timestamp": null, "threshold": 0.5}), reference.parquet (the features, y_pred_proba, y_true and
optionally y_pred) and chunks/NNNN.parquet (the features, y_pred_proba, optionally y_true and
y_pred). Where y_pred is absent it is y_pred_proba >= threshold. Both calculators are fitted once
on the reference, cut into chunks of chunk_size rows by NannyML's SizeBasedChunker (leftover
rows make a last, smaller chunk, its default); those chunks set the drift thresholds. Then both
are calculated once over all the chunk files together, each file exactly one NannyML chunk. All
else is NannyML's default (CBPE calibrates with isotonic regression where it finds it needed).
Writes FOLDER/results.json (benchmarks/nannyml_bridge.py reads it).
Called by benchmarks/nannyml_bridge.py; exits with status 2 and one line on bad input.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd

# From submodules: `import nannyml` would pass for first-party here (this folder's name).
from nannyml.chunk import Chunk, Chunker, SizeBasedChunker
from nannyml.drift.univariate import UnivariateDriftCalculator
from nannyml.performance_estimation import CBPE
from nannyml.usage_logging import disable_usage_logging

CHUNK_KEY = "__chunk_file__"
PROBA, Y_TRUE, Y_PRED = "y_pred_proba", "y_true", "y_pred"


class InputError(Exception):
    """The folder does not hold what the module docstring describes."""


class FileChunker(Chunker):
    """One NannyML chunk per chunk file (rows tagged CHUNK_KEY); untagged data by size."""

    def __init__(self, chunk_size: int) -> None:
        super().__init__()
        self._by_size = SizeBasedChunker(chunk_size)

    def _split(self, data: pd.DataFrame) -> list[Chunk]:
        if CHUNK_KEY not in data.columns:  # the reference, when a calculator is fitted
            return self._by_size._split(data)
        return [Chunk(key=str(key), data=part) for key, part in data.groupby(CHUNK_KEY, sort=True)]


def _require(frame: pd.DataFrame, columns: list[str], name: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise InputError(f"{name} lacks column(s) {missing}")


def load(folder: Path) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """(spec, reference, analysis): the chunk files concatenated, tagged with CHUNK_KEY."""
    spec_path = folder / "spec.json"
    if not spec_path.is_file():
        raise InputError(f"{spec_path} not found")
    spec = json.loads(spec_path.read_text())
    for key in ("continuous", "categorical", "chunk_size"):
        if key not in spec:
            raise InputError(f"spec.json lacks {key!r}")
    if not isinstance(spec["chunk_size"], int) or spec["chunk_size"] < 1:
        raise InputError(f"spec.json chunk_size must be a positive int, not {spec['chunk_size']!r}")
    if spec.get("timestamp") is not None:
        raise InputError("spec.json timestamp must be null (chunks are files, not periods)")
    features = [*spec["continuous"], *spec["categorical"]]
    if not features:
        raise InputError("spec.json names no continuous or categorical column")
    threshold = float(spec.get("threshold", 0.5))

    def read(path: Path, required: list[str]) -> pd.DataFrame:
        frame = pd.read_parquet(path)
        _require(frame, required, path.name)
        if Y_PRED not in frame.columns:
            frame[Y_PRED] = (frame[PROBA] >= threshold).astype(int)
        return frame

    if not (folder / "reference.parquet").is_file():
        raise InputError(f"{folder / 'reference.parquet'} not found")
    reference = read(folder / "reference.parquet", [*features, PROBA, Y_TRUE])
    if not reference[Y_TRUE].isin([0, 1]).all():
        raise InputError("reference.parquet y_true must be 0 or 1 on every row")
    paths = sorted((folder / "chunks").glob("*.parquet"))
    if not paths:
        raise InputError(f"no {folder / 'chunks'}/*.parquet")
    parts = []
    for path in paths:
        part = read(path, [*features, PROBA])
        if part.empty:
            raise InputError(f"chunks/{path.name} has no rows")
        parts.append(part.assign(**{CHUNK_KEY: path.stem}))
    return spec, reference, pd.concat(parts, ignore_index=True)


def _number(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _flag(value: Any) -> bool:
    return False if pd.isna(value) else bool(value)


def run(spec: dict[str, Any], reference: pd.DataFrame, analysis: pd.DataFrame) -> dict[str, Any]:
    """Fit CBPE (roc_auc) and the univariate drift calculator (defaults), then calculate."""
    continuous, categorical = list(spec["continuous"]), list(spec["categorical"])
    chunker = FileChunker(spec["chunk_size"])
    n_chunks = analysis[CHUNK_KEY].nunique()

    started = time.perf_counter()
    cbpe = CBPE(
        problem_type="classification_binary",
        y_pred_proba=PROBA,
        y_pred=Y_PRED,
        y_true=Y_TRUE,
        metrics=["roc_auc"],
        chunker=chunker,
    ).fit(reference)
    estimated = cbpe.estimate(analysis).filter(period="analysis").data
    cbpe_seconds = time.perf_counter() - started

    started = time.perf_counter()
    drift = UnivariateDriftCalculator(
        column_names=continuous + categorical,
        treat_as_numerical=continuous,
        treat_as_categorical=categorical,
        chunker=chunker,
    ).fit(reference)
    drifted = drift.calculate(analysis).filter(period="analysis").data
    univariate_seconds = time.perf_counter() - started

    for name, frame in (("CBPE", estimated), ("univariate drift", drifted)):
        if len(frame) != n_chunks:
            raise RuntimeError(f"{name} returned {len(frame)} chunks for {n_chunks} chunk files")

    methods = {column: drift.continuous_method_names for column in drift.continuous_column_names}
    methods |= {column: drift.categorical_method_names for column in drift.categorical_column_names}
    univariate = [
        {
            "chunk": str(row[("chunk", "chunk", "key")]),
            "column": column,
            "method": method,
            "value": _number(row[(column, method, "value")]),
            "upper_threshold": _number(row[(column, method, "upper_threshold")]),
            "lower_threshold": _number(row[(column, method, "lower_threshold")]),
            "alert": _flag(row[(column, method, "alert")]),
        }
        for _, row in drifted.iterrows()
        for column in continuous + categorical
        for method in methods[column]
    ]
    cbpe_rows = [
        {
            "chunk": str(row[("chunk", "key")]),
            "estimated_roc_auc": _number(row[("roc_auc", "value")]),
            "realised_roc_auc": _number(row[("roc_auc", "realized")]),
        }
        for _, row in estimated.iterrows()
    ]
    return {
        "nannyml_version": version("nannyml"),
        "cbpe": cbpe_rows,
        "univariate": univariate,
        "seconds": {"cbpe": cbpe_seconds, "univariate": univariate_seconds},
    }


def main(argv: list[str]) -> int:
    """CLI entry point: run_nannyml.py FOLDER."""
    if len(argv) != 1:
        print("usage: run_nannyml.py FOLDER", file=sys.stderr)
        return 2
    folder = Path(argv[0])
    try:
        spec, reference, analysis = load(folder)
    except (InputError, OSError, ValueError) as error:
        print(f"run_nannyml: {error}", file=sys.stderr)
        return 2
    # NannyML reports usage to its vendor unless told not to (there is no network here anyway).
    disable_usage_logging()
    # NannyML warns whenever a split gives fewer than 6 chunks; here that is by design.
    warnings.filterwarnings("ignore", message="The resulting number of chunks is too low")
    results = run(spec, reference, analysis)
    (folder / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
