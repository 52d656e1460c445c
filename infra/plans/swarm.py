"""Docker Swarm bootstrap as pure shell scripts (no I/O here; run only through remote commands).

Every script is complete bash: `set -euo pipefail`, every wait bounded by a deadline, every
interpolated value quoted with `shlex.quote`. Results go to stdout (a node id, the join tokens as
JSON); progress goes to stderr. Output of docker commands that prints join tokens (`swarm init`,
`swarm join`) is discarded, because stderr/stdout of a remote command end up in Pulumi's logs.

The scripts are idempotent so that a second `pulumi up` (or a re-run after a partial failure)
changes nothing: init skips an active swarm, join skips a node that is already in one, leave
skips a node that is not in one, drain and remove skip nodes the swarm does not know.

Node identity on the manager side: the join script prints the node's swarm id, which the label
and drain scripts take; the remove script, which runs after the node left, finds the node by the
`spaced.node` label the label script set.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from infra.host import Host
from infra.plans.remote import CLOUD_INIT_TIMEOUT_S, wait_for_cloud_init

SWARM_PORT = 2377
NODE_NAME_LABEL = "spaced.node"
RESERVED_LABELS = ("provider", "region", "role", "edge", "acme", "data", NODE_NAME_LABEL)

DOCKER_TIMEOUT_S = 300
JOIN_TIMEOUT_S = 300
NODE_VISIBLE_TIMEOUT_S = 120
DRAIN_TIMEOUT_S = 300
NODE_DOWN_TIMEOUT_S = 120
POLL_INTERVAL_S = 2
MANAGER_PROBE_TIMEOUT_S = 5

_NODE_ID = re.compile(r"^[a-z0-9]{25}$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class SwarmPlanError(ValueError):
    """The hosts cannot form a swarm (no manager, clashing names or addresses, bad labels)."""


@dataclass(frozen=True)
class SwarmNode:
    """One host's place in the swarm."""

    name: str
    mesh_ip: str
    manager: bool
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def role(self) -> str:
        return "manager" if self.manager else "worker"


@dataclass(frozen=True)
class SwarmPlan:
    """The first manager initialises the swarm; every other node joins it."""

    first_manager: SwarmNode
    joining: tuple[SwarmNode, ...]

    @property
    def nodes(self) -> tuple[SwarmNode, ...]:
        return (self.first_manager, *self.joining)


def node_labels(host: Host, *, acme: bool = False) -> dict[str, str]:
    """The labels a host's swarm node carries: provider, region, role, edge, acme, data, its name,
    and its own.

    `acme` marks the one edge manager that keeps Traefik's certificate store (a node-local volume
    with no locking, so exactly one Traefik may write it). The same node is labelled `data`: it
    keeps the stack's Redis and PostgreSQL volumes (and the backups), so they stay where their data is.
    """
    labels = {
        "provider": host.provider,
        "region": host.region,
        "role": "manager" if host.manager else "worker",
        "edge": "true" if host.edge else "false",
        "acme": "true" if acme else "false",
        "data": "true" if acme else "false",
        NODE_NAME_LABEL: host.name,
    }
    for key, value in host.labels.items():
        where = f"nodes[{host.name}].labels.{key}"
        if key in RESERVED_LABELS:
            raise SwarmPlanError(f"{where}: {key!r} is set by the toolkit; choose another label name")
        if not _LABEL_KEY.match(key):
            raise SwarmPlanError(f"{where}: a label name is letters, digits, '.', '_' or '-'")
        if not isinstance(value, str) or "\n" in value:
            raise SwarmPlanError(f"{where}: the value must be a single-line string")
        labels[key] = value
    return labels


def plan_swarm(hosts: Sequence[Host]) -> SwarmPlan:
    """Check the hosts and order them: the first host with `manager: true` initialises the swarm."""
    if not hosts:
        raise SwarmPlanError("nodes: a swarm needs at least one node")
    names: set[str] = set()
    nodes: list[SwarmNode] = []
    acme_host = next((host for host in hosts if host.edge and host.manager), None)
    for host in hosts:
        if host.name in names:
            raise SwarmPlanError(f"nodes[{host.name}]: the name is used twice; node names must be unique")
        names.add(host.name)
        # Mesh addresses were allocated and checked by the topology model (infra.topology).
        nodes.append(
            SwarmNode(host.name, host.mesh_ip, host.manager, node_labels(host, acme=host is acme_host))
        )
    managers = [node for node in nodes if node.manager]
    if not managers:
        raise SwarmPlanError(
            "nodes: no node has manager: true; mark at least one node (ideally 1 or 3) as manager"
        )
    first = managers[0]
    return SwarmPlan(first_manager=first, joining=tuple(node for node in nodes if node is not first))


def parse_node_id(stdout: str) -> str:
    """The swarm node id the init and join scripts print as their last line."""
    lines = stdout.strip().splitlines()
    node_id = lines[-1].strip() if lines else ""
    if not _NODE_ID.match(node_id):
        raise SwarmPlanError(
            f"expected a swarm node id as the last line of the script output, got {node_id!r}"
        )
    return node_id


def parse_join_tokens(stdout: str) -> dict[str, str]:
    """{"worker": ..., "manager": ...} from the output of `print_join_tokens_script`."""
    try:
        tokens = json.loads(stdout)
    except ValueError:
        raise SwarmPlanError("the join-token script did not print JSON") from None
    if not isinstance(tokens, dict) or set(tokens) != {"worker", "manager"}:
        raise SwarmPlanError("the join-token script must print a worker and a manager token")
    for role, token in tokens.items():
        if not isinstance(token, str) or not token.startswith("SWMTKN-"):
            raise SwarmPlanError(f"the {role} join token is not a swarm token")
    return tokens


def bash_command(script: str) -> str:
    """The remote command line that runs `script` with bash whatever the login shell is.

    stdin stays connected, so a script can read a secret from it.
    """
    return f"bash -c {shlex.quote(script)}"


# ---------------------------------------------------------------------------------------------
# Script fragments


def _header(purpose: str) -> str:
    return f"""#!/usr/bin/env bash
# spaced swarm: {purpose}
set -euo pipefail
log() {{ printf 'spaced-swarm: %s\\n' "$*" >&2; }}
fail() {{ log "ERROR: $*"; exit 1; }}
"""


def _wait_for_docker(timeout_s: int, *, give_up: str = "fail") -> str:
    """Wait until the engine answers; pick `docker` or `sudo -n docker` (adopted hosts whose user
    is not in the docker group). `give_up` is "fail" or "skip" (exit 0: nothing to do)."""
    on_timeout = (
        f'fail "the Docker engine did not answer within {timeout_s} s; is docker installed and running?"'
        if give_up == "fail"
        else f'log "the Docker engine did not answer within {timeout_s} s; nothing to do"; exit 0'
    )
    return f"""docker_deadline=$((SECONDS + {timeout_s}))
while :; do
  if docker info >/dev/null 2>&1; then DOCKER=(docker); break; fi
  if sudo -n docker info >/dev/null 2>&1; then DOCKER=(sudo -n docker); break; fi
  if [ "$SECONDS" -ge "$docker_deadline" ]; then {on_timeout}; fi
  sleep {POLL_INTERVAL_S}
done
dk() {{ "${{DOCKER[@]}}" "$@"; }}
swarm_state() {{ dk info --format '{{{{.Swarm.LocalNodeState}}}}'; }}
"""


def _print_node_id() -> str:
    return "dk info --format '{{.Swarm.NodeID}}'\n"


# ---------------------------------------------------------------------------------------------
# Scripts


def init_script(
    mesh_ip: str,
    *,
    node_name: str | None = None,
    cloud_init_timeout_s: int = CLOUD_INIT_TIMEOUT_S,
    docker_timeout_s: int = DOCKER_TIMEOUT_S,
    probe_timeout_s: int = MANAGER_PROBE_TIMEOUT_S,
) -> str:
    """Make the first manager part of the swarm, advertising and listening on its mesh address.

    Initialises a swarm only when no existing manager answers. On stdin it reads the other managers
    as `<host:port> <manager join token>` lines (the output of `manager_probe_script` on each, a
    secret; empty on a new stack); if one of them answers, this host joins that swarm as a manager
    instead: a replaced first manager must not start a second swarm. After such a join, the
    replaced node's old entry (same `spaced.node` label, down) is demoted and removed. Skips an
    already active swarm. Prints the node id.
    """
    ip = shlex.quote(mesh_ip)
    listen = shlex.quote(f"{mesh_ip}:{SWARM_PORT}")
    name = shlex.quote(node_name or "")
    label_format = shlex.quote(f'{{{{index .Spec.Labels "{NODE_NAME_LABEL}"}}}}')
    return (
        _header(f"initialise the swarm on {mesh_ip}, or join the managers that answer")
        + f"""join_addr=""
join_token=""
answers() {{
  timeout {probe_timeout_s} bash -c 'exec 3<>"/dev/tcp/${{1%:*}}/${{1##*:}}"' _ "$1" 2>/dev/null
}}
while read -r candidate_addr candidate_token; do
  [ -n "$candidate_addr" ] || continue
  [[ "$candidate_token" =~ ^SWMTKN-[A-Za-z0-9-]+$ ]] || continue
  if answers "$candidate_addr"; then
    join_addr=$candidate_addr
    join_token=$candidate_token
    break
  fi
  log "manager $candidate_addr does not answer"
done
"""
        + wait_for_cloud_init(cloud_init_timeout_s)
        + _wait_for_docker(docker_timeout_s)
        + f"""state=$(swarm_state)
case "$state" in
  active)
    if [ "$(dk info --format '{{{{.Swarm.ControlAvailable}}}}')" != true ]; then
      fail "this host is a worker of another swarm; run 'docker swarm leave' on it first"
    fi
    node_addr=$(dk info --format '{{{{.Swarm.NodeAddr}}}}')
    if [ "$node_addr" != {ip} ]; then
      log "the swarm is active but advertises $node_addr instead of "{ip}"; leaving it as it is"
    fi
    log "the swarm is already active; not initialising" ;;
  inactive)
    if [ -n "$join_addr" ]; then
      # A swarm exists (this host was replaced): join it as a manager instead of making a second one.
      dk swarm join --token "$join_token" --advertise-addr {ip} --listen-addr {listen} "$join_addr" >/dev/null
      log "joined the existing swarm of $join_addr as a manager"
      self_id=$(dk info --format '{{{{.Swarm.NodeID}}}}')
      if [ -n {name} ]; then
        for stale in $(dk node ls --quiet); do
          [ "$stale" != "$self_id" ] || continue
          [ "$(dk node inspect --format {label_format} "$stale")" = {name} ] || continue
          [ "$(dk node inspect --format '{{{{.Status.State}}}}' "$stale")" = down ] || continue
          dk node demote "$stale" >/dev/null 2>&1 || true
          dk node rm --force "$stale" >/dev/null && log "removed the replaced node's old entry $stale"
        done
      fi
    else
      # The output holds the worker join token: keep it out of the logs.
      dk swarm init --advertise-addr {ip} --listen-addr {listen} >/dev/null
      log "initialised the swarm on "{ip}
    fi ;;
  locked)
    fail "the swarm is locked (autolock); unlock it with 'docker swarm unlock' and run again" ;;
  *)
    fail "the swarm is in state '$state'; inspect it with 'docker info' and repair or leave it" ;;
esac
"""
        + _print_node_id()
    )


def manager_probe_script(
    *, cloud_init_timeout_s: int = CLOUD_INIT_TIMEOUT_S, docker_timeout_s: int = DOCKER_TIMEOUT_S
) -> str:
    """On a manager other than the first: print `<mesh address>:2377 <manager join token>` if this
    host is an active manager of a swarm, nothing otherwise (a new stack). The output is a secret;
    it feeds `init_script`'s stdin."""
    return (
        _header("offer this manager to a replaced first manager")
        + wait_for_cloud_init(cloud_init_timeout_s)
        + _wait_for_docker(docker_timeout_s, give_up="skip")
        + f"""control=$(dk info --format '{{{{.Swarm.ControlAvailable}}}}')
if [ "$(swarm_state)" = active ] && [ "$control" = true ]; then
  address=$(dk info --format '{{{{.Swarm.NodeAddr}}}}')
  printf '%s:{SWARM_PORT} %s\n' "$address" "$(dk swarm join-token -q manager)"
fi
"""
    )


def print_join_tokens_script(*, docker_timeout_s: int = DOCKER_TIMEOUT_S) -> str:
    """Print `{"worker": ..., "manager": ...}` on the first manager (the output is a secret)."""
    return (
        _header("print the join tokens")
        + _wait_for_docker(docker_timeout_s)
        + """[ "$(swarm_state)" = active ] || fail "the swarm is not initialised on this host"
worker_token=$(dk swarm join-token -q worker)
manager_token=$(dk swarm join-token -q manager)
for token in "$worker_token" "$manager_token"; do
  [[ "$token" =~ ^SWMTKN-[A-Za-z0-9-]+$ ]] || fail "docker printed an unexpected join token format"
done
printf '{"worker": "%s", "manager": "%s"}\\n' "$worker_token" "$manager_token"
"""
    )


def join_script(
    manager_mesh_ip: str,
    mesh_ip: str,
    *,
    cloud_init_timeout_s: int = CLOUD_INIT_TIMEOUT_S,
    docker_timeout_s: int = DOCKER_TIMEOUT_S,
    join_timeout_s: int = JOIN_TIMEOUT_S,
) -> str:
    """Join this node to the swarm of `manager_mesh_ip`, advertising its own mesh address.

    The join token (worker or manager: it decides the role) is read from stdin so it never
    appears in the command, the Pulumi diff or the logs. Skips a node already in a swarm.
    Prints the node id.
    """
    ip = shlex.quote(mesh_ip)
    listen = shlex.quote(f"{mesh_ip}:{SWARM_PORT}")
    remote = shlex.quote(f"{manager_mesh_ip}:{SWARM_PORT}")
    return (
        _header(f"join {mesh_ip} to the swarm of {manager_mesh_ip}")
        + """join_token=""
IFS= read -r join_token || true
[[ "$join_token" =~ ^SWMTKN-[A-Za-z0-9-]+$ ]] || fail "expected the swarm join token on stdin"
"""
        + wait_for_cloud_init(cloud_init_timeout_s)
        + _wait_for_docker(docker_timeout_s)
        + f"""state=$(swarm_state)
case "$state" in
  active)
    log "already in a swarm; not joining" ;;
  inactive)
    join_rc=0
    # The token is on the command line for the moment of the join; docker has no other way.
    timeout {join_timeout_s} "${{DOCKER[@]}}" swarm join --token "$join_token" \\
      --advertise-addr {ip} --listen-addr {listen} {remote} >/dev/null || join_rc=$?
    [ "$join_rc" -eq 0 ] || fail "docker swarm join to "{remote}" failed (exit $join_rc); is the mesh up?"
    log "joined the swarm of "{remote} ;;
  pending)
    fail "a previous join is still pending; check the mesh to "{remote}" and 'docker info'" ;;
  *)
    fail "the swarm is in state '$state'; inspect it with 'docker info' and repair or leave it" ;;
esac
"""
        + _print_node_id()
    )


def label_script(
    node_id: str,
    labels: Mapping[str, str],
    *,
    manager: bool,
    docker_timeout_s: int = DOCKER_TIMEOUT_S,
    visible_timeout_s: int = NODE_VISIBLE_TIMEOUT_S,
) -> str:
    """On a manager: make node `node_id` available, promote it if it must be a manager, and set
    its labels (idempotent: `--label-add` of an existing label rewrites it)."""
    node = shlex.quote(node_id)
    label_args = " ".join(
        f"--label-add {shlex.quote(f'{key}={value}')}" for key, value in sorted(labels.items())
    )
    promote = (
        f"""if [ "$(dk node inspect --format '{{{{.Spec.Role}}}}' {node})" != manager ]; then
  dk node promote {node} >&2
fi
"""
        if manager
        else ""
    )
    return (
        _header(f"label node {node_id}")
        + _wait_for_docker(docker_timeout_s)
        + f"""visible_deadline=$((SECONDS + {visible_timeout_s}))
until dk node inspect {node} >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$visible_deadline" ]; then
    fail "node "{node}" is not in the swarm after {visible_timeout_s} s"
  fi
  sleep {POLL_INTERVAL_S}
done
"""
        + promote
        + f"dk node update --availability active {label_args} {node} >/dev/null\n"
        + f'log "labelled node "{node}\n'
    )


def remove_labels_script(
    node_id: str, keys: Sequence[str], *, docker_timeout_s: int = DOCKER_TIMEOUT_S
) -> str:
    """On a manager: remove labels `keys` from node `node_id` (those it carries)."""
    node = shlex.quote(node_id)
    quoted_keys = " ".join(shlex.quote(key) for key in keys)
    return (
        _header(f"remove labels from node {node_id}")
        + _wait_for_docker(docker_timeout_s)
        + f"""for key in {quoted_keys}; do
  if dk node inspect --format '{{{{json .Spec.Labels}}}}' {node} | grep -qF "\\"$key\\":"; then
    dk node update --label-rm "$key" {node} >/dev/null
  fi
done
"""
    )


def drain_script(
    node_id: str,
    *,
    manager: bool,
    docker_timeout_s: int = DOCKER_TIMEOUT_S,
    drain_timeout_s: int = DRAIN_TIMEOUT_S,
) -> str:
    """On a manager: demote (managers) and drain node `node_id`, then wait, bounded, until the
    scheduler moved its tasks away. A node the swarm does not know is nothing to do."""
    node = shlex.quote(node_id)
    demote = (
        f"""if [ "$(dk node inspect --format '{{{{.Spec.Role}}}}' {node})" = manager ]; then
  dk node demote {node} >&2
fi
"""
        if manager
        else ""
    )
    return (
        _header(f"drain node {node_id}")
        + _wait_for_docker(docker_timeout_s, give_up="skip")
        + f"""if ! dk node inspect {node} >/dev/null 2>&1; then
  log "node "{node}" is not in the swarm; nothing to drain"
  exit 0
fi
"""
        + demote
        + f"""dk node update --availability drain {node} >/dev/null
drain_deadline=$((SECONDS + {drain_timeout_s}))
while [ -n "$(dk node ps --quiet --filter desired-state=running {node})" ]; do
  if [ "$SECONDS" -ge "$drain_deadline" ]; then
    log "node "{node}" still has running tasks after {drain_timeout_s} s; continuing"
    break
  fi
  sleep {POLL_INTERVAL_S}
done
log "drained node "{node}
"""
    )


def leave_script(*, force: bool = False, docker_timeout_s: int = 60) -> str:
    """On the node itself: leave the swarm (`force` for the last manager). Not in a swarm, or no
    engine answering, is nothing to do."""
    force_flag = " --force" if force else ""
    return (
        _header("leave the swarm")
        + _wait_for_docker(docker_timeout_s, give_up="skip")
        + f"""state=$(swarm_state)
if [ "$state" = inactive ]; then
  log "not in a swarm; nothing to leave"
  exit 0
fi
dk swarm leave{force_flag} >&2
log "left the swarm"
"""
    )


def remove_node_script(
    node_name: str,
    *,
    docker_timeout_s: int = DOCKER_TIMEOUT_S,
    down_timeout_s: int = NODE_DOWN_TIMEOUT_S,
) -> str:
    """On a manager: remove the node(s) labelled `spaced.node=<node_name>` from the node list once
    they are down (after they left). A node still up after the deadline is left alone: it may be
    a replacement that took the same name."""
    name = shlex.quote(node_name)
    label_format = shlex.quote(f'{{{{index .Spec.Labels "{NODE_NAME_LABEL}"}}}}')
    return (
        _header(f"remove node {node_name} from the node list")
        + _wait_for_docker(docker_timeout_s, give_up="skip")
        + f"""if [ "$(swarm_state)" != active ]; then
  log "this host is not in a swarm; nothing to remove"
  exit 0
fi
node_ids=()
for candidate in $(dk node ls --quiet); do
  if [ "$(dk node inspect --format {label_format} "$candidate")" = {name} ]; then
    node_ids+=("$candidate")
  fi
done
if [ "${{#node_ids[@]}}" -eq 0 ]; then
  log "no node is labelled {NODE_NAME_LABEL}="{name}"; nothing to remove"
  exit 0
fi
for node_id in "${{node_ids[@]}}"; do
  down_deadline=$((SECONDS + {down_timeout_s}))
  until [ "$(dk node inspect --format '{{{{.Status.State}}}}' "$node_id")" = down ]; do
    if [ "$SECONDS" -ge "$down_deadline" ]; then break; fi
    sleep {POLL_INTERVAL_S}
  done
  if [ "$(dk node inspect --format '{{{{.Status.State}}}}' "$node_id")" != down ]; then
    # Never remove a live node: it may be a replacement that took the same name.
    log "node $node_id is still up after {down_timeout_s} s; not removing it (docker node rm --force by hand)"
    continue
  fi
  dk node rm "$node_id" >/dev/null
  log "removed node $node_id"
done
"""
    )
