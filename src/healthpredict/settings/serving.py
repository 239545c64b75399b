"""The serving section: keys, limits, risk bands and the prediction log's writer
(docs/serving.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from healthpredict.settings.sections import _Section


class ServingSettings(_Section):
    """The prediction service."""

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
    log_flush_seconds: float = Field(
        default=1.0, gt=0.0, description="Prediction log flush period."
    )
    log_flush_rows: int = Field(default=500, ge=1, description="Flush as soon as this many wait.")

    @model_validator(mode="after")
    def _risk_bands_consistent(self) -> ServingSettings:
        edges = self.risk_band_edges
        if any(not 0.0 < e < 1.0 for e in edges) or edges != sorted(set(edges)):
            raise ValueError("risk_band_edges must be strictly increasing, each in (0, 1)")
        if len(self.risk_band_names) != len(edges) + 1:
            raise ValueError("risk_band_names needs exactly one name more than risk_band_edges")
        return self
