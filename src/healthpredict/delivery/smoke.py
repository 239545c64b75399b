"""The smoke test of a rollout: the live endpoint is ready and predicts with the new version.

It fails loudly: a service that never becomes ready, refuses the key, answers something that
is not a probability, or serves another model version than the one delivered fails the
delivery (and so rolls it back). Nothing here assumes success on an error.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import requests

from healthpredict.delivery.commands import CommandRunner
from healthpredict.delivery.release import Release
from healthpredict.errors import HealthPredictError
from healthpredict.settings import Settings, get_settings

logger = logging.getLogger(__name__)
_REQUEST_TIMEOUT_SECONDS = 10.0
_POLL_SECONDS = 1.0


class SmokeTestError(HealthPredictError):
    """The live endpoint did not pass the smoke test."""


def smoke_test(release: dict[str, Any]) -> dict[str, Any]:
    """Task: GET /ready until it answers 200, then POST one encounter to /predict.

    Raises:
        SmokeTestError: Not ready within the timeout, an error answer, an answer that is not a
            probability, or a model version other than the release's.
    """
    settings = get_settings()
    target = Release.from_dict(release)
    runner = CommandRunner.from_settings(settings)
    base = (settings.delivery.service_url or "").rstrip("/")
    try:
        result = check_endpoint(settings, base, target.model_version)
    except SmokeTestError as error:
        runner.note("smoke-test", url=base, passed=False, reason=str(error))
        raise
    runner.note("smoke-test", url=base, passed=True, **result)
    return result


def check_endpoint(settings: Settings, base: str, expected_version: str | None) -> dict[str, Any]:
    """Check one live endpoint; return the served version and the probability."""
    if not base:
        raise SmokeTestError("no service URL configured (HEALTHPREDICT_DELIVERY_SERVICE_URL)")
    if settings.serving.api_key is None:
        raise SmokeTestError("no API key configured (HEALTHPREDICT_API_KEY)")
    with requests.Session() as session:
        _wait_ready(session, base, settings.delivery.smoke_timeout_seconds)
        answer = _post(session, f"{base}/predict", example(settings), settings)
    probability, served = _probability(answer.get("probability")), str(answer.get("model_version"))
    if probability is None:
        raise SmokeTestError(
            f"{base}/predict answered a probability of {answer.get('probability')!r}"
        )
    if expected_version is not None and served != expected_version:
        raise SmokeTestError(
            f"{base} serves model version {served}, not the delivered version {expected_version}"
        )
    return {"model_version": served, "probability": probability}


def _probability(value: object) -> float | None:
    """``value`` as a probability, or None when it is not a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0.0 <= value <= 1.0 else None


def example(settings: Settings) -> dict[str, Any]:
    """The encounter the smoke test posts."""
    if settings.delivery.smoke_example is not None:
        loaded: dict[str, Any] = json.loads(settings.delivery.smoke_example.read_text())
        return loaded
    from healthpredict.serving.examples import EXAMPLE_ENCOUNTER

    return dict(EXAMPLE_ENCOUNTER)


def _wait_ready(session: requests.Session, base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            answer = session.get(f"{base}/ready", timeout=_REQUEST_TIMEOUT_SECONDS)
        except requests.RequestException as error:
            last = f"{type(error).__name__}: {error}"
        else:
            if answer.status_code == 200:
                return
            last = f"HTTP {answer.status_code}: {answer.text[:300]}"
        time.sleep(_POLL_SECONDS)
    raise SmokeTestError(f"{base}/ready did not answer 200 within {timeout:.0f}s ({last})")


def _post(
    session: requests.Session, url: str, record: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    key = settings.serving.api_key.get_secret_value() if settings.serving.api_key else ""
    try:
        answer = session.post(
            url, json=record, headers={"X-API-Key": key}, timeout=_REQUEST_TIMEOUT_SECONDS
        )
    except requests.RequestException as error:
        raise SmokeTestError(f"{url}: {type(error).__name__}: {error}") from error
    if answer.status_code != 200:
        raise SmokeTestError(f"{url} answered HTTP {answer.status_code}: {answer.text[:300]}")
    body: dict[str, Any] = answer.json()
    return body
