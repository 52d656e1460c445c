#!/bin/sh
# Starts HAProxy as root only long enough to read its config; it then runs as `haproxy` with the
# group that owns the mounted Docker socket (its gid differs between hosts), and nothing else.
set -eu
socket=/var/run/docker.sock
[ -S "$socket" ] || { echo "docker-socket-proxy: $socket is not mounted" >&2; exit 1; }
gid=$(stat -c %g "$socket")
printf 'global\n    gid %s\n' "$gid" > /run/haproxy-gid.cfg
# -db: foreground, no master process: PID 1 itself drops to the unprivileged user.
exec haproxy -db -f /usr/local/etc/haproxy/haproxy.cfg -f /run/haproxy-gid.cfg
