"""Where MLflow artifacts go by default."""

from __future__ import annotations

from pathlib import Path

from healthpredict.settings import Settings


def test_local_store_keeps_artifacts_beside_it(tmp_path: Path) -> None:
    settings = Settings.from_flat(data_dir=tmp_path)
    assert settings.artifact_location == (tmp_path / "mlartifacts").resolve().as_uri()


def test_a_tracking_server_keeps_its_own_artifact_store(tmp_path: Path) -> None:
    settings = Settings.from_flat(data_dir=tmp_path, mlflow_tracking_uri="http://mlflow:5000")
    assert settings.artifact_location is None


def test_an_explicit_location_wins() -> None:
    settings = Settings.from_flat(
        mlflow_tracking_uri="http://mlflow:5000", mlflow_artifact_location="s3://b/p"
    )
    assert settings.artifact_location == "s3://b/p"
