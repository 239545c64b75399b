"""One Settings object for the whole system, read from the environment (prefix HEALTHPREDICT_).

Nothing here runs at import time: call :func:`get_settings` when a value is needed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal

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
    cv_folds: int = Field(
        default=5, ge=2, le=20, description="Patient-grouped folds for out-of-fold calibration."
    )
    seed: int = Field(default=42, description="Seed for every random choice.")

    # --- evaluation -----------------------------------------------------------------------
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

    # --- tracking and registry ------------------------------------------------------------
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

    # --- hyper-parameter search and promotion gate ------------------------------------------
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
    gate_window: str = Field(
        default="batch_001",
        description="Prepared window the promotion gate compares models on; it must lie after "
        "both models' training windows and is kept out of the temporal test window.",
    )
    gate_min_auc_gain: float = Field(
        default=0.005,
        ge=0.0,
        description="ROC-AUC gain the challenger must show over the champion to be promoted.",
    )
    gate_loss_tolerance: float = Field(
        default=0.0,
        ge=0.0,
        description="The AUC-difference interval must exclude losses larger than this.",
    )
    gate_max_ece_increase: float = Field(
        default=0.01,
        ge=0.0,
        description="A challenger whose calibration-error increase is surely (whole interval) "
        "above this is refused.",
    )
    gate_group_margin: float = Field(
        default=0.02,
        ge=0.0,
        lt=0.5,
        description="A challenger whose ROC-AUC change within one patient group (of "
        "`equity_attributes`, on the gate's patients) is surely (whole interval) below minus "
        "this is refused, the group named, however much better it is on average.",
    )
    gate_group_min_encounters: int = Field(
        default=200,
        ge=20,
        description="Fewest gate encounters of a group compared on its own; smaller groups are "
        "pooled, and a group still too small does not block a promotion.",
    )
    gate_group_min_positives: int = Field(
        default=20,
        ge=5,
        description="Fewest readmissions (and non-readmissions) of a group compared on its own "
        "at the gate; fewer: pooled, or too few to tell.",
    )

    # --- serving (docs/serving.md) ---------------------------------------------------------
    # No default keys: `healthpredict serve` refuses to start without an API key.
    api_key: SecretStr | None = Field(
        default=None, description="Key for the prediction endpoints (X-API-Key); required."
    )
    admin_key: SecretStr | None = Field(
        default=None, description="Key for POST /admin/reload; reload is disabled when unset."
    )
    serve_host: str = Field(default="127.0.0.1", description="Interface the service binds to.")
    serve_port: int = Field(default=8000, ge=1, le=65535, description="Port the service binds to.")
    decision_threshold: float = Field(
        default=0.25, gt=0.0, lt=1.0, description="Probability at or above which to intervene."
    )
    risk_band_edges: list[float] = Field(
        default=[0.10, 0.25], description="Increasing probability edges between risk bands."
    )
    risk_band_names: list[str] = Field(
        default=["low", "medium", "high"], description="One name per band (edges + 1)."
    )
    max_batch_size: int = Field(
        default=1000, ge=1, le=100_000, description="Most records in one /predict/batch call."
    )
    max_outcomes_per_request: int = Field(
        default=10_000, ge=1, le=100_000, description="Most outcomes in one POST /outcomes call."
    )
    max_body_bytes: int = Field(default=4_000_000, ge=1024, description="Largest request body.")
    cors_origins: list[str] = Field(default=[], description="Allowed origins; empty = closed.")
    model_version: str | None = Field(
        default=None,
        pattern=r"^[1-9][0-9]*$",
        description="Serve this registered version instead of following the champion alias "
        "(a delivery rollout pins the version it shipped).",
    )
    model_poll_seconds: float = Field(
        default=30.0, ge=0.0, description="Champion alias check period; 0 disables polling."
    )
    top_contributions: int = Field(default=5, ge=0, le=50, description="Reasons per prediction.")
    tree_compiler: Literal["lleaves", "lightgbm"] = Field(
        default="lleaves",
        description="How batches of 256 rows or more evaluate the trees: lleaves compiles each "
        "model version once (seconds a booster, cached under <data_dir>/compiled-trees) and then "
        "scores about 5x faster than LightGBM's own predict; lightgbm skips the compile.",
    )
    # Secret: a PostgreSQL URL carries its password.
    monitoring_db_url: SecretStr | None = Field(
        default=None,
        description="Prediction log database; default sqlite:///<data_dir>/monitoring.db.",
    )
    log_flush_seconds: float = Field(
        default=1.0, gt=0.0, description="Prediction log flush period."
    )
    log_flush_rows: int = Field(default=500, ge=1, description="Flush as soon as this many wait.")
    deployment: str = Field(
        default="production",
        min_length=1,
        max_length=120,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:+-]*$",
        description="Name of this service's prediction log in the monitoring store; the monitor, "
        "outcomes and the loop read and write that deployment's rows only.",
    )

    # --- delivery (docs/orchestration_and_delivery.md) ------------------------------------
    # No defaults for the registry or the live endpoint: a delivery to a guessed account or
    # URL is refused before anything is built.
    delivery_dry_run: bool = Field(
        default=False,
        description="Record the docker/kubectl/aws commands a delivery would run in the journal "
        "instead of running them (the registry and the smoke test are still real).",
    )
    delivery_cluster_dry_run: bool = Field(
        default=False,
        description="Record only the kubectl commands in the journal (revision, pull Secret, "
        "rollout, wait, rollback): the image is built, pushed and its digest checked for real. "
        "For a machine with a container engine and a registry but no cluster.",
    )
    delivery_journal_file: Path | None = Field(
        default=None,
        description="JSON-lines journal of every delivery step and command; default "
        "<data_dir>/delivery/journal.jsonl.",
    )
    delivery_docker_command: str = Field(
        default="docker", description="How to call docker (split like a shell would)."
    )
    delivery_kubectl_command: str = Field(
        default="kubectl",
        description="How to call kubectl (split like a shell would, e.g. 'minikube kubectl --').",
    )
    delivery_aws_command: str = Field(
        default="aws", description="How to call the AWS CLI (split like a shell would)."
    )
    delivery_registry: str | None = Field(
        default=None,
        description="Image registry host (<account>.dkr.ecr.<region>.amazonaws.com); required "
        "to deliver.",
    )
    delivery_repository: str = Field(
        default="healthpredict", description="Image repository of the service in the registry."
    )
    delivery_registry_login: Literal["ecr", "password", "none"] = Field(
        default="ecr",
        description="How to log in to the registry: 'ecr' (`aws ecr get-login-password`; the "
        "tag is looked up with `aws ecr describe-images`), 'password' (the _USERNAME and "
        "_PASSWORD below) or 'none'; with the last two the tag and its digest are read from the "
        "registry's HTTP API.",
    )
    delivery_registry_username: str | None = Field(
        default=None,
        description="Registry user when HEALTHPREDICT_DELIVERY_REGISTRY_LOGIN=password.",
    )
    delivery_registry_password: SecretStr | None = Field(
        default=None,
        description="Registry password or token when HEALTHPREDICT_DELIVERY_REGISTRY_LOGIN="
        "password; given to docker login on stdin and to the registry's API in a header, never "
        "in an argument or the journal.",
    )
    delivery_registry_insecure: bool = Field(
        default=False,
        description="Plain HTTP to the registry, no TLS (podman: --tls-verify=false); refused "
        "unless the registry is on loopback (127.0.0.1, localhost, [::1]).",
    )
    delivery_aws_region: str | None = Field(
        default=None, description="Region of the registry; default: the AWS CLI's configuration."
    )
    delivery_image_tag: str | None = Field(
        default=None,
        description="Image tag a delivery ships when its trigger names none (a model-only "
        "release keeps the image that is deployed).",
    )
    delivery_dockerfile: Path = Field(
        default=Path("deploy/docker/Dockerfile.service"), description="Dockerfile of the service."
    )
    delivery_build_context: Path = Field(
        default=Path("."), description="Build context of the service image (the repository)."
    )
    delivery_base_image: str | None = Field(
        default=None,
        description="Base image the build passes as PYTHON_IMAGE; default: the Dockerfile's "
        "pinned upstream tag. Where that cannot be pulled, the stand-in `healthpredict images "
        "build` makes (localhost/healthpredict-standin/python:3.11-bookworm).",
    )
    delivery_build_host_sources: bool = Field(
        default=False,
        description="Mount the machine's package sources (apt sources and settings, pip's index, "
        "CA bundle) into the build, for the build only; podman only (docker build cannot mount).",
    )
    delivery_kube_context: str | None = Field(
        default=None, description="kubectl context; default: the current context."
    )
    delivery_namespace: str = Field(
        default="healthpredict", description="Kubernetes namespace of the service."
    )
    delivery_deployment: str = Field(
        default="healthpredict", description="Kubernetes Deployment of the service."
    )
    delivery_container: str = Field(
        default="service", description="Container of the service in that Deployment."
    )
    delivery_pull_secret: str | None = Field(
        default=None,
        description="docker-registry Secret the rollout refreshes from the registry login first "
        "(e.g. ecr-pull for Kind on the EC2 host, whose nodes cannot use the instance role).",
    )
    delivery_model_version_env: str = Field(
        default="HEALTHPREDICT_MODEL_VERSION",
        description="Container environment variable that pins the model version the service "
        "loads; the rollout sets it.",
    )
    delivery_command_timeout_seconds: float = Field(
        default=120.0, gt=0.0, description="Longest a push or kubectl command may run."
    )
    delivery_build_timeout_seconds: float = Field(
        default=1800.0, gt=0.0, description="Longest an image build may run."
    )
    delivery_rollout_timeout_seconds: float = Field(
        default=300.0,
        gt=0.0,
        description="How long a rollout may take to become ready before it is rolled back.",
    )
    delivery_service_url: str | None = Field(
        default=None,
        description="Live endpoint the smoke test calls after a rollout; required to deliver.",
    )
    delivery_smoke_timeout_seconds: float = Field(
        default=120.0, gt=0.0, description="How long the smoke test waits for /ready."
    )
    delivery_smoke_example: Path | None = Field(
        default=None,
        description="Encounter JSON the smoke test posts to /predict; default: the packaged "
        "example (the same as examples/encounter.json).",
    )

    # --- monitoring, policies and simulation (docs/monitoring_and_retraining.md) ----------
    monitor_origin: datetime = Field(
        default=datetime(2024, 1, 1, tzinfo=UTC),
        description="Start of monitoring window 1 (ISO 8601); windows follow each other from "
        "here. A replay's simulated clock starts here too.",
    )
    monitor_window_days: float = Field(
        default=7.0,
        gt=0.0,
        le=366.0,
        description="Length of a monitoring window, in days of encounter time (the requests' "
        "discharge_time, else the time they were served).",
    )
    min_labelled_share: float = Field(
        default=0.8,
        gt=0.0,
        le=1.0,
        description="Share of a window's predictions with an outcome at which the window counts "
        "as labelled: its label alarms reach the policy and its encounters can train and gate.",
    )
    performance_lookback_windows: int = Field(
        default=12,
        ge=1,
        le=520,
        description="How many windows back a monitor run looks for newly arrived outcomes.",
    )
    scenarios_file: Path | None = Field(
        default=None,
        description="Drift scenario set (YAML) a replay injects; default: the packaged "
        "scenarios/default.yaml.",
    )
    policies_file: Path | None = Field(
        default=None,
        description="Retraining policies (YAML); default: the packaged policies.yaml.",
    )
    policy: str = Field(
        default="drift",
        description="Retraining policy of the loop (`monitor`, `simulate`, the monitoring DAG), "
        "by name.",
    )
    label_delay_batches: int = Field(
        default=1,
        ge=0,
        le=10,
        description="In a replay: windows after a batch is served before its outcomes are sent.",
    )
    drift_false_alarm_rate: float = Field(
        default=0.05,
        gt=0.0,
        lt=0.5,
        description="Chance that any check of any contract field flags a batch drawn from the "
        "reference's population (family-wise; each field's thresholds are calibrated for it).",
    )
    drift_share_alarm: float = Field(
        default=0.3,
        gt=0.0,
        le=1.0,
        description="Share of the model's split gain that raises the input-drift alarm "
        "(`data_drift`, the signal a retraining policy may listen to): carried by the fields "
        "that moved in the window, or newly reached by the fields off the reference.",
    )
    prediction_drift_threshold: float = Field(
        default=0.1,
        gt=0.0,
        description="Population stability index of the predicted risk that raises an alarm.",
    )
    estimated_auc_drop_alarm: float = Field(
        default=0.03,
        gt=0.0,
        description="Drop of the label-free AUC estimate below the reference that raises an alarm.",
    )
    estimate_recalibration_min_rows: int = Field(
        default=500,
        ge=20,
        description="Fewest labelled encounters of a window that recalibrate the label-free "
        "estimate of later windows (fewer: too noisy to correct anything).",
    )
    realised_auc_drop_alarm: float = Field(
        default=0.02,
        ge=0.0,
        description="Realised AUC below the label-free estimate by more than this, with the "
        "whole interval below, raises a concept-drift alarm.",
    )
    calibration_gap_alarm: float = Field(
        default=0.02,
        ge=0.0,
        description="Observed minus predicted readmission rate beyond this, with the whole "
        "interval beyond, raises a calibration alarm.",
    )
    equity_attributes: list[str] = Field(
        default=["age", "gender", "race"],
        min_length=1,
        description="Contract columns whose groups are measured per window once outcomes "
        "arrive (realised AUC, calibration gap, flagged share) and compared at the gate.",
    )
    equity_min_group_encounters: int = Field(
        default=200,
        ge=20,
        description="Fewest encounters of a group in a window measured on its own; smaller "
        "groups are pooled (age bands with their neighbours, other values together) or, still "
        "too small, reported as too few to tell.",
    )
    equity_min_group_positives: int = Field(
        default=20,
        ge=5,
        description="Fewest readmissions (and non-readmissions) of a group in a window measured "
        "on its own; fewer: pooled, or too few to tell.",
    )
    equity_auc_margin: float = Field(
        default=0.05,
        gt=0.0,
        lt=0.5,
        description="A group's realised ROC-AUC below the whole population's by more than this, "
        "with the whole interval of the difference below, raises an equity alarm.",
    )
    equity_calibration_margin: float = Field(
        default=0.03,
        gt=0.0,
        lt=0.5,
        description="A group's calibration gap (observed minus predicted rate) differing from "
        "the whole population's by more than this, with the whole interval beyond, raises an "
        "equity alarm.",
    )
    quality_max_invalid_fraction: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="Share of contract-violating rows above which a batch is quarantined; "
        "fewer are set aside and the rest is scored.",
    )
    reference_rows: int = Field(
        default=20_000,
        ge=1000,
        description="Most rows of the champion's training data kept as the drift reference.",
    )

    @model_validator(mode="after")
    def _test_window_after_initial_window(self) -> Settings:
        if self.initial_window_fraction + self.test_fraction > 1.0 + 1e-9:
            raise ValueError(
                "initial_window_fraction + test_fraction must not exceed 1: the temporal test "
                "window may never overlap the training window"
            )
        return self

    @model_validator(mode="after")
    def _equity_attributes_known(self) -> Settings:
        from healthpredict.modeling.groups import GroupAttributeError, check_attributes

        try:
            check_attributes(self.equity_attributes)
        except GroupAttributeError as error:
            raise ValueError(f"equity_attributes: {error}") from error
        return self

    @model_validator(mode="after")
    def _origin_is_aware(self) -> Settings:
        # A naive origin would be read as local time on one machine and UTC on another.
        if self.monitor_origin.tzinfo is None:
            self.monitor_origin = self.monitor_origin.replace(tzinfo=UTC)
        return self

    @model_validator(mode="after")
    def _risk_bands_consistent(self) -> Settings:
        edges = self.risk_band_edges
        if any(not 0.0 < e < 1.0 for e in edges) or edges != sorted(set(edges)):
            raise ValueError("risk_band_edges must be strictly increasing, each in (0, 1)")
        if len(self.risk_band_names) != len(edges) + 1:
            raise ValueError("risk_band_names needs exactly one name more than risk_band_edges")
        return self

    @property
    def monitoring_url(self) -> str:
        """The prediction-log database URL in force."""
        if self.monitoring_db_url is not None:
            return self.monitoring_db_url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'monitoring.db').resolve()}"

    @model_validator(mode="after")
    def _gate_window_outside_test_window(self) -> Settings:
        # The gate selects models, so it may never look at the temporal test window.
        if self.gate_window.startswith("batch_"):
            batch = int(self.gate_window.removeprefix("batch_"))
            batch_end = self.initial_window_fraction + batch * (
                (1 - self.initial_window_fraction) / self.n_batches
            )
            if batch > self.n_batches or batch_end > 1 - self.test_fraction + 1e-9:
                raise ValueError(
                    f"gate_window {self.gate_window} lies inside the temporal test window (or "
                    "beyond the last batch): the gate must select on data the final evaluation "
                    "never uses"
                )
        return self

    @property
    def prepared_dir(self) -> Path:
        """Folder of the prepared timeline (Parquet files and manifest)."""
        return self.data_dir / "prepared"

    @property
    def compiled_trees_dir(self) -> Path | None:
        """Cache of compiled trees; None when LightGBM scores the trees itself."""
        return self.data_dir / "compiled-trees" if self.tree_compiler == "lleaves" else None

    @property
    def simulation_dir(self) -> Path:
        """Folder of simulation runs: scored batches, quarantine, references, drift reports."""
        return self.data_dir / "simulation"

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
    def artifact_location(self) -> str | None:
        """Artifact root used when the experiment is first created.

        None with a tracking server: the server's own artifact store applies (e.g. S3 behind
        ``mlflow server --artifacts-destination``); a local default would leave the models on
        whichever machine happened to create the experiment.
        """
        if self.mlflow_artifact_location:
            return self.mlflow_artifact_location
        if self.tracking_uri.startswith(("http://", "https://")):
            return None
        return (self.data_dir / "mlartifacts").resolve().as_uri()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment on first use."""
    return Settings()
