"""Fixtures for the infrastructure tests; every test module here is marked ``infra`` (pytestmark).

Select them with ``pytest -m infra`` or skip them with ``-m "not infra"``.
All of them are offline: CDK synthesizes locally and the deployment tests
talk to a moto server on 127.0.0.1 only.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# Works under any --import-mode: the helpers and the CDK package are imported by name.
sys.path.insert(0, str(HERE))

from infra_support import ADMIN_CIDR, FULL_CONTEXT, Synthesized, synthesize  # noqa: E402


@pytest.fixture(scope="session")
def full(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """Stack with key pair, flow logs, e-mail alerts and a fixed bucket name."""
    return synthesize(FULL_CONTEXT, tmp_path_factory.mktemp("full"))


@pytest.fixture(scope="session")
def default(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """Stack from the repository's cdk.json defaults plus the one required setting."""
    from healthpredict_infra.config import file_context

    context = {**file_context(), "admin_cidr": ADMIN_CIDR}
    return synthesize(context, tmp_path_factory.mktemp("default"))


@pytest.fixture(scope="session", params=["default", "full"])
def any_stack(request: pytest.FixtureRequest) -> Iterator[Synthesized]:
    """Each synthesized variant in turn, for properties that must always hold."""
    yield request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server on 127.0.0.1 and a free port, stopped even if tests fail.

    moto's CloudFormation lacks delete handlers for some EC2 types; see
    ``moto_shims`` for what is added while the server runs, and why.
    """
    from moto.server import ThreadedMotoServer
    from moto_shims import cloudformation_delete_handlers

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        assert host == "127.0.0.1", "the emulator must listen on loopback only"
        with cloudformation_delete_handlers():
            yield f"http://{host}:{port}"
    finally:
        server.stop()
