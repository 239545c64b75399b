"""The main job: the whole story from the raw extract to the dashboard, in one command.

prepare -> search -> train with the best configuration -> register -> the same stream under
the other policies as what-if runs (in process, for the comparison) -> every production batch
with the default scenarios and policy, sent through the real service, its outcomes posted,
each window monitored -> dashboard. Each step prints as it goes.
"""

from __future__ import annotations

from collections.abc import Callable

from healthpredict.settings import Settings

WHAT_IF_POLICIES = ("never", "scheduled")


def run_main_job(settings: Settings, echo: Callable[[str], None]) -> None:
    """Run every step, printing progress; ends with the per-batch table and the dashboard path.

    A second run reuses what is done: preparing is deterministic, a new search registers a
    challenger (the champion stays), and finished simulation runs are only re-read.
    """
    from healthpredict.loop.models import RegistrySlot
    from healthpredict.loop.plans import build_plan
    from healthpredict.loop.replay import replay
    from healthpredict.loop.streams import natural_stream, unseen_version
    from healthpredict.pipelines.prepare_data import prepare_data
    from healthpredict.pipelines.report import write_report
    from healthpredict.pipelines.tune_and_register import tune_and_register
    from healthpredict.reporting.summary import (
        format_batch_table,
        format_preparation_summary,
        format_replay_speed,
        format_search_summary,
    )

    echo("[1/5] preparing the data")
    echo(format_preparation_summary(prepare_data(settings)))
    echo(f"[2/5] searching ({settings.search.tune_trials} trials at most), training, registering")
    echo(format_search_summary(tune_and_register(settings)))
    # Every run starts from a model that has not seen the stream: the champion, unless an
    # earlier story promoted one trained on it (then the newest one trained before it).
    start = unseen_version(RegistrySlot(settings), natural_stream(settings))
    # What-if runs first: they copy the starting model before the main run starts promoting.
    for number, policy in enumerate(WHAT_IF_POLICIES, start=1):
        echo(f"[3/5] what-if {number}/{len(WHAT_IF_POLICIES)} (in process): policy {policy!r}")
        plan = build_plan(settings, policy, what_if=True, initial_version=start)
        replay(settings, plan, progress=echo)
    echo(f"[4/5] every batch through the service, policy {settings.monitoring.policy!r}")
    plan = build_plan(settings, settings.monitoring.policy, initial_version=start)
    result = replay(settings, plan, progress=echo)
    echo("[5/5] writing the dashboard")
    written = write_report(settings, result.history.name)
    echo(format_batch_table(result.history))
    echo(format_replay_speed(result))
    echo(f"dashboard: {written.dashboard.resolve()}")
