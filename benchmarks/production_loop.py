"""The production loop's figures, on the real extract.

1. The default story through the real service: a champion trained on the initial window, then
   every production batch sent to ``healthpredict serve`` (its own process) through
   ``/predict/batch``, outcomes posted to ``/outcomes`` a window later, each window monitored,
   retrains, gates and hot swaps; its wall time (target < 5 minutes on 2 cores) and the
   requests per second the replay reached.
2. Monitoring one window of 10,000 logged predictions read from PostgreSQL (target < 2 s),
   before its outcomes arrive and after, with the time spent reading the log.
3. Outcome ingestion: rows per second through ``POST /outcomes`` (the service on PostgreSQL)
   and through ``healthpredict outcomes load`` (a CSV file; the command's own process, and
   the load alone), new outcomes and the same ones again.

PostgreSQL is a throwaway cluster on loopback (the Debian ``postgresql`` server binaries).

    make benchmark-loop    # or: .venv/bin/python benchmarks/production_loop.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from healthpredict.data.pseudonym import load_or_create_salt
from healthpredict.loop.live import live_context
from healthpredict.loop.monitor import monitor
from healthpredict.loop.plans import build_plan
from healthpredict.loop.replay import replay
from healthpredict.loop.service import service_process, settings_environment
from healthpredict.loop.traffic import HttpTraffic, InProcessTraffic
from healthpredict.loop.windows import read_window
from healthpredict.monitoring import outcomes, streams
from healthpredict.monitoring.store import make_engine
from healthpredict.pipelines.prepare_data import prepare_data
from healthpredict.pipelines.train_and_register import train_and_register
from healthpredict.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' PostgreSQL helper
from tests.support.postgres import throwaway_postgres

WINDOW_ROWS = 10_000
OUTCOME_ROWS = 50_000
REPEATS = 5


def story(settings: Settings) -> None:
    """Part 1: the default replay through the real service."""
    print("\n== 1. The default story through the real service (SQLite store)")
    result = replay(settings, build_plan(settings, settings.monitoring.policy), progress=print)
    history = result.history
    print(
        f"{len(history.batches)} windows, {result.records:,} records in {result.requests:,} "
        f"requests, {history.retrains} retrain(s), {history.promotions} promotion(s) (hot "
        f"swaps): {result.seconds:.0f} s in all (target < 300 s); while sending "
        f"{result.requests_per_second:.1f} requests/s, "
        f"{result.records / result.serve_seconds:,.0f} records/s"
    )


def window_from_postgres(settings: Settings) -> None:
    """Part 2: one window of 10,000 logged predictions, monitored from PostgreSQL."""
    print(f"\n== 2. One window of {WINDOW_ROWS:,} logged predictions, read from PostgreSQL")
    context = live_context(settings, deployment="bench-window")
    stream = streams.natural_stream(settings)
    frame = pd.concat(stream.batches, ignore_index=True).head(WINDOW_ROWS)
    window = context.clock.window(1)
    salt = load_or_create_salt(settings)
    traffic = InProcessTraffic(settings, context.engine, context.deployment, context.slot, salt)
    ids = streams.encounter_id(frame)
    traffic.serve(streams.requests(frame, ids, window, stream.patient_numbers()), 1000)
    champion = context.slot.champion_version()
    monitor(context, window, champion)  # warm-up: imports, the profile from the registry
    reads = _timed(lambda: read_window(context.engine, context.deployment, window))
    before = _timed(lambda: monitor(context, window, champion))
    traffic.send_outcomes(streams.outcomes(frame, ids), 10_000)
    after = _timed(lambda: monitor(context, window, champion))
    print(
        f"reading the window: median {statistics.median(reads):.2f} s; the monitor phase "
        f"(quality, drift, estimate): median {statistics.median(before):.2f} s, max "
        f"{max(before):.2f} s; with its outcomes arrived (+ realised performance, "
        f"calibration, intervals): median {statistics.median(after):.2f} s, max "
        f"{max(after):.2f} s (target < 2 s; {REPEATS} runs each)"
    )
    context.engine.dispose()


def ingestion(settings: Settings, folder: Path) -> None:
    """Part 3: outcomes through the API and through the command line."""
    print(f"\n== 3. Outcome ingestion ({OUTCOME_ROWS:,} outcomes, PostgreSQL store)")
    records = [
        {"encounter_id": number, "readmitted": ("<30", ">30", "NO")[number % 3]}
        for number in range(1, OUTCOME_ROWS + 1)
    ]
    with service_process(settings, "bench-api", folder / "service.log") as service:
        traffic = HttpTraffic(service.url, service.api_key)
        api_new = _seconds(lambda: traffic.send_outcomes(records, 10_000))
        api_again = _seconds(lambda: traffic.send_outcomes(records, 10_000))
    csv = folder / "outcomes.csv"
    pd.DataFrame(records).to_csv(csv, index=False)
    env = {**os.environ, **settings_environment(settings), "HEALTHPREDICT_DEPLOYMENT": "bench-cli"}
    command = [sys.executable, "-m", "healthpredict", "outcomes", "load", str(csv)]
    cli_new = _seconds(lambda: subprocess.run(command, env=env, check=True, capture_output=True))
    cli_again = _seconds(lambda: subprocess.run(command, env=env, check=True, capture_output=True))
    engine = make_engine(settings.monitoring_url)
    salt = load_or_create_salt(settings)
    parsed = outcomes.parse_records(outcomes.read_file(str(csv)))
    load_only = _seconds(lambda: outcomes.record(engine, "bench-load", parsed, salt, str(csv)))
    engine.dispose()
    rate = lambda seconds: f"{OUTCOME_ROWS / seconds:,.0f} rows/s"  # noqa: E731
    print(f"POST /outcomes (chunks of 10,000): new {rate(api_new)}, again {rate(api_again)}")
    print(
        f"healthpredict outcomes load (its own process, CSV): new {rate(cli_new)}, again "
        f"{rate(cli_again)}; the load alone (parse + record): {rate(load_only)}"
    )
    print(f"ratio API / command line, new outcomes: {cli_new / api_new:.2f}")


def _timed(action: object) -> list[float]:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        action()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return times


def _seconds(action: object) -> float:
    started = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> None:
    """Prepare the extract and train a champion in a temporary folder, then the three parts."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        settings = Settings.from_flat(data_dir=folder / "data")
        started = time.perf_counter()
        prepare_data(settings)
        train_and_register(settings)
        print(f"prepared and trained the champion in {time.perf_counter() - started:.0f} s")
        story(settings)
        with throwaway_postgres() as url:
            on_postgres = settings.with_flat(monitoring_db_url=url)
            window_from_postgres(on_postgres)
            ingestion(on_postgres, folder)


if __name__ == "__main__":
    main()
