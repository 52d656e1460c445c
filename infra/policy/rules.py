"""The policy pack's rules as plain functions (no pulumi_policy here, so pytest calls them directly).

Each rule takes a resource type token and its properties (the engine's camelCase names, as a policy
sees them) and returns a list of violation messages; an empty list means the resource complies.
Resource types the rule does not know are not its business and always comply.

Rules:
- `exposed_admin_ports`: no SSH (22) or Swarm port (2377, 7946, 4789) open to 0.0.0.0/0 or ::/0
  in any firewall or security group rule.
- `servers_without_firewall` (stack-wide): every server is referenced by a firewall or security group.
- `dns_record_outside_zone`: every DNS record lies inside the configured zone.
- `unmarked_secrets`: values that carry secrets are listed in `additional_secret_outputs`
  (the checkable form of "secrets stay secret"; see its docstring).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

WATCHED_PORTS: dict[int, str] = {
    22: "SSH",
    2377: "Swarm management",
    7946: "Swarm gossip",
    4789: "Swarm overlay (VXLAN)",
}
ALL_PORTS = (0, 65535)
_ALL_PROTOCOLS = {"-1", "all", "any"}
_PORT_PROTOCOLS = {"tcp", "udp", "6", "17"}

# --- type tokens -----------------------------------------------------------------------------------
AWS_SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
AWS_SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
AWS_INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
GCP_FIREWALL = "gcp:compute/firewall:Firewall"
HCLOUD_FIREWALL = "hcloud:index/firewall:Firewall"
HCLOUD_FIREWALL_ATTACHMENT = "hcloud:index/firewallAttachment:FirewallAttachment"
DO_FIREWALL = "digitalocean:index/firewall:Firewall"
IONOS_FIREWALL = "ionoscloud:compute/firewall:Firewall"
IONOS_NSG_FIREWALL = "ionoscloud:nsg/firewall:Firewall"
IONOS_NIC = "ionoscloud:compute/nic:Nic"

AWS_INSTANCE = "aws:ec2/instance:Instance"
GCP_INSTANCE = "gcp:compute/instance:Instance"
HCLOUD_SERVER = "hcloud:index/server:Server"
DO_DROPLET = "digitalocean:index/droplet:Droplet"
IONOS_SERVER = "ionoscloud:compute/server:Server"
IONOS_VCPU_SERVER = "ionoscloud:compute/vCPUServer:VCPUServer"
IONOS_CUBE_SERVER = "ionoscloud:compute/cubeServer:CubeServer"
IONOS_SERVERS = (IONOS_SERVER, IONOS_VCPU_SERVER, IONOS_CUBE_SERVER)
SERVER_TYPES = (AWS_INSTANCE, GCP_INSTANCE, HCLOUD_SERVER, DO_DROPLET, *IONOS_SERVERS)

IONOS_HOSTING_RECORD = "pulumi-python:dynamic/spaced:IonosHostingRecord"
CLOUDFLARE_DNS_RECORD = "cloudflare:index/dnsRecord:DnsRecord"
CLOUDFLARE_RECORD = "cloudflare:index/record:Record"
ROUTE53_RECORD = "aws:route53/record:Record"
DO_DNS_RECORD = "digitalocean:index/dnsRecord:DnsRecord"
DO_DOMAIN = "digitalocean:index/domain:Domain"
IONOS_CLOUD_DNS_RECORD = "ionoscloud:dns/record:Record"
IONOS_CLOUD_DNS_ZONE = "ionoscloud:dns/zone:Zone"
HCLOUD_ZONE_RECORD = "hcloud:index/zoneRecord:ZoneRecord"
HCLOUD_ZONE_RRSET = "hcloud:index/zoneRrset:ZoneRrset"
HCLOUD_ZONE = "hcloud:index/zone:Zone"
# Backends whose record name is the full name (FQDN) vs. relative to the zone resource.
FQDN_NAMED_RECORDS = (CLOUDFLARE_DNS_RECORD, CLOUDFLARE_RECORD, ROUTE53_RECORD)
RELATIVE_NAMED_RECORDS = (DO_DNS_RECORD, IONOS_CLOUD_DNS_RECORD, HCLOUD_ZONE_RECORD, HCLOUD_ZONE_RRSET)
DNS_TYPES = (
    IONOS_HOSTING_RECORD,
    *FQDN_NAMED_RECORDS,
    *RELATIVE_NAMED_RECORDS,
    DO_DOMAIN,
    IONOS_CLOUD_DNS_ZONE,
    HCLOUD_ZONE,
)

REMOTE_COMMAND = "command:remote:Command"
DYNAMIC_PREFIX = "pulumi-python:dynamic/"


# --- small helpers ---------------------------------------------------------------------------------


def _seq(value: Any) -> list[Any]:
    """A list from a list-like property (None and scalars become [] / [value])."""
    if value is None:
        return []
    if isinstance(value, str | bytes) or isinstance(value, Mapping):
        return [value]
    if isinstance(value, Sequence):
        return list(value)
    return [value]


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def is_anywhere(source: Any) -> bool:
    """True for a source that means "the whole internet": 0.0.0.0/0, ::/0 (any /0 network)."""
    if not isinstance(source, str) or not source.strip():
        return False
    try:
        return ipaddress.ip_network(source.strip(), strict=False).prefixlen == 0
    except ValueError:
        return source.strip().lower() in ("any", "anywhere", "*")


def _port_range(value: Any) -> tuple[int, int] | None:
    """A (low, high) range from "22", "80-85", 22, "any"/"all"/None (all ports); None if unparsable."""
    if value is None:
        return ALL_PORTS
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value), int(value)
    text = str(value).strip().lower()
    if text in ("", "any", "all", "*"):
        return ALL_PORTS
    low, _, high = text.partition("-")
    try:
        return int(low), int(high or low)
    except ValueError:
        return None


def _watched_in(low: int | None, high: int | None) -> list[int]:
    low = ALL_PORTS[0] if low is None else low
    high = ALL_PORTS[1] if high is None else high
    # AWS writes "all ports" as from 0 to 0 with protocol -1; callers handle the protocol first.
    return [port for port in WATCHED_PORTS if low <= port <= high]


def _protocol_kind(protocol: Any) -> str:
    """'all' (every protocol/port), 'ports' (tcp/udp: has ports) or 'other' (icmp, esp...: no ports)."""
    text = "all" if protocol is None else str(protocol).strip().lower()
    if text in _ALL_PROTOCOLS:
        return "all"
    return "ports" if text in _PORT_PROTOCOLS else "other"


def _describe_ports(ports: Iterable[int]) -> str:
    return ", ".join(f"{port} ({WATCHED_PORTS[port]})" for port in sorted(set(ports)))


def _open_rule(
    what: str, protocol: Any, low: int | None, high: int | None, sources: Iterable[Any]
) -> str | None:
    """A violation message if this allow rule opens a watched port to the whole internet."""
    open_sources = sorted({str(s).strip() for s in sources if is_anywhere(s)})
    if not open_sources:
        return None
    kind = _protocol_kind(protocol)
    if kind == "other":
        return None
    ports = _watched_in(*ALL_PORTS) if kind == "all" else _watched_in(low, high)
    if not ports:
        return None
    return (
        f"{what} opens {_describe_ports(ports)} to {', '.join(open_sources)}: SSH is for the admin ranges "
        "(spaced:topology admin_ssh_cidrs) and Swarm traffic runs inside the WireGuard mesh; "
        "restrict the source ranges"
    )


# --- rule 1: no SSH / Swarm ports open to the internet -------------------------------------------


def exposed_admin_ports(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """Violations for firewall / security-group rules that open SSH or Swarm ports to 0.0.0.0/0 or ::/0."""
    found: list[str | None] = []
    if resource_type == AWS_SECURITY_GROUP:
        for index, rule in enumerate(_seq(props.get("ingress"))):
            rule = _map(rule)
            sources = _seq(rule.get("cidrBlocks")) + _seq(rule.get("ipv6CidrBlocks"))
            found.append(
                _open_rule(
                    f"ingress[{index}]",
                    rule.get("protocol"),
                    rule.get("fromPort"),
                    rule.get("toPort"),
                    sources,
                )
            )
    elif resource_type == AWS_SECURITY_GROUP_RULE:
        if str(props.get("type", "")).lower() == "ingress":
            sources = _seq(props.get("cidrBlocks")) + _seq(props.get("ipv6CidrBlocks"))
            found.append(
                _open_rule(
                    "the ingress rule",
                    props.get("protocol"),
                    props.get("fromPort"),
                    props.get("toPort"),
                    sources,
                )
            )
    elif resource_type == AWS_INGRESS_RULE:
        sources = [props.get("cidrIpv4"), props.get("cidrIpv6")]
        found.append(
            _open_rule(
                "the ingress rule",
                props.get("ipProtocol"),
                props.get("fromPort"),
                props.get("toPort"),
                sources,
            )
        )
    elif resource_type == GCP_FIREWALL:
        found.extend(_gcp_firewall(props))
    elif resource_type == HCLOUD_FIREWALL:
        for index, rule in enumerate(_seq(props.get("rules"))):
            rule = _map(rule)
            if str(rule.get("direction", "in")).lower() != "in":
                continue
            found.append(
                _open_ranged(f"rules[{index}]", rule.get("protocol"), rule.get("port"), rule.get("sourceIps"))
            )
    elif resource_type == DO_FIREWALL:
        for index, rule in enumerate(_seq(props.get("inboundRules"))):
            rule = _map(rule)
            found.append(
                _open_ranged(
                    f"inboundRules[{index}]",
                    rule.get("protocol"),
                    rule.get("portRange"),
                    rule.get("sourceAddresses"),
                )
            )
    elif resource_type in (IONOS_FIREWALL, IONOS_NSG_FIREWALL):
        found.append(_ionos_rule("the firewall rule", props))
    elif resource_type in IONOS_SERVERS:
        for index, rule in enumerate(_seq(_map(props.get("nic")).get("firewalls"))):
            found.append(_ionos_rule(f"nic.firewalls[{index}]", _map(rule)))
    return [message for message in found if message]


def _open_ranged(what: str, protocol: Any, port: Any, sources: Any) -> str | None:
    port_range = _port_range(port)
    low, high = port_range if port_range is not None else ALL_PORTS
    return _open_rule(what, protocol, low, high, _seq(sources))


def _gcp_firewall(props: Mapping[str, Any]) -> list[str | None]:
    if str(props.get("direction") or "INGRESS").upper() != "INGRESS" or props.get("disabled"):
        return []
    sources = _seq(props.get("sourceRanges"))
    if not sources and not _seq(props.get("sourceTags")) and not _seq(props.get("sourceServiceAccounts")):
        # GCP's default for an ingress rule without any source is 0.0.0.0/0.
        sources = ["0.0.0.0/0"]
    found: list[str | None] = []
    for index, allow in enumerate(_seq(props.get("allows"))):
        allow = _map(allow)
        ports = _seq(allow.get("ports")) or [None]  # no ports listed = every port
        for port in ports:
            found.append(_open_ranged(f"allows[{index}]", allow.get("protocol"), port, sources))
    return found


def _ionos_rule(what: str, rule: Mapping[str, Any]) -> str | None:
    if str(rule.get("type") or "INGRESS").upper() != "INGRESS":
        return None
    source = rule.get("sourceIp")
    # IONOS: no source IP means every source.
    sources = ["0.0.0.0/0"] if source in (None, "") else [source if "/" in str(source) else f"{source}/32"]
    return _open_rule(
        what, rule.get("protocol"), rule.get("portRangeStart"), rule.get("portRangeEnd"), sources
    )


# --- rule 2: every server behind a firewall (stack-wide) ------------------------------------------


@dataclass(frozen=True)
class StackResource:
    """What the stack rule needs of one resource: its outputs and which resources its properties use."""

    urn: str
    type: str
    props: Mapping[str, Any]
    dependencies: tuple[str, ...] = ()
    property_dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def refs(self, prop: str) -> tuple[str, ...]:
        """URNs feeding `prop` (falling back to all dependencies when the engine gave none per property)."""
        return tuple(self.property_dependencies.get(prop, ())) or (
            self.dependencies if self.props.get(prop) else ()
        )


def _labels_match(selector: str, labels: Mapping[str, Any]) -> bool:
    """Hetzner label selectors: comma-separated `key`, `key=value` or `key!=value` terms, all must hold."""
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        if "!=" in term:
            key, value = (p.strip() for p in term.split("!=", 1))
            if str(labels.get(key)) == value:
                return False
        elif "=" in term:
            key, value = (p.strip() for p in term.split("=", 1))
            if str(labels.get(key)) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _is_firewalled(server: StackResource, firewalls: Sequence[StackResource]) -> bool:
    props = server.props
    if server.type == AWS_INSTANCE:
        return bool(_seq(props.get("vpcSecurityGroupIds")) or _seq(props.get("securityGroups")))
    if server.type == GCP_INSTANCE:
        tags = {str(t) for t in _seq(props.get("tags"))}
        accounts = {str(_map(props.get("serviceAccount")).get("email") or "")} - {""}
        for fw in firewalls:
            if fw.type != GCP_FIREWALL or fw.props.get("disabled"):
                continue
            if str(fw.props.get("direction") or "INGRESS").upper() != "INGRESS":
                continue
            targets = {str(t) for t in _seq(fw.props.get("targetTags"))}
            target_accounts = {str(a) for a in _seq(fw.props.get("targetServiceAccounts"))}
            # A rule without targets applies to every instance of its network.
            if targets & tags or target_accounts & accounts or not (targets or target_accounts):
                return True
        return False
    if server.type == HCLOUD_SERVER:
        if _seq(props.get("firewallIds")):
            return True
        labels = _map(props.get("labels"))
        for fw in firewalls:
            if fw.type == HCLOUD_FIREWALL_ATTACHMENT:
                if server.urn in fw.refs("serverIds"):
                    return True
                if any(_labels_match(str(s), labels) for s in _seq(fw.props.get("labelSelectors"))):
                    return True
            elif fw.type == HCLOUD_FIREWALL:
                if _seq(fw.props.get("applyTos")) and server.urn in fw.refs("applyTos"):
                    return True
                selectors = [_map(a).get("labelSelector") for a in _seq(fw.props.get("applyTos"))]
                if any(s and _labels_match(str(s), labels) for s in selectors):
                    return True
        return False
    if server.type == DO_DROPLET:
        tags = {str(t) for t in _seq(props.get("tags"))}
        for fw in firewalls:
            if fw.type == DO_FIREWALL and (
                server.urn in fw.refs("dropletIds") or tags & {str(t) for t in _seq(fw.props.get("tags"))}
            ):
                return True
        return False
    if server.type in IONOS_SERVERS:
        nic = _map(props.get("nic"))
        if (
            nic.get("firewallActive")
            or _seq(nic.get("securityGroupsIds"))
            or _seq(props.get("securityGroupsIds"))
        ):
            return True
        return any(
            fw.type == IONOS_NIC and fw.props.get("firewallActive") and server.urn in fw.refs("serverId")
            for fw in firewalls
        )
    return True


FIREWALL_TYPES = (
    AWS_SECURITY_GROUP,
    GCP_FIREWALL,
    HCLOUD_FIREWALL,
    HCLOUD_FIREWALL_ATTACHMENT,
    DO_FIREWALL,
    IONOS_NIC,
)


def servers_without_firewall(resources: Sequence[StackResource]) -> list[tuple[str, str]]:
    """(urn, message) for each server that no firewall or security group of the stack covers."""
    firewalls = [r for r in resources if r.type in FIREWALL_TYPES]
    how = {
        AWS_INSTANCE: "give it vpc_security_group_ids",
        GCP_INSTANCE: "give it a network tag that a compute.Firewall targets (target_tags)",
        HCLOUD_SERVER: "set firewall_ids or attach it with hcloud.FirewallAttachment / Firewall apply_tos",
        DO_DROPLET: "list it in a digitalocean.Firewall's droplet_ids (or share a tag with the firewall)",
    }
    ionos_how = "set nic.firewall_active (with nic.firewalls rules) or attach a security group"
    return [
        (
            server.urn,
            f"server {server.urn.rsplit('::', 1)[-1]} ({server.type}) is not behind any firewall: "
            f"{how.get(server.type, ionos_how)}",
        )
        for server in resources
        if server.type in SERVER_TYPES and not _is_firewalled(server, firewalls)
    ]


# --- rule 3: DNS records inside the zone ----------------------------------------------------------


def _norm(name: Any) -> str:
    return str(name).strip().rstrip(".").lower()


def _inside(fqdn: str, zone: str) -> bool:
    return fqdn == zone or fqdn.endswith("." + zone)


def dns_record_outside_zone(resource_type: str, props: Mapping[str, Any], zone: str) -> list[str]:
    """Violations for DNS records (and zones) that are not inside `zone`.

    - A zone given by name (IonosHostingRecord `zone`, DigitalOcean `domain`, Hetzner `zone`, IONOS
      Cloud `zoneName`) must be `zone` or a sub-zone of it.
    - Cloudflare and Route 53 records carry the full name: it must be `zone` or end in `.<zone>`
      (our backends always write full names there, so a relative name is a mistake too).
    - Relative-named records (DigitalOcean, IONOS Cloud, Hetzner) must not repeat the zone or be
      absolute (end with '.'), which would publish `<name>.<zone>.<zone>` or a name elsewhere.
    - IonosHostingRecord: its FQDN (from `record_name` and `zone`, or its `fqdn` output) is inside.
    """
    zone = _norm(zone)
    found: list[str] = []
    zone_names = {
        IONOS_HOSTING_RECORD: "zone",
        DO_DNS_RECORD: "domain",
        DO_DOMAIN: "name",
        HCLOUD_ZONE_RECORD: "zone",
        HCLOUD_ZONE_RRSET: "zone",
        HCLOUD_ZONE: "name",
        IONOS_CLOUD_DNS_ZONE: "zoneName",
    }
    zone_prop = zone_names.get(resource_type)
    record_zone = props.get(zone_prop) if zone_prop else None
    # Hetzner's `zone` may be an id (digits) instead of a name: only names can be compared.
    if record_zone and "." in str(record_zone) and not _inside(_norm(record_zone), zone):
        found.append(
            f"{zone_prop} {str(record_zone)!r} is not the managed zone {zone!r} (or a sub-zone of it): "
            "DNS records must stay in spaced:topology `domain`"
        )
    name = props.get("name")
    if resource_type in FQDN_NAMED_RECORDS and name is not None:
        fqdn = zone if str(name).strip() == "@" else _norm(name)
        if not _inside(fqdn, zone):
            found.append(
                f"record name {str(name)!r} is not inside zone {zone!r}: write the full name, "
                f"e.g. 'www.{zone}' (or '{zone}' for the apex)"
            )
    elif resource_type in RELATIVE_NAMED_RECORDS and name is not None:
        text = str(name).strip()
        base = _norm(record_zone) if record_zone and "." in str(record_zone) else zone
        if text.endswith("."):
            found.append(f"record name {text!r} is absolute; give it relative to the zone ('@' for the apex)")
        elif _inside(_norm(text), base) and text not in ("@", ""):
            found.append(
                f"record name {text!r} already ends with the zone and would publish {_norm(text)}.{base}; "
                "give it relative to the zone ('@' for the apex)"
            )
    elif resource_type == IONOS_HOSTING_RECORD:
        base = _norm(record_zone) if record_zone else zone
        names = [props.get("fqdn")]
        record_name = props.get("record_name")
        if record_name is not None:
            text = _norm(record_name)
            names.append(
                base if text in ("@", "", base) else text if _inside(text, base) else f"{text}.{base}"
            )
        for fqdn in {_norm(n) for n in names if n}:
            if not _inside(fqdn, zone):
                found.append(f"record {fqdn!r} is not inside zone {zone!r}")
    return found


# --- rule 4: secrets marked secret ----------------------------------------------------------------

# Scripts that print secret material on stdout (join tokens, fresh keys).
_PRINTS_SECRET = re.compile(r"join-token|\bgenkey\b|genpkey|openssl\s+rand|--show-token", re.I)
# Literal secret material: a Swarm join token, a WireGuard private key line, a PEM private key.
_SECRET_LITERAL = re.compile(
    r"SWMTKN-1-[A-Za-z0-9]{20,}|PrivateKey\s*=\s*[A-Za-z0-9+/]{42,43}=|-----BEGIN [A-Z ]*PRIVATE KEY-----"
)
_SECRET_NAME = re.compile(r"(api_?key|token|private_?key|password|passphrase|secret)", re.I)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _listed(prop: str, additional_secret_outputs: Iterable[str]) -> bool:
    listed = {_snake(p) for p in additional_secret_outputs}
    return _snake(prop) in listed


def unmarked_secrets(
    resource_type: str, props: Mapping[str, Any], additional_secret_outputs: Sequence[str]
) -> list[str]:
    """Violations for secret-carrying values missing from `additional_secret_outputs`.

    The policy sees property values with their secret wrappers removed, so "is it secret?" cannot be
    read off a value; the checkable rule is on the resource options instead:

    - `command:remote:Command`: a script (create/update/delete) that prints secrets (`join-token`,
      `wg genkey`, ...) must list `stdout`; a script that contains secret material itself (a Swarm
      join token `SWMTKN-1-...`, a WireGuard `PrivateKey = ...` line, a PEM private key) must list
      that script's property; `stdin` with such material must list `stdin` (stdin is how this
      project hands tokens and keys to servers); `environment` entries named like a secret
      (TOKEN, PASSWORD, ...) or holding such material need `environment`. Values still unknown in a
      preview are checked on `pulumi up`.
    - our dynamic resources (`pulumi-python:dynamic/...`): every property named like a secret
      (api_key, token, private_key, password, secret) must be listed.
    """
    found: list[str] = []
    aso = list(additional_secret_outputs or [])

    def need(prop: str, why: str) -> None:
        if not _listed(prop, aso):
            found.append(f"'{prop}' must be in additional_secret_outputs: {why}")

    if resource_type == REMOTE_COMMAND:
        for script_prop in ("create", "update", "delete"):
            script = props.get(script_prop)
            if not isinstance(script, str):
                continue
            printed = _PRINTS_SECRET.search(script)
            if printed:
                need("stdout", f"the {script_prop} script prints secret material ({printed[0]!r})")
            if _SECRET_LITERAL.search(script):
                need(script_prop, f"the {script_prop} script contains a key or join token; pass it on stdin")
        stdin = props.get("stdin")
        if isinstance(stdin, str) and _SECRET_LITERAL.search(stdin):
            need("stdin", "stdin carries a key or join token")
        environment = _map(props.get("environment"))
        secret_env = sorted(
            str(k)
            for k, v in environment.items()
            if _SECRET_NAME.search(str(k)) or _SECRET_LITERAL.search(str(v))
        )
        if secret_env:
            need("environment", f"environment has secret entries {', '.join(secret_env)}")
    elif resource_type.startswith(DYNAMIC_PREFIX):
        for prop in sorted(props):
            if not prop.startswith("__") and _SECRET_NAME.search(prop):
                need(prop, "it is named like a secret")
    return found
