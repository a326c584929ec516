#!/usr/bin/env bash
# clang-tidy (the repository's .clang-tidy) on every C++ source, warnings as errors. Needs a
# configured build directory with compile_commands.json (default: build).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
command -v clang-tidy >/dev/null || { echo "clang-tidy missing" >&2; exit 1; }
[ -f "$build/compile_commands.json" ] || { echo "no $build/compile_commands.json" >&2; exit 1; }
mapfile -t files < <(git ls-files '*.cc')
# Two at a time: each file takes a few seconds.
printf '%s\n' "${files[@]}" | xargs -P "$(nproc)" -n 2 clang-tidy -p "$build" --quiet \
  --warnings-as-errors='*' 2>/dev/null
echo "clang-tidy: ok (${#files[@]} files)"
