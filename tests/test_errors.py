"""Every expected failure derives from HealthPredictError: the command line prints it as one line.

A new error that forgets the base would print a traceback instead; this list is where it is
added. The second bases are kept where callers catch the error by that type.
"""

from __future__ import annotations

import pytest

from healthpredict.data.source import DataSourceError
from healthpredict.data.tables import TableFileError
from healthpredict.data.timeline import TimelineError
from healthpredict.data.validate import ContractError
from healthpredict.delivery.commands import CommandError
from healthpredict.delivery.engine import ImageError
from healthpredict.delivery.registry import RegistryError
from healthpredict.delivery.release import ReleaseError
from healthpredict.delivery.rollout import PushError, RolloutError
from healthpredict.delivery.smoke import SmokeTestError
from healthpredict.delivery.stack import StackError
from healthpredict.errors import HealthPredictError
from healthpredict.loop.windows import WindowError
from healthpredict.modeling.champion import PromotionError, PromotionRefusedError
from healthpredict.modeling.tracking import TrackingUnavailableError
from healthpredict.modeling.tune import SearchError
from healthpredict.monitoring.history import RunNotFoundError
from healthpredict.monitoring.policy import PolicyError
from healthpredict.monitoring.scenarios import ScenarioError
from healthpredict.orchestration.monitoring import WindowParamError
from healthpredict.serving.fastpath.encoder import FastPathError
from healthpredict.serving.fastpath.trees import TreeCompileError
from healthpredict.serving.scoring import ModelUnavailableError
from healthpredict.serving.security import ServingConfigError

EXPECTED_FAILURES = [
    DataSourceError,
    TableFileError,
    TimelineError,
    ContractError,
    CommandError,
    ImageError,
    RegistryError,
    ReleaseError,
    PushError,
    RolloutError,
    SmokeTestError,
    StackError,
    WindowError,
    PromotionError,
    PromotionRefusedError,
    SearchError,
    RunNotFoundError,
    PolicyError,
    ScenarioError,
    WindowParamError,
    TrackingUnavailableError,
    FastPathError,
    TreeCompileError,
    ModelUnavailableError,
    ServingConfigError,
]


@pytest.mark.parametrize("error", EXPECTED_FAILURES, ids=lambda error: error.__name__)
def test_every_expected_failure_has_the_common_base(error: type[Exception]) -> None:
    assert issubclass(error, HealthPredictError)


@pytest.mark.parametrize(
    ("error", "second"),
    [(ReleaseError, ValueError), (WindowError, ValueError), (RunNotFoundError, LookupError)],
)
def test_second_bases_kept_for_callers_that_catch_them(
    error: type[Exception], second: type[Exception]
) -> None:
    # delivery.rollout.plan journals a refusal by catching ValueError; score catches LookupError.
    assert issubclass(error, second)
