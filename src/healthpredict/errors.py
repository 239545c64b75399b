"""The base of every expected failure: bad input, a missing prerequisite, an unreachable server.

The command line prints any :class:`HealthPredictError` as one line and exits 1; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations


class HealthPredictError(Exception):
    """A failure the user can act on; the message names the problem and, where it can, the fix."""
