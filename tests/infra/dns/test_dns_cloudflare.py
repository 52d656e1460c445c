"""Cloudflare backend: full names, the zone id from the lookup, adoption by import."""

from __future__ import annotations

import logging

import pulumi
import pytest

from infra.dns import create_records
from infra.plans.dns import DnsRecord

from .pulumi_mocks import RecordingMocks, resolve, settle

ZONE = "spaced.fun"
RECORD_TYPE = "cloudflare:index/dnsRecord:DnsRecord"
GET_ZONE = "cloudflare:index/getZone:getZone"
GET_RECORDS = "cloudflare:index/getDnsRecords:getDnsRecords"


@pytest.fixture
def cloudflare(mocks: RecordingMocks) -> RecordingMocks:
    mocks.lookups[GET_ZONE] = lambda args: {"id": "zone-123", "zoneId": "zone-123", "name": ZONE}
    existing = {("spaced.fun", "A"): ["rec-apex"], ("www.spaced.fun", "A"): ["rec-www-1"]}
    mocks.lookups[GET_RECORDS] = lambda args: {
        "results": [{"id": rid} for rid in existing.get((args["name"]["exact"], args["type"]), [])]
    }
    return mocks


RECORDS = [
    DnsRecord(ZONE, "@", "A", "203.0.113.10"),
    DnsRecord(ZONE, "www", "A", "203.0.113.10", ttl=600),
    DnsRecord(ZONE, "www", "A", pulumi.Output.from_input("203.0.113.11"), ttl=600),
    DnsRecord(ZONE, "v6", "AAAA", "2001:db8::10"),
]


def test_records_use_full_names_and_the_looked_up_zone(cloudflare: RecordingMocks) -> None:
    resources = create_records("cloudflare", ZONE, RECORDS, adopt_existing=False)
    settle(resources)
    created = cloudflare.of_type(RECORD_TYPE)
    # Registration order follows Output resolution, so compare by logical name.
    assert {
        r.name: (r.inputs["name"], r.inputs["type"], r.inputs["content"], r.inputs["ttl"]) for r in created
    } == {
        "cloudflare-spaced.fun-a": ("spaced.fun", "A", "203.0.113.10", 300),
        "cloudflare-www.spaced.fun-a": ("www.spaced.fun", "A", "203.0.113.10", 600),
        "cloudflare-www.spaced.fun-a-2": ("www.spaced.fun", "A", "203.0.113.11", 600),
        "cloudflare-v6.spaced.fun-aaaa": ("v6.spaced.fun", "AAAA", "2001:db8::10", 300),
    }
    assert {r.inputs["zoneId"] for r in created} == {"zone-123"}
    assert {r.inputs["proxied"] for r in created} == {False}
    assert cloudflare.calls_to(GET_ZONE) == [{"filter": {"name": ZONE, "match": "all"}}]
    # Without adoption nothing is looked up and nothing imported.
    assert cloudflare.calls_to(GET_RECORDS) == []
    assert {r.resource_id for r in created} == {""}
    assert resolve(resources[2].content) == "203.0.113.11"


def test_adoption_imports_existing_records_and_creates_the_rest(
    cloudflare: RecordingMocks, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        settle(create_records("cloudflare", ZONE, RECORDS, adopt_existing=True))
    imports = {r.name: r.resource_id for r in cloudflare.of_type(RECORD_TYPE)}
    assert imports == {
        "cloudflare-spaced.fun-a": "zone-123/rec-apex",
        "cloudflare-www.spaced.fun-a": "zone-123/rec-www-1",
        "cloudflare-www.spaced.fun-a-2": "",
        "cloudflare-v6.spaced.fun-aaaa": "",
    }
    # One lookup per name and type, by full name.
    assert sorted((c["name"]["exact"], c["type"]) for c in cloudflare.calls_to(GET_RECORDS)) == [
        ("spaced.fun", "A"),
        ("v6.spaced.fun", "AAAA"),
        ("www.spaced.fun", "A"),
    ]
    assert not [r for r in caplog.records if "stay as they are" in r.getMessage()]


def test_adoption_warns_about_extra_existing_records(
    mocks: RecordingMocks, caplog: pytest.LogCaptureFixture
) -> None:
    mocks.lookups[GET_ZONE] = lambda args: {"zoneId": "zone-123"}
    mocks.lookups[GET_RECORDS] = lambda args: {"results": [{"id": "old-1"}, {"id": "old-2"}]}
    with caplog.at_level(logging.WARNING):
        settle(create_records("cloudflare", ZONE, RECORDS[:1], adopt_existing=True))
    assert [r.resource_id for r in mocks.of_type(RECORD_TYPE)] == ["zone-123/old-1"]
    warnings = [r.getMessage() for r in caplog.records if "stay as they are" in r.getMessage()]
    assert len(warnings) == 1 and "2 A records for '@'" in warnings[0]


def test_a_missing_zone_is_a_clear_error(mocks: RecordingMocks) -> None:
    mocks.lookups[GET_ZONE] = lambda args: {}
    with pytest.raises(ValueError, match=r"Cloudflare has no zone named 'spaced\.fun'"):
        create_records("cloudflare", ZONE, RECORDS, adopt_existing=False)
    assert mocks.resources == []
