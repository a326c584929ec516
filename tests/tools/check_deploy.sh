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
PY
echo "deploy: ok (systemd unit verified; compose, prometheus, Containerfile checked statically)"
