#!/usr/bin/env bash
# Starts the servers the local stack and the tests need, if they are not running:
# the Docker engine. Bounded waits; prints where the logs are. (`spaced up local` and the
# test fixtures make it a swarm manager when they need one.)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! docker info >/dev/null 2>&1; then
  mkdir -p /var/log/spaced
  echo "start-services: starting dockerd (log: /var/log/spaced/dockerd.log)"
  nohup dockerd >/var/log/spaced/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "start-services: dockerd did not start; see /var/log/spaced/dockerd.log" >&2; tail -20 /var/log/spaced/dockerd.log >&2; exit 1; }
fi
echo "start-services: docker engine is up"
