#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian machine (run as root):
# Debian packages, the Python virtualenv with the project, and the npm packages of the tests and the web page.
# Idempotent: a second run only checks (a few seconds); a changed lock installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  docker.io            # the local Docker engine (swarm mode) for the stack and its end-to-end tests
  nginx                # `nginx -t` of the rendered config, and the nginx image
  prometheus           # promtool, and the prometheus image
  prometheus-alertmanager   # amtool check-config of the rendered Alertmanager config
  wireguard-tools wireguard-go   # the mesh test in network namespaces
  debootstrap          # base images without a registry
  iproute2 iputils-ping nftables   # network namespaces; the firewall ruleset test
  cloud-init           # `cloud-init schema` of the rendered user data
  chromium             # headless browser tests of the board page
  openssh-server       # sshd on 127.0.0.1: the deploy's pinned-host-key SSH test (tests/infra/test_ssh.py)
  openssh-client       # ssh/ssh-keygen: the deploy's SSH wrapper and its test keys
  systemd              # `systemd-analyze verify` of the Docker and upgrade-timer drop-ins
  dnsmasq              # a real DNS server on 127.0.0.1 for the `spaced dns check` tests
  redis-server         # item_socket scale-out tests: real Redis Streams (fixtures start their own server)
  postgresql           # item_socket scale-out tests: the shared store (fixtures run their own cluster)
  # (Both packages start a system server where systemd runs; no test uses it, nor may one:
  # tests/suite/test_no_system_servers.py. The stack's Redis and PostgreSQL are images/redis, images/postgres.)
)
# Node.js may come from outside Debian on this machine; install Debian's only when there is none.
command -v node >/dev/null && command -v npm >/dev/null || APT_PACKAGES+=(nodejs npm)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Python: the virtualenv holds exactly requirements/dev.lock (pinned, hashed; scripts/lock.sh writes
# it) plus the project itself, editable. uv, pinned in the lock too, installs it. With nothing
# changed since the last run (same lock, same pyproject.toml) this only checks.
# A venv cut short (no pip) is made again rather than half-used.
if [ ! -x .venv/bin/python ] || [ ! -x .venv/bin/pip ]; then
  python3 -m venv --clear .venv
fi
uv_version=$(sed -n 's/^uv==\([^ ]*\).*/\1/p' requirements/dev.lock)
if [ "$(.venv/bin/uv --version 2>/dev/null | cut -d' ' -f2)" != "$uv_version" ]; then
  .venv/bin/pip install -q --disable-pip-version-check "uv==$uv_version"
fi
python_stamp=$(cat requirements/dev.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.spaced-lock 2>/dev/null)" != "$python_stamp" ] \
   || ! .venv/bin/python -c 'import infra, item_socket' 2>/dev/null; then
  echo "install-deps: syncing .venv with requirements/dev.lock"
  .venv/bin/uv pip sync -q --python .venv/bin/python --require-hashes requirements/dev.lock
  .venv/bin/uv pip install -q --python .venv/bin/python --no-deps -e .
  echo "$python_stamp" > .venv/.spaced-lock
fi

# npm: `npm ci` only when package-lock.json changed since it last ran (it always starts from nothing).
npm_stamp=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat node_modules/.spaced-lock 2>/dev/null)" != "$npm_stamp" ]; then
  echo "install-deps: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$npm_stamp" > node_modules/.spaced-lock
fi
echo "install-deps: done"
