"""The natural timeline as the field monitor sees it: alarms per window, the estimate's error.

The prepared extract in time order (the initial window, then seven windows of about 10,000
encounters), replayed through the loop in process from a champion trained on the initial window,
under the ``never`` policy and no injected scenario: the reference stays the same, so every
coding change of the ten years stays visible, and outcomes arrive one window late.

Printed:

1. Alarms per window: ``data_changed`` (a field moved), ``data_drift`` (the model's inputs
   changed enough to matter) and every alarm; the fields each window moved and their states.
2. The label-free estimate against the realised AUC, per window: as served (plain CBPE), as
   recalibrated on the newest earlier outcomes (what the monitor records), and NannyML's CBPE
   fitted on the labelled first window (a static reference, as NannyML is used), each with its
   mean absolute error over the windows all three estimate (2 to 7).
3. The monitors' time per window.

    make benchmark-estimate    # NannyML venv included; or: .venv/bin/python benchmarks/estimate.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select

from healthpredict.data.prepare import TARGET
from healthpredict.loop.models import NewModel
from healthpredict.loop.plans import fitted_seed
from healthpredict.loop.streams import Stream, natural_stream
from healthpredict.modeling.train import features_of
from healthpredict.monitoring import tables
from healthpredict.monitoring.fields import CATEGORICAL, NUMERICAL, comparable
from healthpredict.monitoring.history import RunHistory
from healthpredict.monitoring.policy import load_policies
from healthpredict.monitoring.scenarios import NO_SCENARIOS
from healthpredict.monitoring.store import make_engine
from healthpredict.pipelines.prepare_data import prepare_data
from healthpredict.settings import Settings
from monitoring import run_plan  # benchmarks/monitoring.py: the replay every benchmark runs

RUN = "bench-natural-never"


def alarms(history: RunHistory) -> None:
    """Alarms per window, by kind, and the fields behind them."""
    print("\n== 1. Alarms per window (natural timeline, never retrained)")
    batches = history.batches[history.batches.status == "completed"]
    reasons = batches["alarm_reasons"]
    for kind in ("data_changed", "data_drift"):
        share = reasons.str.contains(f"{kind}:").mean()
        print(f"{kind:<14} alarms per window: {share:.2f} ({reasons.str.contains(kind).sum()} "
              f"of {len(batches)})")  # fmt: skip
    print(f"{'any alarm':<14} per window: {batches['alarm'].mean():.2f}")
    features = history.feature_drift
    for number, row in batches.set_index("batch").iterrows():
        mine = features[features.batch == number]
        states = mine["status"].value_counts().to_dict()
        moved = len(row["moved"].split(", ")) if row["moved"] else 0
        print(f"  w{number:03d}: input drift {'yes' if row['dataset_drift'] else 'no'}; "
              f"{moved} moved ({row['moved'] or '-'}); states {states}")  # fmt: skip


def estimates(history: RunHistory, engine: Engine, stream: Stream, seed: NewModel) -> None:
    """Each estimate against the realised AUC, and their mean absolute errors."""
    print("\n== 2. Label-free estimate against the realised AUC")
    versions = tables.window_versions
    with engine.connect() as connection:
        raw: dict[int, float] = dict(
            connection.execute(
                select(versions.c.window, versions.c.estimated_auc_raw).where(
                    versions.c.deployment == RUN
                )
            ).all()
        )
    table = history.batches.set_index("batch")[["estimated_auc", "realised_auc", "estimate_error"]]
    table["raw_cbpe"] = pd.Series(raw)
    table["nannyml_cbpe"] = nannyml_cbpe(stream, seed)
    both = table.loc[table.index >= 2]
    for column in ("raw_cbpe", "estimated_auc", "nannyml_cbpe"):
        error = (both[column] - both["realised_auc"]).dropna()
        print(f"{column:<14} MAE {error.abs().mean():.4f}, mean error {error.mean():+.4f} "
              f"over windows {', '.join(map(str, error.index))}")  # fmt: skip
    print(table.round(4).to_string())


def nannyml_cbpe(stream: Stream, seed: NewModel) -> pd.Series:
    """NannyML's CBPE per window 2..7, fitted on the labelled first window (NaN if NannyML's
    venv is missing: ``make benchmark-tools``)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from nannyml_bridge import run_nannyml

    def scored(frame: pd.DataFrame, labelled: bool) -> pd.DataFrame:
        out = comparable(frame)
        out["y_pred_proba"] = seed.pipeline.predict_proba(features_of(frame))[:, 1]
        if labelled:
            out["y_true"] = frame[TARGET].to_numpy().astype(int)
        return out

    try:
        results = run_nannyml(
            scored(stream.batches[0], True),
            [scored(b, True) for b in stream.batches[1:]],
            continuous=list(NUMERICAL),
            categorical=list(CATEGORICAL),
        )
    except (FileNotFoundError, RuntimeError) as error:
        print(f"NannyML skipped: {error}")
        return pd.Series(dtype=float)
    by_chunk = results.cbpe.set_index("chunk")["estimated_roc_auc"]
    return pd.Series(by_chunk.to_numpy(), index=by_chunk.index + 2)


def monitor_speed(engine: Engine) -> None:
    """The monitors' time per window of this replay."""
    windows = tables.windows
    with engine.connect() as connection:
        seconds = [
            s
            for (s,) in connection.execute(
                select(windows.c.monitor_seconds).where(
                    windows.c.deployment == RUN, windows.c.monitor_seconds.is_not(None)
                )
            )
        ]
    print(f"\n== 3. Monitors per window: median {np.median(seconds):.2f} s, max "
          f"{max(seconds):.2f} s over {len(seconds)} windows (the first includes imports and "
          f"the calibration for the window size)")  # fmt: skip


def main() -> None:
    """Prepare the extract into a temporary folder, replay, print the three parts."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings.from_flat(data_dir=Path(folder))
        prepare_data(settings)
        engine = make_engine(settings.monitoring_url)
        tables.create_schema(engine)
        stream = natural_stream(settings)
        never = ("never", load_policies(None)["never"])
        seed = fitted_seed(settings, stream)
        history = run_plan(settings, RUN, never, NO_SCENARIOS, stream, seed)
        alarms(history)
        estimates(history, engine, stream, seed)
        monitor_speed(engine)
        engine.dispose()
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
