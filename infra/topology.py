"""The typed topology model: what `spaced:topology` in stacks/Pulumi.<env>.yaml may say.

`load_topology` validates a raw mapping and either returns a `Topology` or raises one
`TopologyError` that lists every problem as `<path>: <message>`, so a bad stack file fails
before any resource exists. Everything here is pure: no Pulumi, no I/O.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

# Curated region lists: a typo fails here with the list instead of minutes later at the cloud API.
# Extend a list when a provider opens a region we want; the cloud API stays the final judge.
REGIONS: dict[str, tuple[str, ...]] = {
    "aws": (
        "af-south-1",
        "ap-east-1",
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-northeast-3",
        "ap-south-1",
        "ap-southeast-1",
        "ap-southeast-2",
        "ca-central-1",
        "eu-central-1",
        "eu-central-2",
        "eu-north-1",
        "eu-south-1",
        "eu-south-2",
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
        "me-south-1",
        "sa-east-1",
        "us-east-1",
        "us-east-2",
        "us-west-1",
        "us-west-2",
    ),
    "gcp": (
        "asia-east1",
        "asia-northeast1",
        "asia-south1",
        "asia-southeast1",
        "australia-southeast1",
        "europe-central2",
        "europe-north1",
        "europe-southwest1",
        "europe-west1",
        "europe-west2",
        "europe-west3",
        "europe-west4",
        "europe-west6",
        "europe-west8",
        "europe-west9",
        "europe-west10",
        "europe-west12",
        "northamerica-northeast1",
        "southamerica-east1",
        "us-central1",
        "us-east1",
        "us-east4",
        "us-east5",
        "us-south1",
        "us-west1",
        "us-west2",
        "us-west3",
        "us-west4",
    ),
    "hetzner": ("ash", "fsn1", "hel1", "hil", "nbg1", "sin"),
    "digitalocean": (
        "ams3",
        "atl1",
        "blr1",
        "fra1",
        "lon1",
        "nyc1",
        "nyc2",
        "nyc3",
        "sfo2",
        "sfo3",
        "sgp1",
        "syd1",
        "tor1",
    ),
    "ionos": (
        "de/fkb",
        "de/fra",
        "de/fra/2",
        "de/txl",
        "es/vit",
        "fr/par",
        "gb/bhx",
        "gb/lhr",
        "us/ewr",
        "us/las",
        "us/mci",
    ),
}
PROVIDER_LABELS = {
    "aws": "AWS",
    "gcp": "GCP",
    "hetzner": "Hetzner",
    "digitalocean": "DigitalOcean",
    "ionos": "IONOS Cloud",
    "existing": "existing",
}
PROVIDERS: tuple[str, ...] = ("aws", "digitalocean", "existing", "gcp", "hetzner", "ionos")
DNS_PROVIDERS: tuple[str, ...] = (
    "cloudflare",
    "digitalocean",
    "hetzner",
    "ionos-cloud",
    "ionos-hosting",
    "none",
    "route53",
)
LOCAL_ENVIRONMENT = "local"


@dataclass(frozen=True)
class Credential:
    """Where one provider's credential may come from: Pulumi config keys or environment variables."""

    config_keys: tuple[str, ...]
    env_vars: tuple[str, ...]
    how_to_set: str


# Credential name -> where to find it. Node providers use their own name; DNS providers use `dns:<name>`.
CREDENTIALS: dict[str, Credential] = {
    "hetzner": Credential(
        ("hcloud:token",),
        ("HCLOUD_TOKEN",),
        "pulumi config set --secret hcloud:token <token> (or export HCLOUD_TOKEN)",
    ),
    "aws": Credential(
        ("aws:accessKey", "aws:profile"),
        ("AWS_ACCESS_KEY_ID", "AWS_PROFILE"),
        "pulumi config set aws:accessKey <id> && "
        "pulumi config set --secret aws:secretKey <key> "
        "(or export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)",
    ),
    "gcp": Credential(
        ("gcp:project",),
        ("GOOGLE_PROJECT", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"),
        "pulumi config set gcp:project <project-id> and pulumi config set --secret "
        'gcp:credentials "$(cat key.json)" (or export GOOGLE_PROJECT and '
        "GOOGLE_APPLICATION_CREDENTIALS)",
    ),
    "digitalocean": Credential(
        ("digitalocean:token",),
        ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN"),
        "pulumi config set --secret digitalocean:token <token> (or export DIGITALOCEAN_TOKEN)",
    ),
    "ionos": Credential(
        ("ionoscloud:token", "ionoscloud:username"),
        ("IONOS_TOKEN", "IONOS_USERNAME"),
        "pulumi config set --secret ionoscloud:token <token> (or export IONOS_TOKEN)",
    ),
    "ssh": Credential(
        ("spaced:sshPrivateKey",),
        (),
        "pulumi config set --secret spaced:sshPrivateKey < ~/.ssh/spaced_deploy "
        "(the private half of ssh.public_key)",
    ),
    "dns:cloudflare": Credential(
        ("cloudflare:apiToken",),
        ("CLOUDFLARE_API_TOKEN",),
        "pulumi config set --secret cloudflare:apiToken <token> (or export CLOUDFLARE_API_TOKEN)",
    ),
    "dns:ionos-hosting": Credential(
        ("spaced:ionosHostingApiKey",),
        (),
        "pulumi config set --secret spaced:ionosHostingApiKey <prefix.secret>",
    ),
}
# DNS providers served by the same account (and credential) as a server provider.
DNS_CREDENTIAL_ALIASES = {
    "route53": "aws",
    "digitalocean": "digitalocean",
    "ionos-cloud": "ionos",
    "hetzner": "hetzner",
}

_NODE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,40}[a-z0-9]$")
_DNS_LABEL = re.compile(r"^(\*|[a-z0-9_]([a-z0-9-]{0,61}[a-z0-9])?)$")


class TopologyError(ValueError):
    """The topology config is invalid; the message lists every problem as `<path>: <message>`."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"invalid topology (spaced:topology in stacks/Pulumi.<stack>.yaml), "
            f"{len(self.problems)} problem(s):\n{lines}"
        )


def _valid_list(values: Iterable[str]) -> str:
    return ", ".join(sorted(values))


def _check_region(provider: str, region: str) -> str:
    if region not in REGIONS[provider]:
        raise ValueError(
            f"unknown {PROVIDER_LABELS[provider]} region {region!r}; valid: {_valid_list(REGIONS[provider])}"
        )
    return region


def _region_validator(provider: str) -> Any:
    def check(cls: type, value: str) -> str:
        return _check_region(provider, value)

    return field_validator("region")(classmethod(check))  # type: ignore[arg-type]


class _Model(BaseModel):
    # Unknown keys are errors: a typo like `regoin:` must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class SshSettings(_Model):
    """The deploy user every node gets and the public half of its key (the private half is a secret)."""

    user: str = "deploy"
    public_key: str
    # Keys that may log in besides `public_key`: during a rotation, the next (or the previous) key.
    extra_public_keys: tuple[str, ...] = ()
    # Use a key already registered in the account (name or id) instead of creating the deploy key.
    existing_keys: dict[Literal["hetzner", "digitalocean"], str] = Field(default_factory=dict)

    @field_validator("user")
    @classmethod
    def _user_not_root(cls, value: str) -> str:
        if value == "root":
            raise ValueError("the deploy user must not be root; use e.g. 'deploy' (root login is disabled)")
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", value):
            raise ValueError(f"{value!r} is not a valid Linux user name (lowercase letters, digits, -, _)")
        return value

    @field_validator("public_key")
    @classmethod
    def _public_key_shape(cls, value: str) -> str:
        return _openssh_public_key(value, "'ssh-ed25519 AAAA... deploy@spaced'")

    @field_validator("extra_public_keys")
    @classmethod
    def _extra_keys_shape(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_openssh_public_key(key, "'ssh-ed25519 AAAA... deploy@spaced'") for key in value)

    @property
    def authorized_keys(self) -> tuple[str, ...]:
        """Every key the deploy user's authorized_keys holds: `public_key` first, then the extra ones."""
        return tuple(dict.fromkeys((self.public_key, *self.extra_public_keys)))


def _openssh_public_key(value: str, example: str) -> str:
    """`value` stripped if it looks like an OpenSSH public key line; ValueError naming `example`."""
    parts = value.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-")) or not parts[1].startswith("AAAA"):
        raise ValueError(f"expected an OpenSSH public key line like {example}")
    return value.strip()


class MeshSettings(_Model):
    """The WireGuard mesh: a private IPv4 range and the UDP port every node listens on."""

    cidr: str = "10.210.0.0/24"
    listen_port: int = Field(default=51820, ge=1, le=65535)

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        network = _parse_network(value)
        if network.version != 4 or not network.is_private:
            raise ValueError(f"{value!r} must be a private IPv4 range, e.g. 10.210.0.0/24")
        return value


class DnsSettings(_Model):
    """Which DNS backend writes the records; adopt_existing takes over records that already exist."""

    provider: str = "none"
    adopt_existing: bool = False
    ttl: int = Field(default=300, ge=60, le=86400)
    # Publish AAAA records for nodes with an IPv6 address. Off by default: an AAAA record sends
    # IPv6 clients to the edge, which must then serve 80/443 over IPv6 too (Docker publishes on
    # IPv6 only with ip6tables enabled), or those clients fail.
    ipv6: bool = False

    @field_validator("provider")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in DNS_PROVIDERS:
            raise ValueError(f"unknown DNS provider {value!r}; valid: {_valid_list(DNS_PROVIDERS)}")
        return value


class _NodeBase(_Model):
    name: str
    region: str
    manager: bool = False
    edge: bool = False
    # Names relative to the zone ("@" = apex, "aws", "api.dev") or fully qualified with a trailing dot.
    dns: tuple[str, ...] = ()
    labels: dict[str, str] = Field(default_factory=dict)
    mesh_ip: str | None = None  # pin a mesh address; otherwise the mesh plan allocates one

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NODE_NAME.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a valid node name: 2-42 lowercase letters, digits and '-', "
                "starting with a letter (it names cloud resources)"
            )
        return value

    @field_validator("mesh_ip")
    @classmethod
    def _mesh_ip(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.IPv4Address(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an IPv4 address") from None
        return value


class HetznerNode(_NodeBase):
    """A Hetzner Cloud server (pulumi_hcloud)."""

    provider: Literal["hetzner"]
    # cx22 and its generation are no longer sold (Hetzner changelog 2025-10-16, removed January 2026).
    size: str = "cx23"
    image: str = "debian-12"

    check_region = _region_validator("hetzner")


class AwsNode(_NodeBase):
    """An EC2 instance with its own security group, optionally behind an Elastic IP."""

    provider: Literal["aws"]
    size: str = "t3.small"
    static_ip: bool = True
    image: str | None = None  # an AMI id; default: the newest official Debian 12 AMI of the region
    disk_gb: int = Field(default=20, ge=8, le=1024)

    check_region = _region_validator("aws")


class GcpNode(_NodeBase):
    """A Compute Engine instance in a zone of `region`, with an optional static external address."""

    provider: Literal["gcp"]
    zone: str | None = None  # default: <region>-a
    size: str = "e2-small"
    static_ip: bool = False
    # Ubuntu, not Debian: Debian's GCE images have no cloud-init and would ignore the user data.
    image: str = "ubuntu-os-cloud/ubuntu-2404-lts-amd64"
    disk_gb: int = Field(default=20, ge=10, le=1024)

    check_region = _region_validator("gcp")

    @property
    def effective_zone(self) -> str:
        return self.zone or f"{self.region}-a"


class DigitalOceanNode(_NodeBase):
    """A DigitalOcean droplet with a cloud firewall."""

    provider: Literal["digitalocean"]
    size: str = "s-1vcpu-1gb"
    image: str = "debian-12-x64"

    check_region = _region_validator("digitalocean")


class IonosNode(_NodeBase):
    """An IONOS Cloud server in its own virtual data center, with a reserved public IP."""

    provider: Literal["ionos"]
    cores: int = Field(default=2, ge=1, le=62)
    ram_mb: int = Field(default=2048, ge=1024, le=245760)
    disk_gb: int = Field(default=40, ge=10, le=4096)
    image: str = "debian:latest"

    check_region = _region_validator("ionos")

    @field_validator("ram_mb")
    @classmethod
    def _ram_step(cls, value: int) -> int:
        if value % 256:
            raise ValueError(f"{value} is not a multiple of 256 MB (an IONOS Cloud requirement)")
        return value


class ExistingNode(_NodeBase):
    """A server that already exists (e.g. an IONOS VPS): adopted by IP, managed over SSH only."""

    provider: Literal["existing"]
    vendor: str = "unknown"  # informational: who runs the machine
    public_ipv4: str
    public_ipv6: str | None = None
    # The server's SSH host key, read once with `ssh-keyscan -t ecdsa <ip>` (README: Go's SSH client,
    # which pulumi_command uses, negotiates ECDSA first); every connection pins it, and a server that
    # presents another key stops the run.
    host_key: str

    @field_validator("host_key")
    @classmethod
    def _host_key(cls, value: str) -> str:
        parts = value.split()
        if parts and not parts[0].startswith(("ssh-", "ecdsa-")):
            parts = parts[1:]  # an `ssh-keyscan` line starts with the host
        return _openssh_public_key(
            " ".join(parts[:2]), "'ecdsa-sha2-nistp256 AAAA...' (ssh-keyscan -t ecdsa <ip>)"
        )

    @field_validator("public_ipv4")
    @classmethod
    def _v4(cls, value: str) -> str:
        try:
            address = ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 address") from None
        if not address.is_global:
            raise ValueError(
                f"{value!r} is not a public address; an existing node is adopted by its public IP"
            )
        return value

    @field_validator("public_ipv6")
    @classmethod
    def _v6(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.IPv6Address(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an IPv6 address") from None
        return value


NodeModel = HetznerNode | AwsNode | GcpNode | DigitalOceanNode | IonosNode | ExistingNode
Node = Annotated[NodeModel, Field(discriminator="provider")]
_NODE_ADAPTER: TypeAdapter[Any] = TypeAdapter(Node)


class _Settings(_Model):
    """Everything in the topology except the nodes (validated node by node, see load_topology)."""

    environment: str
    domain: str | None = None
    dns: DnsSettings = Field(default_factory=DnsSettings)
    admin_ssh_cidrs: tuple[str, ...] = ()
    ssh: SshSettings | None = None
    mesh: MeshSettings = Field(default_factory=MeshSettings)
    acme_email: str | None = None

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,20}", value):
            raise ValueError(f"{value!r} is not a valid environment name (lowercase letters, digits, '-')")
        return value

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        domain = value.lower().rstrip(".")
        labels = domain.split(".")
        if len(labels) < 2 or not all(_DNS_LABEL.fullmatch(label) and label != "*" for label in labels):
            raise ValueError(f"{value!r} is not a DNS zone name like 'spaced.fun'")
        return domain

    @field_validator("admin_ssh_cidrs")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        problems = []
        for index, cidr in enumerate(value):
            try:
                _parse_network(cidr)
            except ValueError as error:
                problems.append(f"[{index}] {error}")
        if problems:
            raise ValueError("; ".join(problems))
        return value


class Topology(_Settings):
    """A validated topology. Build it with `load_topology`, which reports every problem at once."""

    nodes: tuple[Node, ...] = ()

    @property
    def is_local(self) -> bool:
        return self.environment == LOCAL_ENVIRONMENT

    @property
    def managers(self) -> list[NodeModel]:
        return [node for node in self.nodes if node.manager]

    @property
    def edges(self) -> list[NodeModel]:
        return [node for node in self.nodes if node.edge]

    def node(self, name: str) -> NodeModel:
        """The node called `name`; KeyError lists the names that exist."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r}; nodes: {', '.join(n.name for n in self.nodes)}")

    def fqdn(self, name: str) -> str:
        """The fully qualified form of a node's (already zone-relative) DNS name."""
        assert self.domain is not None
        return self.domain if name == "@" else f"{name}.{self.domain}"

    def mesh_addresses(self) -> dict[str, str]:
        """Node name -> its mesh address (`allocate_mesh_addresses` over the nodes and their pins)."""
        return allocate_mesh_addresses(
            [node.name for node in self.nodes],
            self.mesh.cidr,
            {node.name: node.mesh_ip for node in self.nodes if node.mesh_ip},
        )

    @property
    def site_domain(self) -> str | None:
        """The public name of the application: the first DNS name of the first edge node."""
        for node in self.edges:
            if node.dns:
                return self.fqdn(node.dns[0])
        return self.domain


def allocate_mesh_addresses(
    node_names: Sequence[str], cidr: str, pinned: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Give every node a mesh address in `cidr`, keyed by node name in the order given.

    Stable without stored state: an unpinned node's address is picked from a hash of its name
    (linear probing on collision, names taken in sorted order), so adding or removing other
    nodes does not move it unless their hashes collide. `pinned` fixes addresses outright (for
    example to keep an address a running swarm already advertises).

    The inputs are those of a topology `load_topology` accepted: it is the one place that checks
    the range, its capacity and the pins (and names the field at fault). ValueError only if that
    contract is broken (more names than host addresses).
    """
    network = ipaddress.IPv4Network(cidr)
    usable = network.num_addresses - 2  # the network and broadcast addresses are never handed out
    names = list(node_names)
    if len(names) > usable:
        raise ValueError(f"mesh.cidr {cidr} has {usable} host addresses for {len(names)} nodes")
    taken = {ipaddress.IPv4Address(address): name for name, address in (pinned or {}).items()}
    addresses = {name: ipaddress.IPv4Address(address) for name, address in (pinned or {}).items()}
    first_host = int(network.network_address) + 1
    for name in sorted(n for n in names if n not in addresses):
        slot = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % usable
        for probe in range(usable):
            candidate = ipaddress.IPv4Address(first_host + (slot + probe) % usable)
            if candidate not in taken:
                taken[candidate] = name
                addresses[name] = candidate
                break
    return {name: str(addresses[name]) for name in names}


def required_credentials(topology: Topology) -> dict[str, str]:
    """Credential name -> the config path of the first thing that needs it."""
    needed: dict[str, str] = {}
    for index, node in enumerate(topology.nodes):
        if node.provider != "existing":
            needed.setdefault(node.provider, f"nodes[{index}].provider")
    if topology.nodes:
        needed.setdefault("ssh", "ssh")  # mesh, swarm and adopted nodes are driven over SSH
    if topology.dns.provider != "none":
        name = DNS_CREDENTIAL_ALIASES.get(topology.dns.provider, f"dns:{topology.dns.provider}")
        needed.setdefault(name, "dns.provider")
    return needed


def relative_dns_name(name: str, domain: str) -> str:
    """Normalise a DNS name to zone-relative form; ValueError when it lies outside the zone."""
    lowered = name.lower()
    if lowered in ("@", f"{domain}."):
        return "@"
    if lowered.endswith("."):
        if not lowered.endswith(f".{domain}."):
            raise ValueError(
                f"{name!r} is outside the zone {domain!r}; use a name relative to the zone "
                f"(e.g. 'www') or a fully qualified name ending in '.{domain}.'"
            )
        relative = lowered[: -len(domain) - 2]
    elif lowered == domain:
        return "@"
    elif lowered.endswith(f".{domain}"):
        relative = lowered[: -len(domain) - 1]
    else:
        relative = lowered
    if not all(_DNS_LABEL.fullmatch(label) for label in relative.split(".")):
        raise ValueError(f"{name!r} is not a valid DNS name (labels of letters, digits and '-')")
    return relative


def _parse_network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as error:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not a CIDR range like 198.51.100.0/24 ({error})") from None
        raise ValueError(f"{value!r} has host bits set; did you mean {loose}?") from None


def _path(prefix: str, loc: Sequence[int | str]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _pydantic_problems(error: ValidationError, prefix: str, raw: Any) -> list[str]:
    problems = []
    for item in error.errors():
        loc = list(item["loc"])
        kind = item["type"]
        # Tagged unions put the tag into the location: nodes[2].aws.region -> nodes[2].region.
        if loc and loc[0] in PROVIDERS and isinstance(raw, Mapping) and raw.get("provider") == loc[0]:
            loc = loc[1:]
        if kind == "union_tag_invalid":
            message = f"unknown provider {item['input'].get('provider')!r}; valid: {_valid_list(PROVIDERS)}"
            loc = [*loc, "provider"]
        elif kind == "union_tag_not_found":
            message = f"missing 'provider'; valid: {_valid_list(PROVIDERS)}"
            loc = [*loc, "provider"]
        elif kind == "extra_forbidden":
            message = "unknown field; remove it or check its spelling"
        elif kind == "missing":
            message = "required field is missing"
        elif kind == "value_error":
            message = str(item["ctx"]["error"])
        else:
            message = item["msg"]
        problems.append(f"{_path(prefix, loc)}: {message}")
    return problems


def load_topology(raw: Mapping[str, Any], *, credentials: Mapping[str, bool] | None = None) -> Topology:
    """Validate `raw` (the `spaced:topology` config object) and return the typed topology.

    `credentials` maps a credential name (see CREDENTIALS) to whether it is available; when given,
    every provider the topology uses must have its credential. Raises TopologyError listing every
    problem found.
    """
    if not isinstance(raw, Mapping):
        raise TopologyError([f"spaced:topology: expected a mapping, got {type(raw).__name__}"])
    problems: list[str] = []
    settings_raw = {key: value for key, value in raw.items() if key != "nodes"}
    settings: _Settings | None = None
    try:
        settings = _Settings.model_validate(settings_raw)
    except ValidationError as error:
        problems += _pydantic_problems(error, "", settings_raw)

    raw_nodes = raw.get("nodes") or []
    nodes: list[tuple[int, Any]] = []
    if not isinstance(raw_nodes, Sequence) or isinstance(raw_nodes, str):
        problems.append("nodes: expected a list of nodes")
        raw_nodes = []
    for index, raw_node in enumerate(raw_nodes):
        try:
            nodes.append((index, _NODE_ADAPTER.validate_python(raw_node)))
        except ValidationError as error:
            problems += _pydantic_problems(error, f"nodes[{index}]", raw_node)

    environment = settings.environment if settings else raw.get("environment")
    if environment == LOCAL_ENVIRONMENT:
        if raw_nodes:
            problems.append(
                "nodes: the local environment runs on the local Docker engine and has no nodes; "
                "remove them or use another environment name"
            )
    else:
        problems += _check_nodes(settings, nodes, raw_nodes, _domain_or_none(raw.get("domain")))

    if settings is not None and credentials is not None and not problems:
        candidate = Topology.model_construct(**dict(settings), nodes=tuple(node for _, node in nodes))
        for name, path in required_credentials(candidate).items():
            if not credentials.get(name, False):
                credential = CREDENTIALS[name]
                where = ", ".join((*credential.config_keys, *credential.env_vars))
                problems.append(
                    f"{path}: missing credential for {name!r} (looked in {where}); "
                    f"set it with: {credential.how_to_set}"
                )

    if problems:
        raise TopologyError(problems)
    assert settings is not None
    domain = settings.domain or ""
    normalised = [
        node.model_copy(update={"dns": tuple(relative_dns_name(n, domain) for n in node.dns)})
        for _, node in nodes
    ]
    return Topology.model_validate({**settings.model_dump(), "nodes": [n.model_dump() for n in normalised]})


def _domain_or_none(raw_domain: Any) -> str | None:
    """The zone even when other settings are invalid, so DNS names can still be checked."""
    try:
        return _Settings._domain(raw_domain) if isinstance(raw_domain, str) else None
    except ValueError:
        return None


def _check_nodes(
    settings: _Settings | None, nodes: list[tuple[int, Any]], raw_nodes: Sequence[Any], domain: str | None
) -> list[str]:
    """The cross-field rules of a cloud topology."""
    raw_count = len(raw_nodes)
    problems: list[str] = []
    if settings is not None:
        if settings.domain is None:
            problems.append("domain: required field is missing (the DNS zone, e.g. spaced.fun)")
        if settings.ssh is None:
            problems.append("ssh: required field is missing ({user: deploy, public_key: 'ssh-ed25519 ...'})")
        if not settings.admin_ssh_cidrs:
            problems.append(
                "admin_ssh_cidrs: list at least one range SSH may come from (the machine "
                "running pulumi must be inside it), e.g. ['198.51.100.7/32']"
            )
    if raw_count == 0:
        problems.append("nodes: a cloud environment needs at least one node")
        return problems

    # From the raw nodes, so a duplicate is reported even when one of the pair has other mistakes.
    for field, message in (("name", "duplicate node name"), ("public_ipv4", "duplicate public_ipv4")):
        values = [raw.get(field) if isinstance(raw, Mapping) else None for raw in raw_nodes]
        counts = Counter(value for value in values if isinstance(value, str))
        for index, value in enumerate(values):
            if isinstance(value, str) and counts[value] > 1:
                problems.append(f"nodes[{index}].{field}: {message} {value!r}")

    seen_dns: dict[str, str] = {}
    for index, node in nodes:
        for dns_index, name in enumerate(node.dns):
            path = f"nodes[{index}].dns[{dns_index}]"
            if domain is None:
                continue
            try:
                relative = relative_dns_name(name, domain)
            except ValueError as error:
                problems.append(f"{path}: {error}")
                continue
            if relative in seen_dns:
                problems.append(f"{path}: duplicate DNS name {name!r} (also {seen_dns[relative]})")
            else:
                seen_dns[relative] = path
        if node.provider == "gcp" and node.zone is not None:
            if not re.fullmatch(rf"{re.escape(node.region)}-[a-z]", node.zone):
                problems.append(
                    f"nodes[{index}].zone: zone {node.zone!r} is not in region {node.region!r}; "
                    f"use e.g. {node.region}-a"
                )

    if len(nodes) == raw_count:  # role counts only make sense when every node parsed
        managers = sum(node.manager for _, node in nodes)
        if managers == 0:
            problems.append("nodes: no manager; set `manager: true` on 1, 3 or 5 nodes")
        elif managers % 2 == 0:
            problems.append(
                f"nodes: {managers} managers is an even number; Raft needs an odd number "
                "(1, 3 or 5) to keep a majority"
            )
        if not any(node.edge for _, node in nodes):
            problems.append("nodes: no edge node; set `edge: true` on the node that receives 80/443")
        elif managers and not any(node.edge and node.manager for _, node in nodes):
            problems.append(
                "nodes: no edge node is a manager; Traefik reads the swarm API, which only "
                "managers serve: set `manager: true` on one edge node"
            )

    if settings is not None:
        mesh = _parse_network(settings.mesh.cidr)
        capacity = mesh.num_addresses - 2
        if capacity < raw_count:
            needed = 32 - max(2, (raw_count + 1).bit_length())
            problems.append(
                f"mesh.cidr: {settings.mesh.cidr} has room for {max(capacity, 0)} node(s) "
                f"but the topology has {raw_count}; use a /{needed} or larger"
            )
        pinned: dict[str, int] = {}
        for index, node in nodes:
            if node.mesh_ip is None:
                continue
            address = ipaddress.IPv4Address(node.mesh_ip)
            if address not in mesh or address in (mesh.network_address, mesh.broadcast_address):
                problems.append(
                    f"nodes[{index}].mesh_ip: {node.mesh_ip} is not a host address of "
                    f"mesh.cidr {settings.mesh.cidr}"
                )
            elif node.mesh_ip in pinned:
                problems.append(
                    f"nodes[{index}].mesh_ip: {node.mesh_ip} is already pinned by "
                    f"nodes[{pinned[node.mesh_ip]}]"
                )
            else:
                pinned[node.mesh_ip] = index
    return problems
