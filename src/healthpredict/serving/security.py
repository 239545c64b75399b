"""API keys: checked in constant time, read from settings only, never logged or echoed."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request
from fastapi.security import APIKeyHeader
from pydantic import SecretStr

from healthpredict.errors import HealthPredictError
from healthpredict.settings import Settings

API_KEY_HEADER = "X-API-Key"
ADMIN_KEY_HEADER = "X-Admin-Key"
MIN_KEY_LENGTH = 16

# Named schemes: two unnamed APIKeyHeader schemes share one OpenAPI name, and the document
# then asks for the admin key where the API key is meant.
API_KEY_SCHEME = "ApiKey"
ADMIN_KEY_SCHEME = "AdminKey"
api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER,
    scheme_name=API_KEY_SCHEME,
    auto_error=False,
    description="Prediction key (HEALTHPREDICT_API_KEY): predictions, outcomes, /model.",
)
admin_key_scheme = APIKeyHeader(
    name=ADMIN_KEY_HEADER,
    scheme_name=ADMIN_KEY_SCHEME,
    auto_error=False,
    description="Admin key (HEALTHPREDICT_ADMIN_KEY): /admin/reload only.",
)


class ServingConfigError(HealthPredictError):
    """The service is not configured safely enough to start."""


def check_keys(settings: Settings) -> None:
    """Refuse to build a service without an API key, with short keys, or with one shared key.

    Raises:
        ServingConfigError: Naming the setting to fix (never its value).
    """
    if settings.serving.api_key is None:
        raise ServingConfigError(
            "no API key configured: set HEALTHPREDICT_API_KEY; the service does not serve "
            "predictions without one"
        )
    keys = {
        "HEALTHPREDICT_API_KEY": settings.serving.api_key,
        "HEALTHPREDICT_ADMIN_KEY": settings.serving.admin_key,
    }
    for name, key in keys.items():
        if key is not None and len(key.get_secret_value()) < MIN_KEY_LENGTH:
            raise ServingConfigError(f"{name} must be at least {MIN_KEY_LENGTH} characters")
    if settings.serving.admin_key is not None and _same(
        settings.serving.api_key, settings.serving.admin_key.get_secret_value()
    ):
        raise ServingConfigError("HEALTHPREDICT_ADMIN_KEY must differ from HEALTHPREDICT_API_KEY")


def _same(expected: SecretStr, given: str) -> bool:
    """Constant-time comparison (as bytes: compare_digest rejects non-ASCII text)."""
    return hmac.compare_digest(expected.get_secret_value().encode(), given.encode())


def _settings(request: Request) -> Settings:
    return request.app.state.service.settings


def require_api_key(request: Request, given: str | None) -> None:
    """Dependency body for the prediction endpoints.

    Raises:
        HTTPException: 401 when the key is missing or wrong (the same answer for both).
    """
    expected = _settings(request).serving.api_key
    if expected is None or given is None or not _same(expected, given):
        raise HTTPException(
            401,
            f"missing or invalid {API_KEY_HEADER} header",
            headers={"WWW-Authenticate": API_KEY_HEADER},
        )


def require_admin_key(request: Request, given: str | None) -> None:
    """Dependency body for the admin endpoints.

    Raises:
        HTTPException: 403 when no admin key is configured, 401 when it is missing or wrong.
    """
    expected = _settings(request).serving.admin_key
    if expected is None:
        raise HTTPException(403, "admin endpoints are disabled: HEALTHPREDICT_ADMIN_KEY is not set")
    if given is None or not _same(expected, given):
        raise HTTPException(
            401,
            f"missing or invalid {ADMIN_KEY_HEADER} header",
            headers={"WWW-Authenticate": ADMIN_KEY_HEADER},
        )
