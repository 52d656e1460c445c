#!/bin/bash
# PostgreSQL configured from the environment, like the official image's entrypoint:
#   POSTGRES_USER           the application's role (owner of the database), e.g. item_socket
#   POSTGRES_DB             its database, e.g. spaced
#   POSTGRES_PASSWORD_FILE  a file (Docker secret) holding the role's password
# The first start makes the cluster in $PGDATA. Every start then, on a server that listens on its
# private unix socket only, makes the role and database if missing and sets the role's password to
# the file's current content (a rotated secret takes effect on the next start), then runs the real
# server with the arguments given (e.g. `-c max_connections=40`). Connections over the network need
# the password (scram-sha-256); only the container's own unix socket trusts its local user.
#
# A first argument that is not an option is a command to run instead (as in the official image):
# the backup service runs `spaced-backup schedule` from this image.
set -euo pipefail
if [ -n "${1:-}" ] && [ "${1#-}" = "$1" ]; then
  exec "$@"
fi
die() { echo "postgres-entrypoint: $*" >&2; exit 1; }
: "${PGDATA:?PGDATA is not set}"
user="${POSTGRES_USER:-}"
db="${POSTGRES_DB:-}"
password_file="${POSTGRES_PASSWORD_FILE:-}"
[[ "$user" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "POSTGRES_USER='$user' must be a lowercase SQL name"
[[ "$db" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "POSTGRES_DB='$db' must be a lowercase SQL name"
[ -n "$password_file" ] || die "POSTGRES_PASSWORD_FILE is not set (a Docker secret holding the password)"
[ -r "$password_file" ] || die "POSTGRES_PASSWORD_FILE=$password_file cannot be read (is the secret mounted?)"
[ -s "$password_file" ] || die "POSTGRES_PASSWORD_FILE=$password_file is empty"
[[ "$password_file" =~ ^[A-Za-z0-9_./-]+$ ]] || die "POSTGRES_PASSWORD_FILE=$password_file: use a plain path"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "postgres-entrypoint: initialising a new cluster in $PGDATA"
  initdb -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 \
    --locale=C.UTF-8 >/dev/null
  # Every address may connect, always with the password (the stack's network is internal).
  printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
fi

socket_dir=/var/run/postgresql
pg_ctl -D "$PGDATA" -w -t 60 -l /tmp/postgres-setup.log \
  -o "-c listen_addresses='' -c unix_socket_directories=$socket_dir" start >/dev/null \
  || { cat /tmp/postgres-setup.log >&2; die "the setup server did not start"; }
psql -h "$socket_dir" -U postgres -d postgres -v ON_ERROR_STOP=1 -q -v user="$user" -v db="$db" <<SQL
\\set password \`cat $password_file\`
SELECT format('CREATE ROLE %I LOGIN', :'user') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user')
\\gexec
ALTER ROLE :"user" WITH LOGIN PASSWORD :'password';
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')
\\gexec
SQL
pg_ctl -D "$PGDATA" -w -t 60 -m fast stop >/dev/null
echo "postgres-entrypoint: role $user and database $db ready; starting PostgreSQL"
exec postgres -D "$PGDATA" -c listen_addresses='*' -c "unix_socket_directories=$socket_dir" "$@"
