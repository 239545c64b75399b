"""What a replay keeps in the store beside the loop's own rows: its partial log, its progress.

A replay owns its deployment's log: a window killed while it was being sent is sent again from
scratch, the service's background writer is waited for before a window is monitored, and the
records the service refused are kept with the fields it named (nothing is lost).
"""

from __future__ import annotations

import shutil
import time

import pandas as pd
from sqlalchemy import Engine, Table, delete, func, select

from healthpredict.files import atomic_path
from healthpredict.loop.context import LoopContext, LoopError
from healthpredict.loop.folder import FolderSlot
from healthpredict.loop.models import ModelSlot
from healthpredict.loop.traffic import Served
from healthpredict.loop.windows import Window
from healthpredict.monitoring.tables import (
    DEPLOYMENT_TABLES,
    create_schema,
    loop_runs,
    pending_windows,
    predictions,
    rejected_records,
    window_performance,
)
from healthpredict.settings import Settings

LOG_WAIT_SECONDS = 120.0


def forget_partial_log(context: LoopContext, window: Window) -> None:
    """A replay killed while sending this window left part of its log: it is sent again."""
    with context.engine.begin() as connection:
        for table in (predictions, rejected_records):
            connection.execute(
                delete(table).where(
                    table.c.deployment == context.deployment,
                    table.c.occurred_at >= window.start,
                    table.c.occurred_at < window.end,
                )
            )


def wait_logged(context: LoopContext, window: Window, expected: int) -> None:
    """Wait until the service's log writer has stored the window's rows (it writes them in
    the background, a second or so after answering)."""
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while True:
        logged = sum(_count_in(context, table, window) for table in (predictions, rejected_records))
        if logged >= expected:
            return
        if time.monotonic() > deadline:
            raise LoopError(
                f"{window.name}: the service logged {logged:,} of {expected:,} records within "
                f"{LOG_WAIT_SECONDS:.0f} s: is its prediction log failing (see /ready)?"
            )
        time.sleep(0.2)


def _count_in(context: LoopContext, table: Table, window: Window) -> int:
    query = (
        select(func.count())
        .select_from(table)
        .where(
            table.c.deployment == context.deployment,
            table.c.occurred_at >= window.start,
            table.c.occurred_at < window.end,
        )
    )
    with context.engine.connect() as connection:
        return int(connection.execute(query).scalar() or 0)


def keep_refused(context: LoopContext, number: int, frame: pd.DataFrame, served: Served) -> None:
    """The records the service refused, kept by the replay with the fields it named."""
    if not served.rejected:
        return
    positions = [p for p, _ in served.rejected]
    kept = frame.iloc[positions].reset_index(drop=True)
    kept["refused_fields"] = [", ".join(f) for _, f in served.rejected]
    folder = context.settings.data.simulation_dir / context.deployment / "refused"
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / f"w{number:03d}.parquet") as temporary:
        kept.to_parquet(temporary, index=False)


def committed(context: LoopContext, number: int) -> bool:
    query = select(pending_windows.c.phase).where(
        pending_windows.c.deployment == context.deployment, pending_windows.c.window == number
    )
    with context.engine.connect() as connection:
        return connection.execute(query).scalar() == "committed"


def measured(context: LoopContext, number: int) -> bool:
    table = window_performance
    query = (
        select(func.count())
        .select_from(table)
        .where(table.c.deployment == context.deployment, table.c.window == number)
    )
    with context.engine.connect() as connection:
        return bool(connection.execute(query).scalar())


def started(context: LoopContext) -> bool:
    query = (
        select(func.count())
        .select_from(loop_runs)
        .where(loop_runs.c.deployment == context.deployment)
    )
    with context.engine.connect() as connection:
        return bool(connection.execute(query).scalar())


def forget(engine: Engine, settings: Settings, run: str, slot: ModelSlot | None = None) -> None:
    """Delete a replay's rows and files (registered versions stay, as history)."""
    create_schema(engine)
    with engine.begin() as connection:
        for table in DEPLOYMENT_TABLES:
            connection.execute(delete(table).where(table.c.deployment == run))
    for name in ("reports", "refused"):
        shutil.rmtree(settings.data.simulation_dir / run / name, ignore_errors=True)
    if isinstance(slot, FolderSlot):
        slot.reset()
