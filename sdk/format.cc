#include "sdk/format.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/generated_enum_reflection.h"

namespace suanli {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool AllDigits(absl::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsDigit);
}

absl::Status BadAmount(absl::string_view text, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("bad amount \"", text, "\": ", why));
}

// Six decimal digits of a fraction of a unit, trailing zeros removed down to two.
std::string FractionDigits(int64_t micros_part) {
  std::string digits = std::to_string(micros_part);
  digits.insert(0, 6 - digits.size(), '0');
  while (digits.size() > 2 && digits.back() == '0') digits.pop_back();
  return digits;
}

absl::Status BadDuration(absl::string_view text, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("bad duration \"", text, "\": ", why,
                                                 " (write it like 30s, 90m, 2h, 3d or 1h30m)"));
}

// ---- Enums, by their descriptors ----------------------------------------------------------------

// "CenterType" -> "CENTER_TYPE_".
std::string ValuePrefix(const google::protobuf::EnumDescriptor* d) {
  std::string prefix;
  for (char c : d->name()) {
    if (absl::ascii_isupper(c) && !prefix.empty()) prefix += '_';
    prefix += absl::ascii_toupper(c);
  }
  return prefix + "_";
}

// "CenterType" -> "center type".
std::string KindName(const google::protobuf::EnumDescriptor* d) {
  const std::string prefix = ValuePrefix(d);
  return absl::StrReplaceAll(absl::AsciiStrToLower(absl::StripSuffix(prefix, "_")), {{"_", " "}});
}

std::string ShortName(const google::protobuf::EnumDescriptor* d,
                      const google::protobuf::EnumValueDescriptor* v) {
  std::string name(absl::StripPrefix(v->name(), ValuePrefix(d)));
  return absl::StrReplaceAll(absl::AsciiStrToLower(name), {{"_", "-"}});
}

bool Acceptable(const google::protobuf::EnumValueDescriptor* v) {
  return !absl::EndsWith(v->name(), "_UNSPECIFIED");
}

template <typename E>
std::string EnumName(E value) {
  const google::protobuf::EnumDescriptor* d = google::protobuf::GetEnumDescriptor<E>();
  const google::protobuf::EnumValueDescriptor* v = d->FindValueByNumber(static_cast<int>(value));
  if (v == nullptr) return std::to_string(static_cast<int>(value));
  return ShortName(d, v);
}

template <typename E>
absl::StatusOr<E> ParseEnum(absl::string_view text) {
  const google::protobuf::EnumDescriptor* d = google::protobuf::GetEnumDescriptor<E>();
  const std::string wanted =
      absl::StrReplaceAll(absl::AsciiStrToLower(absl::StripAsciiWhitespace(text)), {{"_", "-"}});
  std::vector<std::string> names;
  for (int i = 0; i < d->value_count(); ++i) {
    const google::protobuf::EnumValueDescriptor* v = d->value(i);
    if (!Acceptable(v)) continue;
    std::string name = ShortName(d, v);
    if (name == wanted) return static_cast<E>(v->number());
    names.push_back(std::move(name));
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown ", KindName(d), " \"", text,
                                                 "\"; expected ", absl::StrJoin(names, "|")));
}

// Code points of a UTF-8 string with their display widths.
size_t CodePointWidth(uint32_t cp) {
  const bool wide = (cp >= 0x1100 && cp <= 0x115F) || (cp >= 0x2E80 && cp <= 0xA4CF) ||
                    (cp >= 0xAC00 && cp <= 0xD7A3) || (cp >= 0xF900 && cp <= 0xFAFF) ||
                    (cp >= 0xFE30 && cp <= 0xFE4F) || (cp >= 0xFF00 && cp <= 0xFF60) ||
                    (cp >= 0xFFE0 && cp <= 0xFFE6) || (cp >= 0x1F300 && cp <= 0x1F64F) ||
                    (cp >= 0x20000 && cp <= 0x3FFFD);
  return wide ? 2 : 1;
}

}  // namespace

// ---- Money --------------------------------------------------------------------------------------

absl::StatusOr<int64_t> ParseMoney(absl::string_view text) {
  if (text.empty()) return BadAmount(text, "empty; write it like 25.50");
  if (text[0] == '-') return BadAmount(text, "negative amounts are not allowed");
  const size_t dot = text.find('.');
  const absl::string_view units = text.substr(0, dot);
  const absl::string_view fraction =
      dot == absl::string_view::npos ? absl::string_view() : text.substr(dot + 1);
  if (!AllDigits(units) || (dot != absl::string_view::npos && !AllDigits(fraction))) {
    return BadAmount(text, "expected a number like 25.50");
  }
  if (fraction.size() > 6) {
    return BadAmount(text, "at most 6 decimals (a micro-unit is the smallest amount)");
  }
  constexpr int64_t kMaxUnits = std::numeric_limits<int64_t>::max() / kMicrosPerUnit;
  int64_t whole = 0;
  for (char c : units) {
    if (whole > kMaxUnits) break;  // keeps the arithmetic below from overflowing
    whole = whole * 10 + (c - '0');
  }
  int64_t micros_part = 0;
  for (size_t i = 0; i < 6; ++i) {
    micros_part = micros_part * 10 + (i < fraction.size() ? fraction[i] - '0' : 0);
  }
  if (whole > kMaxUnits ||
      whole * kMicrosPerUnit > std::numeric_limits<int64_t>::max() - micros_part) {
    return BadAmount(text, "too large");
  }
  return whole * kMicrosPerUnit + micros_part;
}

std::string FormatMoney(int64_t micros) {
  const bool negative = micros < 0;
  // Through uint64 so that the most negative value has a magnitude too.
  const uint64_t magnitude =
      negative ? uint64_t{0} - static_cast<uint64_t>(micros) : static_cast<uint64_t>(micros);
  const uint64_t units = magnitude / kMicrosPerUnit;
  const auto micros_part = static_cast<int64_t>(magnitude % kMicrosPerUnit);
  return absl::StrCat(negative ? "-" : "", units, ".", FractionDigits(micros_part));
}

// ---- Durations ----------------------------------------------------------------------------------

absl::StatusOr<absl::Duration> ParseDuration(absl::string_view text) {
  struct Unit {
    absl::string_view name;
    absl::Duration size;
  };
  // Largest first; "ms" before "m" so that the longer name is tried first.
  static constexpr int kUnits = 5;
  const Unit units[kUnits] = {{"d", absl::Hours(24)},
                              {"h", absl::Hours(1)},
                              {"ms", absl::Milliseconds(1)},
                              {"m", absl::Minutes(1)},
                              {"s", absl::Seconds(1)}};
  // Rank of each unit in "largest first" order (ms is the smallest).
  const int rank[kUnits] = {0, 1, 4, 2, 3};
  if (text.empty()) return BadDuration(text, "empty");
  if (text[0] == '-') return BadDuration(text, "negative durations are not allowed");
  absl::Duration total;
  int last_rank = -1;
  absl::string_view rest = text;
  while (!rest.empty()) {
    size_t digits = 0;
    while (digits < rest.size() && IsDigit(rest[digits])) ++digits;
    if (digits == 0) return BadDuration(text, "expected a whole number before each unit");
    if (digits > 12) return BadDuration(text, "too long");
    int64_t n = 0;
    for (size_t i = 0; i < digits; ++i) n = n * 10 + (rest[i] - '0');
    rest.remove_prefix(digits);
    int unit = -1;
    for (int u = 0; u < kUnits; ++u) {
      if (absl::StartsWith(rest, units[u].name)) {
        unit = u;
        break;
      }
    }
    if (unit < 0) {
      return BadDuration(text, rest.empty() ? "missing unit" : "unknown unit");
    }
    if (rank[unit] <= last_rank) {
      return BadDuration(text, "units must go from largest to smallest, each at most once");
    }
    last_rank = rank[unit];
    rest.remove_prefix(units[unit].name.size());
    total += n * units[unit].size;
  }
  if (total > absl::Hours(24 * 366 * 100)) return BadDuration(text, "more than 100 years");
  return total;
}

std::string DurationToString(absl::Duration d) {
  if (d == absl::ZeroDuration()) return "0s";
  if (d == absl::InfiniteDuration()) return "inf";
  if (d == -absl::InfiniteDuration()) return "-inf";
  std::string out;
  if (d < absl::ZeroDuration()) {
    out = "-";
    d = -d;
  }
  const struct {
    absl::Duration size;
    const char* name;
  } units[] = {{absl::Hours(24), "d"},
               {absl::Hours(1), "h"},
               {absl::Minutes(1), "m"},
               {absl::Seconds(1), "s"},
               {absl::Milliseconds(1), "ms"}};
  for (const auto& u : units) {
    const int64_t n = absl::IDivDuration(d, u.size, &d);
    if (n > 0) absl::StrAppend(&out, n, u.name);
  }
  if (d > absl::ZeroDuration()) absl::StrAppend(&out, absl::FormatDuration(d));
  return out;
}

// ---- Times --------------------------------------------------------------------------------------

absl::StatusOr<absl::Time> ParseTime(absl::string_view text, absl::Time now) {
  const absl::string_view trimmed = absl::StripAsciiWhitespace(text);
  if (absl::AsciiStrToLower(trimmed) == "now") return now;
  if (absl::StartsWith(trimmed, "+")) {
    absl::StatusOr<absl::Duration> d = ParseDuration(trimmed.substr(1));
    if (!d.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad time \"", text, "\": ", d.status().message()));
    }
    return now + *d;
  }
  absl::Time t;
  std::string error;
  if (absl::ParseTime(absl::RFC3339_full, static_cast<std::string>(trimmed), &t, &error)) return t;
  if (absl::ParseTime("%Y-%m-%d", static_cast<std::string>(trimmed), absl::UTCTimeZone(), &t,
                      &error)) {
    return t;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "bad time \"", text,
      "\": write RFC 3339 like 2026-12-01T08:00:00Z, a date like 2026-12-01, \"now\", or a time "
      "from now like +2h"));
}

std::string TimeToString(absl::Time t) {
  if (t == absl::InfinitePast() || t == absl::UnixEpoch()) return "-";
  if (t == absl::InfiniteFuture()) return "never";
  return absl::FormatTime("%Y-%m-%d%ET%H:%M:%SZ", t, absl::UTCTimeZone());
}

google::protobuf::Timestamp ToProtoTime(absl::Time t) {
  google::protobuf::Timestamp out;
  const int64_t seconds = absl::ToUnixSeconds(t);
  out.set_seconds(seconds);
  out.set_nanos(static_cast<int32_t>((t - absl::FromUnixSeconds(seconds)) / absl::Nanoseconds(1)));
  return out;
}

absl::Time FromProtoTime(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

google::protobuf::Duration ToProtoDuration(absl::Duration d) {
  google::protobuf::Duration out;
  const int64_t seconds = absl::IDivDuration(d, absl::Seconds(1), &d);
  out.set_seconds(seconds);
  out.set_nanos(static_cast<int32_t>(d / absl::Nanoseconds(1)));
  return out;
}

absl::Duration FromProtoDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

std::string TimeToString(const google::protobuf::Timestamp& t) {
  return TimeToString(FromProtoTime(t));
}

// ---- Enums --------------------------------------------------------------------------------------

absl::StatusOr<v1::CenterType> ParseCenterType(absl::string_view text) {
  return ParseEnum<v1::CenterType>(text);
}
absl::StatusOr<v1::Fabric> ParseFabric(absl::string_view text) {
  return ParseEnum<v1::Fabric>(text);
}
absl::StatusOr<v1::Locality> ParseLocality(absl::string_view text) {
  return ParseEnum<v1::Locality>(text);
}
absl::StatusOr<v1::Health> ParseHealth(absl::string_view text) {
  return ParseEnum<v1::Health>(text);
}
absl::StatusOr<v1::Role> ParseRole(absl::string_view text) { return ParseEnum<v1::Role>(text); }
absl::StatusOr<v1::GroupBy> ParseGroupBy(absl::string_view text) {
  return ParseEnum<v1::GroupBy>(text);
}

std::string CenterTypeName(v1::CenterType v) { return EnumName(v); }
std::string FabricName(v1::Fabric v) { return EnumName(v); }
std::string LocalityName(v1::Locality v) { return EnumName(v); }
std::string HealthName(v1::Health v) { return EnumName(v); }
std::string RoleName(v1::Role v) { return EnumName(v); }
std::string AllocationStateName(v1::AllocationState v) { return EnumName(v); }
std::string EndReasonName(v1::EndReason v) { return EnumName(v); }
std::string RejectReasonName(v1::RejectReason v) { return EnumName(v); }

// ---- Rejections ---------------------------------------------------------------------------------

std::string RejectionHint(const v1::Rejection& rejection) {
  std::vector<std::string> hints;
  if (rejection.reason() == v1::REJECT_REASON_NO_MATCHING_CAPACITY) {
    hints.push_back(
        "no capacity on sale matches the models, regions, center types, tags, fabric and packing "
        "asked, at any price or time");
  }
  if (rejection.has_min_ceiling_micros()) {
    hints.push_back(absl::StrCat("a price ceiling of ", FormatMoney(rejection.min_ceiling_micros()),
                                 " per GPU-hour would be granted"));
  }
  if (rejection.reason() == v1::REJECT_REASON_INSUFFICIENT_CAPACITY ||
      rejection.largest_block_gpus() > 0) {
    hints.push_back(rejection.largest_block_gpus() > 0
                        ? absl::StrCat("at most ", rejection.largest_block_gpus(),
                                       " GPUs of this shape are free at the asked start")
                        : "no GPUs of this shape are free at the asked start");
  }
  if (rejection.has_earliest_start()) {
    hints.push_back(
        absl::StrCat("it would be granted starting at ", TimeToString(rejection.earliest_start())));
  }
  return absl::StrJoin(hints, "; ");
}

// ---- Tables -------------------------------------------------------------------------------------

size_t DisplayWidth(absl::string_view text) {
  size_t width = 0;
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    uint32_t cp = c;
    size_t len = 1;
    if (c >= 0xF0 && i + 3 < text.size()) {
      cp = ((c & 0x07U) << 18) | ((text[i + 1] & 0x3FU) << 12) | ((text[i + 2] & 0x3FU) << 6) |
           (text[i + 3] & 0x3FU);
      len = 4;
    } else if (c >= 0xE0 && i + 2 < text.size()) {
      cp = ((c & 0x0FU) << 12) | ((text[i + 1] & 0x3FU) << 6) | (text[i + 2] & 0x3FU);
      len = 3;
    } else if (c >= 0xC0 && i + 1 < text.size()) {
      cp = ((c & 0x1FU) << 6) | (text[i + 1] & 0x3FU);
      len = 2;
    }
    width += CodePointWidth(cp);
    i += len;
  }
  return width;
}

Table::Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  rows_.push_back(std::move(cells));
}

std::string Table::Render() const {
  std::vector<size_t> widths(headers_.size());
  for (size_t c = 0; c < headers_.size(); ++c) widths[c] = DisplayWidth(headers_[c]);
  for (const std::vector<std::string>& row : rows_) {
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], DisplayWidth(row[c]));
  }
  std::string out;
  auto render_row = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) line.append(widths[c] - DisplayWidth(row[c]) + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out += '\n';
  };
  render_row(headers_);
  for (const std::vector<std::string>& row : rows_) render_row(row);
  return out;
}

}  // namespace suanli
