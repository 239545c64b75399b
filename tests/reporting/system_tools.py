"""Tests that need a system tool (Chromium): skip without it on a laptop, fail under CI.

CI (``CI=true``, set by ``.ci/run``, which installs Debian's Chromium) must not pass by not
looking.
"""

from __future__ import annotations

import os

import pytest


def require(available: bool, message: str) -> None:
    """Go on when ``available``; otherwise fail under CI and skip elsewhere, with ``message``."""
    if available:
        return
    if os.environ.get("CI", "").lower() not in {"", "0", "false", "no"}:
        pytest.fail(message)
    pytest.skip(message)
