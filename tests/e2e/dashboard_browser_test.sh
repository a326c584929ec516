#!/usr/bin/env bash
# Browser test of the ops dashboard: starts suanlid (from BIN_DIR) with --http, seeds a known
# market through the `suanli` CLI, opens http://127.0.0.1:PORT/ in headless Chromium and checks
# that the rendered page shows the market's figures. Keeps a screenshot in ARTIFACT_DIR.
#
#   tests/e2e/dashboard_browser_test.sh BIN_DIR ARTIFACT_DIR
#
# Exits 77 (skipped) when Chromium is not installed.
set -euo pipefail
BIN=$(cd "$1" && pwd)
ARTIFACTS=$2
mkdir -p "$ARTIFACTS"
ARTIFACTS=$(cd "$ARTIFACTS" && pwd)
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
[ -n "$CHROMIUM" ] || { echo "SKIP: no chromium"; exit 77; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/suanli-dash-XXXXXX")
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; echo "--- suanlid log" >&2; cat "$TMP/suanlid.log" >&2 || true; exit 1; }

# Two free loopback ports.
read -r GRPC HTTP < <(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])')

"$BIN/suanlid" --listen="127.0.0.1:$GRPC" --http="127.0.0.1:$HTTP" --store="sqlite:$TMP/suanli.db" \
  --admin-key-file="$TMP/admin.key" 2>"$TMP/suanlid.log" &
PID=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$HTTP/healthz" >/dev/null 2>&1 && [ -s "$TMP/admin.key" ] && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$HTTP/healthz" >/dev/null || fail "suanlid did not start"

cli() { "$BIN/suanli" --server="127.0.0.1:$GRPC" "$@"; }
ADMIN=$(cat "$TMP/admin.key")
key() {
  cli --key="$ADMIN" account create --role="$1" --name="$2" --output=json |
    sed -n 's/.*"api_\{0,1\}[kK]ey": *"\([^"]*\)".*/\1/p'
}
OP=$(key operator shanghai-gov)
BUYER=$(key buyer lab-llm)
[ -n "$OP" ] && [ -n "$BUYER" ] || fail "could not create accounts"

# The known market: 6 nodes x 8 H100 = 48 GPUs in cn-east-2 (sh-gov-1: 32, sh-univ-1: 16);
# one allocation of 16 GPUs in sh-gov-1 (the cheaper center); one rejection (price).
cli --key="$OP" center register --id=sh-gov-1 --name="Shanghai Municipal" --region=cn-east-2 \
  --type=government >/dev/null
cli --key="$OP" domain add --center=sh-gov-1 --id=ib-a --fabric=infiniband --gbps=400 >/dev/null
cli --key="$OP" node add --center=sh-gov-1 --domain=ib-a --model=H100-SXM5-80G --gpus-per-node=8 \
  --count=4 >/dev/null
cli --key="$OP" offer create --center=sh-gov-1 --id=sh-gov-offer --domain=ib-a --until=+30d \
  --price=20.00 >/dev/null
cli --key="$OP" center register --id=sh-univ-1 --name="Shanghai University" --region=cn-east-2 \
  --type=academic >/dev/null
cli --key="$OP" domain add --center=sh-univ-1 --id=ib-a --fabric=infiniband --gbps=200 >/dev/null
cli --key="$OP" node add --center=sh-univ-1 --domain=ib-a --model=H100-SXM5-80G --gpus-per-node=8 \
  --count=2 >/dev/null
cli --key="$OP" offer create --center=sh-univ-1 --id=sh-univ-offer --domain=ib-a --until=+30d \
  --price=30.00 >/dev/null
cli --key="$BUYER" allocate --model=H100-SXM5-80G --gpus=16 --gpus-per-node=8 --locality=domain \
  --duration=2h --max-price=25 >/dev/null || fail "the allocation was not granted"
if cli --key="$BUYER" allocate --model=H100-SXM5-80G --gpus=8 --gpus-per-node=8 \
  --duration=1h --max-price=1 >/dev/null 2>&1; then
  fail "a price below every ask was granted"
fi

URL="http://127.0.0.1:$HTTP/"
chrome() {
  "$CHROMIUM" --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run \
    --user-data-dir="$TMP/chrome" --virtual-time-budget=5000 "$@" 2>>"$TMP/chromium.log"
}
DOM=$(chrome --dump-dom "$URL") || fail "chromium could not load $URL: $(tail -5 "$TMP/chromium.log")"
echo "$DOM" >"$ARTIFACTS/dashboard.html"

# expect TEXT WHAT: the rendered DOM contains TEXT.
expect() { grep -qF -- "$1" <<<"$DOM" || fail "the dashboard does not show $2 ('$1'); DOM in $ARTIFACTS/dashboard.html"; }
expect 'data-loaded="1"' "that its data loaded"
expect 'id="kpi-gpus">48<' "48 GPUs registered"
expect 'id="kpi-sold">16<' "16 GPUs sold"
expect 'id="kpi-util">33.3%<' "33.3% utilization"
expect 'id="kpi-free">32<' "32 GPUs free on sale"
expect 'id="kpi-live">1<' "one live allocation"
expect 'id="kpi-fill">50.0%<' "a fill rate of 50% (1 granted, 1 rejected)"
expect '<span class="center-id">sh-gov-1</span>' "center sh-gov-1"
expect '<span class="center-id">sh-univ-1</span>' "center sh-univ-1"
expect '<td class="">H100-SXM5-80G</td>' "the GPU model"
expect 'price above ceiling' "the rejection reason"
expect '<td class="n">50.0%</td>' "sh-gov-1 at 50% utilization"

chrome --screenshot="$ARTIFACTS/dashboard.png" --window-size=1400,1000 "$URL" >/dev/null ||
  fail "chromium could not take a screenshot"
[ -s "$ARTIFACTS/dashboard.png" ] || fail "no screenshot"
echo "PASS: the dashboard shows the known market; screenshot: $ARTIFACTS/dashboard.png"
