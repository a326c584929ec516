#!/usr/bin/env bash
# scheduler/ is a pure library: no gRPC, protobuf, SQL, threads or I/O. Debian puts those headers
# in /usr/include, so the build alone would not notice an include; this check does.
set -euo pipefail
cd "$(dirname "$0")/../.."
pattern='#include *[<"](grpc|grpcpp|google/protobuf|sqlite3|pqxx|libpq|thread|mutex|future|fstream|iostream|cstdio|stdio\.h|unistd\.h|sys/|absl/synchronization|prometheus|httplib)'
if bad=$(grep -rnE "$pattern" scheduler/ --include='*.h' --include='*.cc'); then
  echo "scheduler/ must stay pure (no I/O, threads, gRPC, SQL); found:" >&2
  echo "$bad" >&2
  exit 1
fi
echo "scheduler purity: ok"
