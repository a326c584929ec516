#!/usr/bin/env bash
# clang-tidy (the repository's .clang-tidy) on every C++ source, warnings as errors. Needs a
# configured build directory with compile_commands.json (default: build).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
command -v clang-tidy >/dev/null || { echo "clang-tidy missing" >&2; exit 1; }
[ -f "$build/compile_commands.json" ] || { echo "no $build/compile_commands.json" >&2; exit 1; }
# Every tracked source the build compiles (the fuzz targets are compiled only in the fuzz build,
# with clang and -Werror, so they are checked by the compiler there).
mapfile -t files < <(git ls-files '*.cc' | while read -r f; do
  grep -q "\"file\": \"$(pwd)/$f\"" "$build/compile_commands.json" && echo "$f"; done)
# Two at a time: each file takes a few seconds.
printf '%s\n' "${files[@]}" | xargs -P "$(nproc)" -n 2 clang-tidy -p "$build" --quiet \
  --warnings-as-errors='*' 2>/dev/null
echo "clang-tidy: ok (${#files[@]} files)"
