#!/usr/bin/env bash
# The first command: installs what is missing, builds, and shows what Suanli can do today.
#
# Today Suanli is its allocation core (scheduler/): the broker (suanlid), the SDK and the CLI are
# the next issues. So this script builds everything, then drives the core with a small standard
# market (65,536 GPUs, 100,000 buyer requests) and prints what happened. When the broker lands,
# this script will start it on the embedded store with a demo market instead.
set -euo pipefail
cd "$(dirname "$0")/.."

./deploy/install-deps.sh
echo "quickstart: building (Release) ..."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
echo "quickstart: driving the allocation core with a small standard market ..."
echo
./build/bin/suanli-core-bench --gpus=65536 --requests=100000 --seed=1
cat <<'TXT'

What next:
  ./build/bin/suanli-core-bench --help                   every flag
  ./build/bin/suanli-core-bench --gpus=1048576 --json    the full-size market (docs/BENCHMARKS.md)
  ./tests/run.sh                                         build and run every test
  docs/ARCHITECTURE.md                                   how an allocation is decided
TXT
