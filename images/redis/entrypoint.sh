#!/bin/bash
# redis-server with its password read from REDIS_PASSWORD_FILE (a Docker secret). The password reaches
# the server on stdin (`redis-server -` reads configuration lines there): never in argv (ps), the
# environment or a file. The arguments are passed on as they are.
set -euo pipefail
file="${REDIS_PASSWORD_FILE:-}"
if [ -z "$file" ]; then
  echo "redis-entrypoint: REDIS_PASSWORD_FILE is not set: starting without a password" >&2
  exec redis-server "$@"
fi
if [ ! -r "$file" ]; then
  echo "redis-entrypoint: REDIS_PASSWORD_FILE=$file cannot be read (is the Docker secret mounted?)" >&2
  exit 1
fi
password="$(cat "$file")"
case "$password" in
  "" | *[!A-Za-z0-9_.~-]*)
    echo "redis-entrypoint: the password in $file must be non-empty letters, digits, '_', '.', '~' or '-'" >&2
    exit 1 ;;
esac
exec redis-server - "$@" < <(printf 'requirepass "%s"\n' "$password")
