"""One DNS question to one server, with bounded retries and timeouts (dnspython).

`DnsClient(server, port).query("www.spaced.fun", "A")` returns an `Answer`; it never raises for what
the network or the server does: NXDOMAIN, SERVFAIL, REFUSED, a timeout or an unreachable server are
statuses, so the caller can report every record. Timeouts and SERVFAIL are retried (a resolver's
SERVFAIL is often transient); the worst case per question is `attempts * timeout` seconds plus
`(attempts - 1) * retry_delay`.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

DEFAULT_PORT = 53
DEFAULT_TIMEOUT = 2.0  # seconds per attempt
DEFAULT_ATTEMPTS = 3
DEFAULT_RETRY_DELAY = 0.2  # seconds between attempts after a SERVFAIL

# Statuses of an Answer.
OK = "ok"  # NOERROR with records of the asked type
NODATA = "nodata"  # NOERROR, the name exists, no record of the type
NXDOMAIN = "nxdomain"
SERVFAIL = "servfail"
REFUSED = "refused"
TIMEOUT = "timeout"
UNREACHABLE = "unreachable"  # e.g. ICMP port unreachable: nothing listens there
ERROR = "error"  # any other rcode or a malformed answer
RETRIED = frozenset({SERVFAIL, TIMEOUT})


class ResolverAddressError(ValueError):
    """A `--resolver` value that is not IP, IP:PORT or [IPv6]:PORT."""


@dataclass(frozen=True)
class Answer:
    """What the server said about one (name, type).

    `values`: normalised addresses (A/AAAA) or record texts; `ttl`: the RRset's TTL in seconds (None
    without records); `detail`: one human line (e.g. "NXDOMAIN: the name does not exist"); `attempts`:
    queries sent.
    """

    status: str
    values: frozenset[str] = field(default_factory=frozenset)
    ttl: int | None = None
    detail: str = ""
    attempts: int = 1


def parse_resolver(text: str) -> tuple[str, int]:
    """`IP`, `IP:PORT`, `[IPv6]:PORT` or a bare IPv6 -> (ip, port). Raises ResolverAddressError."""
    host, port = text, DEFAULT_PORT
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ResolverAddressError(f"{text!r}: expected [IPv6]:PORT")
            port = _port(text, rest[1:])
    elif text.count(":") == 1:
        host, raw_port = text.split(":")
        port = _port(text, raw_port)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ResolverAddressError(
            f"{text!r}: expected an IP address, IP:PORT or [IPv6]:PORT "
            "(a resolver is given by address, not by name)"
        ) from None
    return host, port


def _port(text: str, raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ResolverAddressError(f"{text!r}: port {raw!r} is not a number from 1 to 65535")
    return int(raw)


def system_resolver() -> tuple[str, int]:
    """The first nameserver of this machine's /etc/resolv.conf, port 53."""
    try:
        nameservers = dns.resolver.Resolver(configure=True).nameservers
    except dns.resolver.NoResolverConfiguration:
        nameservers = []
    if not nameservers:
        raise ResolverAddressError("this machine has no nameserver in /etc/resolv.conf; pass --resolver IP")
    return str(nameservers[0]), DEFAULT_PORT


def normalise(rdtype: str, text: str) -> str:
    """The canonical text of a value: compressed IPv6, plain IPv4, other types unchanged."""
    if rdtype in ("A", "AAAA"):
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            return text
    return text


@dataclass
class DnsClient:
    """Asks one server (`server`, `port`); `timeout` seconds per attempt, at most `attempts` attempts.

    `recursion_desired` is on: the server may be a recursive resolver or the zone's authoritative
    server. UDP first, TCP when the answer is truncated.
    """

    server: str
    port: int = DEFAULT_PORT
    timeout: float = DEFAULT_TIMEOUT
    attempts: int = DEFAULT_ATTEMPTS
    retry_delay: float = DEFAULT_RETRY_DELAY
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.timeout <= 0:
            raise ValueError("attempts must be at least 1 and timeout positive")

    def query(self, fqdn: str, rdtype: str) -> Answer:
        """Ask for `rdtype` records of `fqdn`; retries timeouts and SERVFAIL, at most `attempts` times."""
        answer = Answer(ERROR, detail="not asked")
        for attempt in range(1, self.attempts + 1):
            answer = self._once(fqdn, rdtype, attempt)
            if answer.status not in RETRIED:
                return answer
            if attempt < self.attempts and answer.status == SERVFAIL and self.retry_delay > 0:
                self.sleep(self.retry_delay)  # backoff before asking again, not a synchronisation
        return answer

    def _once(self, fqdn: str, rdtype: str, attempt: int) -> Answer:
        request = dns.message.make_query(fqdn.rstrip(".") + ".", rdtype)
        request.flags |= dns.flags.RD
        where = f"{self.server}:{self.port}"
        family = socket.AF_INET6 if ":" in self.server else socket.AF_INET
        try:
            # A connected UDP socket: an ICMP port-unreachable then fails at once (ECONNREFUSED)
            # instead of waiting for the timeout.
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                udp.setblocking(False)  # dnspython waits with select until its deadline
                udp.connect((self.server, self.port))
                response, _ = dns.query.udp_with_fallback(
                    request, self.server, timeout=self.timeout, port=self.port, udp_sock=udp
                )
        except dns.exception.Timeout:
            return Answer(
                TIMEOUT,
                detail=f"no answer from {where} within {self.timeout:g} s "
                f"(attempt {attempt} of {self.attempts})",
                attempts=attempt,
            )
        except ConnectionRefusedError:
            return Answer(
                UNREACHABLE,
                detail=f"{where} refused the connection (is a DNS server listening?)",
                attempts=attempt,
            )
        except OSError as error:
            return Answer(UNREACHABLE, detail=f"{where}: {error.strerror or error}", attempts=attempt)
        except dns.exception.DNSException as error:
            return Answer(ERROR, detail=f"malformed answer from {where}: {error}", attempts=attempt)
        return _classify(response, fqdn, rdtype, where, attempt)


def _classify(response: dns.message.Message, fqdn: str, rdtype: str, where: str, attempt: int) -> Answer:
    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return Answer(NXDOMAIN, detail="NXDOMAIN: the name does not exist", attempts=attempt)
    if rcode == dns.rcode.SERVFAIL:
        return Answer(
            SERVFAIL,
            detail=f"SERVFAIL from {where}: the server could not answer "
            "(broken delegation, DNSSEC failure or an upstream timeout)",
            attempts=attempt,
        )
    if rcode == dns.rcode.REFUSED:
        return Answer(
            REFUSED,
            detail=f"REFUSED by {where}: it does not serve this zone or refuses recursion",
            attempts=attempt,
        )
    if rcode != dns.rcode.NOERROR:
        return Answer(ERROR, detail=f"{dns.rcode.to_text(rcode)} from {where}", attempts=attempt)
    wanted = dns.rdatatype.from_text(rdtype)
    values: set[str] = set()
    ttl: int | None = None
    via_cname = False
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.CNAME:
            via_cname = True
        if rrset.rdtype != wanted:
            continue
        ttl = rrset.ttl if ttl is None else min(ttl, rrset.ttl)
        values |= {normalise(rdtype, rdata.to_text()) for rdata in rrset}
    if not values:
        return Answer(NODATA, detail=f"NOERROR but no {rdtype} record (the name exists)", attempts=attempt)
    detail = "through a CNAME" if via_cname else ""
    return Answer(OK, values=frozenset(values), ttl=ttl, detail=detail, attempts=attempt)
