#!/usr/bin/env bash
# Start or stop a throw-away PostgreSQL server for the test suite, listening
# on a Unix socket only (no TCP), in a temporary directory.
#   tools/pg-test-server.sh start DIR   -> prints the socket directory
#   tools/pg-test-server.sh stop DIR
set -uo pipefail
cmd=${1:-}; dir=${2:-}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bin" ] && [ -x "$bin/initdb" ] || { echo "no PostgreSQL server installed" >&2; exit 1; }
run() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case "$cmd" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
    run "$bin/initdb" -D "$dir/data" -A trust -U postgres >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    run "$bin/pg_ctl" -D "$dir/data" -o "-c listen_addresses='' -k $dir" -l "$dir/server.log" -w start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    echo "$dir"
    ;;
  stop)
    run "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1
    rm -rf "$dir"
    ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
