#!/bin/bash
# Backups of the stack's PostgreSQL database (the `backup` service and `spaced backup` / `spaced restore`).
#
#   spaced-backup schedule       a backup every BACKUP_INTERVAL seconds, forever (the backup service)
#   spaced-backup once [KIND]    one backup now (KIND: scheduled or manual); prints the result line
#   spaced-backup restore FILE   restore FILE (a name in BACKUP_DIR) into the database; prints the result
#   spaced-backup health         the scheduler's heartbeat is fresh (the service's healthcheck)
#
# A backup is a custom-format pg_dump written to BACKUP_DIR. Each one is verified before it counts:
# it is restored into a scratch PostgreSQL cluster made in this container for the purpose (never the
# production server) and its documents are counted (SELECT count(*) FROM documents). A dump that does
# not restore, has no documents table or is smaller than BACKUP_MIN_BYTES is kept as *.failed and
# reported. The outcome goes to node-exporter's textfile collector (BACKUP_METRICS_DIR/spaced_backup.prom):
# spaced_backup_last_{attempt,success}_timestamp_seconds, _last_size_bytes, _last_documents,
# _last_verify_ok, _last_duration_seconds, plus the configured _interval_seconds and _min_size_bytes.
# Only the newest BACKUP_KEEP scheduled backups are kept; manual ones stay until removed by hand.
#
# Connection: PGHOST, PGPORT, PGUSER, PGDATABASE and POSTGRES_PASSWORD_FILE (a Docker secret).
# Results are printed as one line `SPACED_BACKUP_RESULT {json}` (what the `spaced` CLI reads).
set -euo pipefail

BACKUP_DIR="${BACKUP_DIR:-/backups}"
METRICS_DIR="${BACKUP_METRICS_DIR:-/metrics}"
INTERVAL="${BACKUP_INTERVAL:-21600}"
KEEP="${BACKUP_KEEP:-28}"
MIN_BYTES="${BACKUP_MIN_BYTES:-1024}"
HEARTBEAT=/tmp/spaced-backup-heartbeat
export PGHOST="${PGHOST:-postgres}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-item_socket}"
export PGDATABASE="${PGDATABASE:-spaced}" PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-10}"

log() { printf '%s spaced-backup: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for number in INTERVAL KEEP MIN_BYTES; do
  [[ "${!number}" =~ ^[0-9]+$ ]] || die "BACKUP_${number}=${!number} is not a whole number"
done

password_file() {
  # libpq's password file, private to this process tree (the secret itself has no libpq format).
  local source="${POSTGRES_PASSWORD_FILE:-}"
  [ -n "${PGPASSFILE:-}" ] && [ -f "$PGPASSFILE" ] && return 0
  [ -r "$source" ] || die "POSTGRES_PASSWORD_FILE=$source cannot be read (is the secret mounted?)"
  PGPASSFILE="$(mktemp /tmp/spaced-backup-pgpass.XXXXXX)"
  chmod 600 "$PGPASSFILE"
  printf '*:*:*:*:%s\n' "$(sed -e 's/\\/\\\\/g' -e 's/:/\\:/g' "$source")" > "$PGPASSFILE"
  export PGPASSFILE
}

metric_value() {  # the previous value of a metric in the metrics file, or the default given
  local line
  line="$(grep -E "^$1 " "$METRICS_DIR/spaced_backup.prom" 2>/dev/null | tail -n 1)" || true
  echo "${line#* }" | grep -E '^[0-9.e+-]+$' || echo "$2"
}

write_metrics() {  # verify_ok size documents started finished
  local ok="$1" size="$2" documents="$3" started="$4" finished="$5" success tmp
  success="$(metric_value spaced_backup_last_success_timestamp_seconds 0)"
  [ "$ok" = 1 ] && success="$finished"
  mkdir -p "$METRICS_DIR"
  tmp="$METRICS_DIR/.spaced_backup.prom.$$"
  {
    echo "# HELP spaced_backup_last_attempt_timestamp_seconds When the last backup attempt ended."
    echo "# TYPE spaced_backup_last_attempt_timestamp_seconds gauge"
    echo "spaced_backup_last_attempt_timestamp_seconds $finished"
    echo "# HELP spaced_backup_last_success_timestamp_seconds When the last verified backup ended."
    echo "# TYPE spaced_backup_last_success_timestamp_seconds gauge"
    echo "spaced_backup_last_success_timestamp_seconds $success"
    echo "# HELP spaced_backup_last_verify_ok 1 if the last backup restored into a scratch database, else 0."
    echo "# TYPE spaced_backup_last_verify_ok gauge"
    echo "spaced_backup_last_verify_ok $ok"
    echo "# HELP spaced_backup_last_size_bytes Size of the last backup's dump file."
    echo "# TYPE spaced_backup_last_size_bytes gauge"
    echo "spaced_backup_last_size_bytes $size"
    echo "# HELP spaced_backup_last_documents Documents in the last backup, counted after restoring it."
    echo "# TYPE spaced_backup_last_documents gauge"
    echo "spaced_backup_last_documents $documents"
    echo "# HELP spaced_backup_last_duration_seconds How long the last backup and its verification took."
    echo "# TYPE spaced_backup_last_duration_seconds gauge"
    echo "spaced_backup_last_duration_seconds $((finished - started))"
    echo "# HELP spaced_backup_interval_seconds Configured seconds between scheduled backups."
    echo "# TYPE spaced_backup_interval_seconds gauge"
    echo "spaced_backup_interval_seconds $INTERVAL"
    echo "# HELP spaced_backup_min_size_bytes Configured floor below which a backup is too small."
    echo "# TYPE spaced_backup_min_size_bytes gauge"
    echo "spaced_backup_min_size_bytes $MIN_BYTES"
  } > "$tmp"
  chmod 644 "$tmp"
  mv -f "$tmp" "$METRICS_DIR/spaced_backup.prom"
}

count_documents() {  # psql options...: the documents of a database, or fail without a documents table
  psql "$@" -v ON_ERROR_STOP=1 -X -A -t -q -c 'SELECT count(*) FROM documents'
}

verify() {  # file -> prints the documents it holds, restored into a scratch cluster
  local file="$1" scratch documents status=0
  scratch="$(mktemp -d /tmp/spaced-verify.XXXXXX)"
  initdb -D "$scratch/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$scratch/initdb.log" 2>&1 \
    || { cat "$scratch/initdb.log" >&2; rm -rf "$scratch"; return 1; }
  if pg_ctl -D "$scratch/data" -w -t 60 -l "$scratch/server.log" -o \
      "-c listen_addresses='' -c unix_socket_directories=$scratch -c fsync=off -c shared_buffers=16MB" \
      start >/dev/null; then
    if createdb -h "$scratch" -U postgres verify \
        && pg_restore -h "$scratch" -U postgres -d verify --no-owner --no-privileges --exit-on-error "$file" \
        && documents="$(count_documents -h "$scratch" -U postgres -d verify)"; then
      echo "$documents"
    else
      status=1
    fi
    pg_ctl -D "$scratch/data" -w -t 60 -m immediate stop >/dev/null || true
  else
    cat "$scratch/server.log" >&2
    status=1
  fi
  rm -rf "$scratch"
  return "$status"
}

result() {  # ok file size documents [error]: the line the CLI reads
  printf 'SPACED_BACKUP_RESULT {"ok": %s, "file": "%s", "size": %s, "documents": %s, "error": "%s"}\n' \
    "$1" "$2" "$3" "$4" "${5:-}"
}

once() {
  local kind="${1:-manual}" started finished stamp name partial size=0 documents=0 error=""
  [[ "$kind" =~ ^(scheduled|manual)$ ]] || die "backup kind '$kind' must be scheduled or manual"
  password_file
  mkdir -p "$BACKUP_DIR"
  exec 9>"$BACKUP_DIR/.lock"
  flock 9  # one backup at a time (the schedule and a manual one)
  # What a backup cut short (a stopped container) left; none is in progress while the lock is held.
  rm -f "$BACKUP_DIR"/.spaced-*.partial
  started="$(date +%s)"
  stamp="$(date -u +%Y%m%dT%H%M%SZ)"
  name="spaced-$stamp-$kind.dump"
  partial="$BACKUP_DIR/.$name.partial"
  log "pg_dump of $PGDATABASE at $PGHOST:$PGPORT -> $name"
  if ! pg_dump --format=custom --compress=6 --no-owner --file="$partial"; then
    error="pg_dump failed"
  else
    size="$(stat -c %s "$partial")"
    if [ "$size" -lt "$MIN_BYTES" ]; then
      error="the dump has $size bytes, less than the floor of $MIN_BYTES (BACKUP_MIN_BYTES)"
    elif ! documents="$(verify "$partial")"; then
      documents=0
      error="the dump did not restore into a scratch database with a documents table"
    fi
  fi
  finished="$(date +%s)"
  if [ -n "$error" ]; then
    [ -f "$partial" ] && mv -f "$partial" "$BACKUP_DIR/${name%.dump}.failed"
    write_metrics 0 "$size" "$documents" "$started" "$finished"
    log "ERROR: backup $name: $error"
    result false "$name" "$size" "$documents" "$error"
    return 1
  fi
  mv -f "$partial" "$BACKUP_DIR/$name"
  write_metrics 1 "$size" "$documents" "$started" "$finished"
  log "backup $name: $size bytes, $documents documents, verified in a scratch database"
  # Keep the newest KEEP scheduled backups (and their failures' leftovers from before).
  { ls -1t "$BACKUP_DIR"/spaced-*-scheduled.dump 2>/dev/null || true; } | tail -n +"$((KEEP + 1))" | xargs -r rm -f --
  { ls -1t "$BACKUP_DIR"/spaced-*.failed 2>/dev/null || true; } | tail -n +"$((KEEP + 1))" | xargs -r rm -f --
  result true "$name" "$size" "$documents"
}

restore() {
  local name="${1:-}" file documents
  [[ "$name" =~ ^[A-Za-z0-9._-]+\.dump$ ]] || die "restore: '$name' is not a backup file name (spaced-*.dump)"
  file="$BACKUP_DIR/$name"
  if [ ! -f "$file" ]; then
    die "restore: no backup $name in $BACKUP_DIR; the newest are: $(cd "$BACKUP_DIR" && { ls -1t -- *.dump 2>/dev/null || true; } | head -n 10 | tr '\n' ' ')"
  fi
  password_file
  pg_restore --list "$file" >/dev/null || die "restore: $name is not a readable custom-format dump"
  log "restoring $name into $PGDATABASE at $PGHOST:$PGPORT (objects in the dump are dropped and made again)"
  pg_restore --clean --if-exists --no-owner --no-privileges --single-transaction --exit-on-error \
    -d "$PGDATABASE" "$file" || die "restore: pg_restore of $name failed; the database is unchanged"
  documents="$(count_documents)" || die "restore: the restored database has no documents table"
  log "restored $name: $documents documents"
  result true "$name" "$(stat -c %s "$file")" "$documents"
}

heartbeat() { touch "$HEARTBEAT"; }

pause() {  # sleep that a SIGTERM ends at once (bash runs traps only between foreground commands)
  sleep "$1" &
  wait $!
}

schedule() {
  [ "$INTERVAL" -ge 60 ] || die "BACKUP_INTERVAL=$INTERVAL: at least 60 seconds"
  # PID 1 of the container: without a trap bash ignores SIGTERM and Docker waits for SIGKILL.
  trap 'log "stopping"; kill $(jobs -p) 2>/dev/null; exit 0' TERM INT
  heartbeat
  password_file
  # The first backup waits for item_socket to have made its tables: a dump of a database without
  # them could not be verified (and would raise the failure alert on every fresh stack).
  until psql -X -A -t -q -c "SELECT to_regclass('public.documents') IS NOT NULL" 2>/dev/null | grep -q t; do
    heartbeat
    log "waiting for the documents table in $PGDATABASE at $PGHOST:$PGPORT"
    pause 10
  done
  local newest next now
  while true; do
    # Due when the newest scheduled backup is INTERVAL old (a restarted service does not back up
    # again at once).
    newest="$(ls -1t "$BACKUP_DIR"/spaced-*-scheduled.dump 2>/dev/null | head -n 1)" || true
    next=0
    [ -n "$newest" ] && next=$(( $(stat -c %Y "$newest") + INTERVAL ))
    now="$(date +%s)"
    if [ "$now" -ge "$next" ]; then
      # A subshell: its lock and its exit on errors end with it.
      ( once scheduled ) &
      wait $! || log "the scheduled backup failed; next try in $INTERVAL s"
      next=$((now + INTERVAL))
    fi
    local remaining
    while remaining=$((next - $(date +%s))); [ "$remaining" -gt 0 ]; do
      heartbeat
      pause $((remaining > 30 ? 30 : remaining))  # the schedule's pacing; the heartbeat stays fresh
    done
  done
}

health() {
  [ -f "$HEARTBEAT" ] || exit 1
  [ $(( $(date +%s) - $(stat -c %Y "$HEARTBEAT") )) -lt 120 ] || exit 1
}

command="${1:-}"
shift || true
case "$command" in
  schedule) schedule ;;
  once) once "$@" ;;
  restore) restore "$@" ;;
  health) health ;;
  *) die "usage: spaced-backup schedule | once [scheduled|manual] | restore FILE | health" ;;
esac
