"""Shared fixtures: settings isolated in a temporary folder, synthetic extracts, the real one.

Folders mirror the code (tests/data tests healthpredict.data, ...); the tiers are markers that
each module sets (``real_data``, ``integration``, ``infra``, ``containers``), not folders.
Fixtures used by more than one folder live in tests/support and are registered here.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from moto.server import ThreadedMotoServer
from s3fs import S3FileSystem

from healthpredict.settings import Settings, get_settings
from tests.synthetic import make_raw_frame, write_csv

pytest_plugins = [
    "tests.support.champion",
    "tests.support.containers",
    "tests.support.dag_runs",
    "tests.support.ray_cluster_fixture",
    "tests.support.real_extract",
]


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test reads the developer's .env, data folder or MLflow store."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("HEALTHPREDICT_") and name != "HEALTHPREDICT_DATA_SOURCE":
            monkeypatch.delenv(name)
    # Compiling each model's trees costs seconds a version; the tests of the compiled path
    # (tests/serving/test_fastpath_trees.py, tests/pipelines/test_score_job.py) ask for it.
    monkeypatch.setenv("HEALTHPREDICT_TREE_COMPILER", "lightgbm")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def raw_frame() -> pd.DataFrame:
    """A valid synthetic raw extract of 400 encounters."""
    return make_raw_frame(400, seed=1)


@pytest.fixture
def raw_csv(tmp_path: Path, raw_frame: pd.DataFrame) -> Path:
    """The synthetic extract as a CSV file."""
    path = tmp_path / "diabetic_data.csv"
    write_csv(raw_frame, str(path))
    return path


@pytest.fixture
def raw_zip(tmp_path: Path, raw_csv: Path) -> Path:
    """The synthetic extract zipped the way UCI ships it."""
    path = tmp_path / "dataset_diabetes.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(raw_csv, "dataset_diabetes/diabetic_data.csv")
    return path


def make_settings(tmp_path: Path, source: Path | str, **overrides: object) -> Settings:
    """Settings writing under ``tmp_path/data`` with fast evaluation."""
    values: dict[str, object] = {
        "data_source": str(source),
        "data_dir": tmp_path / "data",
        "bootstrap_rounds": 50,
        "cv_folds": 3,
        "min_champion_roc_auc": 0.5,
        "tree_compiler": "lightgbm",
    }
    return Settings.from_flat(**{**values, **overrides})


@pytest.fixture(scope="session")
def real_source() -> str:
    """Location of the real extract; a missing extract fails in CI and skips elsewhere."""
    source = os.environ.get("HEALTHPREDICT_DATA_SOURCE", "")
    if source and (Path(source).is_file() or "://" in source):
        return source
    message = f"real extract not available (HEALTHPREDICT_DATA_SOURCE={source!r})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real S3 endpoint on loopback (moto's server), found by boto3 and s3fs via the env."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # Throwaway credentials for the emulator; fsspec/s3fs find the endpoint through botocore.
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    # s3fs keeps one filesystem per set of arguments: one made for an earlier endpoint would
    # still point there.
    S3FileSystem.clear_instance_cache()
    try:
        yield endpoint
    finally:
        server.stop()
        S3FileSystem.clear_instance_cache()
