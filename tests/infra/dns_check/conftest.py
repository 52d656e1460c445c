"""Real DNS servers on 127.0.0.1 for the `spaced dns check` tests, always stopped afterwards.

- `dnsmasq` (Debian's): `start_dnsmasq(records)` serves the zone `spaced.test` from `--host-record`
  lines, authoritative for it (`--local`), so unknown names get NXDOMAIN and other zones REFUSED.
- `servfail_server`: a dnslib server that answers every question with SERVFAIL and counts them.
- `silent_server`: a bound UDP socket nobody reads: queries to it time out; the test counts the
  datagrams that arrived.
"""

from __future__ import annotations

import select
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from dnslib import RCODE, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSServer

from infra.dns_check.resolve import DnsClient

FIXTURES = Path(__file__).parent / "fixtures"
STACK_FILE = FIXTURES / "Pulumi.dnstest.yaml"
OUTPUTS_FILE = FIXTURES / "outputs.json"
REPO_ROOT = Path(__file__).resolve().parents[3]
ZONE = "spaced.test"
START_TIMEOUT = 10.0  # seconds for dnsmasq to log that it started
PORT_ATTEMPTS = 5


@dataclass(frozen=True)
class Server:
    """A DNS server a test can point `--resolver` at."""

    host: str
    port: int

    @property
    def resolver(self) -> str:
        return f"{self.host}:{self.port}"


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (DNS uses both).

    The kernel picks a free UDP port; that port may be taken for TCP (by another test's server):
    then another one is tried, at most 50 times.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise OSError("no port free for both UDP and TCP on 127.0.0.1 after 50 tries")


def _dnsmasq_argv(port: int, host_records: Sequence[str], ttl: int) -> list[str]:
    return [
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-hosts",
        "--no-resolv",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        f"--port={port}",
        "--pid-file=",
        f"--local=/{ZONE}/",
        f"--local-ttl={ttl}",
        "--log-facility=-",
        *(f"--host-record={record}" for record in host_records),
    ]


def _wait_started(process: subprocess.Popen[bytes]) -> bool:
    """Read dnsmasq's log until "started" (its sockets are bound by then); False when it exited."""
    assert process.stderr is not None
    deadline = time.monotonic() + START_TIMEOUT
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([process.stderr], [], [], remaining)
        if not ready:
            break
        line = process.stderr.readline()
        if not line:
            return False  # EOF: the process exited
        if b"started, version" in line:
            return True
    raise AssertionError(f"dnsmasq did not log 'started' within {START_TIMEOUT} s")


@pytest.fixture
def start_dnsmasq() -> Iterator[Callable[..., Server]]:
    """`start_dnsmasq(["www.spaced.test,217.160.0.10,2a01:238::10", ...], ttl=300)` -> a running server.

    Ready means it logged "started" and answered a query. Every dnsmasq started is terminated
    (then killed) at teardown.
    """
    if shutil.which("dnsmasq") is None:
        pytest.fail("dnsmasq is not installed: run scripts/install-deps.sh (APT_PACKAGES has it)")
    processes: list[subprocess.Popen[bytes]] = []

    def start(host_records: Sequence[str], ttl: int = 300) -> Server:
        for _ in range(PORT_ATTEMPTS):
            port = free_port()
            process = subprocess.Popen(
                _dnsmasq_argv(port, host_records, ttl),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            processes.append(process)
            if _wait_started(process):
                probe = DnsClient("127.0.0.1", port, timeout=1.0, attempts=3)
                answer = probe.query(f"ready-probe.{ZONE}", "A")
                assert answer.status == "nxdomain", f"dnsmasq on 127.0.0.1:{port} answered {answer}"
                return Server("127.0.0.1", port)
            # It exited: most likely the port was taken meanwhile; try another one.
        stderr = processes[-1].stderr.read().decode() if processes[-1].stderr else ""
        raise AssertionError(f"dnsmasq did not start after {PORT_ATTEMPTS} ports: {stderr}")

    yield start
    for process in processes:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if process.stderr:
            process.stderr.close()


class _Servfail(BaseResolver):  # type: ignore[misc]
    """Answers SERVFAIL to everything and counts the questions."""

    def __init__(self) -> None:
        self.questions = 0
        self._lock = threading.Lock()

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        with self._lock:
            self.questions += 1
        reply = request.reply()
        reply.header.rcode = RCODE.SERVFAIL
        return reply


@dataclass(frozen=True)
class CountingServer(Server):
    """A server that counts the questions it received (`count()`)."""

    count: Callable[[], int]


class _QuietLogger:
    """dnslib's logger interface, printing nothing (pytest shows failures, not every query)."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


@pytest.fixture
def servfail_server() -> Iterator[CountingServer]:
    """A dnslib UDP server on 127.0.0.1 answering SERVFAIL; stopped at teardown."""
    resolver = _Servfail()
    server = DNSServer(resolver, address="127.0.0.1", port=0, logger=_QuietLogger())
    server.start_thread()
    try:
        port = int(server.server.server_address[1])
        yield CountingServer("127.0.0.1", port, count=lambda: resolver.questions)
    finally:
        server.stop()
        server.server.server_close()


@pytest.fixture
def silent_server() -> Iterator[CountingServer]:
    """A UDP socket on 127.0.0.1 that never answers; count() drains and counts what arrived."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    received = [0]

    def count() -> int:
        while True:  # bounded by the datagrams queued in the socket
            try:
                sock.recv(4096)
            except BlockingIOError:
                return received[0]
            received[0] += 1

    try:
        yield CountingServer("127.0.0.1", int(sock.getsockname()[1]), count=count)
    finally:
        sock.close()
