"""Planned records against what DNS answers: one `Finding` per (name, type). Pure.

Statuses of a finding:
- `ok` — the answer holds exactly the planned values;
- `missing` — NXDOMAIN, no record of the type (NODATA), or only some planned values are there;
- `wrong` — records of the name and type exist, none with a planned value;
- `extra` — every planned value is there, plus other values for the same name and type;
- `ttl` — the values match but the TTL is higher than planned (a cache only counts TTLs down);
- `unverified` — the planned value is known only after provisioning (pass --outputs);
- `servfail`, `refused`, `timeout`, `unreachable`, `error` — the server gave no usable answer.
Everything but `ok` is a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from infra.dns_check import resolve
from infra.dns_check.plan import PlannedRecord, text_table

OK = "ok"
MISSING = "missing"
WRONG = "wrong"
EXTRA = "extra"
TTL = "ttl"
UNVERIFIED = "unverified"
MISMATCHES = (MISSING, WRONG, EXTRA, TTL)
SERVER_FAILURES = (resolve.SERVFAIL, resolve.REFUSED, resolve.TIMEOUT, resolve.UNREACHABLE, resolve.ERROR)


@dataclass(frozen=True)
class Finding:
    """The verdict on one (name, type): planned values, answered values, and one line of detail.

    `expected` is empty for an unverified (pending) record; `ttl` is the answered TTL in seconds.
    """

    fqdn: str
    type: str
    status: str
    expected: tuple[str, ...]
    found: tuple[str, ...]
    planned_ttl: int
    ttl: int | None
    detail: str

    @property
    def missing_values(self) -> tuple[str, ...]:
        """Planned values the answer lacks."""
        return tuple(v for v in self.expected if v not in self.found)

    @property
    def extra_values(self) -> tuple[str, ...]:
        """Answered values the plan does not have (none for an unverified record)."""
        return tuple(v for v in self.found if v not in self.expected) if self.expected else ()

    def as_json(self) -> dict[str, Any]:
        """The JSON form `spaced dns check --json` prints."""
        return {
            "name": self.fqdn,
            "type": self.type,
            "status": self.status,
            "expected": list(self.expected),
            "found": list(self.found),
            "missing": list(self.missing_values),
            "extra": list(self.extra_values),
            "planned_ttl": self.planned_ttl,
            "ttl": self.ttl,
            "detail": self.detail,
        }


def judge(expected: Sequence[str], planned_ttl: int, answer: resolve.Answer, rdtype: str) -> tuple[str, str]:
    """(status, detail) of one answer against the planned values (`expected` empty = pending)."""
    if answer.status in SERVER_FAILURES:
        return answer.status, answer.detail
    if answer.status in (resolve.NXDOMAIN, resolve.NODATA):
        return (UNVERIFIED if not expected else MISSING), answer.detail
    found = answer.values
    if not expected:
        return UNVERIFIED, (
            "value known only after provisioning: pass --outputs FILE "
            "(pulumi stack output --json) to check it"
        )
    want = {resolve.normalise(rdtype, value) for value in expected}
    if found == want:
        if answer.ttl is not None and answer.ttl > planned_ttl:
            return TTL, f"TTL {answer.ttl} s is above the planned {planned_ttl} s"
        return OK, answer.detail
    if not found & want:
        return WRONG, f"{rdtype} is {', '.join(sorted(found))}, the plan says {', '.join(sorted(want))}"
    if want <= found:
        return EXTRA, f"other {rdtype} values besides the planned ones: {', '.join(sorted(found - want))}"
    return MISSING, f"planned {', '.join(sorted(want - found))} not served"


def check_records(
    records: Sequence[PlannedRecord], ask: Callable[[str, str], resolve.Answer]
) -> list[Finding]:
    """Ask once per (name, type) of `records` (in plan order) and judge the answers.

    `ask(fqdn, type)` is usually `DnsClient.query`.
    """
    groups: dict[tuple[str, str], list[PlannedRecord]] = {}
    for record in records:
        groups.setdefault((record.fqdn, record.type), []).append(record)
    findings = []
    for (fqdn, rdtype), group in groups.items():
        expected = tuple(sorted(resolve.normalise(rdtype, r.value) for r in group if r.value is not None))
        planned_ttl = min(r.ttl for r in group)
        answer = ask(fqdn, rdtype)
        status, detail = judge(expected, planned_ttl, answer, rdtype)
        findings.append(
            Finding(
                fqdn=fqdn,
                type=rdtype,
                status=status,
                expected=expected,
                found=tuple(sorted(answer.values)),
                planned_ttl=planned_ttl,
                ttl=answer.ttl,
                detail=detail,
            )
        )
    return findings


def summary(findings: Sequence[Finding]) -> str:
    """One line: how many (name, type)s are ok, and the count of each failure status."""
    counts: dict[str, int] = {}
    for finding in findings:
        counts[finding.status] = counts.get(finding.status, 0) + 1
    failed = len(findings) - counts.get(OK, 0)
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()) if status != OK)
    if not failed:
        return f"all {len(findings)} record set(s) match the plan"
    return f"{failed} of {len(findings)} record set(s) do not match the plan ({parts})"


def format_findings(findings: Sequence[Finding], server: str) -> str:
    """The findings as an aligned table (what `spaced dns check` prints)."""
    header = ("STATUS", "NAME", "TYPE", "EXPECTED", "FOUND", "TTL", "DETAIL")
    rows = [
        (
            f.status.upper() if f.status != OK else "ok",
            f.fqdn,
            f.type,
            ",".join(f.expected) or "?",
            ",".join(f.found) or "-",
            "-" if f.ttl is None else str(f.ttl),
            f.detail,
        )
        for f in findings
    ]
    lines = [f"resolver {server}"]
    lines += text_table(header, rows) if rows else ["(no records to check)"]
    lines.append(summary(findings))
    return "\n".join(lines)
