"""Every DAG file imports, has no cycle, and declares retries, timeouts, tags and docs.

Also checks the wiring rules: every task is a function of the package (no logic in DAG
files), and the delivery's promotion sits behind the smoke test with the rollback on failure.
"""

from __future__ import annotations

import ast
import itertools
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.airflow_env import DAGS_FOLDER

DAG_FILES = sorted(DAGS_FOLDER.glob("*.py"))
# Tasks that must not retry, and why (each reason is also a comment in the DAG file).
NO_RETRY = {
    ("healthpredict_delivery", "plan"): "a refused release is refused again",
    ("healthpredict_delivery", "wait_for_rollout"): "the rollout timeout is the deadline",
    ("healthpredict_delivery", "smoke_test"): "it polls /ready for its own timeout",
}


def test_every_dag_file_imports_without_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    files = {Path(dag.fileloc).name for dag in dagbag.dags.values()}
    assert files == {path.name for path in DAG_FILES}
    assert {"healthpredict_training", "healthpredict_monitoring", "healthpredict_delivery"} <= set(
        dagbag.dag_ids
    )


def test_every_dag_declares_retries_docs_tags_and_no_catchup(dagbag: Any) -> None:
    for dag in dagbag.dags.values():
        assert "healthpredict" in dag.tags and len(dag.tags) >= 2, dag.dag_id
        assert dag.doc_md and len(dag.doc_md) > 200, dag.dag_id
        assert dag.catchup is False, dag.dag_id
        # Both DAGs change shared state (the challenger alias, the Deployment): one run at once.
        assert dag.max_active_runs == 1, dag.dag_id
        assert dag.default_args["retries"] >= 1, dag.dag_id
        assert dag.default_args["retry_delay"] >= timedelta(minutes=1), dag.dag_id


def test_every_task_has_a_timeout_and_retries(dagbag: Any) -> None:
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            where = f"{dag.dag_id}.{task.task_id}"
            assert task.execution_timeout is not None, where
            assert task.execution_timeout <= timedelta(hours=2), where
            if (dag.dag_id, task.task_id) in NO_RETRY:
                assert task.retries == 0, where
            else:
                assert task.retries >= 1 and task.retry_delay, where


def _assert_acyclic(dag: Any) -> None:
    done: set[str] = set()

    def visit(task_id: str, path: tuple[str, ...]) -> None:
        assert task_id not in path, f"cycle in {dag.dag_id}: {(*path, task_id)}"
        if task_id in done:
            return
        for upstream in dag.get_task(task_id).upstream_task_ids:
            visit(upstream, (*path, task_id))
        done.add(task_id)

    for task in dag.tasks:
        visit(task.task_id, ())


def test_no_cycles(dagbag: Any) -> None:
    for dag in dagbag.dags.values():
        _assert_acyclic(dag)


def _upstream(dag: Any, task_id: str) -> set[str]:
    return set(dag.get_task(task_id).upstream_task_ids)


def test_training_is_one_chain_ending_in_a_delivery_trigger(dagbag: Any) -> None:
    dag = dagbag.dags["healthpredict_training"]
    chain = ["prepare", "search", "train", "evaluate", "register", "gate", "delivery_request"]
    for before, after in itertools.pairwise(chain):
        assert _upstream(dag, after) == {before}
    trigger = dag.get_task("trigger_delivery")
    assert _upstream(dag, "trigger_delivery") == {"delivery_request"}
    assert trigger.trigger_dag_id == "healthpredict_delivery"


def test_monitoring_runs_the_loop_phases_and_retrains_only_on_its_branch(dagbag: Any) -> None:
    dag = dagbag.dags["healthpredict_monitoring"]
    assert _upstream(dag, "monitor") == set()  # the service scored; the DAG only reads its log
    assert _upstream(dag, "decide") == {"monitor"}
    assert _upstream(dag, "branch") == {"decide"}
    assert _upstream(dag, "retrain") == {"decide", "branch"}
    assert _upstream(dag, "gate") == {"retrain"}
    # The commit follows the gate, or the branch that skipped it.
    commit = dag.get_task("commit")
    assert _upstream(dag, "commit") == {"decide", "gate"}
    assert commit.trigger_rule == "none_failed_min_one_success"
    assert _upstream(dag, "delivery_request") == {"commit"}
    trigger = dag.get_task("trigger_delivery")
    assert _upstream(dag, "trigger_delivery") == {"delivery_request"}
    assert trigger.trigger_dag_id == "healthpredict_delivery"
    # One DAG run per weekly window, the window taken from the logical date unless given.
    assert dag.timetable.delta == timedelta(days=7)
    assert set(dag.params) >= {"window", "deployment", "policy"}


def test_delivery_promotes_only_after_the_smoke_test_and_rolls_back_on_failure(
    dagbag: Any,
) -> None:
    dag = dagbag.dags["healthpredict_delivery"]
    order = ["plan", "build_image", "push_image", "record_revision", "roll_out"]
    order += ["wait_for_rollout", "smoke_test", "promote_champion", "record_delivery"]
    for before, after in itertools.pairwise(order):
        assert before in _upstream(dag, after), (before, after)
    rollback = dag.get_task("roll_back")
    assert rollback.trigger_rule == "one_failed"
    assert {"roll_out", "wait_for_rollout", "smoke_test", "promote_champion"} <= _upstream(
        dag, "roll_back"
    )
    assert "record_revision" in _upstream(dag, "roll_back")  # the snapshot it restores


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_files_define_no_task_bodies(path: Path) -> None:
    """Wiring only: the one function a DAG file defines is its @dag; tasks are package functions."""
    tree = ast.parse(path.read_text())
    functions = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
    assert [ast.unparse(f.decorator_list[0]).startswith("dag(") for f in functions] == [True]


def test_every_task_calls_one_function_of_the_package(dagbag: Any) -> None:
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            where = f"{dag.dag_id}.{task.task_id}"
            if task.task_type == "TriggerDagRunOperator":
                assert task.trigger_dag_id == "healthpredict_delivery", where
                continue
            function = task.python_callable
            assert function.__module__.startswith("healthpredict."), where
            assert function.__name__ == task.task_id, where
            assert task.doc_md == function.__doc__, where  # the function's docstring documents it
