"""The dynamic provider's create/diff/update/delete/read against the local fake of the hosting DNS API."""

from __future__ import annotations

import pytest

from infra.dns.ionos_hosting import (
    IonosHostingAuthError,
    IonosHostingBadRequest,
    IonosHostingConflict,
    IonosHostingRecordProvider,
    IonosHostingZoneNotFound,
)
from tests.fakes.ionos_hosting_api import FakeIonosHostingApi

from .ionos_hosting_env import OTHER_ZONE, ZONE

UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # what the engine sends for values unknown in preview


def test_create_publishes_the_record_under_its_fqdn(provider, api: FakeIonosHostingApi, props):
    result = provider.create(props)

    [record] = api.records(ZONE)
    assert record["id"] == result.id
    assert (record["name"], record["type"], record["content"], record["ttl"]) == (
        ZONE,
        "A",
        "203.0.113.10",
        300,
    )
    assert result.outs["fqdn"] == ZONE
    assert result.outs["zone_id"] == api.zone_by_name(ZONE).id
    assert result.outs["adopted"] is False
    assert api.records(OTHER_ZONE) == []


@pytest.mark.parametrize(
    ("record_name", "fqdn"),
    [("aws", f"aws.{ZONE}"), ("aws.dev", f"aws.dev.{ZONE}"), (f"www.{ZONE}", f"www.{ZONE}")],
)
def test_relative_and_full_names_become_the_fqdn(provider, api, props, record_name, fqdn):
    provider.create({**props, "record_name": record_name})
    assert [r["name"] for r in api.records(ZONE)] == [fqdn]


def test_adopt_existing_takes_over_the_record_instead_of_duplicating(provider, api, props):
    existing_id = api.add_record(ZONE, ZONE, "A", "198.51.100.7", ttl=3600)

    result = provider.create({**props, "adopt_existing": True})

    assert result.id == existing_id
    assert result.outs["adopted"] is True
    [record] = api.records(ZONE, ZONE, "A")
    assert (record["content"], record["ttl"]) == ("203.0.113.10", 300)
    assert api.count("POST") == 0


def test_adopting_an_identical_record_changes_nothing(provider, api, props):
    existing_id = api.add_record(ZONE, ZONE, "A", "203.0.113.10", ttl=300)

    result = provider.create({**props, "adopt_existing": True})

    assert result.id == existing_id
    assert api.count("PUT") == 0 and api.count("POST") == 0


def test_identical_record_without_adopt_is_refused_with_the_fix(provider, api, props):
    api.add_record(ZONE, ZONE, "A", "203.0.113.10")

    with pytest.raises(IonosHostingConflict, match="adopt_existing"):
        provider.create(props)
    assert len(api.records(ZONE)) == 1


def test_without_adopt_a_record_with_other_content_is_added_alongside(provider, api, props):
    api.add_record(ZONE, ZONE, "A", "198.51.100.7")

    provider.create(props)

    assert sorted(r["content"] for r in api.records(ZONE, ZONE, "A")) == ["198.51.100.7", "203.0.113.10"]


def test_adopt_refuses_to_guess_between_several_records(provider, api, props):
    api.add_record(ZONE, ZONE, "A", "198.51.100.7")
    api.add_record(ZONE, ZONE, "A", "198.51.100.8")

    with pytest.raises(IonosHostingConflict, match="cannot tell which one"):
        provider.create({**props, "adopt_existing": True})


def test_adopt_ignores_records_of_another_type_or_name(provider, api, props):
    api.add_record(ZONE, ZONE, "AAAA", "2001:db8::1")
    api.add_record(ZONE, f"www.{ZONE}", "A", "198.51.100.7")

    result = provider.create({**props, "adopt_existing": True})

    assert result.outs["adopted"] is False
    assert len(api.records(ZONE)) == 3


def test_unknown_zone_names_the_zone_and_the_zones_the_key_sees(provider, props):
    with pytest.raises(IonosHostingZoneNotFound) as err:
        provider.create({**props, "zone": "not-mine.example"})
    message = str(err.value)
    assert "'not-mine.example'" in message
    assert ZONE in message and OTHER_ZONE in message


def test_wrong_key_is_reported_without_leaking_it(provider, props):
    wrong = "deadbeef.this-is-not-the-key"
    with pytest.raises(IonosHostingAuthError) as err:
        provider.create({**props, "api_key": wrong})
    assert "spaced:ionosHostingApiKey" in str(err.value)
    assert wrong not in str(err.value) and "this-is-not-the-key" not in str(err.value)


def test_api_validation_error_carries_the_apis_message(provider, props):
    # "not-an-ip" passes the local check (content is not empty); the API rejects it.
    with pytest.raises(IonosHostingBadRequest) as err:
        provider.create({**props, "content": "not-an-ip"})
    assert "INVALID_RECORD" in str(err.value) and "content" in str(err.value)


def test_check_reports_each_bad_input(provider, props):
    bad = {**props, "type": "AXFR", "ttl": 10, "content": "", "record_name": "bad name!"}
    failures = {f.property: f.reason for f in provider.check({}, bad).failures}
    assert set(failures) == {"type", "ttl", "content", "record_name"}
    assert "AXFR" in failures["type"] and ">= 60" in failures["ttl"]
    assert provider.check({}, props).failures == []


def test_check_skips_values_unknown_in_preview(provider, props):
    assert provider.check({}, {**props, "content": UNKNOWN, "zone": UNKNOWN}).failures == []


def test_diff_replaces_on_identity_and_updates_on_content(provider, props):
    olds = {**props, "zone_id": "z", "fqdn": ZONE}
    assert provider.diff("id", olds, dict(props)).changes is False

    for key, value in (("zone", OTHER_ZONE), ("record_name", "www"), ("type", "AAAA")):
        result = provider.diff("id", olds, {**props, key: value})
        assert result.changes is True and result.replaces == [key]

    for key, value in (("content", "203.0.113.99"), ("ttl", 600), ("api_key", "other.key")):
        result = provider.diff("id", olds, {**props, key: value})
        assert result.changes is True and result.replaces == []


def test_diff_treats_unknown_values_as_changes(provider, props):
    olds = {**props, "zone_id": "z"}
    assert provider.diff("id", olds, {**props, "content": UNKNOWN}).changes is True
    assert provider.diff("id", olds, {**props, "type": UNKNOWN}).replaces == ["type"]


def test_update_puts_new_content_and_ttl(provider, api, props):
    created = provider.create(props)
    news = {**props, "content": "203.0.113.20", "ttl": 600}

    result = provider.update(created.id, created.outs, news)

    [record] = api.records(ZONE)
    assert (record["id"], record["content"], record["ttl"]) == (created.id, "203.0.113.20", 600)
    assert (result.outs["content"], result.outs["ttl"], result.outs["fqdn"]) == ("203.0.113.20", 600, ZONE)


def test_update_of_settings_only_makes_no_api_write(provider, api, props):
    created = provider.create(props)

    result = provider.update(created.id, created.outs, {**props, "adopt_existing": True})

    assert api.count("PUT") == 0
    assert result.outs["adopt_existing"] is True and result.outs["content"] == "203.0.113.10"


def test_delete_removes_the_record_and_tolerates_it_being_gone(provider, api, props):
    created = provider.create(props)

    provider.delete(created.id, created.outs)
    assert api.records(ZONE) == []

    provider.delete(created.id, created.outs)  # 404: already gone is fine
    assert api.count("DELETE") == 2


def test_read_refreshes_from_the_api_and_notices_deletion(provider, api, props):
    created = provider.create(props)
    zone = api.zone_by_name(ZONE)
    zone.records[created.id]["content"] = "203.0.113.77"  # changed in the IONOS panel

    refreshed = provider.read(created.id, created.outs)
    assert refreshed.id == created.id and refreshed.outs["content"] == "203.0.113.77"

    del zone.records[created.id]
    assert provider.read(created.id, created.outs).id == ""


def test_full_lifecycle_through_a_pickled_provider(api, props):
    """The engine runs a dill-serialized copy of the provider: the round trip must keep it working."""
    import dill

    provider = dill.loads(dill.dumps(IonosHostingRecordProvider(), recurse=True))
    created = provider.create(props)
    updated = provider.update(created.id, created.outs, {**props, "content": "203.0.113.30"})
    provider.delete(created.id, updated.outs)
    assert api.records(ZONE) == []
