"""The WireGuard mesh as a plan: addresses, keys, one config per node and the script that applies it.

Every node gets a static address in the mesh range and lists every other node as a peer
(a full mesh). The swarm advertises on these addresses, so its ports never face the internet;
the only port a node opens to the others is the WireGuard listen port (UDP).

Pure functions only: the Pulumi layer (infra/components/mesh.py) calls them inside `.apply`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from infra.plans.remote import wait_for_cloud_init

INTERFACE = "wg0"
CONFIG_PATH = f"/etc/wireguard/{INTERFACE}.conf"
# Packet sizes. GCP's network MTU is 1460, the smallest path between our providers; WireGuard adds
# 60 bytes over IPv4 (80 over IPv6), so 1380 fits every path (1380 + 80 = 1460). wg-quick's default
# (1420, from a 1500-byte local link) sends 1480-byte packets that a 1460-byte path drops.
TUNNEL_MTU = 1380
# VXLAN (Docker's overlay networks, inside the tunnel) adds 50 bytes: outer IPv4 20 + UDP 8 +
# VXLAN 8 + inner Ethernet 14. Docker's default overlay MTU (1500) would fragment every full frame.
VXLAN_OVERHEAD = 50
OVERLAY_MTU = TUNNEL_MTU - VXLAN_OVERHEAD  # 1330
# The driver option that sets it on every overlay network of the application stack.
OVERLAY_MTU_OPTION = "com.docker.network.driver.mtu"
PERSISTENT_KEEPALIVE_SECONDS = 25  # keeps NAT mappings (AWS/GCP 1:1 NAT) open between handshakes
INTERFACE_WAIT_SECONDS = 30

_KEY_BYTES = 32
# Node names go into config comments and resource names: keep them to one harmless line.
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# Keys that only wg-quick understands; `wg setconf` rejects them (this is what `wg-quick strip` removes).
_WG_QUICK_ONLY_KEYS = frozenset(
    {"address", "dns", "mtu", "table", "preup", "postup", "predown", "postdown", "saveconfig"}
)


class MeshError(ValueError):
    """A mesh plan input is invalid (addresses, keys, peers or ports)."""


# --- keys --------------------------------------------------------------------------------------


def _decode_key(key_b64: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(key_b64.strip(), validate=True)
    except (binascii.Error, AttributeError):
        raw = b""
    if len(raw) != _KEY_BYTES:
        raise MeshError(f"{what} is not a WireGuard key: expected base64 of {_KEY_BYTES} bytes (44 chars)")
    return raw


def generate_private_key() -> str:
    """A new WireGuard private key, base64, clamped exactly like `wg genkey` output.

    Clamping does not change the key's meaning (X25519 clamps anyway) but makes `wg showconf`
    print back the very key we wrote, so `wg syncconf` sees no difference on re-apply.
    """
    raw = bytearray(X25519PrivateKey.generate().private_bytes_raw())
    raw[0] &= 248
    raw[31] = (raw[31] & 127) | 64
    return base64.b64encode(bytes(raw)).decode()


def public_key_from_private(private_key_b64: str) -> str:
    """The base64 public key of a base64 WireGuard private key (what `wg pubkey` prints)."""
    raw = _decode_key(private_key_b64, "the private key")
    public = X25519PrivateKey.from_private_bytes(raw).public_key().public_bytes_raw()
    return base64.b64encode(public).decode()


# --- configs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeshPeer:
    """One node as the others see it: where to reach it and who it is."""

    name: str
    endpoint_host: str  # public IPv4/IPv6 address (or DNS name) the node's WireGuard port listens on
    mesh_ip: str
    public_key: str


def _endpoint(peer: MeshPeer, listen_port: int) -> str:
    host = peer.endpoint_host.strip()
    if not host or any(ch.isspace() or ch in "#[]=" for ch in host):
        raise MeshError(f"mesh peer {peer.name!r}: public endpoint {peer.endpoint_host!r} is not a host")
    try:
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            return f"[{host}]:{listen_port}"
    except ValueError:
        pass  # a DNS name: wg resolves it when the config is set
    return f"{host}:{listen_port}"


def _check_peer(peer: MeshPeer) -> None:
    # Mesh addresses are checked once, by the topology model (infra.topology), which allocates them.
    if not _NODE_NAME.match(peer.name):
        raise MeshError(f"mesh peer name {peer.name!r} is not valid: use letters, digits, '.', '_' or '-'")
    _decode_key(peer.public_key, f"the public key of mesh peer {peer.name!r}")


def render_wireguard_config(
    node: MeshPeer, private_key: str, peers: Sequence[MeshPeer], listen_port: int, *, mesh_cidr: str
) -> str:
    """The wg-quick config (`/etc/wireguard/wg0.conf`) of `node`: every other node is a peer.

    `peers` may include `node` itself (pass the whole mesh); it is skipped. The interface address
    carries the mesh prefix length so one connected route covers every peer, including peers
    added later by `wg syncconf` (which, unlike `wg-quick up`, adds no routes).
    """
    if not 1 <= listen_port <= 65535:
        raise MeshError(f"mesh.listen_port {listen_port} is not a UDP port (1-65535)")
    prefix_length = ipaddress.IPv4Network(mesh_cidr).prefixlen  # validated by the topology
    _check_peer(node)
    if public_key_from_private(private_key) != node.public_key:
        raise MeshError(f"mesh node {node.name!r}: its private key does not match its public key")

    others = [peer for peer in peers if peer.name != node.name]
    names, keys = {node.name}, {node.public_key}
    for peer in others:
        _check_peer(peer)
        for value, used, what in (
            (peer.name, names, "name"),
            (peer.public_key, keys, "public key"),
        ):
            if value in used:
                raise MeshError(f"mesh peer {peer.name!r}: {what} {value} is used by another node")
            used.add(value)

    lines = [
        f"# WireGuard mesh: node {node.name} (managed by Pulumi, spaced:mesh; edits are overwritten)",
        "[Interface]",
        f"Address = {node.mesh_ip}/{prefix_length}",
        f"ListenPort = {listen_port}",
        f"MTU = {TUNNEL_MTU}",
        f"PrivateKey = {private_key.strip()}",
    ]
    for peer in sorted(others, key=lambda p: p.name):
        lines += [
            "",
            f"# {peer.name}",
            "[Peer]",
            f"PublicKey = {peer.public_key}",
            f"AllowedIPs = {peer.mesh_ip}/32",
            f"Endpoint = {_endpoint(peer, listen_port)}",
            f"PersistentKeepalive = {PERSISTENT_KEEPALIVE_SECONDS}",
        ]
    return "\n".join(lines) + "\n"


def strip_wg_quick_keys(config: str) -> str:
    """The part of a wg-quick config that `wg setconf`/`wg syncconf` accept (like `wg-quick strip`)."""
    kept = []
    for line in config.splitlines():
        key = line.split("#", 1)[0].split("=", 1)[0].strip().lower()
        if "=" in line.split("#", 1)[0] and key in _WG_QUICK_ONLY_KEYS:
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


# --- apply script ------------------------------------------------------------------------------


def render_apply_script(interface_wait_seconds: int = INTERFACE_WAIT_SECONDS) -> str:
    """Bash that installs the config read from stdin as wg0 and brings the interface up.

    The config (and so the private key) arrives on stdin only, never as an argument, so it shows
    up in no process list and no log. Idempotent: an unchanged config changes nothing; a changed
    peer list is applied with `wg syncconf` without dropping live sessions; a changed address
    restarts the interface. Uses systemd's wg-quick@wg0 unit where systemd runs, wg-quick directly
    elsewhere. Prints one status word (unchanged, updated, restarted, started).
    """
    return (
        "set -euo pipefail\n"
        # apt-get and systemctl below: let cloud-init's package upgrade and runcmd finish first.
        + wait_for_cloud_init()
        + f"""umask 077
conf={CONFIG_PATH}
iface={INTERFACE}
install -d -m 700 /etc/wireguard
new=$(mktemp /etc/wireguard/.{INTERFACE}.conf.XXXXXX)
trap 'rm -f "$new"' EXIT
cat > "$new"
if ! grep -q '^\\[Interface\\]' "$new"; then
  echo "mesh: no WireGuard config on stdin" >&2
  exit 1
fi
if ! command -v wg-quick > /dev/null; then
  if command -v apt-get > /dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 -qq update
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 -qq install -y wireguard-tools
  else
    echo "mesh: wg-quick missing; install wireguard-tools on this host" >&2
    exit 1
  fi
fi
changed=1
if [ -f "$conf" ] && cmp -s "$new" "$conf"; then changed=0; fi
if [ "$changed" = 1 ]; then
  chmod 600 "$new"
  mv -f "$new" "$conf"
fi
chmod 600 "$conf"
want_address=$(awk -F ' *= *' '/^Address *=/ {{ print $2; exit }}' "$conf")
# Not `ip ... | grep -q`: under pipefail, grep quitting early can fail the pipeline with SIGPIPE.
has_address() {{
  local addresses
  addresses=$(ip -o addr show dev "$iface" 2> /dev/null) || return 1
  [[ "$addresses" == *" $want_address "* ]]
}}
use_systemd=0
if command -v systemctl > /dev/null && [ -d /run/systemd/system ]; then use_systemd=1; fi
if ip link show dev "$iface" > /dev/null 2>&1; then
  if ! has_address; then
    if [ "$use_systemd" = 1 ]; then
      systemctl restart wg-quick@$iface
    else
      wg-quick down "$iface"
      wg-quick up "$iface"
    fi
    status=restarted
  elif [ "$changed" = 1 ]; then
    wg syncconf "$iface" <(wg-quick strip "$iface")
    status=updated
  else
    status=unchanged
  fi
  # `wg syncconf` leaves the link alone: set a changed MTU here (wg-quick sets it when it starts).
  want_mtu=$(awk -F ' *= *' '/^MTU *=/ {{ print $2; exit }}' "$conf")
  if [ -n "$want_mtu" ]; then ip link set dev "$iface" mtu "$want_mtu"; fi
  ip link set dev "$iface" up
  if [ "$use_systemd" = 1 ]; then systemctl enable -q wg-quick@$iface; fi
else
  if [ "$use_systemd" = 1 ]; then
    systemctl enable -q --now wg-quick@$iface
  else
    wg-quick up "$iface"
  fi
  status=started
fi
for _ in $(seq 1 {int(interface_wait_seconds)}); do
  if has_address; then
    echo "$status"
    exit 0
  fi
  sleep 1
done
echo "mesh: $iface has no address $want_address after {int(interface_wait_seconds)}s" >&2
exit 1
"""
    )


def config_fingerprint(node: MeshPeer, peers: Sequence[MeshPeer], listen_port: int, mesh_cidr: str) -> str:
    """A hash of everything a node's applied config depends on, built from public values only.

    Used as the trigger of the apply command: it changes when a peer is added, removed or moved,
    when a key rotates (the public key changes with it) or when the apply script changes, and it
    can be shown in plain text in a `pulumi preview` because it holds no secret.
    """
    others = sorted((p for p in peers if p.name != node.name), key=lambda p: p.name)
    canonical = json.dumps(
        {
            "node": [node.name, node.endpoint_host, node.mesh_ip, node.public_key],
            "peers": [[p.name, p.endpoint_host, p.mesh_ip, p.public_key] for p in others],
            "listen_port": listen_port,
            "mesh_cidr": mesh_cidr,
            "script": render_apply_script(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def apply_command(ssh_user: str) -> str:
    """The remote command line that runs the apply script as root; the config goes to its stdin."""
    script = shlex.quote(render_apply_script())
    # Non-root deploy users need passwordless sudo (cloud-init grants it); -n fails instead of hanging.
    return f"bash -c {script}" if ssh_user == "root" else f"sudo -n bash -c {script}"
