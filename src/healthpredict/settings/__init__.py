"""Settings of the whole system in sections, read from the environment (prefix HEALTHPREDICT_).

:class:`Settings` holds one section per concern (data, training, tracking, search, gate,
serving, monitoring, delivery); a function that needs one concern receives its section only.
The environment variables are the flat names they always had (``HEALTHPREDICT_GATE_WINDOW`` is
``settings.gate.window``): :meth:`Settings.flat_fields` maps each flat name to its section, for
what really is flat (``healthpredict config``, the README's reference, a child's environment).

Nothing here runs at import time: call :func:`get_settings` when a value is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, Field, model_validator
from pydantic.fields import FieldInfo

from healthpredict.settings.delivery import DeliverySettings
from healthpredict.settings.monitoring import MonitoringSettings
from healthpredict.settings.sections import (
    ENV_PREFIX,
    UCI_SOURCE,
    DataSettings,
    GateSettings,
    SearchSettings,
    TrackingSettings,
    TrainingSettings,
    _Section,
)
from healthpredict.settings.serving import ServingSettings

__all__ = [
    "ENV_PREFIX",
    "UCI_SOURCE",
    "DataSettings",
    "DeliverySettings",
    "FlatField",
    "GateSettings",
    "MonitoringSettings",
    "SearchSettings",
    "ServingSettings",
    "Settings",
    "TrackingSettings",
    "TrainingSettings",
    "get_settings",
]


@dataclass(frozen=True)
class FlatField:
    """One setting under its flat name: its environment variable without the prefix."""

    name: str
    section: str
    attribute: str
    info: FieldInfo

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return f"{ENV_PREFIX}{self.name.upper()}"


class Settings(BaseModel):
    """Configuration of Health Predict; ``Settings()`` reads every section from the environment."""

    data: DataSettings = Field(default_factory=DataSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)

    @classmethod
    def from_flat(cls, **values: Any) -> Settings:
        """Settings from the environment with ``values``, given by flat name, on top.

        Raises:
            TypeError: A name is no setting.
            pydantic.ValidationError: A value is refused.
        """
        given = _by_section(values).items()
        return cls.model_validate(
            {section: _section_classes()[section](**changes) for section, changes in given}
        )

    def with_flat(self, **values: Any) -> Settings:
        """A copy with ``values``, given by flat name, replaced (and validated again).

        Raises:
            TypeError: A name is no setting.
            pydantic.ValidationError: A value is refused.
        """
        sections: dict[str, _Section] = {name: getattr(self, name) for name in _section_classes()}
        for section, changes in _by_section(values).items():
            current = sections[section]
            sections[section] = type(current)(**{**current.model_dump(), **changes})
        return type(self).model_validate(sections)

    @classmethod
    def flat_fields(cls) -> Mapping[str, FlatField]:
        """Every setting by flat name, sections in order, fields in their section's order."""
        return _flat_fields()

    def flat(self) -> dict[str, Any]:
        """Every value by flat name (secrets stay :class:`~pydantic.SecretStr`)."""
        return {
            name: getattr(getattr(self, field.section), field.attribute)
            for name, field in _flat_fields().items()
        }

    @model_validator(mode="after")
    def _gate_window_outside_test_window(self) -> Settings:
        # The gate selects models, so it may never look at the temporal test window.
        window, data = self.gate.window, self.data
        if window.startswith("batch_"):
            batch = int(window.removeprefix("batch_"))
            batch_end = data.initial_window_fraction + batch * (
                (1 - data.initial_window_fraction) / data.n_batches
            )
            if batch > data.n_batches or batch_end > 1 - data.test_fraction + 1e-9:
                raise ValueError(
                    f"gate_window {window} lies inside the temporal test window (or beyond the "
                    "last batch): the gate must select on data the final evaluation never uses"
                )
        return self

    @property
    def monitoring_url(self) -> str:
        """The prediction-log database URL in force."""
        if self.monitoring.monitoring_db_url is not None:
            return self.monitoring.monitoring_db_url.get_secret_value()
        return f"sqlite:///{(self.data.data_dir / 'monitoring.db').resolve()}"

    @property
    def compiled_trees_dir(self) -> Path | None:
        """Cache of compiled trees; None when LightGBM scores the trees itself."""
        if self.serving.tree_compiler != "lleaves":
            return None
        return self.data.data_dir / "compiled-trees"

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI in force."""
        if self.tracking.mlflow_tracking_uri:
            return self.tracking.mlflow_tracking_uri
        return f"sqlite:///{(self.data.data_dir / 'mlflow.db').resolve()}"

    @property
    def artifact_location(self) -> str | None:
        """Artifact root used when the experiment is first created.

        None with a tracking server: the server's own artifact store applies (e.g. S3 behind
        ``mlflow server --artifacts-destination``); a local default would leave the models on
        whichever machine happened to create the experiment.
        """
        if self.tracking.mlflow_artifact_location:
            return self.tracking.mlflow_artifact_location
        if self.tracking_uri.startswith(("http://", "https://")):
            return None
        return (self.data.data_dir / "mlartifacts").resolve().as_uri()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment on first use."""
    return Settings()


@cache
def _section_classes() -> dict[str, type[_Section]]:
    """Each section's class by its name in :class:`Settings`."""
    classes = {}
    for name, field in Settings.model_fields.items():
        section_class = field.annotation
        assert isinstance(section_class, type) and issubclass(section_class, _Section)
        classes[name] = section_class
    return classes


@cache
def _flat_fields() -> Mapping[str, FlatField]:
    fields = {}
    for section, section_class in _section_classes().items():
        for attribute, info in section_class.model_fields.items():
            name = f"{section_class.flat_prefix()}{attribute}"
            fields[name] = FlatField(name, section, attribute, info)
    return MappingProxyType(fields)


def _by_section(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``values`` by flat name, regrouped as section -> attribute -> value."""
    fields = _flat_fields()
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise TypeError(f"no such setting: {', '.join(unknown)}")
    grouped: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        field = fields[name]
        grouped.setdefault(field.section, {})[field.attribute] = value
    return grouped
