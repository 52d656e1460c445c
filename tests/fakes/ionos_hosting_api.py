"""A local fake of the IONOS *hosting* DNS API (https://api.hosting.ionos.com/dns, OpenAPI "DNS API" 1.0.2).

It implements the endpoints the `ionos-hosting` DNS backend uses, with the documented shapes:

- ``GET  /v1/zones`` -> ``[{id, name, type}]``
- ``GET  /v1/zones/{zoneId}`` (query ``recordName``, ``recordType`` (comma list), ``suffix``)
  -> ``{id, name, type, records: [record-response]}``
- ``POST /v1/zones/{zoneId}/records`` (body: list of ``{name, type, content, ttl, prio, disabled}``)
  -> 201 with the created records
- ``GET/PUT/DELETE /v1/zones/{zoneId}/records/{recordId}`` (PUT body: ``{content, ttl, prio, disabled}``)

Errors are JSON lists of ``{code, message[, parameters]}`` as documented: 401 ``UNAUTHORIZED`` for a
missing or wrong ``X-API-Key``, 404 ``RECORD_NOT_FOUND``, 400 ``INVALID_RECORD`` with
``parameters.requiredFields`` / ``invalidFields`` / ``errorRecord``. The documentation gives no body for
an unknown zone; this fake answers 404 ``ZONE_NOT_FOUND`` in the same error-list shape. Rate limiting
(429 with ``Retry-After``) is documented for the API without numbers, so the limit is configurable.

Runs `http.server` on 127.0.0.1 with a random port in a background thread; tests talk to it with the
real client code.
"""

from __future__ import annotations

import ipaddress
import json
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

# The record types the documented API accepts (components.schemas.recordTypes).
RECORD_TYPES = frozenset(
    "A AAAA CNAME MX NS SOA SRV TXT CAA TLSA SMIMEA SSHFP DS HTTPS SVCB CERT URI RP LOC OPENPGPKEY".split()
)
MIN_TTL = 60


@dataclass
class Injected:
    """A canned failure answered instead of the next matching requests."""

    status: int
    remaining: int
    retry_after: str | None = None
    method: str | None = None


@dataclass
class FakeZone:
    """One zone and its records (record id -> record-response dict)."""

    id: str
    name: str
    records: dict[str, dict[str, Any]] = field(default_factory=dict)


class _ApiError(Exception):
    """An error answered to the client as the documented error list."""

    def __init__(self, status: int, code: str, message: str, parameters: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.body: list[dict[str, Any]] = [{"code": code, "message": message}]
        if parameters is not None:
            self.body[0]["parameters"] = parameters


class FakeIonosHostingApi:
    """The fake API server. Use as a context manager or call start()/stop().

    `rate_limit` is (requests, window_seconds) per API key; `clock` lets a test share a virtual clock
    with the client so rate-limit windows pass without real waiting.
    """

    def __init__(
        self,
        api_key: str,
        *,
        rate_limit: tuple[int, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_key = api_key
        self.rate_limit = rate_limit
        self.clock = clock
        self.zones: dict[str, FakeZone] = {}
        self.requests: list[tuple[str, str]] = []
        self._injected: list[Injected] = []
        self._window_start: float | None = None
        self._window_count = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeIonosHostingApi:
        """Bind 127.0.0.1 on a free port and serve in a daemon thread."""
        handler = type("Handler", (_Handler,), {"api": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        # A short poll interval keeps stop() (which waits for the serving loop to notice) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-ionos-hosting",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeIonosHostingApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The API base URL, the equivalent of https://api.hosting.ionos.com/dns."""
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/dns"

    # --- state helpers for tests -----------------------------------------------------------------

    def add_zone(self, name: str) -> str:
        """Create a zone and return its id."""
        zone = FakeZone(id=str(uuid.uuid4()), name=name)
        with self._lock:
            self.zones[zone.id] = zone
        return zone.id

    def zone_by_name(self, name: str) -> FakeZone:
        """The zone called `name` (KeyError if missing)."""
        with self._lock:
            for zone in self.zones.values():
                if zone.name == name:
                    return zone
        raise KeyError(name)

    def add_record(self, zone_name: str, name: str, type_: str, content: str, ttl: int = 3600) -> str:
        """Put a record straight into the state (as if made in the IONOS UI); returns its id."""
        zone = self.zone_by_name(zone_name)
        record = _record_response(zone, {"name": name, "type": type_, "content": content, "ttl": ttl})
        with self._lock:
            zone.records[record["id"]] = record
        return record["id"]

    def records(
        self, zone_name: str, name: str | None = None, type_: str | None = None
    ) -> list[dict[str, Any]]:
        """Copies of the records of a zone, optionally filtered by FQDN and type."""
        zone = self.zone_by_name(zone_name)
        with self._lock:
            return [
                dict(r)
                for r in zone.records.values()
                if (name is None or r["name"] == name) and (type_ is None or r["type"] == type_)
            ]

    def inject(
        self, status: int, count: int = 1, *, retry_after: str | None = None, method: str | None = None
    ) -> None:
        """Answer the next `count` requests (of `method`, if given) with `status` instead of serving them."""
        with self._lock:
            self._injected.append(Injected(status, count, retry_after, method))

    def count(self, method: str, path_prefix: str = "") -> int:
        """How many requests with this method (and path prefix) reached the server."""
        with self._lock:
            return sum(1 for m, p in self.requests if m == method and p.startswith(path_prefix))

    # --- request handling (called from the handler threads) ---------------------------------------

    def handle(
        self, method: str, raw_path: str, headers: Any, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        """Serve one request: returns (status, JSON body or None, extra headers)."""
        split = urlsplit(raw_path)
        with self._lock:
            self.requests.append((method, split.path))
            injected = self._take_injected(method)
        if injected is not None:
            extra = {"Retry-After": injected.retry_after} if injected.retry_after is not None else {}
            code = "TOO_MANY_REQUESTS" if injected.status == 429 else "INTERNAL_SERVER_ERROR"
            return injected.status, [{"code": code}], extra

        if headers.get("X-API-Key") != self.api_key:
            return 401, _error("UNAUTHORIZED", "The customer is not authorized to do this operation."), {}

        limited = self._rate_limited()
        if limited is not None:
            return 429, [{"code": "TOO_MANY_REQUESTS", "message": "Rate limit exceeded."}], limited

        try:
            status, payload = self._route(method, split.path, parse_qs(split.query), body)
        except _ApiError as err:
            return err.status, err.body, {}
        return status, payload, {}

    def _take_injected(self, method: str) -> Injected | None:
        for injected in self._injected:
            if injected.remaining > 0 and (injected.method is None or injected.method == method):
                injected.remaining -= 1
                return injected
        return None

    def _rate_limited(self) -> dict[str, str] | None:
        if self.rate_limit is None:
            return None
        limit, window = self.rate_limit
        now = self.clock()
        with self._lock:
            if self._window_start is None or now - self._window_start >= window:
                self._window_start, self._window_count = now, 0
            self._window_count += 1
            if self._window_count <= limit:
                return None
            wait = max(1, math.ceil(self._window_start + window - now))
        return {"Retry-After": str(wait)}

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        if parts[:2] != ["dns", "v1"] or len(parts) < 3 or parts[2] != "zones":
            raise _ApiError(404, "NOT_FOUND", f"No endpoint {method} {path}.")
        rest = parts[3:]
        if not rest and method == "GET":
            with self._lock:
                return 200, [{"id": z.id, "name": z.name, "type": "NATIVE"} for z in self.zones.values()]
        if not rest:
            raise _ApiError(405, "METHOD_NOT_ALLOWED", f"{method} is not allowed on {path}.")
        zone = self._zone(rest[0])
        if len(rest) == 1 and method == "GET":
            return 200, self._customer_zone(zone, query)
        if len(rest) == 2 and rest[1] == "records" and method == "POST":
            return 201, self._create_records(zone, _json(body))
        if len(rest) == 3 and rest[1] == "records":
            record_id = rest[2]
            if method == "GET":
                return 200, dict(self._record(zone, record_id))
            if method == "PUT":
                return 200, self._update_record(zone, record_id, _json(body))
            if method == "DELETE":
                self._record(zone, record_id)
                with self._lock:
                    del zone.records[record_id]
                return 200, None
        raise _ApiError(404, "NOT_FOUND", f"No endpoint {method} {path}.")

    def _zone(self, zone_id: str) -> FakeZone:
        with self._lock:
            zone = self.zones.get(zone_id)
        if zone is None:
            raise _ApiError(404, "ZONE_NOT_FOUND", "Zone does not exist.")
        return zone

    def _record(self, zone: FakeZone, record_id: str) -> dict[str, Any]:
        with self._lock:
            record = zone.records.get(record_id)
        if record is None:
            raise _ApiError(404, "RECORD_NOT_FOUND", "Record does not exist.")
        return record

    def _customer_zone(self, zone: FakeZone, query: dict[str, list[str]]) -> dict[str, Any]:
        names = set(query.get("recordName", []))
        types = {t.strip().upper() for v in query.get("recordType", []) for t in v.split(",") if t.strip()}
        suffix = query.get("suffix", [None])[0]
        with self._lock:
            records = [
                dict(r)
                for r in zone.records.values()
                if (not names or r["name"] in names)
                and (not types or r["type"] in types)
                and (suffix is None or r["name"].endswith(suffix))
            ]
        return {"id": zone.id, "name": zone.name, "type": "NATIVE", "records": records}

    def _create_records(self, zone: FakeZone, payload: Any) -> list[dict[str, Any]]:
        if not isinstance(payload, list) or not payload:
            raise _ApiError(
                400, "INVALID_DATA", "The request body is invalid or not supported by the endpoint."
            )
        created = []
        for item in payload:
            _validate_record(zone, item, require_name_type=True)
            created.append(_record_response(zone, item))
        with self._lock:
            for record in created:
                zone.records[record["id"]] = record
        return [dict(r) for r in created]

    def _update_record(self, zone: FakeZone, record_id: str, payload: Any) -> dict[str, Any]:
        record = self._record(zone, record_id)
        if not isinstance(payload, dict):
            raise _ApiError(
                400, "INVALID_DATA", "The request body is invalid or not supported by the endpoint."
            )
        merged = {
            **record,
            **{k: v for k, v in payload.items() if k in ("content", "ttl", "prio", "disabled")},
        }
        _validate_record(zone, merged, require_name_type=False)
        with self._lock:
            record.update(
                content=merged["content"],
                ttl=merged["ttl"],
                prio=merged.get("prio", 0),
                disabled=bool(merged.get("disabled", False)),
                changeDate=_now(),
            )
            return dict(record)


def _validate_record(zone: FakeZone, item: Any, *, require_name_type: bool) -> None:
    if not isinstance(item, dict):
        raise _ApiError(400, "INVALID_DATA", "The request body is invalid or not supported by the endpoint.")
    fields = ("name", "type", "content") if require_name_type else ("content",)
    required = [f for f in fields if not item.get(f)]
    if required:
        raise _ApiError(
            400, "INVALID_RECORD", "Record is invalid.", {"errorRecord": item, "requiredFields": required}
        )
    invalid: list[str] = []
    name, type_, content = str(item["name"]), str(item["type"]), str(item["content"])
    if type_ not in RECORD_TYPES:
        invalid.append("type")
    if name != zone.name and not name.endswith("." + zone.name):
        invalid.append("name")
    ttl = item.get("ttl", 3600)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < MIN_TTL:
        invalid.append("ttl")
    if (type_ == "A" and not _is_ip(content, 4)) or (type_ == "AAAA" and not _is_ip(content, 6)):
        invalid.append("content")
    if invalid:
        raise _ApiError(
            400, "INVALID_RECORD", "Record is invalid.", {"errorRecord": item, "invalidFields": invalid}
        )


def _is_ip(value: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(value).version == version
    except ValueError:
        return False


def _record_response(zone: FakeZone, item: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "name": item["name"],
        "rootName": zone.name,
        "type": item["type"],
        "content": item["content"],
        "changeDate": _now(),
        "ttl": item.get("ttl", 3600),
        "prio": item.get("prio", 0),
        "disabled": bool(item.get("disabled", False)),
    }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _error(code: str, message: str) -> list[dict[str, str]]:
    return [{"code": code, "message": message}]


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as err:
        raise _ApiError(
            400, "INVALID_DATA", "The request body is invalid or not supported by the endpoint."
        ) from err


class _Handler(BaseHTTPRequestHandler):
    api: FakeIonosHostingApi
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, payload, extra = self.api.handle(self.command, self.path, self.headers, body)
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read `api.requests` instead
        return
