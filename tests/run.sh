#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: first the Release build, then the same
# suite built with AddressSanitizer + UndefinedBehaviorSanitizer. Exits non-zero on any failure.
#
#   ./tests/run.sh              everything
#   SUANLI_SKIP_SANITIZE=1 ./tests/run.sh   only the Release build (a quicker local loop)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
JOBS=$(nproc)

./deploy/install-deps.sh

step() { printf '\n==== %s\n' "$*"; }

step "static checks"
bash tests/tools/check_scheduler_purity.sh
bash tests/tools/check_format.sh

step "Release build"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$JOBS"

step "deployment files"
bash tests/tools/check_deploy.sh build

step "clang-tidy"
bash tests/tools/check_tidy.sh build

step "tests (Release; PostgreSQL ones against a private server)"
# with_postgres.sh starts a throwaway PostgreSQL on a unix socket and stops it however ctest ends.
tests/tools/with_postgres.sh ctest --test-dir build --output-on-failure -j "$JOBS"

if [ "${SUANLI_SKIP_SANITIZE:-0}" != "1" ]; then
  step "ASan+UBSan build"
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSUANLI_SANITIZE=ON >/dev/null
  cmake --build build-asan -j "$JOBS"
  step "tests (ASan+UBSan)"
  # The property test runs a smaller share of its operations under the sanitizers.
  SUANLI_PROPERTY_SCALE=4 ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    tests/tools/with_postgres.sh ctest --test-dir build-asan --output-on-failure -j "$JOBS"
fi

step "fuzzing (bounded)"
# libFuzzer targets under ASan+UBSan, each for a fixed number of inputs from the kept corpus.
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSUANLI_SANITIZE=ON -DSUANLI_FUZZ=ON >/dev/null
cmake --build build-fuzz -j "$JOBS" --target catalog_query_fuzz validate_fuzz
fuzz_out=$(mktemp -d)
trap 'rm -rf "$fuzz_out"' EXIT
runs=${SUANLI_FUZZ_RUNS:-2000000}
for target in catalog_query validate; do
  mkdir -p "$fuzz_out/$target"
  echo "-- ${target}_fuzz: $runs inputs"
  ./build-fuzz/bin/${target}_fuzz -runs="$runs" -max_len=512 -print_final_stats=1 \
    "$fuzz_out/$target" "tests/fuzz/corpus/$target" 2>&1 | grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units)|ERROR|SUMMARY'
done

step "all tests passed"
