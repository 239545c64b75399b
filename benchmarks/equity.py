"""Equity over time on the real extract: what the per-group view sees and the population's not.

Four in-process replays of the loop (the `never` policy, so one champion throughout and every
alarm is the monitors' own), each printing the equity alarms per window, the delay from onset to
the first, the whole-population alarms raised about the same windows, and the monitoring time
per window with the equity part's share:

1. the natural time order of the extract (no injected change);
2. the same with ``scenarios/one-group.yaml`` (from window 3 the outcomes of the 40-50 age band
   are shuffled among that band: its rate kept, its ranking lost);
3. the exchangeable control (batches drawn from the reference period: no change at all), where
   every alarm is a false alarm;
4. the control with the one-group scenario from window 3: the delay without the extract's own
   drift around it.

    make benchmark-equity    # or: .venv/bin/python benchmarks/equity.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, select

from healthpredict.loop.models import NewModel
from healthpredict.loop.plans import fitted_seed
from healthpredict.loop.streams import Stream, exchangeable_stream, natural_stream
from healthpredict.monitoring import tables
from healthpredict.monitoring.equity import read_group_history
from healthpredict.monitoring.policy import load_policies
from healthpredict.monitoring.scenarios import NO_SCENARIOS, ScenarioSet, load_scenarios
from healthpredict.monitoring.store import make_engine
from healthpredict.pipelines.prepare_data import prepare_data
from healthpredict.settings import Settings
from monitoring import run_plan  # benchmarks/monitoring.py: the replay every benchmark runs

CONTROL_BATCHES = 10
ONE_GROUP = Path(__file__).parents[1] / "src/healthpredict/monitoring/scenarios/one-group.yaml"


def population_alarms(engine: Engine, run: str) -> dict[int, list[str]]:
    """Per window: the alarms of the whole-population monitors about it (label-free ones raised
    when it was monitored, label ones once its outcomes arrived), equity alarms left out."""
    windows, performance = tables.windows, tables.window_performance
    with engine.connect() as connection:
        free = connection.execute(
            select(windows.c.window, windows.c.alarms).where(windows.c.deployment == run)
        ).all()
        late = connection.execute(
            select(performance.c.window, performance.c.alarms).where(
                performance.c.deployment == run
            )
        ).all()
    found: dict[int, list[str]] = {}
    for number, alarms in [*free, *late]:
        kept = [a for a in alarms or [] if not a.startswith("equity:")]
        found.setdefault(int(number), []).extend(kept)
    return found


def monitor_times(engine: Engine, run: str) -> pd.DataFrame:
    """Monitoring time of each completed window, and the equity part's."""
    windows = tables.windows
    query = select(
        windows.c.window,
        windows.c.n_predictions,
        windows.c.monitor_seconds,
        windows.c.equity_seconds,
    ).where(windows.c.deployment == run, windows.c.status == "completed")
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return pd.DataFrame(rows, columns=["window", "n", "seconds", "equity_seconds"])


def report(engine: Engine, run: str, title: str, onset: int | None, seconds: float) -> None:
    """Print one replay's equity figures."""
    groups = read_group_history(engine, run)
    alarmed = groups[groups["status"] == "alarm"]
    population = population_alarms(engine, run)
    print(f"\n== {title} ({seconds:.0f} s)")
    measured = sorted(groups["window"].unique())
    print(
        f"windows measured per group: {len(measured)}; groups per window: "
        f"{groups.groupby('window').size().median():.0f} (of which too few to tell: "
        f"{(groups['status'] == 'too few').groupby(groups['window']).sum().median():.0f})"
    )
    for number in measured:
        here = alarmed[alarmed["window"] == number]
        names = ", ".join(f"{a} {g}" for a, g in zip(here["attribute"], here["group"], strict=True))
        whole = population.get(number, [])
        signals = sorted({a.split(":", 1)[0] for a in whole})
        print(
            f"  w{number:03d}: equity alarms {len(here)} ({names or '-'}); whole-population "
            f"alarms {len(whole)} ({', '.join(signals) or '-'})"
        )
    if onset is not None:
        after = alarmed[alarmed["window"] >= onset]
        if after.empty:
            print(f"delay from onset (w{onset:03d}): not detected")
        else:
            first = after.sort_values("known_at_window").iloc[0]
            delay = int(first["known_at_window"]) - onset
            same = population.get(int(first["window"]), [])
            print(
                f"delay from onset (w{onset:03d}) to the equity alarm: {delay} window(s) "
                f"(outcomes arrive one window late); whole-population alarms about the same "
                f"window: {len(same)}"
            )
            print(f"  first: {first['alarms'][0]}")
    before = alarmed if onset is None else alarmed[alarmed["window"] < onset]
    watched = measured if onset is None else [m for m in measured if m < onset]
    print(
        f"equity alarms {'in all' if onset is None else 'before onset'}: {len(before)} in "
        f"{before['window'].nunique()} of {len(watched)} "
        "window(s)"
    )
    counted = groups[(groups["attribute"] != "all") & (groups["status"] != "too few")]
    if len(counted):
        auc = counted.loc[counted["auc_vs_all_high"].idxmin()]
        gap = counted.loc[counted["gap_vs_all"].abs().idxmax()]
        print(
            f"nearest to an AUC alarm: {auc['attribute']} {auc['group']} in "
            f"w{auc['window']:03d}, difference {auc['auc_vs_all']:+.3f} "
            f"[{auc['auc_vs_all_low']:+.3f}, {auc['auc_vs_all_high']:+.3f}]; largest "
            f"calibration difference: {gap['attribute']} {gap['group']} in "
            f"w{gap['window']:03d}, {gap['gap_vs_all']:+.3f} [{gap['gap_vs_all_low']:+.3f}, "
            f"{gap['gap_vs_all_high']:+.3f}]"
        )
    times = monitor_times(engine, run)
    if len(times):
        share = (times["equity_seconds"] / times["seconds"]).median()
        print(
            f"monitoring per window (~{times['n'].median():,.0f} predictions): median "
            f"{times['seconds'].median():.2f} s, max {times['seconds'].max():.2f} s; equity "
            f"part median {times['equity_seconds'].median():.3f} s "
            f"({share:.0%} of the window's time)"
        )


def replay_and_report(
    settings: Settings,
    engine: Engine,
    run: str,
    title: str,
    stream: Stream,
    scenarios: ScenarioSet,
    seed: NewModel,
    onset: int | None,
) -> None:
    """One replay under the `never` policy, then its figures."""
    never = ("never", load_policies(None)["never"])
    started = time.perf_counter()
    run_plan(settings, run, never, scenarios, stream, seed)
    report(engine, run, title, onset, time.perf_counter() - started)


def main() -> None:
    """Prepare the extract into a temporary folder and run the four replays."""
    one_group = load_scenarios(ONE_GROUP)
    onset = one_group.scenarios[0].start
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings.from_flat(data_dir=Path(folder))
        prepare_data(settings)
        engine = make_engine(settings.monitoring_url)
        tables.create_schema(engine)
        natural = natural_stream(settings)
        seed = fitted_seed(settings, natural)
        replay_and_report(
            settings,
            engine,
            "equity-natural",
            "1. natural time order",
            natural,
            NO_SCENARIOS,
            seed,
            None,
        )
        replay_and_report(
            settings,
            engine,
            "equity-natural-one-group",
            f"2. natural time order + {one_group.scenarios[0].name} from w{onset:03d}",
            natural,
            one_group,
            seed,
            onset,
        )
        batch_rows = natural.batches[0].shape[0]
        control = exchangeable_stream(settings, CONTROL_BATCHES, batch_rows)
        control_seed = fitted_seed(settings, control)
        replay_and_report(
            settings,
            engine,
            "equity-control",
            "3. exchangeable control",
            control,
            NO_SCENARIOS,
            control_seed,
            None,
        )
        short = Stream("exchangeable", control.reference, control.batches[:6], control.data_hash)
        replay_and_report(
            settings,
            engine,
            "equity-control-one-group",
            f"4. exchangeable + {one_group.scenarios[0].name} from w{onset:03d}",
            short,
            one_group,
            control_seed,
            onset,
        )
        engine.dispose()


if __name__ == "__main__":
    main()
