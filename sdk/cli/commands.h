// The `suanli` command-line tool: every command, run in-process. main() is Run() with the
// process's arguments, environment and streams; tests call Run() with their own.
//
//   suanli catalog 'model=H100-SXM5-80G free_gpus>=16'
//   suanli allocate --model=H100-SXM5-80G --gpus=16 --gpus-per-node=8 --locality=domain
//          --max-price=30 --duration=4h
//
// EXIT CODES
//   0  done
//   1  the call failed (the broker said no, or could not be reached)
//   2  usage error: an unknown command or flag, a missing or malformed value
//   3  capacity not available: the request was rejected (hints on stderr)
#ifndef SUANLI_SDK_CLI_COMMANDS_H_
#define SUANLI_SDK_CLI_COMMANDS_H_

#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "sdk/cli/args.h"
#include "suanli/v1/common.pb.h"

namespace suanli::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitRejected = 3;

// Reads an environment variable; nullopt when unset.
using GetEnv = std::function<std::optional<std::string>(const std::string& name)>;

// Runs the command line `args` (without the program name): parses it, calls the broker, prints
// the result to `out` (a table, or one JSON document with --output=json) and errors to `err`,
// and returns the exit code. Reads SUANLI_SERVER, SUANLI_KEY and SUANLI_CA_FILE through
// `getenv` when the matching flag is absent. Blocks until the command is done (`allocation
// watch`: until the stream ends).
int Run(const std::vector<std::string>& args, const GetEnv& getenv, std::ostream& out,
        std::ostream& err);

// The allocation request of `quote` and `allocate` from their flags (--model, --gpus,
// --gpus-per-node, --locality, --min-fabric, --region, --center-type, --tag, --max-price,
// --duration, --start, --idempotency-key); relative times count from `now`. With `complete`,
// --gpus, --max-price and --duration are required. INVALID_ARGUMENT names the flag at fault.
absl::StatusOr<v1::AllocationRequest> AllocationRequestFromFlags(const Flags& flags, absl::Time now,
                                                                 bool complete);

// `count` new node ids `<prefix>0001`, `<prefix>0002`, ... (at least four digits), numbered
// after the highest number found among `existing` ids that are `prefix` followed by digits.
std::vector<std::string> NextNodeIds(const std::vector<std::string>& existing,
                                     absl::string_view prefix, int count);

}  // namespace suanli::cli

#endif  // SUANLI_SDK_CLI_COMMANDS_H_
