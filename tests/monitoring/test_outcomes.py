"""Outcomes: validated with the row and field named, hashed on arrival, recorded once.

A repeated outcome changes nothing, a contradicting one is refused with nothing written, and an
outcome for an encounter the log has not seen is kept and counted as unmatched.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, func, insert, select
from typer.testing import CliRunner

from healthpredict.cli import app
from healthpredict.data.pseudonym import keyed_hash
from healthpredict.monitoring import outcomes
from healthpredict.monitoring.outcomes import OutcomeError
from healthpredict.monitoring.store import LoggedRequest, make_engine
from healthpredict.monitoring.tables import create_schema
from healthpredict.monitoring.tables import outcomes as outcome_table
from healthpredict.serving.examples import contract_records

SALT = b"outcome-test-salt"


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    create_schema(engine)
    return engine


def _stored(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(outcome_table)).scalar())


def _log(engine: Engine, encounter_ids: list[int], deployment: str = "d") -> None:
    """Predictions for these encounters, as the service logs them."""
    now, n = datetime.now(UTC), len(encounter_ids)
    keys = keyed_hash(pd.Series(encounter_ids), SALT).tolist()
    request = LoggedRequest(
        "r", now, deployment, "m", "1", contract_records(n), [0.2] * n, ["low"] * n,
        [False] * n, [None] * n, keys, [now] * n,
    )  # fmt: skip
    with engine.begin() as connection:
        connection.execute(insert(request.table), request.rows())


def test_both_vocabularies_are_understood() -> None:
    parsed = outcomes.parse_records(
        [{"encounter_id": 1, "readmitted": "<30"}, {"encounter_id": 2, "readmitted": ">30"},
         {"encounter_id": 3, "readmitted": "NO"}, {"encounter_id": 4, "readmitted": True}]
    )  # fmt: skip
    assert [p.readmitted_30d for p in parsed] == [True, False, False, True]
    assert [p.reported_as for p in parsed] == ["<30", ">30", "NO", "true"]


def test_bad_records_are_named_by_row_and_field() -> None:
    rows = [
        {"encounter_id": 1, "readmitted": "<30"},
        {"encounter_id": "x", "readmitted": "maybe"},
        {"encounter_id": 0, "readmitted": "NO", "patient": 4},
    ]
    with pytest.raises(OutcomeError) as error:
        outcomes.parse_records(rows)
    message = str(error.value)
    assert "row 2, encounter_id" in message and "row 2, readmitted" in message
    assert "row 3, encounter_id" in message and "row 3, patient" in message


def test_recording_twice_changes_nothing_and_ids_are_hashed(engine: Engine) -> None:
    records = outcomes.parse_records([{"encounter_id": i, "readmitted": "NO"} for i in (7, 8)])
    first = outcomes.record(engine, "d", records, SALT, "api")
    again = outcomes.record(engine, "d", records, SALT, "api")
    assert (first.recorded, first.unchanged) == (2, 0)
    assert (again.recorded, again.unchanged) == (0, 2)
    with engine.connect() as connection:
        keys = set(connection.execute(select(outcome_table.c.encounter_key)).scalars())
    assert keys == set(keyed_hash(pd.Series([7, 8]), SALT))  # never the ids in clear
    assert _stored(engine) == 2


def test_a_contradiction_is_refused_and_nothing_is_written(engine: Engine) -> None:
    outcomes.record(
        engine, "d", outcomes.parse_records([{"encounter_id": 7, "readmitted": "<30"}]), SALT, "a"
    )
    mixed = outcomes.parse_records(
        [{"encounter_id": 9, "readmitted": "NO"}, {"encounter_id": 7, "readmitted": False}]
    )
    with pytest.raises(OutcomeError, match=r"record 2: encounter 7 is already recorded .* true"):
        outcomes.record(engine, "d", mixed, SALT, "b")
    assert _stored(engine) == 1  # encounter 9 was not written either
    inside = outcomes.parse_records(
        [{"encounter_id": 5, "readmitted": "NO"}, {"encounter_id": 5, "readmitted": "<30"}]
    )
    with pytest.raises(OutcomeError, match="another answer in record 1 of the same load"):
        outcomes.record(engine, "d", inside, SALT, "c")
    # The same 30-day answer in the other vocabulary is not a contradiction.
    same = outcomes.parse_records([{"encounter_id": 7, "readmitted": True}])
    assert outcomes.record(engine, "d", same, SALT, "d").unchanged == 1


def test_unmatched_outcomes_are_kept_and_counted(engine: Engine) -> None:
    _log(engine, [1, 2])
    _log(engine, [3], deployment="elsewhere")
    records = outcomes.parse_records([{"encounter_id": i, "readmitted": "NO"} for i in (1, 2, 3)])
    report = outcomes.record(engine, "d", records, SALT, "api")
    assert (report.recorded, report.unmatched) == (3, 1)  # 3 was served by another deployment
    assert "1 for encounters the log has not seen (kept)" in report.summary()


def test_files_in_csv_and_parquet(tmp_path: Path) -> None:
    csv = tmp_path / "o.csv"
    csv.write_text("encounter_id,readmitted,ward\n12,<30,a\n13,false,b\n14,1,c\n")
    assert outcomes.read_file(str(csv)) == [
        {"encounter_id": 12, "readmitted": "<30"},
        {"encounter_id": 13, "readmitted": False},
        {"encounter_id": 14, "readmitted": True},
    ]
    parquet = tmp_path / "o.parquet"
    pd.DataFrame({"encounter_id": [5, 6], "readmitted": [True, False]}).to_parquet(parquet)
    assert outcomes.read_file(f"file://{parquet}") == [
        {"encounter_id": 5, "readmitted": True},
        {"encounter_id": 6, "readmitted": False},
    ]
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("id,outcome\n1,NO\n")
    with pytest.raises(OutcomeError, match="missing column"):
        outcomes.read_file(str(wrong))


def test_the_command_line_names_the_problem_and_loads_once(tmp_path: Path) -> None:
    env = {"HEALTHPREDICT_DATA_DIR": str(tmp_path / "data"), "HEALTHPREDICT_ID_SALT": "s" * 20}
    runner = CliRunner()
    bad = tmp_path / "bad.csv"
    bad.write_text("encounter_id,readmitted\n1,NO\n2,soon\n")
    result = runner.invoke(app, ["outcomes", "load", str(bad)], env=env)
    assert result.exit_code == 1 and "row 2, readmitted" in result.output
    missing = runner.invoke(app, ["outcomes", "load", str(tmp_path / "none.csv")], env=env)
    assert missing.exit_code == 1 and "no such file" in missing.output
    good = tmp_path / "good.csv"
    good.write_text("encounter_id,readmitted\n1,NO\n2,<30\n")
    first = runner.invoke(app, ["outcomes", "load", str(good)], env=env)
    again = runner.invoke(app, ["outcomes", "load", str(good)], env=env)
    assert first.exit_code == again.exit_code == 0, first.output
    assert "2 recorded" in first.output and "0 recorded, 2 already known" in again.output
