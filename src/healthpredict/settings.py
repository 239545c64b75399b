"""One Settings object for the whole system, read from the environment (prefix HEALTHPREDICT_).

Nothing here runs at import time: call :func:`get_settings` when a value is needed.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

UCI_SOURCE = "uci"


class Settings(BaseSettings):
    """Configuration of Health Predict; every field can be set as ``HEALTHPREDICT_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="HEALTHPREDICT_", env_file=".env", extra="ignore")

    # --- data -----------------------------------------------------------------------------
    data_source: str = Field(
        default=UCI_SOURCE,
        description="Raw extract: a local zip/csv path, file://, s3://, http(s):// URL, or 'uci' "
        "for the public UCI download.",
    )
    data_sha256: str | None = Field(
        default=None,
        description="Expected sha256 of diabetic_data.csv; checked when set.",
    )
    data_dir: Path = Field(
        default=Path("data"),
        description="Project data folder: prepared data, MLflow store, reports.",
    )
    max_invalid_fraction: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Largest share of contract-violating rows tolerated before preparing fails.",
    )
    id_salt: SecretStr | None = Field(
        default=None,
        description="Secret salt for hashing patient/encounter ids; generated and kept in "
        "<data_dir>/secrets when unset.",
    )

    # --- timeline -------------------------------------------------------------------------
    initial_window_fraction: float = Field(
        default=0.8,
        gt=0.0,
        lt=1.0,
        description="Share of encounters (oldest first) in the initial training window.",
    )
    n_batches: int = Field(
        default=4,
        ge=1,
        le=200,
        description="Number of production batches the rest of the timeline is cut into.",
    )
    test_fraction: float = Field(
        default=0.2,
        gt=0.0,
        lt=1.0,
        description="Share of the newest encounters that forms the temporal test window.",
    )
    cv_folds: int = Field(default=5, ge=2, le=20, description="Patient-grouped folds.")
    seed: int = Field(default=42, description="Seed for every random choice.")

    # --- evaluation -----------------------------------------------------------------------
    bootstrap_rounds: int = Field(default=500, ge=50, description="Patient-grouped bootstrap rounds.")
    confidence_level: float = Field(default=0.95, gt=0.5, lt=1.0)
    top_risk_fraction: float = Field(
        default=0.10, gt=0.0, lt=1.0, description="Share of highest-risk encounters flagged."
    )
    min_champion_roc_auc: float = Field(
        default=0.60,
        ge=0.5,
        le=1.0,
        description="A first model becomes champion only if its test ROC-AUC reaches this.",
    )

    # --- tracking and registry ------------------------------------------------------------
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; default sqlite:///<data_dir>/mlflow.db."
    )
    mlflow_artifact_location: str | None = Field(
        default=None, description="Artifact root for a new experiment; default <data_dir>/mlartifacts."
    )
    experiment_name: str = "health-predict"
    model_name: str = "health-predict-readmission"

    @model_validator(mode="after")
    def _test_window_after_initial_window(self) -> Settings:
        if self.initial_window_fraction + self.test_fraction > 1.0 + 1e-9:
            raise ValueError(
                "initial_window_fraction + test_fraction must not exceed 1: the temporal test "
                "window may never overlap the training window"
            )
        return self

    @property
    def prepared_dir(self) -> Path:
        """Folder of the prepared timeline (Parquet files and manifest)."""
        return self.data_dir / "prepared"

    @property
    def reports_dir(self) -> Path:
        """Folder of evaluation reports and plots."""
        return self.data_dir / "reports"

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI in force."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @property
    def artifact_location(self) -> str:
        """Artifact root used when the experiment is first created."""
        if self.mlflow_artifact_location:
            return self.mlflow_artifact_location
        return (self.data_dir / "mlartifacts").resolve().as_uri()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment on first use."""
    return Settings()
