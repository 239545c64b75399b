"""NannyML's CBPE and univariate drift for the benchmarks, run in a venv of its own.

NannyML cannot be installed into the project venv: nannyml 0.13.1 needs lightgbm<4.6 where
requirements/lock.txt has lightgbm 4.7 (and it resolves to pandas 3 where the lock keeps
pandas<3 for evidently, airflow and mlflow). So `make benchmark-tools` installs it into
.venv/tools/nannyml from benchmarks/nannyml/requirements-lock.txt, and run_nannyml() hands it
parquet files: it writes the inputs to a temporary folder, runs
benchmarks/nannyml/run_nannyml.py with that venv's python, and reads back results.json. This
module needs only numpy, pandas and the standard library.

    from nannyml_bridge import run_nannyml
    results = run_nannyml(reference, chunks, continuous=[...], categorical=[...])
    results.cbpe        # chunk, estimated_roc_auc, realised_roc_auc
    results.univariate  # chunk, column, method, value, upper_threshold, lower_threshold, alert
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "nannyml" / "run_nannyml.py"


@dataclass(frozen=True)
class NannymlResults:
    """What NannyML computed per chunk; `chunk` is the index into the chunks given."""

    version: str
    cbpe: pd.DataFrame  # chunk, estimated_roc_auc, realised_roc_auc (NaN without y_true)
    univariate: pd.DataFrame  # chunk, column, method, value, upper/lower_threshold, alert
    seconds: dict[str, float]  # NannyML's own time (fit and calculate): cbpe, univariate


def nannyml_python() -> Path:
    """The NannyML venv's interpreter, .venv/tools/nannyml/bin/python under the repository."""
    python = ROOT / ".venv" / "tools" / "nannyml" / "bin" / "python"
    if not python.is_file():
        raise FileNotFoundError(f"{python} not found: run `make benchmark-tools` first")
    return python


def run_nannyml(
    reference: pd.DataFrame,
    chunks: list[pd.DataFrame],
    continuous: list[str],
    categorical: list[str],
    threshold: float = 0.5,
    *,
    chunk_size: int | None = None,
) -> NannymlResults:
    """CBPE roc_auc and univariate drift (NannyML's default methods) for each chunk.

    reference holds the feature columns, y_pred_proba and y_true (0/1), and optionally y_pred
    (else y_pred_proba >= threshold); each chunk the same but for y_true, which is optional.
    Both calculators are fitted once on the reference, cut into chunk_size rows (by default the
    median chunk length), which sets NannyML's drift thresholds; each chunk is one NannyML chunk.
    """
    if not chunks:
        raise ValueError("run_nannyml needs at least one chunk")
    python = nannyml_python()
    if chunk_size is None:
        chunk_size = round(float(np.median([len(chunk) for chunk in chunks])))
    spec = {
        "continuous": list(continuous),
        "categorical": list(categorical),
        "chunk_size": int(chunk_size),
        "timestamp": None,
        "threshold": float(threshold),
    }
    with tempfile.TemporaryDirectory(prefix="nannyml-") as tmp:
        folder = Path(tmp)
        (folder / "spec.json").write_text(json.dumps(spec))
        reference.to_parquet(folder / "reference.parquet", index=False)
        (folder / "chunks").mkdir()
        for index, chunk in enumerate(chunks):
            chunk.to_parquet(folder / "chunks" / f"{index:04d}.parquet", index=False)
        # Bytecode is written (into the tool venv): without it each run spends 10 s more
        # importing. The script itself, run as __main__, leaves no __pycache__ in the tree.
        env = {**os.environ, "NML_DISABLE_USAGE_LOGGING": "1"}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        done = subprocess.run(
            [str(python), str(SCRIPT), str(folder)], capture_output=True, text=True, env=env
        )
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or ["(no output)"]
            raise RuntimeError(f"run_nannyml.py exited {done.returncode}: {lines[-1]}")
        results = json.loads((folder / "results.json").read_text())

    ids = {f"{index:04d}": index for index in range(len(chunks))}
    columns = ["chunk", "column", "method", "value", "upper_threshold", "lower_threshold", "alert"]
    cbpe = pd.DataFrame(
        results["cbpe"], columns=["chunk", "estimated_roc_auc", "realised_roc_auc"]
    ).astype({"estimated_roc_auc": float, "realised_roc_auc": float})
    univariate = pd.DataFrame(results["univariate"], columns=columns).astype(
        {"value": float, "upper_threshold": float, "lower_threshold": float, "alert": bool}
    )
    for frame in (cbpe, univariate):
        if set(frame["chunk"]) != set(ids):
            raise RuntimeError(
                f"NannyML gave chunks {sorted(set(frame['chunk']))}, not {list(ids)}"
            )
        frame["chunk"] = frame["chunk"].map(ids)
    return NannymlResults(
        version=results["nannyml_version"],
        cbpe=cbpe,
        univariate=univariate,
        seconds={name: float(value) for name, value in results["seconds"].items()},
    )
