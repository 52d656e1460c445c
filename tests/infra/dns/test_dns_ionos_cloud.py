"""IONOS Cloud DNS backend: the zone and its records; adoption of an existing zone and records."""

from __future__ import annotations

import pytest

from infra.dns import create_records
from infra.plans.dns import DnsRecord

from .pulumi_mocks import RecordingMocks, settle

ZONE = "spaced.fun"
ZONE_TYPE = "ionoscloud:dns/zone:Zone"
RECORD_TYPE = "ionoscloud:dns/record:Record"
GET_ZONE = "ionoscloud:dns/getZone:getZone"
GET_RECORD = "ionoscloud:dns/getRecord:getRecord"

RECORDS = [
    DnsRecord(ZONE, "@", "A", "203.0.113.10"),
    DnsRecord(ZONE, "ionos", "A", "192.0.2.40", ttl=600),
    DnsRecord(ZONE, "mixed", "A", "192.0.2.41"),
]


def test_a_new_zone_is_created_and_records_point_at_it(mocks: RecordingMocks) -> None:
    settle(create_records("ionos-cloud", ZONE, RECORDS, adopt_existing=False))
    (zone,) = mocks.of_type(ZONE_TYPE)
    assert (zone.name, zone.inputs, zone.resource_id) == (
        "ionos-cloud-spaced.fun",
        {"name": ZONE, "enabled": True},
        "",
    )
    # Sorted by name: the records register concurrently once the zone's ID resolves, in any order.
    created = sorted((r.name, r.inputs, r.resource_id) for r in mocks.of_type(RECORD_TYPE))
    assert created == sorted(
        [
            (
                "ionos-cloud-spaced.fun-a",
                {
                    "zoneId": "ionos-cloud-spaced.fun-id",
                    "name": "",
                    "type": "A",
                    "content": "203.0.113.10",
                    "ttl": 300,
                    "enabled": True,
                },
                "",
            ),
            (
                "ionos-cloud-ionos.spaced.fun-a",
                {
                    "zoneId": "ionos-cloud-spaced.fun-id",
                    "name": "ionos",
                    "type": "A",
                    "content": "192.0.2.40",
                    "ttl": 600,
                    "enabled": True,
                },
                "",
            ),
            (
                "ionos-cloud-mixed.spaced.fun-a",
                {
                    "zoneId": "ionos-cloud-spaced.fun-id",
                    "name": "mixed",
                    "type": "A",
                    "content": "192.0.2.41",
                    "ttl": 300,
                    "enabled": True,
                },
                "",
            ),
        ]
    )
    assert mocks.calls == []


def test_adoption_imports_the_zone_and_matching_records(mocks: RecordingMocks) -> None:
    mocks.lookups[GET_ZONE] = lambda args: {"id": "zone-uuid", "name": args["name"]}

    def get_record(args: dict) -> dict:
        if args["name"] == "ionos":
            return {"id": "rec-ionos", "name": "ionos", "type": "A", "zoneId": "zone-uuid"}
        if args["name"] == "mixed":  # same name, other type: not ours to take over
            return {"id": "rec-mixed", "name": "mixed", "type": "CNAME", "zoneId": "zone-uuid"}
        raise Exception("no DNS record found with the specified criteria")

    mocks.lookups[GET_RECORD] = get_record
    settle(create_records("ionos-cloud", ZONE, RECORDS, adopt_existing=True))
    (zone,) = mocks.of_type(ZONE_TYPE)
    assert zone.resource_id == "zone-uuid"
    imports = {r.name: r.resource_id for r in mocks.of_type(RECORD_TYPE)}
    assert imports == {
        "ionos-cloud-spaced.fun-a": "",
        "ionos-cloud-ionos.spaced.fun-a": "zone-uuid/rec-ionos",
        "ionos-cloud-mixed.spaced.fun-a": "",
    }
    assert sorted(call["name"] for call in mocks.calls_to(GET_RECORD)) == ["", "ionos", "mixed"]
    assert {call["zoneId"] for call in mocks.calls_to(GET_RECORD)} == {"zone-uuid"}


def test_adoption_without_an_existing_zone_creates_it(mocks: RecordingMocks) -> None:
    def no_zone(args: dict) -> dict:
        raise Exception("no DNS zone found with the specified name")

    mocks.lookups[GET_ZONE] = no_zone
    settle(create_records("ionos-cloud", ZONE, RECORDS, adopt_existing=True))
    assert [z.resource_id for z in mocks.of_type(ZONE_TYPE)] == [""]
    assert {r.resource_id for r in mocks.of_type(RECORD_TYPE)} == {""}
    assert mocks.calls_to(GET_RECORD) == []


@pytest.mark.parametrize("adopt", [False, True])
def test_no_records_registers_nothing(mocks: RecordingMocks, adopt: bool) -> None:
    assert create_records("ionos-cloud", ZONE, [], adopt_existing=adopt) == []
    assert mocks.resources == [] and mocks.calls == []
