"""The main job: the whole story from the raw extract to the dashboard, in one command.

prepare -> search -> train with the best configuration -> register -> simulate every
production batch with the default scenarios and policy -> the same stream under the other
policies as what-if runs (for the comparison) -> dashboard. Each step prints as it goes.
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
    from healthpredict.pipelines.prepare_data import prepare_data
    from healthpredict.pipelines.report import write_report
    from healthpredict.pipelines.simulate import build_plan, simulate
    from healthpredict.pipelines.tune_and_register import tune_and_register
    from healthpredict.reporting.summary import (
        format_batch_table,
        format_preparation_summary,
        format_search_summary,
    )

    echo("[1/5] preparing the data")
    echo(format_preparation_summary(prepare_data(settings)))
    echo(f"[2/5] searching ({settings.tune_trials} trials at most), training, registering")
    echo(format_search_summary(tune_and_register(settings)))
    # What-if runs first: they copy the champion before the main run starts promoting.
    for number, policy in enumerate(WHAT_IF_POLICIES, start=1):
        echo(f"[3/5] what-if {number}/{len(WHAT_IF_POLICIES)}: policy {policy!r}")
        simulate(settings, build_plan(settings, policy, what_if=True), progress=echo)
    echo(f"[4/5] simulating every batch with policy {settings.policy!r}")
    history = simulate(settings, build_plan(settings, settings.policy), progress=echo)
    echo("[5/5] writing the dashboard")
    written = write_report(settings, history.name)
    echo(format_batch_table(history))
    echo(f"dashboard: {written.dashboard.resolve()}")
