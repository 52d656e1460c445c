"""The DNS records a stack wants, from its stack file and (optionally) its stack outputs. Pure.

The records come from `infra.plans.records.plan_records`, the function the Pulumi program calls
(`infra/__main__.py`); this module only supplies the hosts it needs:

- `existing` nodes: their addresses are in the stack file (`public_ipv4`, `public_ipv6`);
- other nodes: their addresses are known after provisioning. They come from the `hosts` output of
  `pulumi stack output --json` when given, otherwise the value is `PENDING`.

Which providers give a node an IPv6 address (and so an AAAA record) is a fact of the provider adapters
(`infra/providers/*.py`: Hetzner and DigitalOcean); `IPV6_PROVIDERS` repeats it for nodes that do not
exist yet, and `tests/infra/dns_check/test_dns_plan.py` checks it against the real program under mocks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infra.host import Host
from infra.plans.records import plan_records
from infra.topology import Topology, TopologyError, load_topology

REPO_ROOT = Path(__file__).resolve().parents[2]
STACKS_DIR = REPO_ROOT / "stacks"
TOPOLOGY_KEY = "spaced:topology"
# Providers whose adapter passes a public IPv6 address to `build_host` (see the module docstring).
IPV6_PROVIDERS = frozenset({"hetzner", "digitalocean"})


class PlanError(Exception):
    """The stack file or the outputs file cannot be read; `kind` is the CLI's error kind."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _Pending:
    """The value of an address that exists only once the node is provisioned."""

    def __repr__(self) -> str:
        return "PENDING"


PENDING: Any = _Pending()


@dataclass(frozen=True)
class PlannedRecord:
    """One record the stack wants.

    `fqdn` without the trailing dot; `value` is an IP address string, or None when it is known only
    after provisioning; `ttl` in seconds; `backend` is the topology's `dns.provider`; `source` says
    where the value came from: "stack file", "outputs" or "pending".
    """

    fqdn: str
    type: str
    value: str | None
    ttl: int
    backend: str
    node: str
    source: str

    @property
    def pending(self) -> bool:
        """True when the value is known only after provisioning."""
        return self.value is None

    def as_json(self) -> dict[str, Any]:
        """The JSON form `spaced dns plan --json` prints (same keys as the `dns_records` output, plus)."""
        return {
            "name": self.fqdn,
            "type": self.type,
            "value": self.value,
            "ttl": self.ttl,
            "backend": self.backend,
            "node": self.node,
            "source": self.source,
        }


@dataclass(frozen=True)
class OutputHost:
    """A host's addresses as the stack outputs report them."""

    public_ipv4: str
    public_ipv6: str | None


@dataclass(frozen=True)
class StackOutputs:
    """The parts of `pulumi stack output --json` this module reads.

    `hosts`: node name -> addresses (the `hosts` output); `dns_records`: the `dns_records` output as
    (name, type, value, ttl) tuples, or None when absent.
    """

    hosts: Mapping[str, OutputHost]
    dns_records: frozenset[tuple[str, str, str, int]] | None


@dataclass(frozen=True)
class Plan:
    """The planned records of one stack, and warnings about the inputs (e.g. stale outputs)."""

    environment: str
    domain: str | None
    backend: str
    records: tuple[PlannedRecord, ...]
    warnings: tuple[str, ...]

    @property
    def pending(self) -> tuple[PlannedRecord, ...]:
        """The records whose value is known only after provisioning."""
        return tuple(record for record in self.records if record.pending)


def stack_file(environment: str, stacks_dir: Path = STACKS_DIR) -> Path:
    """The stack file of `environment`: `<stacks_dir>/Pulumi.<environment>.yaml`."""
    return stacks_dir / f"Pulumi.{environment}.yaml"


def load_stack_topology(path: Path) -> Topology:
    """The validated topology of the stack file at `path`.

    Credentials are not checked (planning records needs none). Raises PlanError: `NoStack` when the
    file does not exist (naming the stacks that do), `BadTopology` when it is invalid.
    """
    if not path.is_file():
        known = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in path.parent.glob("Pulumi.*.yaml"))
        raise PlanError(
            "NoStack", f"no stack file {path}; stacks in {path.parent}: {', '.join(known) or 'none'}"
        )
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise PlanError("BadTopology", f"{path} is not valid YAML: {error}") from None
    raw = (document or {}).get("config", {}).get(TOPOLOGY_KEY) if isinstance(document, dict) else None
    if raw is None:
        raise PlanError("BadTopology", f"{path} has no `config: {TOPOLOGY_KEY}:` block")
    try:
        return load_topology(raw)
    except TopologyError as error:
        raise PlanError("BadTopology", f"{path}: {error}") from None


def parse_outputs(text: str, source: str = "outputs") -> StackOutputs:
    """Parse the JSON of `pulumi stack output --json`. Raises PlanError(`BadOutputs`) naming the path."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise PlanError(
            "BadOutputs",
            f"{source}: not JSON ({error}); write it with `pulumi stack output --json --stack <env> > FILE`",
        ) from None
    if not isinstance(document, dict):
        raise PlanError("BadOutputs", f"{source}: expected a JSON object (pulumi stack output --json)")
    raw_hosts = document.get("hosts", {})
    if not isinstance(raw_hosts, dict):
        raise PlanError("BadOutputs", f"{source}: hosts: expected an object of node name -> host")
    hosts: dict[str, OutputHost] = {}
    for name, host in raw_hosts.items():
        if not isinstance(host, dict) or not isinstance(host.get("public_ipv4"), str):
            raise PlanError(
                "BadOutputs", f"{source}: hosts.{name}.public_ipv4: expected an IP address string"
            )
        ipv6 = host.get("public_ipv6")
        if ipv6 is not None and not isinstance(ipv6, str):
            raise PlanError("BadOutputs", f"{source}: hosts.{name}.public_ipv6: expected a string or null")
        hosts[name] = OutputHost(host["public_ipv4"], ipv6)
    records = None
    raw_records = document.get("dns_records")
    if isinstance(raw_records, list):
        try:
            records = frozenset((r["name"], r["type"], r["value"], int(r["ttl"])) for r in raw_records)
        except (KeyError, TypeError, ValueError):
            raise PlanError(
                "BadOutputs", f"{source}: dns_records: expected a list of {{name, type, value, ttl}} objects"
            ) from None
    return StackOutputs(hosts=hosts, dns_records=records)


def load_outputs(path: Path) -> StackOutputs:
    """`parse_outputs` of the file at `path`; PlanError(`BadOutputs`) when it cannot be read."""
    try:
        text = path.read_text()
    except OSError as error:
        raise PlanError("BadOutputs", f"cannot read {path}: {error.strerror}") from None
    return parse_outputs(text, str(path))


def plan_hosts(topology: Topology, outputs: StackOutputs | None) -> tuple[dict[str, Host], dict[str, str]]:
    """Hosts for `plan_records`: node name -> Host with plain or PENDING addresses, and where each came from.

    An `existing` node's addresses come from the stack file even when outputs are given (they are the
    same: the program passes them through).
    """
    hosts: dict[str, Host] = {}
    sources: dict[str, str] = {}
    for node in topology.nodes:
        reported = outputs.hosts.get(node.name) if outputs is not None else None
        if node.provider == "existing":
            ipv4, ipv6, source = node.public_ipv4, node.public_ipv6, "stack file"
        elif reported is not None:
            ipv4, ipv6, source = reported.public_ipv4, reported.public_ipv6, "outputs"
        else:
            ipv4 = PENDING
            ipv6 = PENDING if node.provider in IPV6_PROVIDERS else None
            source = "pending"
        # mesh_ip and ssh_user do not enter DNS records; plan_records reads names and addresses only.
        hosts[node.name] = Host(
            name=node.name,
            provider=node.provider,
            region=node.region,
            public_ipv4=ipv4,
            public_ipv6=ipv6,
            mesh_ip="",
            ssh_user="",
            manager=node.manager,
            edge=node.edge,
        )
        sources[node.name] = source
    return hosts, sources


def build_plan(topology: Topology, outputs: StackOutputs | None = None) -> Plan:
    """The records `topology` publishes (with addresses from `outputs` where given), and warnings.

    Warnings: outputs naming nodes the topology no longer has, and an outputs `dns_records` list that
    differs from the plan (outputs of an older deployment, or a stack file changed since).
    """
    hosts, sources = plan_hosts(topology, outputs)
    node_of = {name: node.name for node in topology.nodes for name in node.dns}
    records = tuple(
        PlannedRecord(
            fqdn=record.fqdn,
            type=record.type,
            value=None if record.value is PENDING else str(record.value),
            ttl=record.ttl,
            backend=topology.dns.provider,
            node=node_of[record.name],
            source=sources[node_of[record.name]],
        )
        for record in plan_records(topology, hosts)
    )
    warnings: list[str] = []
    if outputs is not None:
        unknown = sorted(set(outputs.hosts) - {node.name for node in topology.nodes})
        if unknown:
            warnings.append(
                f"the outputs name hosts the stack file does not have: {', '.join(unknown)} "
                "(outputs of an older deployment?)"
            )
        if outputs.dns_records is not None and not any(r.pending for r in records):
            planned = frozenset((r.fqdn, r.type, r.value, r.ttl) for r in records)
            if planned != outputs.dns_records:
                warnings.append(
                    "the outputs' dns_records differ from this plan: the stack file changed since "
                    "the last `pulumi up`, or the outputs are from another stack"
                )
    return Plan(
        environment=topology.environment,
        domain=topology.domain,
        backend=topology.dns.provider,
        records=records,
        warnings=tuple(warnings),
    )


def plan_for(
    environment: str,
    *,
    stack_path: Path | None = None,
    outputs_path: Path | None = None,
    stacks_dir: Path = STACKS_DIR,
) -> Plan:
    """The plan of `environment` (stack file `stack_path` or `<stacks_dir>/Pulumi.<env>.yaml`).

    Raises PlanError (`NoStack`, `BadTopology`, `BadOutputs`) and, when the file's `environment`
    differs from `environment`, `BadTopology`.
    """
    path = stack_path or stack_file(environment, stacks_dir)
    topology = load_stack_topology(path)
    if topology.environment != environment:
        raise PlanError(
            "BadTopology", f"{path} is the stack of environment {topology.environment!r}, not {environment!r}"
        )
    outputs = load_outputs(outputs_path) if outputs_path is not None else None
    return build_plan(topology, outputs)


def format_plan_table(plan: Plan) -> str:
    """The plan as an aligned text table (what `spaced dns plan` prints), with notes below it."""
    header = ("NAME", "TYPE", "VALUE", "TTL", "BACKEND", "NODE")
    rows = [
        (r.fqdn, r.type, r.value or "(after provisioning)", str(r.ttl), r.backend, r.node)
        for r in plan.records
    ]
    lines = [f"environment {plan.environment}, zone {plan.domain or '-'}, DNS backend {plan.backend}"]
    if not rows:
        lines.append("(no records: the stack publishes no DNS names)")
    else:
        lines += text_table(header, rows)
    if plan.backend == "none":
        lines.append("note: dns.provider is 'none': these records are managed outside Pulumi")
    if plan.pending:
        nodes = sorted({r.node for r in plan.pending})
        lines.append(
            f"note: {len(plan.pending)} value(s) are known only after provisioning "
            f"({', '.join(nodes)}); pass --outputs FILE from "
            f"`pulumi stack output --json --stack {plan.environment}`"
        )
    lines += [f"warning: {warning}" for warning in plan.warnings]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells as left-aligned columns, two spaces apart (header first)."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
