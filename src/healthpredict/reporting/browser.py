"""How to start Debian's Chromium headless to look at the dashboard (tests, the walkthrough)."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
# The network is closed on these machines: without these flags Chromium keeps trying to reach
# Google's services and floods the log with refused connections.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
