"""The ``ray_cluster`` fixture: a real two-node Ray cluster (:mod:`.ray_cluster`), for the
search (tests/modeling) and the batch job (tests/pipelines) on Ray."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.ray_cluster import LocalRayCluster


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[LocalRayCluster]:
    """A head and one worker node started with ``ray start``, one CPU each, per test module.

    Skips where Ray is not installed, except in CI, where a missing Ray is a failure.
    """
    try:
        import ray  # noqa: F401
    except ImportError as error:
        message = f"ray is not importable ({error}): install the 'hpo' extra"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with LocalRayCluster(num_cpus=1, workers=1) as cluster:
        yield cluster
