"""Hetzner backend: RRSets in the Cloud API zone, adoption by `<zone>/<name>/<type>` import."""

from __future__ import annotations

import pulumi
import pytest

from infra.dns import create_records
from infra.plans.dns import DnsRecord

from .pulumi_mocks import RecordingMocks, settle

ZONE = "spaced.fun"
RRSET_TYPE = "hcloud:index/zoneRrset:ZoneRrset"
GET_RRSETS = "hcloud:index/getZoneRrsets:getZoneRrsets"

RECORDS = [
    DnsRecord(ZONE, "@", "A", "203.0.113.10"),
    DnsRecord(ZONE, "hetzner", "A", pulumi.Output.from_input("192.0.2.30")),
    DnsRecord(ZONE, "@", "A", "203.0.113.11"),
    DnsRecord(ZONE, "_acme-challenge", "TXT", "abc def"),
]


@pytest.fixture
def hetzner(mocks: RecordingMocks) -> RecordingMocks:
    mocks.lookups[GET_RRSETS] = lambda args: {
        "zone": args["zone"],
        "rrsets": [
            {"id": "@/A", "name": "@", "type": "A", "ttl": 3600, "records": [{"value": "192.0.2.1"}]},
            {"id": "@/NS", "name": "@", "type": "NS", "ttl": 3600, "records": [{"value": "ns1.example"}]},
        ],
    }
    return mocks


def test_one_rrset_per_name_and_type_with_relative_names(hetzner: RecordingMocks) -> None:
    settle(create_records("hetzner", ZONE, RECORDS, adopt_existing=False))
    created = {r.name: (r.inputs, r.resource_id) for r in hetzner.of_type(RRSET_TYPE)}
    assert created == {
        "hetzner-spaced.fun-a": (
            {
                "zone": ZONE,
                "name": "@",
                "type": "A",
                "ttl": 300,
                "records": [{"value": "203.0.113.10"}, {"value": "203.0.113.11"}],
            },
            "",
        ),
        "hetzner-hetzner.spaced.fun-a": (
            {"zone": ZONE, "name": "hetzner", "type": "A", "ttl": 300, "records": [{"value": "192.0.2.30"}]},
            "",
        ),
        "hetzner-_acme-challenge.spaced.fun-txt": (
            {
                "zone": ZONE,
                "name": "_acme-challenge",
                "type": "TXT",
                "ttl": 300,
                "records": [{"value": '"abc def"'}],
            },
            "",
        ),
    }
    assert hetzner.calls == []


def test_adoption_imports_only_sets_that_exist(hetzner: RecordingMocks) -> None:
    settle(create_records("hetzner", ZONE, RECORDS, adopt_existing=True))
    imports = {r.name: r.resource_id for r in hetzner.of_type(RRSET_TYPE)}
    assert imports == {
        "hetzner-spaced.fun-a": "spaced.fun/@/A",
        "hetzner-hetzner.spaced.fun-a": "",
        "hetzner-_acme-challenge.spaced.fun-txt": "",
    }
    assert hetzner.calls_to(GET_RRSETS) == [{"zone": ZONE}]
