#include "sdk/cli/args.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace suanli::cli {

bool Flags::Has(absl::string_view name) const { return values_.contains(name); }

std::optional<std::string> Flags::Value(absl::string_view name) const {
  auto it = values_.find(name);
  if (it == values_.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

std::string Flags::ValueOr(absl::string_view name, absl::string_view fallback) const {
  std::optional<std::string> v = Value(name);
  return v.has_value() ? *v : static_cast<std::string>(fallback);
}

std::vector<std::string> Flags::List(absl::string_view name) const {
  std::vector<std::string> out;
  auto it = values_.find(name);
  if (it == values_.end()) return out;
  for (const std::string& value : it->second) {
    for (absl::string_view item : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
      out.emplace_back(item);
    }
  }
  return out;
}

bool Flags::Switch(absl::string_view name) const {
  std::optional<std::string> v = Value(name);
  return v.has_value() && *v == "true";
}

std::vector<std::string> Flags::Names() const {
  std::vector<std::string> names;
  names.reserve(values_.size());
  for (const auto& [name, unused] : values_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

void Flags::Add(const std::string& name, std::string value) {
  values_[name].push_back(std::move(value));
}

absl::StatusOr<CommandLine> SplitCommandLine(const std::vector<std::string>& args,
                                             const std::vector<FlagSpec>& specs) {
  CommandLine line;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      line.words.insert(line.words.end(), args.begin() + static_cast<std::ptrdiff_t>(i) + 1,
                        args.end());
      break;
    }
    if (!absl::StartsWith(arg, "--") && arg != "-h") {
      line.words.push_back(arg);
      continue;
    }
    const std::string body = arg == "-h" ? "help" : arg.substr(2);
    const size_t eq = body.find('=');
    const std::string name = body.substr(0, eq);
    auto spec =
        std::find_if(specs.begin(), specs.end(), [&](const FlagSpec& s) { return s.name == name; });
    if (spec == specs.end()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    std::string value;
    if (eq != std::string::npos) {
      value = body.substr(eq + 1);
      if (spec->kind == FlagKind::kSwitch && value != "true" && value != "false") {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " is a switch: give it alone, or =true or =false"));
      }
    } else if (spec->kind == FlagKind::kSwitch) {
      value = "true";
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
    }
    if (spec->kind == FlagKind::kValue && line.flags.Has(name)) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " given twice"));
    }
    line.flags.Add(name, std::move(value));
  }
  return line;
}

}  // namespace suanli::cli
