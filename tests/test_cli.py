"""The command line: help everywhere, and bad input gives one clear line and exit status 1."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from healthpredict.cli import app

runner = CliRunner()
COMMANDS = [
    [],
    ["data"],
    ["data", "contract"],
    ["data", "validate"],
    ["data", "prepare"],
    ["train"],
    ["demo"],
    ["config"],
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_contract_is_printed() -> None:
    result = runner.invoke(app, ["data", "contract"])
    assert result.exit_code == 0 and "`A1Cresult`" in result.output


def test_validate_good_extract(raw_csv: Path) -> None:
    result = runner.invoke(app, ["data", "validate", "--source", str(raw_csv)])
    assert result.exit_code == 0, result.output
    assert "400 rows checked, 400 valid, 0 set aside" in result.output


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns=["age"]), "missing column(s): age"),
        (lambda f: f.assign(num_lab_procedures="lots"), "num_lab_procedures"),
        (lambda f: f.assign(time_in_hospital="99"), "time_in_hospital"),
    ],
)
def test_bad_extract_fails_prepare_and_writes_nothing(
    tmp_path: Path,
    raw_frame: pd.DataFrame,
    mutate: object,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = tmp_path / "bad.csv"
    mutate(raw_frame).to_csv(bad, index=False)  # type: ignore[operator]
    monkeypatch.setenv("HEALTHPREDICT_DATA_DIR", str(tmp_path / "data"))
    result = runner.invoke(app, ["data", "prepare", "--source", str(bad)])
    assert result.exit_code == 1
    assert "error:" in result.output and message in result.output
    assert not (tmp_path / "data").exists()


def test_unreadable_source_fails_cleanly(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "validate", "--source", str(tmp_path / "missing.zip")])
    assert result.exit_code == 1 and "no such file" in result.output


def test_invalid_setting_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALTHPREDICT_N_BATCHES", "0")
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 1 and "n_batches" in result.output


def test_train_without_prepared_data_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEALTHPREDICT_DATA_DIR", str(tmp_path / "data"))
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 1 and "healthpredict data prepare" in result.output
