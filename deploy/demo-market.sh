#!/usr/bin/env bash
# Registers a small demo market on a running suanlid through the `suanli` CLI, then runs a few
# buyers through it. Used by deploy/quickstart.sh; safe to read as a tour of the CLI.
#
#   deploy/demo-market.sh SERVER ADMIN_KEY_FILE OUT_DIR
#
# Writes the demo accounts' keys to OUT_DIR/<name>.key (mode 0600).
set -euo pipefail
SERVER=$1
ADMIN_KEY=$(cat "$2")
OUT=$3
CLI=${SUANLI_CLI:-./build/bin/suanli}
umask 077

cli() { "$CLI" --server="$SERVER" "$@"; }
say() { printf '  %s\n' "$*"; }

# account NAME ROLE: creates it and keeps its key in OUT/NAME.key.
account() {
  cli --key="$ADMIN_KEY" account create --role="$2" --name="$1" --output=json 2>/dev/null |
    sed -n 's/.*"api_\{0,1\}[kK]ey": *"\([^"]*\)".*/\1/p' >"$OUT/$1.key"
  [ -s "$OUT/$1.key" ] || { echo "demo: could not create account $1" >&2; exit 1; }
}

echo "demo: accounts (3 operators, 3 buyers)"
for a in telecom-cloud:operator shanghai-gov-dc:operator westlake-ai:operator \
         lab-llm:buyer studio-gen:buyer robotics-co:buyer; do
  account "${a%%:*}" "${a##*:}"
done
TEL=$(cat "$OUT/telecom-cloud.key"); GOV=$(cat "$OUT/shanghai-gov-dc.key")
WL=$(cat "$OUT/westlake-ai.key")

# center KEY ID NAME REGION TYPE [TAG...]
center() {
  local key=$1 id=$2 name=$3 region=$4 type=$5; shift 5
  local tags=(); for t in "$@"; do tags+=("--tag=$t"); done
  cli --key="$key" center register --id="$id" --name="$name" --region="$region" --type="$type" \
    "${tags[@]}" >/dev/null
}
# domain KEY CENTER ID FABRIC GBPS MODEL GPUS_PER_NODE NODES
domain() {
  cli --key="$1" domain add --center="$2" --id="$3" --fabric="$4" --gbps="$5" >/dev/null
  cli --key="$1" node add --center="$2" --domain="$3" --model="$6" --gpus-per-node="$7" \
    --count="$8" >/dev/null
}
# nodes CENTER DOMAIN FROM TO: the ids node add gave nodes FROM..TO of a domain, comma-separated.
nodes() {
  local ids=() i
  for ((i = $3; i <= $4; i++)); do ids+=("$(printf '%s-%s-n%04d' "$1" "$2" "$i")"); done
  local IFS=,; echo "${ids[*]}"
}

echo "demo: centers of every type, fabric domains and nodes"
center "$TEL" gz-carrier-1 "Guangzhou Carrier DC 1" cn-south-1 carrier data-in-cn
domain "$TEL" gz-carrier-1 ib-a infiniband 400 H800-SXM5-80G 8 64
domain "$TEL" gz-carrier-1 roce-b roce 200 A800-SXM4-80G 8 48
center "$TEL" wh-carrier-2 "Wuhan Carrier DC 2" cn-central-1 carrier data-in-cn
domain "$TEL" wh-carrier-2 ib-a infiniband 400 Ascend910B-64G 8 40
center "$GOV" sh-gov-1 "Shanghai Municipal Computing Center" cn-east-2 government data-in-cn mlps-3
domain "$GOV" sh-gov-1 ib-a infiniband 400 H100-SXM5-80G 8 64
domain "$GOV" sh-gov-1 ib-b infiniband 400 H100-SXM5-80G 8 32
domain "$GOV" sh-gov-1 eth-c ethernet 100 L40S-48G 4 40
center "$GOV" sh-univ-1 "Shanghai University HPC" cn-east-2 academic
domain "$GOV" sh-univ-1 ib-a infiniband 200 A100-SXM4-80G 8 24
center "$WL" hz-inet-1 "Hangzhou Internet DC" cn-east-1 internet
domain "$WL" hz-inet-1 nvl-a nvlink 900 H200-SXM5-141G 8 16
domain "$WL" hz-inet-1 roce-b roce 200 H20-96G 8 40
center "$WL" hz-ent-1 "Hangzhou Enterprise Cloud" cn-east-1 enterprise
domain "$WL" hz-ent-1 eth-a ethernet 25 RTX4090-24G 8 32

echo "demo: fragmented offers (some domains whole, some node ranges, windows from days to weeks)"
offer() { cli --key="$1" offer create "${@:2}" >/dev/null; }
offer "$TEL" --center=gz-carrier-1 --id=gz-ib-a-1 --nodes="$(nodes gz-carrier-1 ib-a 1 40)" \
  --until=+21d --price=24.80
offer "$TEL" --center=gz-carrier-1 --id=gz-ib-a-2 --nodes="$(nodes gz-carrier-1 ib-a 41 64)" \
  --from=+2d --until=+9d --price=21.50 --min-lease=24h
offer "$TEL" --center=gz-carrier-1 --id=gz-roce-b --domain=roce-b --until=+30d --price=14.20
offer "$TEL" --center=wh-carrier-2 --id=wh-910b --domain=ib-a --until=+14d --price=11.00
offer "$GOV" --center=sh-gov-1 --id=sh-ib-a --domain=ib-a --until=+30d --price=26.50 \
  --whole-node-only
offer "$GOV" --center=sh-gov-1 --id=sh-ib-b-1 --nodes="$(nodes sh-gov-1 ib-b 1 16)" \
  --until=+3d --price=22.00
offer "$GOV" --center=sh-gov-1 --id=sh-eth-c --domain=eth-c --until=+30d --price=6.40
offer "$GOV" --center=sh-univ-1 --id=univ-a100 --domain=ib-a --until=+7d --price=9.90
offer "$WL" --center=hz-inet-1 --id=hz-h200 --domain=nvl-a --until=+10d --price=38.00
offer "$WL" --center=hz-inet-1 --id=hz-h20 --domain=roce-b --until=+30d --price=8.80
offer "$WL" --center=hz-ent-1 --id=hz-4090 --domain=eth-a --until=+30d --price=2.60
cli --key="$GOV" node health sh-gov-1-ib-a-n0007 --health=down >/dev/null

echo "demo: buyers at work"
buy() {
  local who=$1; shift
  if out=$(cli --key="$(cat "$OUT/$who.key")" "$@" 2>&1); then
    say "$who: $(echo "$out" | head -n 4 | tr -s ' ' | paste -sd ';' -)"
  else
    say "$who: $(echo "$out" | grep -m1 'what would work' | sed 's/^suanli: //' ||
                 echo "$out" | head -n 1)"
  fi
}
buy lab-llm allocate --model=H100-SXM5-80G,H800-SXM5-80G --gpus=128 --gpus-per-node=8 \
  --locality=domain --min-fabric=infiniband --max-price=30 --duration=72h \
  --idempotency-key=pretrain-1
buy lab-llm allocate --model=H100-SXM5-80G --gpus=512 --gpus-per-node=8 --locality=domain \
  --max-price=30 --duration=24h
buy studio-gen allocate --model=L40S-48G,RTX4090-24G --gpus=24 --max-price=5 --duration=8h
buy studio-gen allocate --model=H200-SXM5-141G --gpus=16 --gpus-per-node=8 --locality=domain \
  --max-price=30 --duration=12h
buy robotics-co allocate --model=A800-SXM4-80G,A100-SXM4-80G --gpus=4 --locality=node \
  --max-price=15 --duration=6h
buy robotics-co allocate --model=H800-SXM5-80G --gpus=64 --gpus-per-node=8 --locality=domain \
  --max-price=25 --duration=48h --start=+3d
buy lab-llm quote --model=Ascend910B-64G --gpus=64 --gpus-per-node=8 --locality=domain \
  --max-price=12 --duration=24h --hold=10m
