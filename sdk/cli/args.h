// The command line of `suanli`: words and flags, in any order.
//
//   suanli --server=b:7700 allocate --gpus 16 --model=H100-SXM5-80G,H800-SXM5-80G --all
//
// A flag is `--name=value`, `--name value` (for flags that take a value) or `--name` (for
// switches); `--` ends the flags, and every later argument is a word. Everything else is a word:
// the command's name and then its arguments. Pure parsing, no I/O; not thread-safe.
#ifndef SUANLI_SDK_CLI_ARGS_H_
#define SUANLI_SDK_CLI_ARGS_H_

#include <optional>
#include <string>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace suanli::cli {

// What a flag takes.
enum class FlagKind {
  kSwitch,  // no value: `--all`; `--all=true|false` also accepted
  kValue,   // one value: `--gpus=16` or `--gpus 16`; at most once
  kList,    // values, repeatable and comma-separated: `--tag=a --tag=b,c`
};

struct FlagSpec {
  std::string name;  // without the dashes
  FlagKind kind = FlagKind::kValue;
  std::string help;  // one line for --help, e.g. "=N  total GPUs (required)"
};

// The flags given on a command line, by name.
class Flags {
 public:
  // Whether the flag was given.
  bool Has(absl::string_view name) const;
  // The value of a kValue flag, if given.
  std::optional<std::string> Value(absl::string_view name) const;
  // The value of a kValue flag, or `fallback`.
  std::string ValueOr(absl::string_view name, absl::string_view fallback) const;
  // The values of a kList flag, split at commas, empty items dropped.
  std::vector<std::string> List(absl::string_view name) const;
  // Whether a kSwitch flag is on.
  bool Switch(absl::string_view name) const;
  // The names given, sorted.
  std::vector<std::string> Names() const;

  // Records one occurrence (for the parser).
  void Add(const std::string& name, std::string value);

 private:
  absl::flat_hash_map<std::string, std::vector<std::string>> values_;
};

struct CommandLine {
  std::vector<std::string> words;  // in order
  Flags flags;
};

// Splits `args` (without the program name) into words and flags. `specs` lists every flag that
// any command knows; INVALID_ARGUMENT for an unknown flag, a missing value, a value given to a
// switch other than true/false, or a kValue flag given twice.
absl::StatusOr<CommandLine> SplitCommandLine(const std::vector<std::string>& args,
                                             const std::vector<FlagSpec>& specs);

}  // namespace suanli::cli

#endif  // SUANLI_SDK_CLI_ARGS_H_
