"""pytest plugin (installed with the package): the `daraja_simulator` fixture.

    def test_checkout(daraja_simulator):
        client = DarajaClient(base_url=daraja_simulator.base_url, ...)
        ...
        daraja_simulator.pin(checkout_request_id)

One simulator per test session, its state reset before every test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import RunningSimulator, start_simulator


@pytest.fixture(scope="session")
def daraja_simulator_env() -> dict[str, str]:
    """Settings for the session's simulator; override this fixture to change them."""
    return {}


@pytest.fixture(scope="session")
def daraja_simulator_server(daraja_simulator_env: dict[str, str]) -> Iterator[RunningSimulator]:
    with start_simulator(**daraja_simulator_env) as simulator:
        yield simulator


@pytest.fixture
def daraja_simulator(daraja_simulator_server: RunningSimulator) -> RunningSimulator:
    daraja_simulator_server.reset()
    return daraja_simulator_server
