"""The sections of the settings that shape the data and the models: data, training, tracking,
search and the promotion gate.

Every section reads its own fields from the environment. Its variable names are today's flat
ones: a section whose fields all shared a prefix (``gate_``) drops it and reads a longer env
prefix instead, so ``settings.gate.min_auc_gain`` is still ``HEALTHPREDICT_GATE_MIN_AUC_GAIN``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "HEALTHPREDICT_"
UCI_SOURCE = "uci"


class _Section(BaseSettings):
    """One section of the settings, read from the environment (prefix HEALTHPREDICT_)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    @classmethod
    def flat_prefix(cls) -> str:
        """What the section's field names carried before they had a section ('gate_' or '')."""
        return str(cls.model_config.get("env_prefix", ENV_PREFIX)).removeprefix(ENV_PREFIX).lower()


class DataSettings(_Section):
    """The raw extract, the data folder and the timeline it is cut into."""

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
    # 30 % + 7 batches of ~10,000 encounters: a stream long enough for drift and retraining
    # (docs/monitoring_and_retraining.md); `make benchmark` also reports the 70 % window.
    initial_window_fraction: float = Field(
        default=0.3,
        gt=0.0,
        lt=1.0,
        description="Share of encounters (oldest first) in the initial training window.",
    )
    n_batches: int = Field(
        default=7,
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

    @model_validator(mode="after")
    def _test_window_after_initial_window(self) -> DataSettings:
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
    def simulation_dir(self) -> Path:
        """Folder of simulation runs: scored batches, quarantine, references, drift reports."""
        return self.data_dir / "simulation"

    @property
    def reports_dir(self) -> Path:
        """Folder of evaluation reports and plots."""
        return self.data_dir / "reports"


class TrainingSettings(_Section):
    """Fitting and evaluating a model: folds, seed, bootstrap and the first champion's bar."""

    cv_folds: int = Field(
        default=5, ge=2, le=20, description="Patient-grouped folds for out-of-fold calibration."
    )
    seed: int = Field(default=42, description="Seed for every random choice.")
    bootstrap_rounds: int = Field(
        default=500, ge=50, description="Patient-grouped bootstrap rounds."
    )
    confidence_level: float = Field(
        default=0.95, gt=0.5, lt=1.0, description="Coverage of every reported interval."
    )
    top_risk_fraction: float = Field(
        default=0.10, gt=0.0, lt=1.0, description="Share of highest-risk encounters flagged."
    )
    min_champion_roc_auc: float = Field(
        default=0.60,
        ge=0.5,
        le=1.0,
        description="A first model becomes champion only if its test ROC-AUC reaches this.",
    )


class TrackingSettings(_Section):
    """The MLflow tracking server and the registered model."""

    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; default sqlite:///<data_dir>/mlflow.db."
    )
    mlflow_artifact_location: str | None = Field(
        default=None,
        description="Artifact root for a new experiment; default <data_dir>/mlartifacts, or the "
        "tracking server's own store when the tracking URI is http(s).",
    )
    experiment_name: str = Field(default="health-predict", description="MLflow experiment.")
    model_name: str = Field(
        default="health-predict-readmission", description="Registered model name in MLflow."
    )


class SearchSettings(_Section):
    """The hyper-parameter search: where it runs, its space and its budget."""

    ray_address: str | None = Field(
        default=None,
        description="Ray cluster to run the search and `healthpredict score` on (e.g. "
        "head:6379 or ray://head:10001); default: the search on a local Ray with this machine's "
        "CPUs (RAY_ADDRESS is honoured too), scoring in this process.",
    )
    search_space_file: Path | None = Field(
        default=None, description="Search space YAML; default: the packaged search_space.yaml."
    )
    tune_trials: int = Field(default=40, ge=1, description="Trial budget of a search.")
    tune_time_budget_seconds: float = Field(
        default=170.0, gt=0.0, description="Wall-time budget of a search."
    )
    tune_folds: int = Field(
        default=3, ge=2, le=10, description="Patient-grouped CV folds scored per trial."
    )
    tune_concurrency: int = Field(
        default=1,
        ge=1,
        description="Trials run at once. 1 makes the search reproducible (same seed, same data, "
        "same best configuration); more is faster but depends on finishing order.",
    )


class GateSettings(_Section):
    """The promotion gate between challenger and champion (HEALTHPREDICT_GATE_*)."""

    model_config = SettingsConfigDict(env_prefix=f"{ENV_PREFIX}GATE_")

    window: str = Field(
        default="batch_001",
        description="Prepared window the promotion gate compares models on; it must lie after "
        "both models' training windows and is kept out of the temporal test window.",
    )
    min_auc_gain: float = Field(
        default=0.005,
        ge=0.0,
        description="ROC-AUC gain the challenger must show over the champion to be promoted.",
    )
    loss_tolerance: float = Field(
        default=0.0,
        ge=0.0,
        description="The AUC-difference interval must exclude losses larger than this.",
    )
    max_ece_increase: float = Field(
        default=0.01,
        ge=0.0,
        description="A challenger whose calibration-error increase is surely (whole interval) "
        "above this is refused.",
    )
    group_margin: float = Field(
        default=0.02,
        ge=0.0,
        lt=0.5,
        description="A challenger whose ROC-AUC change within one patient group (of "
        "`equity_attributes`, on the gate's patients) is surely (whole interval) below minus "
        "this is refused, the group named, however much better it is on average.",
    )
    group_min_encounters: int = Field(
        default=200,
        ge=20,
        description="Fewest gate encounters of a group compared on its own; smaller groups are "
        "pooled, and a group still too small does not block a promotion.",
    )
    group_min_positives: int = Field(
        default=20,
        ge=5,
        description="Fewest readmissions (and non-readmissions) of a group compared on its own "
        "at the gate; fewer: pooled, or too few to tell.",
    )
