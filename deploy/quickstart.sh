#!/usr/bin/env bash
# The first command: installs what is missing, builds, starts the broker (suanlid) on the embedded
# SQLite store under ./var with a demo market, runs a few buyers through it, and stays up until
# Ctrl-C, then stops the broker cleanly.
#
#   ./deploy/quickstart.sh            start (reusing ./var from an earlier run when there is one)
#   ./deploy/quickstart.sh --fresh    start over with an empty ./var
#   SUANLI_PORT=7700                  the gRPC port on 127.0.0.1 (default 7700)
#   SUANLI_HTTP_PORT=7701             the dashboard and /metrics on 127.0.0.1 (default 7701)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PORT=${SUANLI_PORT:-7700}
SERVER=127.0.0.1:$PORT
HTTP=127.0.0.1:${SUANLI_HTTP_PORT:-7701}
VAR=$ROOT/var

if [ "${1:-}" = "--fresh" ]; then rm -rf "$VAR"; fi

./deploy/install-deps.sh
echo "quickstart: building (Release) ..."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target suanlid suanli >/dev/null

mkdir -p "$VAR/keys"
chmod 700 "$VAR"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "quickstart: something already listens on $SERVER (an earlier quickstart?)." >&2
  echo "            stop it, or pick another port: SUANLI_PORT=7710 $0" >&2
  exit 1
fi

echo "quickstart: starting suanlid on $SERVER (store: sqlite:var/suanli.db, log: var/suanlid.log)"
./build/bin/suanlid --listen="$SERVER" --http="$HTTP" --store="sqlite:$VAR/suanli.db" \
  --admin-key-file="$VAR/admin.key" 2>>"$VAR/suanlid.log" &
PID=$!
stop() {
  trap - INT TERM EXIT
  if kill -0 "$PID" 2>/dev/null; then
    echo
    echo "quickstart: stopping suanlid (SIGTERM: calls in flight finish, the store is closed) ..."
    kill -TERM "$PID"
    wait "$PID" || true
  fi
  echo "quickstart: stopped. State is kept in var/; run again to continue, or --fresh to start over."
}
trap stop INT TERM EXIT

for _ in $(seq 1 100); do
  if [ -s "$VAR/admin.key" ] &&
     ./build/bin/suanli --server="$SERVER" --key="$(cat "$VAR/admin.key")" ping >/dev/null 2>&1; then
    break
  fi
  kill -0 "$PID" 2>/dev/null || { echo "quickstart: suanlid did not start:" >&2; tail "$VAR/suanlid.log" >&2; exit 1; }
  sleep 0.1
done

if [ ! -s "$VAR/keys/lab-llm.key" ]; then
  ./deploy/demo-market.sh "$SERVER" "$VAR/admin.key" "$VAR/keys"
else
  echo "quickstart: reusing the demo market in var/ (./deploy/quickstart.sh --fresh starts over)"
fi

CLI="./build/bin/suanli --server=$SERVER"
echo
echo "The market now (cheapest first):"
sleep 0.2
$CLI --key="$(cat "$VAR/keys/lab-llm.key")" catalog | head -n 16
echo
echo "lab-llm's allocations:"
$CLI --key="$(cat "$VAR/keys/lab-llm.key")" allocation list

cat <<TXT

Suanli is running: suanlid serves gRPC on $SERVER, state in var/suanli.db, log in var/suanlid.log.
Dashboard: http://$HTTP/   Prometheus metrics: http://$HTTP/metrics
Keys: var/admin.key (admin), var/keys/<account>.key (operators telecom-cloud, shanghai-gov-dc,
westlake-ai; buyers lab-llm, studio-gen, robotics-co).

Try, in another terminal:
  export SUANLI_SERVER=$SERVER SUANLI_KEY=\$(cat var/keys/lab-llm.key)
  ./build/bin/suanli catalog 'model=H100-SXM5-80G,H800-SXM5-80G free_gpus>=64 fabric=infiniband price<=30'
  ./build/bin/suanli quote --model=H100-SXM5-80G --gpus=16 --gpus-per-node=8 --locality=domain --max-price=30 --duration=4h
  ./build/bin/suanli allocate --model=H100-SXM5-80G --gpus=16 --gpus-per-node=8 --locality=domain --max-price=30 --duration=4h
  ./build/bin/suanli allocation list
  ./build/bin/suanli allocation watch           (and release one from a third terminal)
  ./build/bin/suanli release ID
  SUANLI_KEY=\$(cat var/keys/shanghai-gov-dc.key) ./build/bin/suanli sold list
  SUANLI_KEY=\$(cat var/admin.key) ./build/bin/suanli stats --by=center   (GMV, utilization, fill rate)
  ./build/bin/suanli --help                     every command; docs/QUERY.md for catalog queries

Press Ctrl-C to stop the broker.
TXT
wait "$PID"
