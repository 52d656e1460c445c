"""Fixtures: a running fake of the IONOS hosting DNS API and a virtual clock shared with the client."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from infra.dns.ionos_hosting import IonosHostingRecordProvider, RetryPolicy
from tests.fakes.ionos_hosting_api import FakeIonosHostingApi

from .ionos_hosting_env import OTHER_ZONE, ZONE, VirtualClock


@pytest.fixture
def api_key() -> str:
    """A throwaway key in the API's '<prefix>.<secret>' form."""
    return f"{secrets.token_hex(8)}.{secrets.token_urlsafe(24)}"


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def api(api_key: str, clock: VirtualClock) -> Iterator[FakeIonosHostingApi]:
    with FakeIonosHostingApi(api_key, clock=clock) as fake:
        fake.add_zone(ZONE)
        fake.add_zone(OTHER_ZONE)
        yield fake


@pytest.fixture
def provider(clock: VirtualClock) -> IonosHostingRecordProvider:
    retry = RetryPolicy(max_attempts=5, max_total_seconds=60.0, base_delay=0.5, max_delay=8.0)
    return IonosHostingRecordProvider(retry=retry, sleep=clock.sleep, clock=clock)


@pytest.fixture
def props(api: FakeIonosHostingApi, api_key: str) -> dict:
    """Inputs of an apex A record, as the engine hands them to the provider."""
    return {
        "zone": ZONE,
        "record_name": "@",
        "type": "A",
        "content": "203.0.113.10",
        "ttl": 300,
        "adopt_existing": False,
        "api_key": api_key,
        "base_url": api.base_url,
    }
