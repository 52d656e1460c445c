"""`spaced dns check` against real DNS servers on 127.0.0.1 (dnsmasq, a dnslib SERVFAIL server, a
socket that never answers). The stack is tests/infra/dns_check/fixtures/Pulumi.dnstest.yaml.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from infra.cli import main
from infra.dns_check import compare, resolve
from infra.dns_check.resolve import Answer, DnsClient, ResolverAddressError, parse_resolver
from tests.infra.dns_check.conftest import OUTPUTS_FILE, REPO_ROOT, STACK_FILE, CountingServer, Server

# Exactly what Pulumi.dnstest.yaml plans, with outputs.json for the Hetzner node.
CORRECT_ZONE = [
    "spaced.test,217.160.0.10,2a01:238::10",
    "www.spaced.test,217.160.0.10,2a01:238::10",
    "api.spaced.test,217.160.0.11,2a01:238::11",
    "gone.spaced.test,217.160.0.13",
    "hz.spaced.test,5.75.0.1,2a01:4f8::1",
]
# One of each: ok, wrong (www A), extra (api A has a second address), missing by NODATA (api AAAA),
# missing by NXDOMAIN (gone), plus a name the plan does not know (ignored: only planned names are asked).
MIXED_ZONE = [
    "spaced.test,217.160.0.10,2a01:238::10",
    "www.spaced.test,217.160.0.99,2a01:238::10",
    "api.spaced.test,217.160.0.11",
    "api.spaced.test,217.160.0.12",
    "hz.spaced.test,5.75.0.1,2a01:4f8::1",
    "unplanned.spaced.test,217.160.0.50",
]


def check(resolver: str, *extra: str) -> list[str]:
    return ["dns", "check", "dnstest", "--stack-file", str(STACK_FILE), "--resolver", resolver, *extra]


def findings_of(capsys: pytest.CaptureFixture[str]) -> tuple[dict[tuple[str, str], dict], str]:
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    return {(f["name"], f["type"]): f for f in document["findings"]}, captured.err


def test_a_zone_served_as_planned_passes(
    start_dnsmasq: Callable[..., Server], capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_dnsmasq(CORRECT_ZONE)
    assert main(check(server.resolver, "--outputs", str(OUTPUTS_FILE))) == 0
    out = capsys.readouterr().out
    assert "all 9 record set(s) match the plan" in out
    assert f"resolver {server.resolver}" in out


def test_missing_wrong_and_extra_records_are_reported(
    start_dnsmasq: Callable[..., Server], capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_dnsmasq(MIXED_ZONE)
    assert main(check(server.resolver, "--outputs", str(OUTPUTS_FILE), "--json")) == 1
    findings, err = findings_of(capsys)
    status = {key: finding["status"] for key, finding in findings.items()}
    assert status == {
        ("spaced.test", "A"): "ok",
        ("spaced.test", "AAAA"): "ok",
        ("www.spaced.test", "A"): "wrong",
        ("www.spaced.test", "AAAA"): "ok",
        ("api.spaced.test", "A"): "extra",
        ("api.spaced.test", "AAAA"): "missing",
        ("gone.spaced.test", "A"): "missing",
        ("hz.spaced.test", "A"): "ok",
        ("hz.spaced.test", "AAAA"): "ok",  # outputs say 2a01:4f8:0:0::1: compared normalised
    }
    assert findings[("www.spaced.test", "A")]["found"] == ["217.160.0.99"]
    assert findings[("api.spaced.test", "A")]["extra"] == ["217.160.0.12"]
    assert findings[("api.spaced.test", "AAAA")]["detail"] == "NOERROR but no AAAA record (the name exists)"
    assert findings[("gone.spaced.test", "A")]["detail"] == "NXDOMAIN: the name does not exist"
    assert findings[("spaced.test", "A")]["ttl"] == 300
    assert err.strip() == (
        "ERROR (DnsMismatch): environment dnstest: 4 of 9 record set(s) do not match the "
        "plan (1 extra, 2 missing, 1 wrong)"
    )


def test_a_ttl_above_the_plan_is_reported(
    start_dnsmasq: Callable[..., Server], capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_dnsmasq(CORRECT_ZONE, ttl=3600)
    assert main(check(server.resolver, "--outputs", str(OUTPUTS_FILE), "--json")) == 1
    findings, err = findings_of(capsys)
    assert {f["status"] for f in findings.values()} == {"ttl"}
    assert findings[("www.spaced.test", "A")]["detail"] == "TTL 3600 s is above the planned 300 s"
    assert "(9 ttl)" in err


def test_table_output_names_each_problem(
    start_dnsmasq: Callable[..., Server], capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_dnsmasq(MIXED_ZONE)
    assert main(check(server.resolver, "--outputs", str(OUTPUTS_FILE))) == 1
    lines = capsys.readouterr().out.splitlines()
    by_name = {
        (line.split()[1], line.split()[2]): line
        for line in lines
        if line.split()[:1] != ["resolver"] and len(line.split()) > 2
    }
    assert by_name[("www.spaced.test", "A")].startswith("WRONG")
    assert "A is 217.160.0.99, the plan says 217.160.0.10" in by_name[("www.spaced.test", "A")]
    assert by_name[("api.spaced.test", "A")].startswith("EXTRA")
    assert by_name[("gone.spaced.test", "A")].startswith("MISSING")
    assert "NXDOMAIN" in by_name[("gone.spaced.test", "A")]


def test_pending_values_fail_as_unverified_without_outputs(
    start_dnsmasq: Callable[..., Server], capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_dnsmasq(CORRECT_ZONE)
    assert main(check(server.resolver, "--json")) == 1
    findings, err = findings_of(capsys)
    assert findings[("hz.spaced.test", "A")]["status"] == "unverified"
    assert findings[("hz.spaced.test", "A")]["found"] == ["5.75.0.1"]
    assert "pass --outputs FILE" in err and err.startswith("ERROR (DnsMismatch): ")


def test_servfail_is_retried_a_bounded_number_of_times(
    servfail_server: CountingServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(check(servfail_server.resolver, "--attempts", "2", "--timeout", "1", "--json")) == 1
    findings, err = findings_of(capsys)
    assert {f["status"] for f in findings.values()} == {"servfail"}
    assert "SERVFAIL from 127.0.0.1:" in findings[("spaced.test", "A")]["detail"]
    assert servfail_server.count() == 2 * len(findings)  # 2 attempts per record set, no more
    assert "(9 servfail)" in err


def test_a_server_that_never_answers_times_out_within_the_bound(
    silent_server: CountingServer, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    assert main(check(silent_server.resolver, "--attempts", "2", "--timeout", "0.2", "--json")) == 1
    elapsed = time.monotonic() - started
    findings, err = findings_of(capsys)
    assert {f["status"] for f in findings.values()} == {"timeout"}
    assert findings[("spaced.test", "A")]["detail"].startswith(
        f"no answer from {silent_server.resolver} within 0.2 s (attempt 2 of 2)"
    )
    assert silent_server.count() == 2 * 9
    assert elapsed < 9 * 2 * 0.2 + 3.0, elapsed  # attempts x timeout per record set, plus start-up
    assert "(9 timeout)" in err


def test_nothing_listening_is_unreachable_not_a_hang(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.infra.dns_check.conftest import free_port

    port = free_port()
    assert main(check(f"127.0.0.1:{port}", "--attempts", "1", "--timeout", "2", "--json")) == 1
    findings, _ = findings_of(capsys)
    assert {f["status"] for f in findings.values()} == {"unreachable"}
    assert "refused the connection" in findings[("spaced.test", "A")]["detail"]


def test_the_console_script_prints_one_error_line(start_dnsmasq: Callable[..., Server]) -> None:
    server = start_dnsmasq(MIXED_ZONE)
    # The installed console script (`python -m infra.cli` would define a second CliError in __main__).
    spaced = str(Path(sys.executable).with_name("spaced"))
    result = subprocess.run(
        [spaced, *check(server.resolver)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("ERROR (DnsMismatch): environment dnstest: ")
    assert "UNVERIFIED" in result.stdout and "WRONG" in result.stdout


@pytest.mark.parametrize("value", ["dns.example", "127.0.0.1:0", "127.0.0.1:x", "[::1]x", "1.2.3.4:70000"])
def test_bad_resolver_is_a_bad_argument(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(check(value)) == 1
    assert capsys.readouterr().err.startswith("ERROR (BadArgument): --resolver")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:5353", ("::1", 5353)),
        ("::1", ("::1", 53)),
    ],
)
def test_parse_resolver(text: str, expected: tuple[str, int]) -> None:
    assert parse_resolver(text) == expected
    with pytest.raises(ResolverAddressError):
        parse_resolver(f"{text}garbage")


@pytest.mark.parametrize(
    ("expected", "answer", "status"),
    [
        (("1.2.3.4",), Answer(resolve.OK, frozenset({"1.2.3.4"}), ttl=300), "ok"),
        (("1.2.3.4",), Answer(resolve.OK, frozenset({"1.2.3.4"}), ttl=120), "ok"),  # a cache counts down
        (("1.2.3.4",), Answer(resolve.OK, frozenset({"1.2.3.4"}), ttl=3600), "ttl"),
        (("1.2.3.4", "1.2.3.5"), Answer(resolve.OK, frozenset({"1.2.3.4"}), ttl=300), "missing"),
        ((), Answer(resolve.NXDOMAIN), "unverified"),
        (("1.2.3.4",), Answer(resolve.REFUSED, detail="REFUSED"), "refused"),
    ],
)
def test_judge(expected: tuple[str, ...], answer: Answer, status: str) -> None:
    assert compare.judge(expected, 300, answer, "A")[0] == status


def test_client_rejects_unbounded_settings() -> None:
    with pytest.raises(ValueError):
        DnsClient("127.0.0.1", attempts=0)
