"""``healthpredict drift acknowledge``: recorded with who and why, refused when meaningless."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import insert
from typer.testing import CliRunner

from healthpredict.cli import app
from healthpredict.loop.field_history import acknowledgements, previous_fields
from healthpredict.monitoring.field_state import FieldStatus
from healthpredict.monitoring.store import make_engine
from healthpredict.monitoring.tables import create_schema, feature_drift


def field_row(window: int, feature: str, status: str, since: int | None) -> dict:
    return {
        "deployment": "production",
        "window": window,
        "model_version": "3",
        "feature": feature,
        "statistic": 0.2,
        "threshold": 0.05,
        "drifted": status != "steady",
        "weight": 0.1,
        "method": "jensenshannon",
        "status": status,
        "since_window": since,
        "counts": {"a": 3},
    }


def test_an_acknowledgement_is_recorded_once_and_only_for_a_field_off_the_reference(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    engine = make_engine(f"sqlite:///{data / 'monitoring.db'}")
    create_schema(engine)
    with engine.begin() as connection:
        connection.execute(
            insert(feature_drift),
            [
                field_row(4, "payer_code", "moved", 4),
                field_row(5, "payer_code", "settled", 4),
                field_row(5, "race", "steady", None),
            ],
        )
    env = {"HEALTHPREDICT_DATA_DIR": str(data)}
    runner = CliRunner()

    def acknowledge(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, ["drift", "acknowledge", *args], env=env)
        return result.exit_code, result.output

    code, output = acknowledge("payer_code", "--reason", "new payer contract", "--by", "ana")
    assert code == 0, output
    assert "moved in w004" in output and "acknowledged by ana" in output
    code, output = acknowledge("payer_code", "--reason", "again", "--by", "ana")
    assert code == 1 and "already acknowledged" in output
    code, output = acknowledge("race", "--reason", "why not", "--by", "ana")
    assert code == 1 and "race is steady in w005" in output
    code, output = acknowledge("payer", "--reason", "typo", "--by", "ana")
    assert code == 1 and "'payer' is not a contract field" in output
    code, output = acknowledge("payer_code", "--reason", " ", "--by", "ana")
    assert code == 1 and "say why" in output

    recorded = acknowledgements(engine, "production", "3")
    assert list(recorded) == ["payer_code"]
    assert (recorded["payer_code"].by, recorded["payer_code"].reason) == (
        "ana",
        "new payer contract",
    )
    assert recorded["payer_code"].since_window == 4
    before = previous_fields(engine, "production", 6, "3")
    assert before["payer_code"].status is FieldStatus.SETTLED and before["payer_code"].window == 5
    engine.dispose()
