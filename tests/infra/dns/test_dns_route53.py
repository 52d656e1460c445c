"""Route 53 backend: one record set per name and type, adoption through allow_overwrite."""

from __future__ import annotations

import pulumi
import pytest

from infra.dns import create_records
from infra.dns.zone_rules import DnsRecordError
from infra.plans.dns import DnsRecord

from .pulumi_mocks import RecordingMocks, settle

ZONE = "spaced.fun"
RECORD_TYPE = "aws:route53/record:Record"
GET_ZONE = "aws:route53/getZone:getZone"

RECORDS = [
    DnsRecord(ZONE, "@", "A", "203.0.113.10"),
    DnsRecord(ZONE, "aws", "A", pulumi.Output.from_input("198.51.100.7"), ttl=120),
    DnsRecord(ZONE, "@", "A", "203.0.113.11"),
]


@pytest.fixture
def route53(mocks: RecordingMocks) -> RecordingMocks:
    mocks.lookups[GET_ZONE] = lambda args: {"zoneId": "Z0HOSTED", "id": "Z0HOSTED", "name": ZONE}
    return mocks


@pytest.mark.parametrize("adopt", [False, True])
def test_record_sets_carry_all_values_and_overwrite_only_when_adopting(
    route53: RecordingMocks, adopt: bool
) -> None:
    settle(create_records("route53", ZONE, RECORDS, adopt_existing=adopt))
    created = {r.name: r.inputs for r in route53.of_type(RECORD_TYPE)}
    assert created == {
        "route53-spaced.fun-a": {
            "zoneId": "Z0HOSTED",
            "name": "spaced.fun",
            "type": "A",
            "ttl": 300,
            "records": ["203.0.113.10", "203.0.113.11"],
            "allowOverwrite": adopt,
        },
        "route53-aws.spaced.fun-a": {
            "zoneId": "Z0HOSTED",
            "name": "aws.spaced.fun",
            "type": "A",
            "ttl": 120,
            "records": ["198.51.100.7"],
            "allowOverwrite": adopt,
        },
    }
    # Adoption is the provider's UPSERT, not an import.
    assert {r.resource_id for r in route53.of_type(RECORD_TYPE)} == {""}
    assert route53.calls_to(GET_ZONE) == [{"name": ZONE, "privateZone": False}]


def test_values_of_one_set_must_share_a_ttl(route53: RecordingMocks) -> None:
    with pytest.raises(DnsRecordError, match="different TTLs"):
        create_records(
            "route53",
            ZONE,
            [RECORDS[0], DnsRecord(ZONE, "@", "A", "203.0.113.11", ttl=60)],
            adopt_existing=True,
        )
    assert route53.resources == []


def test_a_missing_hosted_zone_is_a_clear_error(mocks: RecordingMocks) -> None:
    mocks.lookups[GET_ZONE] = lambda args: {}
    with pytest.raises(ValueError, match=r"no public hosted zone named 'spaced\.fun'"):
        create_records("route53", ZONE, RECORDS, adopt_existing=True)
