"""The loop of a deployment's own traffic: ``healthpredict monitor`` and the monitoring DAG.

Both build the same :class:`~healthpredict.loop.context.LoopContext` here: the deployment's
log in the configured store, its windows from the configured clock, versions in the registry,
and the prepared initial window as the part of every retraining set that production did not
provide.
"""

from __future__ import annotations

from functools import cache

import pandas as pd

from healthpredict.loop.context import LoopContext, Progress
from healthpredict.loop.models import RegistrySlot
from healthpredict.loop.windows import WindowClock
from healthpredict.monitoring.policy import load_policies, select_policy
from healthpredict.monitoring.store import make_engine
from healthpredict.settings import Settings


def live_context(
    settings: Settings,
    policy_name: str | None = None,
    deployment: str | None = None,
    owns_champion: bool = True,
    progress: Progress | None = None,
) -> LoopContext:
    """The context for monitoring ``deployment`` (default: the configured one).

    Args:
        settings: Settings in force.
        policy_name: Retraining policy; default the configured one.
        deployment: Whose log; default ``settings.monitoring.deployment``.
        owns_champion: The loop moves the champion alias when the gate passes a challenger;
            False when a delivery pipeline moves it after a verified rollout.
        progress: Called with progress lines.

    Raises:
        PolicyError: Unknown policy. MlflowException: The registry cannot be reached.
    """
    name = policy_name or settings.monitoring.policy
    policy = select_policy(load_policies(settings.monitoring.policies_file), name)
    target = deployment or settings.monitoring.deployment
    return LoopContext(
        settings=settings,
        engine=make_engine(settings.monitoring_url),
        deployment=target,
        clock=WindowClock.from_settings(settings.monitoring),
        policy_name=name,
        policy=policy,
        slot=RegistrySlot(settings),
        initial_data=cache(lambda: _initial_window(settings)),
        owns_champion=owns_champion,
        reports_dir=settings.data.reports_dir / "monitoring" / target,
        progress=progress or (lambda _line: None),
    )


def _initial_window(settings: Settings) -> pd.DataFrame:
    """The champion's original training window, from the prepared timeline."""
    from healthpredict.data.timeline import INITIAL_WINDOW, load_manifest, load_window

    return load_window(
        settings.data.prepared_dir, load_manifest(settings.data.prepared_dir), INITIAL_WINDOW
    )
