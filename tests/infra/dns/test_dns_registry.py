"""One interface in front of every DNS backend."""

from __future__ import annotations

import pytest

import infra.dns
from infra.dns import BACKENDS, create_records
from infra.dns.zone_rules import DnsRecordError
from infra.plans.dns import DnsRecord

from .pulumi_mocks import RecordingMocks

RECORD = DnsRecord("spaced.fun", "www", "A", "203.0.113.10")


def test_every_agreed_backend_is_registered_with_its_module_function() -> None:
    assert set(BACKENDS) == {
        "cloudflare",
        "route53",
        "digitalocean",
        "hetzner",
        "ionos-cloud",
        "ionos-hosting",
    }
    for name, function in BACKENDS.items():
        module = function.__module__
        assert module == f"infra.dns.{name.replace('-', '_')}"
        assert function.__name__ == "create_records"


def test_an_unknown_backend_names_every_valid_one(mocks: RecordingMocks) -> None:
    with pytest.raises(ValueError, match="unknown DNS provider 'gandi'") as caught:
        create_records("gandi", "spaced.fun", [RECORD], adopt_existing=False)
    for valid in [*BACKENDS, "none"]:
        assert valid in str(caught.value)
    assert mocks.resources == []


def test_none_publishes_nothing(mocks: RecordingMocks) -> None:
    assert create_records("none", "spaced.fun", [RECORD], adopt_existing=True) == []
    assert mocks.resources == [] and mocks.calls == []


@pytest.mark.parametrize("provider", sorted(BACKENDS))
def test_a_record_outside_the_zone_stops_every_backend_before_any_lookup(
    provider: str, mocks: RecordingMocks
) -> None:
    outside = DnsRecord("other.example", "www", "A", "203.0.113.10")
    with pytest.raises(DnsRecordError, match="every record must stay inside"):
        create_records(provider, "spaced.fun", [RECORD, outside], adopt_existing=True)
    assert mocks.resources == [] and mocks.calls == []


def test_the_registry_dispatches_to_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, list[DnsRecord], bool, object]] = []

    def fake_backend(zone, records, *, adopt_existing, opts):  # type: ignore[no-untyped-def]
        seen.append((zone, list(records), adopt_existing, opts))
        return []

    monkeypatch.setitem(infra.dns.BACKENDS, "hetzner", fake_backend)
    create_records("hetzner", "Spaced.Fun.", [RECORD], adopt_existing=True)
    assert seen == [("spaced.fun", [RECORD], True, None)]
