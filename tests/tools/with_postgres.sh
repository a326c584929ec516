#!/usr/bin/env bash
# Runs a command with a private, throwaway PostgreSQL server:
#
#   tests/tools/with_postgres.sh CMD ARGS...
#
# Makes a fresh temporary directory, creates a cluster in it (initdb), starts the server with
# pg_ctl listening only on a unix socket in that directory (no TCP), creates the database
# "suanli" and runs CMD with SUANLI_TEST_PG_URL set to its URL, e.g.
#   postgresql://postgres@/suanli?host=/tmp/suanli-pg-AbC123
# Whatever happens to CMD (success, failure, Ctrl-C, SIGTERM), the server is stopped and the
# directory removed; the script exits with CMD's status. Quiet unless something fails.
#
# The server keeps PostgreSQL's defaults for everything that concerns durability (fsync,
# synchronous_commit, full_page_writes, wal_sync_method), so tests that prove durability mean
# something; only sizes are made small. As root (CI), the server runs as the system user
# `postgres`, because initdb and postgres refuse to run as root.
#
# Environment: PG_BIN, the directory of initdb and pg_ctl (default /usr/lib/postgresql/15/bin).
set -euo pipefail

if [ $# -eq 0 ]; then
  echo "usage: $0 CMD [ARGS...]  (runs CMD with SUANLI_TEST_PG_URL set)" >&2
  exit 2
fi

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
for tool in initdb pg_ctl createdb; do
  if [ ! -x "$PG_BIN/$tool" ]; then
    echo "$0: $PG_BIN/$tool not found; install postgresql-15 or set PG_BIN" >&2
    exit 2
  fi
done

# Runs a command as the user that owns the cluster.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

dir=$(mktemp -d "${TMPDIR:-/tmp}/suanli-pg-XXXXXX")
data="$dir/data"
log="$dir/server.log"
started=0

# shellcheck disable=SC2317  # cleanup and on_signal run from traps
cleanup() {
  local status=$?
  trap - EXIT INT TERM HUP
  if [ "$started" -eq 1 ]; then
    as_owner "$PG_BIN/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  exit "$status"
}
trap cleanup EXIT
# A signal ends CMD (SIGTERM, or SIGHUP for SIGHUP; a background job ignores SIGINT; after 5 s,
# SIGKILL) and the script with the usual 128+N status; cleanup runs on the way out.
child=0
# shellcheck disable=SC2317
on_signal() {
  if [ "$child" -ne 0 ]; then
    kill -"$1" "$child" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$child" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  exit "$2"
}
trap 'on_signal HUP 129' HUP
trap 'on_signal TERM 130' INT
trap 'on_signal TERM 143' TERM

# Prints what the server said, then fails.
fail() {
  echo "$0: $*" >&2
  if [ -f "$log" ]; then
    echo "--- $log" >&2
    cat "$log" >&2
  fi
  exit 1
}

if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || fail "running as root needs the system user postgres"
  chown postgres: "$dir"
fi
chmod 700 "$dir"

# --no-sync only skips flushing initdb's own files (this cluster never outlives a crash of the
# machine); the server's settings stay the defaults.
if ! as_owner "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C \
  --no-sync >"$dir/initdb.log" 2>&1; then
  cat "$dir/initdb.log" >&2
  fail "initdb failed"
fi

options="-c listen_addresses='' -c unix_socket_directories='$dir' -c shared_buffers=16MB"
options+=" -c max_connections=50 -c max_wal_size=256MB -c log_min_messages=warning"
started=1  # from here on, stop it on the way out (it may be up even if pg_ctl failed)
if ! as_owner "$PG_BIN/pg_ctl" -D "$data" -l "$log" -o "$options" -w -t 60 start \
  >/dev/null 2>&1; then
  fail "the server did not start"
fi

as_owner "$PG_BIN/createdb" -h "$dir" -U postgres suanli >/dev/null 2>&1 ||
  fail "createdb failed"

export SUANLI_TEST_PG_URL="postgresql://postgres@/suanli?host=$dir"
export SUANLI_TEST_PG_DIR="$dir"
# In the background, so that a signal interrupts the `wait` at once.
"$@" &
child=$!
status=0
wait "$child" || status=$?
child=0
exit "$status"
