"""DigitalOcean backend: relative names on the looked-up domain, adoption by import."""

from __future__ import annotations

import pytest

from infra.dns import create_records
from infra.plans.dns import DnsRecord

from .pulumi_mocks import RecordingMocks, settle

ZONE = "spaced.fun"
RECORD_TYPE = "digitalocean:index/dnsRecord:DnsRecord"
GET_DOMAIN = "digitalocean:index/getDomain:getDomain"
GET_RECORDS = "digitalocean:index/getRecords:getRecords"

RECORDS = [
    DnsRecord(ZONE, "@", "A", "203.0.113.10"),
    DnsRecord(ZONE, "do", "A", "198.51.100.20", ttl=1800),
    DnsRecord(ZONE, "do", "AAAA", "2001:db8::20"),
]


@pytest.fixture
def digitalocean(mocks: RecordingMocks) -> RecordingMocks:
    mocks.lookups[GET_DOMAIN] = lambda args: {"name": args["name"], "id": args["name"]}

    def records(args: dict) -> dict:
        filters = {f["key"]: f["values"][0] for f in args["filters"]}
        existing = {("do", "A"): [4242]}
        return {"records": [{"id": rid} for rid in existing.get((filters["name"], filters["type"]), [])]}

    mocks.lookups[GET_RECORDS] = records
    return mocks


def test_records_are_relative_to_the_domain(digitalocean: RecordingMocks) -> None:
    settle(create_records("digitalocean", ZONE, RECORDS, adopt_existing=False))
    created = [(r.name, r.inputs, r.resource_id) for r in digitalocean.of_type(RECORD_TYPE)]
    assert created == [
        (
            "digitalocean-spaced.fun-a",
            {"domain": ZONE, "name": "@", "type": "A", "value": "203.0.113.10", "ttl": 300},
            "",
        ),
        (
            "digitalocean-do.spaced.fun-a",
            {"domain": ZONE, "name": "do", "type": "A", "value": "198.51.100.20", "ttl": 1800},
            "",
        ),
        (
            "digitalocean-do.spaced.fun-aaaa",
            {"domain": ZONE, "name": "do", "type": "AAAA", "value": "2001:db8::20", "ttl": 300},
            "",
        ),
    ]
    assert digitalocean.calls_to(GET_DOMAIN) == [{"name": ZONE}]
    assert digitalocean.calls_to(GET_RECORDS) == []


def test_adoption_imports_the_existing_record_by_domain_and_id(digitalocean: RecordingMocks) -> None:
    settle(create_records("digitalocean", ZONE, RECORDS, adopt_existing=True))
    imports = {r.name: r.resource_id for r in digitalocean.of_type(RECORD_TYPE)}
    assert imports == {
        "digitalocean-spaced.fun-a": "",
        "digitalocean-do.spaced.fun-a": "spaced.fun,4242",
        "digitalocean-do.spaced.fun-aaaa": "",
    }
    assert sorted(
        tuple(f["values"][0] for f in call["filters"]) for call in digitalocean.calls_to(GET_RECORDS)
    ) == [("@", "A"), ("do", "A"), ("do", "AAAA")]
