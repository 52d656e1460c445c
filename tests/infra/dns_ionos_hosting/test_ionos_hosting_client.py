"""Retries, rate limiting and error messages of the hosting DNS client, against the local fake."""

from __future__ import annotations

import email.utils
import logging
import time

import pytest

from infra.dns.ionos_hosting import (
    IonosHostingAuthError,
    IonosHostingBadRequest,
    IonosHostingClient,
    IonosHostingError,
    IonosHostingRecordProvider,
    IonosHostingUnavailable,
    IonosHostingZoneNotFound,
    RetryPolicy,
    _retry_after_seconds,
)
from tests.fakes.ionos_hosting_api import FakeIonosHostingApi

from .ionos_hosting_env import ZONE, VirtualClock

RETRY = RetryPolicy(max_attempts=4, max_total_seconds=30.0, base_delay=0.5, max_delay=4.0)


@pytest.fixture
def client(api: FakeIonosHostingApi, api_key: str, clock: VirtualClock) -> IonosHostingClient:
    return IonosHostingClient(api_key, api.base_url, retry=RETRY, sleep=clock.sleep, clock=clock)


def test_rate_limit_is_waited_out_as_the_server_says(api_key: str, clock: VirtualClock, props: dict):
    # A separate fake with a tight limit: 2 requests per 5 s window.
    with FakeIonosHostingApi(api_key, rate_limit=(2, 5.0), clock=clock) as limited:
        limited.add_zone(ZONE)
        provider = IonosHostingRecordProvider(retry=RETRY, sleep=clock.sleep, clock=clock)

        result = provider.create({**props, "base_url": limited.base_url})  # GET zones, GET zone, POST

        assert [r["id"] for r in limited.records(ZONE)] == [result.id]
        # The third call was answered 429 with Retry-After: 5 and waited exactly that long.
        assert clock.sleeps == [5.0]
        assert len(limited.requests) == 4


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_on_reads_are_retried_with_backoff(client, api, clock, status):
    api.inject(status, count=2, method="GET")

    zones = client.list_zones()

    assert ZONE in {z["name"] for z in zones}
    assert api.count("GET") == 3
    assert len(clock.sleeps) == 2
    # Exponential backoff with jitter: attempt n waits in [ceiling/2, ceiling], ceiling = 0.5 * 2**(n-1).
    assert 0.25 <= clock.sleeps[0] <= 0.5 and 0.5 <= clock.sleeps[1] <= 1.0


def test_retries_stop_after_the_attempt_budget(client, api, clock):
    api.inject(503, count=100)

    with pytest.raises(IonosHostingUnavailable, match="after 4 attempts"):
        client.list_zones()
    assert api.count("GET") == RETRY.max_attempts
    assert len(clock.sleeps) == RETRY.max_attempts - 1


def test_a_retry_after_beyond_the_time_budget_gives_up_at_once(client, api, clock):
    api.inject(429, count=1, retry_after="3600")

    with pytest.raises(IonosHostingUnavailable, match="next wait would be 3600"):
        client.list_zones()
    assert clock.sleeps == []


def test_the_total_time_budget_bounds_the_retries(api, api_key, clock):
    patient = RetryPolicy(max_attempts=100, max_total_seconds=20.0, base_delay=0.5, max_delay=4.0)
    client = IonosHostingClient(api_key, api.base_url, retry=patient, sleep=clock.sleep, clock=clock)
    api.inject(429, count=1000, retry_after="3")

    with pytest.raises(IonosHostingUnavailable):
        client.list_zones()
    assert sum(clock.sleeps) <= 20.0
    assert len(clock.sleeps) == 6  # 6 waits of 3 s fit in 20 s, a 7th would not


def test_post_is_not_retried_on_a_plain_server_error(client, api):
    """A POST that failed with 500 may have created the record: retrying could duplicate it."""
    zone_id = api.zone_by_name(ZONE).id
    api.inject(500, count=1, method="POST")

    with pytest.raises(IonosHostingError, match="500"):
        client.create_records(zone_id, [{"name": f"www.{ZONE}", "type": "A", "content": "203.0.113.1"}])
    assert api.count("POST") == 1


def test_post_is_retried_when_rate_limited(client, api, clock):
    zone_id = api.zone_by_name(ZONE).id
    api.inject(429, count=1, method="POST", retry_after="2")

    [created] = client.create_records(
        zone_id, [{"name": f"www.{ZONE}", "type": "A", "content": "203.0.113.1"}]
    )

    assert created["name"] == f"www.{ZONE}"
    assert api.count("POST") == 2 and clock.sleeps == [2.0]


def test_bad_request_lists_the_fields_the_api_named(client, api):
    zone_id = api.zone_by_name(ZONE).id
    with pytest.raises(IonosHostingBadRequest) as err:
        client.create_records(zone_id, [{"name": "www.elsewhere.example", "type": "BOGUS", "content": "x"}])
    assert "INVALID_RECORD" in str(err.value) and "invalidFields type, name" in str(err.value)

    with pytest.raises(IonosHostingBadRequest, match="requiredFields content"):
        client.create_records(zone_id, [{"name": f"www.{ZONE}", "type": "A"}])


def test_unknown_zone_id_is_a_zone_not_found(client):
    with pytest.raises(IonosHostingZoneNotFound, match="ZONE_NOT_FOUND"):
        client.get_zone("00000000-0000-0000-0000-000000000000")


def test_zone_filters_return_only_matching_records(client, api):
    api.add_record(ZONE, f"www.{ZONE}", "A", "203.0.113.1")
    api.add_record(ZONE, f"www.{ZONE}", "AAAA", "2001:db8::1")
    api.add_record(ZONE, f"api.{ZONE}", "A", "203.0.113.2")
    zone_id = api.zone_by_name(ZONE).id

    records = client.get_zone(zone_id, record_name=f"www.{ZONE}", record_type="A")["records"]

    assert [(r["name"], r["type"]) for r in records] == [(f"www.{ZONE}", "A")]


def test_malformed_key_fails_before_any_request(api):
    with pytest.raises(IonosHostingAuthError, match=r"<public prefix>\.<secret>"):
        IonosHostingClient("no-dot-in-here", api.base_url)
    assert api.requests == []


def test_the_key_never_reaches_logs_or_repr(api, api_key, clock, caplog, props):
    caplog.set_level(logging.DEBUG)
    api.inject(503, count=2)
    provider = IonosHostingRecordProvider(retry=RETRY, sleep=clock.sleep, clock=clock)

    created = provider.create(props)
    provider.delete(created.id, created.outs)

    assert "retry" in caplog.text  # the retries were logged...
    assert api_key not in caplog.text and api_key.split(".")[1] not in caplog.text  # ...without the key
    assert api_key not in repr(provider._client(props))


def test_unreachable_api_is_reported_with_its_address(api_key, clock):
    # A port that was just free: nothing listens there.
    with FakeIonosHostingApi(api_key) as gone:
        base_url = gone.base_url
    client = IonosHostingClient(api_key, base_url, retry=RETRY, sleep=clock.sleep, clock=clock, timeout=2)

    with pytest.raises(IonosHostingUnavailable, match=r"no answer from 127\.0\.0\.1"):
        client.list_zones()


def test_retry_after_accepts_seconds_and_http_dates():
    assert _retry_after_seconds("7") == 7.0
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8.0 <= _retry_after_seconds(in_ten) <= 10.0
    assert _retry_after_seconds("soon") is None and _retry_after_seconds(None) is None
