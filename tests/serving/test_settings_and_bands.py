"""Serving settings are checked at load; risk bands and decisions at their boundaries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from healthpredict.serving.scoring import hashed, risk_bands
from healthpredict.settings import Settings


@pytest.mark.parametrize(
    ("edges", "names"),
    [
        ([0.3, 0.1], ["a", "b", "c"]),
        ([0.1, 0.1], ["a", "b", "c"]),
        ([0.0, 0.5], ["a", "b", "c"]),
        ([0.1, 0.25], ["low", "high"]),
    ],
)
def test_inconsistent_bands_are_rejected(edges: list[float], names: list[str]) -> None:
    with pytest.raises(ValidationError, match="risk_band"):
        Settings.from_flat(risk_band_edges=edges, risk_band_names=names)


def test_band_edges_belong_to_the_higher_band() -> None:
    bands = risk_bands(np.array([0.0, 0.0999, 0.10, 0.2499, 0.25, 1.0]), Settings().serving)
    assert bands == ["low", "low", "medium", "medium", "high", "high"]


def test_serving_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HEALTHPREDICT_API_KEY", "k" * 20)
    monkeypatch.setenv("HEALTHPREDICT_CORS_ORIGINS", '["https://ward.example"]')
    monkeypatch.setenv("HEALTHPREDICT_MONITORING_DB_URL", "postgresql+psycopg://u:s3cr3t@db/x")
    settings = Settings.from_flat(data_dir=tmp_path)
    assert (
        settings.serving.api_key is not None
        and settings.serving.api_key.get_secret_value() == "k" * 20
    )
    assert settings.serving.cors_origins == ["https://ward.example"]
    assert settings.monitoring_url == "postgresql+psycopg://u:s3cr3t@db/x"
    assert "s3cr3t" not in str(settings.model_dump())
    assert Settings.from_flat(data_dir=tmp_path, monitoring_db_url=None).monitoring_url == (
        f"sqlite:///{(tmp_path / 'monitoring.db').resolve()}"
    )


def test_defaults_are_closed() -> None:
    settings = Settings()
    assert (
        settings.serving.api_key is None
        and settings.serving.admin_key is None
        and settings.serving.cors_origins == []
    )
    assert settings.serving.serve_host == "127.0.0.1"


def test_ids_are_hashed_with_the_salt_and_absent_ids_stay_absent() -> None:
    keys = hashed([12, None, 12, 13], b"salt")
    assert keys[1] is None and keys[0] == keys[2] != keys[3] and len(keys[0] or "") == 20
    assert hashed([12], b"other")[0] != keys[0]
    assert hashed([None, None], b"salt") == [None, None]
