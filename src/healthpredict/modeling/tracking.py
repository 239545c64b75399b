"""Registry failures that say what failed: an unreachable MLflow server is named as such.

MLflow reports a server that went away as a long connection-pool trace (after its own
retries); a task that fails for that reason should say so in one line, naming the server, so
that the operator knows the retry Airflow is about to make is the right remedy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import requests

from healthpredict.errors import HealthPredictError
from healthpredict.settings import Settings

_PROBE_TIMEOUT_SECONDS = 5.0


class TrackingUnavailableError(HealthPredictError):
    """The MLflow tracking server cannot be reached; retrying later is the remedy."""


def server_address(uri: str) -> str:
    """The tracking URI without credentials, fit for a log line."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def reachable(uri: str) -> bool:
    """Whether an HTTP tracking server answers its health check (local stores always do)."""
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        answer = requests.get(f"{uri.rstrip('/')}/health", timeout=_PROBE_TIMEOUT_SECONDS)
    except requests.RequestException:
        return False
    return answer.status_code == 200


def require_tracking_server(settings: Settings) -> None:
    """Fail at once, in one line, when the server is down (before MLflow's own retries)."""
    if not reachable(settings.tracking_uri):
        raise TrackingUnavailableError(_message(settings.tracking_uri, "no answer to /health"))


@contextmanager
def registry_errors(settings: Settings) -> Iterator[None]:
    """Re-raise any failure inside as TrackingUnavailableError if the server is gone."""
    require_tracking_server(settings)
    try:
        yield
    except Exception as error:
        if isinstance(error, TrackingUnavailableError) or reachable(settings.tracking_uri):
            raise
        raise TrackingUnavailableError(
            _message(settings.tracking_uri, f"{type(error).__name__} during the task")
        ) from error


def _message(uri: str, detail: str) -> str:
    return (
        f"MLflow tracking server {server_address(uri)} is unreachable ({detail}); the task "
        "can be retried once the server is back"
    )
