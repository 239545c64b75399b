"""One isolated Airflow per test process: its own AIRFLOW_HOME and SQLite metadata database.

Airflow reads its configuration when it is first imported, so :func:`airflow_home` sets the
environment before any ``import airflow`` (no test module imports Airflow at the top) and
creates the schema once; later calls return the same home. The real-services tests call it
too, so every Airflow-using test in a session shares one home and one migration.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = ROOT / "dags"


@cache
def airflow_home() -> Path:
    """Configure Airflow in a new temporary folder and migrate its database (once per process)."""
    if importlib.util.find_spec("airflow") is None:
        message = "apache-airflow is not installed (the 'airflow' extra)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    if "airflow" in sys.modules:
        raise RuntimeError("Airflow was imported before its test home was configured")
    home = Path(tempfile.mkdtemp(prefix="healthpredict-airflow-"))
    atexit.register(shutil.rmtree, home, True)
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
    )
    from airflow.utils import db

    db.initdb()
    return home


def dag_bag() -> Any:
    """Every DAG in ``dags/``, parsed the way the DAG processor parses them."""
    airflow_home()
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` in the process environment for the block (tasks run in this process)."""
    from healthpredict.settings import get_settings

    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()


@dataclass(frozen=True)
class RunResult:
    """What one ``dag.test()`` run did: its state, and each task's state and duration."""

    state: str
    tasks: dict[str, str]
    seconds: dict[str, float]


def run_dag(
    dag: Any, conf: dict[str, Any] | None = None, logical_date: datetime | None = None
) -> RunResult:
    """``dag.test()`` once (the tasks run in this process); logical date: now by default."""
    dated = {"logical_date": logical_date} if logical_date is not None else {}
    run = dag.test(run_conf=conf or {}, **dated)
    instances = run.get_task_instances()
    return RunResult(
        str(run.state),
        {ti.task_id: str(ti.state) for ti in instances},
        {
            ti.task_id: (ti.end_date - ti.start_date).total_seconds()
            for ti in instances
            if ti.start_date and ti.end_date
        },
    )
