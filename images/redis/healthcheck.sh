#!/bin/bash
# Healthy when the server answers PING with PONG (authenticated: an unauthenticated PING gets NOAUTH,
# a server still loading its AOF answers LOADING). The password goes to redis-cli in its environment.
set -uo pipefail
if [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
  REDISCLI_AUTH="$(cat "$REDIS_PASSWORD_FILE")" || exit 1
  export REDISCLI_AUTH
fi
answer="$(redis-cli --no-auth-warning -h 127.0.0.1 -p "${REDIS_PORT:-6379}" ping 2>&1)" || exit 1
[ "$answer" = "PONG" ] || { echo "redis-healthcheck: $answer" >&2; exit 1; }
