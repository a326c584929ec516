#!/usr/bin/env bash
# Checks the deployment files that can be checked on this machine (no container engine runs
# here): the systemd unit with systemd-analyze verify (against the built suanlid), the compose
# file and the Prometheus config as YAML with the keys they need, and the Containerfile's stages.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if command -v systemd-analyze >/dev/null; then
  sed "s#/usr/local/bin/suanlid#$(pwd)/$build/bin/suanlid#" deploy/systemd/suanlid.service \
    >"$tmp/suanlid.service"
  systemd-analyze verify "$tmp/suanlid.service"
else
  echo "check_deploy: systemd-analyze missing; unit not verified" >&2
fi
python3 - <<'PY'
import sys, yaml
c = yaml.safe_load(open("deploy/compose.yaml"))
for s in ("postgres", "suanlid", "prometheus"):
    assert s in c["services"], f"compose: no service {s}"
assert c["services"]["suanlid"]["environment"]["SUANLI_STORE"].startswith("postgresql://")
p = yaml.safe_load(open("deploy/prometheus/prometheus.yml"))
assert p["scrape_configs"][0]["job_name"] == "suanlid"
f = open("deploy/container/Containerfile").read()
assert f.count("\nFROM ") + f.startswith("FROM ") >= 2, "Containerfile: not multi-stage"
assert "\nUSER suanli" in f, "Containerfile: runs as root"
# Every suanli_ metric the alert rules and the Grafana dashboard use is a documented one
# (docs/METRICS.md, which tests/e2e/metrics_test.cc checks against a running suanlid).
import json, re
documented = set(re.findall(r"^\| `(suanli_\w+)`", open("docs/METRICS.md").read(), re.M))
assert documented, "docs/METRICS.md lists no metrics"
def base(name):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in documented:
            return name[: -len(suffix)]
    return name
json.load(open("deploy/grafana/suanli.json"))  # well-formed
for path in ("deploy/prometheus/alerts.yml", "deploy/grafana/suanli.json"):
    used = set(re.findall(r"suanli_[a-z0-9_]+", open(path).read()))
    unknown = sorted(n for n in used if base(n) not in documented)
    assert not unknown, f"{path}: uses metrics that are not documented/exported: {unknown}"
PY
# promtool (Debian's prometheus package) checks the scrape config and the alert rules, and lints
# the /metrics of a real suanlid. It is taken from the package without installing it (that would
# start a Prometheus server); without apt access the files stay checked as YAML only.
promtool=$(command -v promtool || true)
if [ -z "$promtool" ] && (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) &&
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/prometheus" 2>/dev/null; then
  promtool="$tmp/prometheus/usr/bin/promtool"
fi
promtool_checked="promtool not available"
if [ -n "$promtool" ] && [ -x "$promtool" ]; then
  "$promtool" check config deploy/prometheus/prometheus.yml >/dev/null
  "$promtool" check rules deploy/prometheus/alerts.yml >/dev/null
  "$build/bin/suanlid" --listen=127.0.0.1:0 --http=127.0.0.1:0 --store="sqlite:$tmp/metrics.db" \
    --admin-key-file="$tmp/admin.key" >"$tmp/suanlid.log" 2>&1 &
  pid=$!
  port=""
  for _ in $(seq 100); do
    port=$(sed -n 's/.*serving HTTP on .*(port \([0-9]*\)).*/\1/p' "$tmp/suanlid.log")
    [ -n "$port" ] && break
    sleep 0.1
  done
  if [ -z "$port" ]; then
    kill "$pid" 2>/dev/null || true
    cat "$tmp/suanlid.log" >&2
    echo "check_deploy: suanlid did not start its HTTP server" >&2
    exit 1
  fi
  python3 -c "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(
      'http://127.0.0.1:$port/metrics', timeout=10).read().decode())" >"$tmp/metrics.txt"
  kill "$pid"
  wait "$pid" || true
  "$promtool" check metrics <"$tmp/metrics.txt"
  promtool_checked="prometheus config, alert rules and /metrics checked with promtool"
else
  echo "check_deploy: promtool not available (apt-get download prometheus failed)" >&2
fi
echo "deploy: ok (systemd unit verified; compose, Containerfile checked statically;" \
  "$promtool_checked)"
