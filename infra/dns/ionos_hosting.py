"""DNS backend for domains bought at IONOS: the IONOS *hosting* DNS API as a Pulumi dynamic provider.

No Pulumi provider covers https://api.hosting.ionos.com/dns (pulumi-ionoscloud speaks the separate
IONOS *Cloud* DNS API), so this module talks to it directly with the standard library - no plugin
binary, nothing to download. Documented API ("DNS API" 1.0.2): records are addressed by zone id and
record id; a record's `name` is its FQDN; errors are JSON lists of ``{code, message[, parameters]}``.

Layers: `IonosHostingClient` (HTTP, retries, error messages) <- `IonosHostingRecordProvider`
(create/diff/update/delete/read, plain methods tests call directly) <- `IonosHostingRecord` (the Pulumi
resource) <- `create_records` (the backend function every DNS backend exposes).

The API key (``<public prefix>.<secret>``) is a Pulumi secret: the resource input is wrapped in
`Output.secret` and `api_key` is listed in `additional_secret_outputs`; it is never logged and never
part of an error message.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from infra.dns import zone_rules
from infra.plans.dns import DnsRecord

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.hosting.ionos.com/dns"
CONFIG_API_KEY = "ionosHostingApiKey"
CONFIG_BASE_URL = "ionosHostingBaseUrl"
# The record types the API accepts (its `recordTypes` enum).
RECORD_TYPES = frozenset(
    "A AAAA CNAME MX NS SOA SRV TXT CAA TLSA SMIMEA SSHFP DS HTTPS SVCB CERT URI RP LOC OPENPGPKEY".split()
)
MIN_TTL = 60  # the API answers 400 below this
# Inputs whose change needs a new record (the API cannot rename a record or change its type or zone).
REPLACE_KEYS = ("zone", "record_name", "type")
# Inputs that an in-place PUT (or nothing at all, for the connection settings) can apply.
UPDATE_KEYS = ("content", "ttl", "adopt_existing", "api_key", "base_url")
_UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # pulumi.runtime.rpc.UNKNOWN: a value not known in preview
_LABEL = re.compile(r"^(\*|[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)$")


class IonosHostingError(Exception):
    """Any failure talking to the IONOS hosting DNS API."""


class IonosHostingAuthError(IonosHostingError):
    """The API key was refused (401)."""


class IonosHostingNotFound(IonosHostingError):
    """A zone or record does not exist (404)."""


class IonosHostingZoneNotFound(IonosHostingNotFound):
    """The zone is not among the zones the API key can see."""


class IonosHostingBadRequest(IonosHostingError):
    """The API rejected the request body (400)."""


class IonosHostingUnavailable(IonosHostingError):
    """Rate limited (429) or server errors (5xx) outlasted the retry budget."""


class IonosHostingConflict(IonosHostingError):
    """A record with the same name, type and content exists and adopting it was not allowed."""


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying on 429 and 5xx: bounded by attempts and by total time."""

    max_attempts: int = 6
    max_total_seconds: float = 90.0
    base_delay: float = 0.5
    max_delay: float = 20.0

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter for the given 1-based attempt that just failed."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def _api_messages(body: Any) -> str:
    """The human part of the API's error list: 'CODE: message (fields)' joined by '; '."""
    if not isinstance(body, list):
        return str(body)[:500] if body else ""
    parts = []
    for item in body:
        if not isinstance(item, Mapping):
            continue
        text = ": ".join(str(x) for x in (item.get("code"), item.get("message")) if x)
        params = item.get("parameters") or {}
        details = [
            f"{key} {', '.join(map(str, params[key]))}"
            for key in ("requiredFields", "invalidFields", "invalid")
            if isinstance(params, Mapping) and params.get(key)
        ]
        parts.append(text + (f" ({'; '.join(details)})" if details else ""))
    return "; ".join(parts)


def _retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or garbled."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class IonosHostingClient:
    """A small client for the IONOS hosting DNS API (zones and records)."""

    RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
    # A POST that failed with a 5xx may still have created the records; only statuses that say the
    # request was not processed are retried for it, so a retry cannot create duplicates.
    POST_RETRY_STATUSES = frozenset({429, 503})

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not api_key or "." not in api_key:
            raise IonosHostingAuthError(
                "The IONOS hosting API key must be '<public prefix>.<secret>' (both parts from "
                "https://developer.hosting.ionos.com/keys); set it with "
                f"`pulumi config set --secret spaced:{CONFIG_API_KEY} <prefix>.<secret>`."
            )
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self._sleep = sleep
        self._clock = clock

    def __repr__(self) -> str:  # never show the key
        return f"IonosHostingClient(base_url={self.base_url!r})"

    # --- transport -----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        not_found: type[IonosHostingNotFound] = IonosHostingNotFound,
    ) -> Any:
        """Send one API call, retrying 429/5xx within the retry policy; returns the decoded JSON (or None)."""
        url = self.base_url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        retry_statuses = self.POST_RETRY_STATUSES if method == "POST" else self.RETRY_STATUSES
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            status, payload, retry_after = self._send(method, url, data)
            if 200 <= status < 300:
                return payload
            what = f"{method} {path}"
            if status == 401:
                raise IonosHostingAuthError(
                    f"IONOS hosting DNS API refused the API key ({what}: 401 {_api_messages(payload)}). "
                    f"Check spaced:{CONFIG_API_KEY}: it must be '<public prefix>.<secret>' of a key that "
                    "is still active (https://developer.hosting.ionos.com/keys)."
                )
            if status == 404:
                raise not_found(f"{what}: 404 {_api_messages(payload) or 'not found'}")
            if status == 400:
                raise IonosHostingBadRequest(
                    f"IONOS hosting DNS API rejected {what}: {_api_messages(payload) or 'bad request'}"
                )
            if status not in retry_statuses and status != -1:
                raise IonosHostingError(
                    f"IONOS hosting DNS API: {what} failed with {status}: {_api_messages(payload)}"
                )
            if status == -1 and method == "POST":
                raise IonosHostingError(f"IONOS hosting DNS API: {what} failed: {payload}")
            delay = retry_after if retry_after is not None else self.retry.backoff(attempt)
            elapsed = self._clock() - started
            if attempt >= self.retry.max_attempts or elapsed + delay > self.retry.max_total_seconds:
                reason = f"{status} {_api_messages(payload)}" if status != -1 else str(payload)
                raise IonosHostingUnavailable(
                    f"IONOS hosting DNS API: {what} still failing after {attempt} attempts in {elapsed:.1f}s "
                    f"(last: {reason}; next wait would be {delay:.1f}s). Try again later."
                )
            log.warning(
                "IONOS hosting DNS API %s answered %s; retry %d/%d in %.1fs",
                what,
                status if status != -1 else payload,
                attempt,
                self.retry.max_attempts - 1,
                delay,
            )
            self._sleep(delay)

    def _send(self, method: str, url: str, data: bytes | None) -> tuple[int, Any, float | None]:
        """One HTTP exchange: (status, decoded body, Retry-After seconds). Status -1: no answer at all."""
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("X-API-Key", self._api_key)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, _decode(response.read()), None
        except urllib.error.HTTPError as err:
            body = _decode(err.read())
            return err.code, body, _retry_after_seconds(err.headers.get("Retry-After"))
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            reason = getattr(err, "reason", err)
            return -1, f"no answer from {urllib.parse.urlsplit(url).netloc}: {reason}", None

    # --- endpoints -----------------------------------------------------------------------------

    def list_zones(self) -> list[dict[str, Any]]:
        """GET /v1/zones: the zones this key can manage, [{id, name, type}]."""
        return list(self.request("GET", "/v1/zones") or [])

    def find_zone(self, name: str) -> dict[str, Any]:
        """The zone called `name`; IonosHostingZoneNotFound names the zones the key can see."""
        wanted = name.rstrip(".").lower()
        zones = self.list_zones()
        for zone in zones:
            if str(zone.get("name", "")).lower() == wanted:
                return zone
        visible = ", ".join(sorted(str(z.get("name")) for z in zones)) or "none"
        raise IonosHostingZoneNotFound(
            f"IONOS hosting DNS zone {wanted!r} not found; the API key sees these zones: {visible}. "
            "Fix `domain` in the stack's spaced:topology, or use a key of the IONOS account "
            "that owns the domain."
        )

    def get_zone(
        self, zone_id: str, *, record_name: str | None = None, record_type: str | None = None
    ) -> dict[str, Any]:
        """GET /v1/zones/{zoneId} with its records, filtered by exact FQDN and type when given."""
        query = {k: v for k, v in (("recordName", record_name), ("recordType", record_type)) if v}
        return dict(
            self.request(
                "GET", f"/v1/zones/{zone_id}", query=query or None, not_found=IonosHostingZoneNotFound
            )
        )

    def create_records(self, zone_id: str, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """POST /v1/zones/{zoneId}/records: create records, returns them with their ids."""
        return list(
            self.request(
                "POST", f"/v1/zones/{zone_id}/records", body=list(records), not_found=IonosHostingZoneNotFound
            )
        )

    def get_record(self, zone_id: str, record_id: str) -> dict[str, Any] | None:
        """GET one record; None when it (or its zone) no longer exists."""
        try:
            return dict(self.request("GET", f"/v1/zones/{zone_id}/records/{record_id}"))
        except IonosHostingNotFound:
            return None

    def update_record(
        self, zone_id: str, record_id: str, *, content: str, ttl: int, prio: int = 0
    ) -> dict[str, Any]:
        """PUT a record's content and ttl; returns the updated record."""
        body = {"content": content, "ttl": ttl, "prio": prio, "disabled": False}
        return dict(self.request("PUT", f"/v1/zones/{zone_id}/records/{record_id}", body=body) or {})

    def delete_record(self, zone_id: str, record_id: str) -> bool:
        """DELETE a record; False if it was already gone (404), which is fine for a delete."""
        try:
            self.request("DELETE", f"/v1/zones/{zone_id}/records/{record_id}")
        except IonosHostingNotFound:
            return False
        return True


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")[:500]


def record_fqdn(record_name: str, zone: str) -> str:
    """The FQDN the API wants in `name`: '@' is the apex, relative names get the zone appended."""
    zone = zone.rstrip(".").lower()
    name = record_name.rstrip(".").lower()
    if name in ("@", "", zone):
        return zone
    if name.endswith("." + zone):
        return name
    return f"{name}.{zone}"


def validate_inputs(props: Mapping[str, Any]) -> list[CheckFailure]:
    """Input errors that would make the API answer 400, caught before any call (unknown values skipped)."""
    failures: list[CheckFailure] = []

    def known(key: str) -> bool:
        return props.get(key) is not None and props.get(key) != _UNKNOWN

    if known("zone") and "." not in str(props["zone"]).strip("."):
        failures.append(
            CheckFailure("zone", f"zone {props['zone']!r} is not a domain name like 'spaced.fun'")
        )
    if known("record_name"):
        name = str(props["record_name"]).rstrip(".")
        zone = str(props.get("zone") or "").rstrip(".")
        relative = name[: -len(zone) - 1] if zone and name.endswith("." + zone) else name
        if name not in ("@", zone) and not all(_LABEL.match(label) for label in relative.split(".")):
            failures.append(
                CheckFailure(
                    "record_name", f"record name {name!r} is not '@' or a valid DNS name relative to the zone"
                )
            )
    if known("type") and str(props["type"]) not in RECORD_TYPES:
        failures.append(
            CheckFailure(
                "type", f"record type {props['type']!r} is not one of {', '.join(sorted(RECORD_TYPES))}"
            )
        )
    if known("ttl") and (
        not isinstance(props["ttl"], int | float)
        or isinstance(props["ttl"], bool)
        or int(props["ttl"]) < MIN_TTL
    ):
        failures.append(
            CheckFailure("ttl", f"ttl {props['ttl']!r} must be a whole number of seconds >= {MIN_TTL}")
        )
    if props.get("content") is None or props.get("content") == "":
        failures.append(
            CheckFailure("content", "content is empty: an A/AAAA record needs the server's address")
        )
    return failures


class IonosHostingRecordProvider(ResourceProvider):
    """CRUD of one DNS record through the IONOS hosting API. Stateless: everything comes from the props.

    Outputs: the inputs plus `zone_id`, `fqdn`, `prio` and `adopted` (True if the record existed before
    and was taken over). The resource id is the API's record id.
    """

    def __init__(
        self,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.retry = retry
        self.sleep = sleep
        self.clock = clock

    def _client(self, props: Mapping[str, Any]) -> IonosHostingClient:
        return IonosHostingClient(
            str(props.get("api_key") or ""),
            str(props.get("base_url") or DEFAULT_BASE_URL),
            retry=self.retry,
            sleep=self.sleep,
            clock=self.clock,
        )

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        """Validate inputs locally so mistakes fail at preview, not half-way through an update."""
        return CheckResult(news, validate_inputs(news))

    def create(self, props: dict[str, Any]) -> CreateResult:
        """Find the zone, adopt a matching record if allowed (never duplicate one), else create it."""
        failures = validate_inputs(props)
        if failures:
            raise IonosHostingBadRequest("; ".join(f"{f.property}: {f.reason}" for f in failures))
        client = self._client(props)
        zone = client.find_zone(str(props["zone"]))
        fqdn = record_fqdn(str(props["record_name"]), str(zone["name"]))
        type_, content, ttl = str(props["type"]), str(props["content"]), int(props["ttl"])
        existing = [
            r
            for r in client.get_zone(zone["id"], record_name=fqdn, record_type=type_).get("records", [])
            if str(r.get("name", "")).lower() == fqdn and r.get("type") == type_
        ]
        same_content = [r for r in existing if r.get("content") == content]
        adopt = bool(props.get("adopt_existing"))
        if same_content and not adopt:
            raise IonosHostingConflict(
                f"{type_} record {fqdn} -> {content} already exists in IONOS zone {zone['name']} "
                f"(id {same_content[0]['id']}); creating it again would duplicate it. Set "
                "`dns: {adopt_existing: true}` in spaced:topology to take it over, "
                "or delete it in the IONOS panel."
            )
        if adopt and (same_content or len(existing) == 1):
            record = (same_content or existing)[0]
            if record.get("content") != content or record.get("ttl") != ttl or record.get("disabled"):
                record = client.update_record(zone["id"], record["id"], content=content, ttl=ttl)
            log.info("adopted existing IONOS %s record %s (id %s)", type_, fqdn, record["id"])
            return CreateResult(record["id"], self._outs(props, zone, record, adopted=True))
        if adopt and len(existing) > 1:
            raise IonosHostingConflict(
                f"{len(existing)} {type_} records named {fqdn} exist in IONOS zone {zone['name']} and "
                f"none has content {content}; cannot tell which one to adopt. "
                "Delete the extra ones in the IONOS panel."
            )
        new = {"name": fqdn, "type": type_, "content": content, "ttl": ttl, "prio": 0, "disabled": False}
        created = client.create_records(zone["id"], [new])
        matching = [r for r in created if r.get("name") == fqdn and r.get("type") == type_] or created
        if not matching:
            raise IonosHostingError(f"IONOS hosting DNS API created no record for {type_} {fqdn}")
        log.info("created IONOS %s record %s (id %s)", type_, fqdn, matching[0]["id"])
        return CreateResult(matching[0]["id"], self._outs(props, zone, matching[0], adopted=False))

    @staticmethod
    def _outs(
        props: Mapping[str, Any], zone: Mapping[str, Any], record: Mapping[str, Any], *, adopted: bool
    ) -> dict:
        return {
            **{
                k: props.get(k)
                for k in ("zone", "record_name", "type", "adopt_existing", "api_key", "base_url")
            },
            "content": record.get("content", props.get("content")),
            "ttl": record.get("ttl", props.get("ttl")),
            "prio": record.get("prio", 0),
            "zone_id": zone["id"],
            "fqdn": record.get("name"),
            "adopted": adopted,
        }

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Zone, name or type changes replace the record; content, ttl and settings update it in place."""

        def changed(key: str) -> bool:
            new = news.get(key)
            return new == _UNKNOWN or new != olds.get(key)

        replaces = [k for k in REPLACE_KEYS if changed(k)]
        updates = [k for k in UPDATE_KEYS if changed(k)]
        return DiffResult(
            changes=bool(replaces or updates), replaces=replaces, stables=["zone_id"] if not replaces else []
        )

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """PUT the new content/ttl (skipped when only settings such as the key changed)."""
        client = self._client(news)
        zone = {"id": olds["zone_id"], "name": news["zone"]}
        if news.get("content") != olds.get("content") or news.get("ttl") != olds.get("ttl"):
            record = client.update_record(
                olds["zone_id"], id_, content=str(news["content"]), ttl=int(news["ttl"])
            )
        else:
            record = {
                "content": olds.get("content"),
                "ttl": olds.get("ttl"),
                "prio": olds.get("prio", 0),
                "name": olds.get("fqdn"),
            }
        record.setdefault("name", olds.get("fqdn"))
        return UpdateResult(self._outs(news, zone, record, adopted=bool(olds.get("adopted"))))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        """DELETE the record; one that is already gone (404) counts as deleted."""
        if not self._client(props).delete_record(str(props["zone_id"]), id_):
            log.info("IONOS record %s (%s) was already gone", id_, props.get("fqdn"))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Refresh from the API; a record deleted outside Pulumi reads as gone (empty id)."""
        record = self._client(props).get_record(str(props["zone_id"]), id_)
        if record is None:
            return ReadResult("", {})
        zone = {"id": props["zone_id"], "name": props.get("zone")}
        return ReadResult(id_, self._outs(props, zone, record, adopted=bool(props.get("adopted"))))


class IonosHostingRecord(Resource, module="spaced", name="IonosHostingRecord"):
    """One DNS record in a zone hosted by IONOS (domains bought at IONOS).

    Type token: ``pulumi-python:dynamic/spaced:IonosHostingRecord``.
    """

    zone: pulumi.Output[str]
    record_name: pulumi.Output[str]
    type: pulumi.Output[str]
    content: pulumi.Output[str]
    ttl: pulumi.Output[int]
    adopt_existing: pulumi.Output[bool]
    api_key: pulumi.Output[str]
    base_url: pulumi.Output[str]
    zone_id: pulumi.Output[str]
    fqdn: pulumi.Output[str]
    prio: pulumi.Output[int]
    adopted: pulumi.Output[bool]

    def __init__(
        self,
        resource_name: str,
        *,
        zone: pulumi.Input[str],
        record_name: pulumi.Input[str],
        type: pulumi.Input[str],
        content: pulumi.Input[str],
        api_key: pulumi.Input[str],
        ttl: pulumi.Input[int] = 300,
        adopt_existing: pulumi.Input[bool] = False,
        base_url: pulumi.Input[str] = DEFAULT_BASE_URL,
        provider: IonosHostingRecordProvider | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "zone": zone,
            "record_name": record_name,
            "type": type,
            "content": content,
            "ttl": ttl,
            "adopt_existing": adopt_existing,
            "api_key": pulumi.Output.secret(api_key),
            "base_url": base_url,
            "zone_id": None,
            "fqdn": None,
            "prio": None,
            "adopted": None,
        }
        # The key is an input and must also stay secret in the outputs/state the engine stores.
        secret_opts = pulumi.ResourceOptions(additional_secret_outputs=["api_key"])
        super().__init__(
            provider or IonosHostingRecordProvider(),
            resource_name,
            props,
            pulumi.ResourceOptions.merge(secret_opts, opts),
        )


def create_records(
    zone: str,
    records: Sequence[DnsRecord],
    *,
    adopt_existing: bool,
    opts: pulumi.ResourceOptions | None = None,
) -> list[pulumi.Resource]:
    """Publish `records` in the IONOS-hosted `zone`; one IonosHostingRecord per record.

    Reads the secret API key from `spaced:ionosHostingApiKey` and the API base URL from
    `spaced:ionosHostingBaseUrl` (default the production API; tests point it at a local fake).
    """
    zone = zone_rules.checked_zone(zone, records)
    config = pulumi.Config("spaced")
    api_key = config.require_secret(CONFIG_API_KEY)
    base_url = config.get(CONFIG_BASE_URL) or DEFAULT_BASE_URL
    # The dynamic provider adopts existing records itself (see its `create`): no import ids here.
    return [
        IonosHostingRecord(
            logical_name,
            zone=zone,
            record_name=record.name,
            type=record.type,
            content=record.value,
            ttl=max(record.ttl, MIN_TTL),
            adopt_existing=adopt_existing,
            api_key=api_key,
            base_url=base_url,
            opts=record_opts,
        )
        for logical_name, record, record_opts in zone_rules.per_record_args(
            "ionos-hosting", zone, records, opts
        )
    ]
