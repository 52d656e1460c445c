"""Records must stay inside the zone and be well-formed before any backend sees them."""

from __future__ import annotations

import pulumi
import pytest

from infra.dns.zone_rules import (
    DnsRecordError,
    fqdn,
    group_rrsets,
    normalize_zone,
    numbered,
    relative_name,
    resource_name,
    validate_record,
    validate_records,
)
from infra.plans.dns import DnsRecord

ZONE = "spaced.fun"


def a(name: str, value: object = "203.0.113.10", *, zone: str = ZONE, ttl: int = 300) -> DnsRecord:
    return DnsRecord(zone=zone, name=name, type="A", value=value, ttl=ttl)


@pytest.mark.parametrize(
    "record",
    [
        a("@"),
        a("www"),
        a("eu.edge"),
        a("*"),
        a("*.apps"),
        a("x-1"),
        DnsRecord(ZONE, "_acme-challenge", "TXT", "token-value"),
        DnsRecord(ZONE, "v6", "AAAA", "2001:db8::1"),
        DnsRecord(ZONE, "alias", "CNAME", "www.spaced.fun"),
        a("@", zone="Spaced.Fun."),
    ],
)
def test_records_inside_the_zone_are_accepted(record: DnsRecord) -> None:
    validate_record(ZONE, record)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (a("www", zone="other.example"), "not to 'spaced.fun'"),
        (a("www", zone="evil.spaced.fun"), "every record must stay inside"),
        (a("www.spaced.fun."), "absolute"),
        (a("www.spaced.fun"), "already ends with the zone"),
        (a("spaced.fun"), "already ends with the zone"),
        (a(""), "empty"),
        (a(" www"), "padded"),
        (a("a..b"), "not a valid DNS label"),
        (a("-www"), "not a valid DNS label"),
        (a("www.*"), "'*' only as the leftmost"),
        (a("ww w"), "not a valid DNS label"),
        (a("x" * 64), "not a valid DNS label"),
        (a(".".join(["abcdefghij"] * 23)), "longer than 253"),
        (DnsRecord(ZONE, "mail", "MX", "10 mx.spaced.fun"), "type must be one of"),
        (a("www", "203.0.113.300"), "not an IPv4 address"),
        (DnsRecord(ZONE, "www", "AAAA", "203.0.113.1"), "not an IPv6 address"),
        (a("www", 12), "must be a string or a pulumi.Output"),
        (DnsRecord(ZONE, "txt", "TXT", ""), "value is empty"),
        (a("www", ttl=0), "ttl 0"),
        (a("www", ttl=100000), "ttl 100000"),
    ],
)
def test_bad_records_fail_with_a_message_naming_the_problem(record: DnsRecord, message: str) -> None:
    with pytest.raises(DnsRecordError, match="DNS record") as caught:
        validate_record(ZONE, record)
    assert message in str(caught.value)
    assert repr(record.name) in str(caught.value)


@pytest.mark.parametrize("zone", ["", "localhost", "spa ced.fun", "*.spaced.fun"])
def test_a_zone_that_is_no_domain_is_refused(zone: str) -> None:
    with pytest.raises(DnsRecordError, match="is not a domain name"):
        normalize_zone(zone)


def test_an_output_value_is_left_to_the_provider() -> None:
    validate_record(ZONE, a("www", pulumi.Output.from_input("whatever")))


def test_exact_duplicates_are_refused_but_round_robin_values_are_not() -> None:
    validate_records(ZONE, [a("www", "203.0.113.1"), a("www", "203.0.113.2")])
    with pytest.raises(DnsRecordError, match="listed twice"):
        validate_records(ZONE, [a("www", "203.0.113.1"), a("WWW", "203.0.113.1")])


def test_names_in_each_spelling() -> None:
    assert fqdn("Spaced.Fun.", a("@")) == "spaced.fun"
    assert fqdn(ZONE, a("EU.Edge")) == "eu.edge.spaced.fun"
    assert relative_name(a("@")) == "@"
    assert relative_name(a("@"), apex="") == ""
    assert relative_name(a("Www")) == "www"


def test_record_sets_group_values_and_need_one_ttl() -> None:
    records = [a("www", "203.0.113.1"), a("@"), a("www", "203.0.113.2")]
    groups = group_rrsets(records)
    assert list(groups) == [("www", "A"), ("@", "A")]
    assert [record.value for record in groups[("www", "A")]] == ["203.0.113.1", "203.0.113.2"]
    with pytest.raises(DnsRecordError, match=r"different TTLs \[300, 600\]"):
        group_rrsets([a("www", "203.0.113.1"), a("www", "203.0.113.2", ttl=600)])


def test_logical_names_are_stable_and_distinct_per_value() -> None:
    records = [a("www", "203.0.113.1"), a("@"), a("www", "203.0.113.2")]
    names = [resource_name("cloudflare", ZONE, record, index) for index, record in numbered(records)]
    assert names == [
        "cloudflare-www.spaced.fun-a",
        "cloudflare-spaced.fun-a",
        "cloudflare-www.spaced.fun-a-2",
    ]
