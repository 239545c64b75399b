"""Flow: read the simulation runs from the monitoring store, write PNG plots and the dashboard."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from healthpredict.monitoring import store
from healthpredict.monitoring.history import (
    RunHistory,
    RunNotFoundError,
    list_runs,
    read_history,
)
from healthpredict.settings import Settings


@dataclass(frozen=True)
class WrittenReport:
    """Where the report went."""

    dashboard: Path
    pngs: list[Path]
    runs: list[str]


def write_report(settings: Settings, main_run: str | None = None) -> WrittenReport:
    """Dashboard and plots of ``main_run`` (default: the newest run) and the runs comparable to it.

    Comparable runs replay the same stream and scenario set under other policies.

    Raises:
        RunNotFoundError: No simulation run in the store, or no run called ``main_run``.
    """
    from healthpredict.reporting.dashboard import write_dashboard
    from healthpredict.reporting.timeline_plots import write_report_pngs

    engine = store.make_engine(settings.monitoring_url)
    try:
        store.create_schema(engine)
        names = list_runs(engine)
        if not names:
            raise RunNotFoundError(
                "nothing monitored yet: run `healthpredict simulate` or `healthpredict monitor`"
            )
        main = read_history(engine, main_run or names[-1])
        runs = [main, *_comparable(engine, names, main)]
    finally:
        engine.dispose()
    folder = settings.data.reports_dir / "simulation"
    dashboard = write_dashboard(runs, main.name, folder / "dashboard.html")
    pngs = write_report_pngs(runs, main.name, folder)
    return WrittenReport(dashboard, pngs, [r.name for r in runs])


def _comparable(engine: Engine, names: list[str], main: RunHistory) -> list[RunHistory]:
    others = [read_history(engine, n) for n in names if n != main.name]
    return [
        run
        for run in others
        if run.scenario_set == main.scenario_set
        and len(run.batches) == len(main.batches)
        and run.stream == main.stream
    ]
