// What a person types and reads: money, durations, times and enum names parsed from text and
// printed back, a hint that says what would work after a rejection, and a plain-text table.
// Shared by the `suanli` CLI, the examples and their tests. Pure functions; thread-safe.
//
//   absl::StatusOr<int64_t> ceiling = suanli::ParseMoney("30.00");        // 30000000 micros
//   absl::StatusOr<absl::Duration> d = suanli::ParseDuration("1h30m");
//   absl::StatusOr<absl::Time> t = suanli::ParseTime("+2h", absl::Now());
//   std::cout << suanli::FormatMoney(25'500'000);                         // "25.50"
#ifndef SUANLI_SDK_FORMAT_H_
#define SUANLI_SDK_FORMAT_H_

#include <cstdint>
#include <string>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "suanli/v1/admin.pb.h"
#include "suanli/v1/common.pb.h"
#include "suanli/v1/ops.pb.h"

namespace suanli {

inline constexpr int64_t kMicrosPerUnit = 1'000'000;

// Money: an amount in currency units with at most six decimals ("25.50", "0.000001", "30"), as
// int64 micro-units, exactly. INVALID_ARGUMENT for an empty, negative, malformed ("1e3", "1,5",
// ".5", "1."), too precise ("1.0000001") or too large (beyond int64 micros) amount.
absl::StatusOr<int64_t> ParseMoney(absl::string_view text);
// Micro-units as units with at least two decimals and no trailing zeros beyond them: 25500000 ->
// "25.50", 1 -> "0.000001", -1500000 -> "-1.50".
std::string FormatMoney(int64_t micros);

// Durations: whole numbers with units d, h, m, s, ms, largest first, each at most once: "30s",
// "90m", "2h", "3d", "1h30m", "500ms". INVALID_ARGUMENT otherwise (no unit, fractions, negative,
// an unknown or repeated unit, more than 100 years).
absl::StatusOr<absl::Duration> ParseDuration(absl::string_view text);
// The inverse of ParseDuration: 5400s -> "1h30m", 0 -> "0s"; negative durations get a "-".
std::string DurationToString(absl::Duration d);

// Times: RFC 3339 with a zone ("2026-12-01T08:00:00Z", "2026-12-01T16:00:00+08:00"), a date
// ("2026-12-01", midnight UTC), "now", or "+DURATION" after `now` ("+2h"). INVALID_ARGUMENT
// otherwise.
absl::StatusOr<absl::Time> ParseTime(absl::string_view text, absl::Time now);
// RFC 3339 in UTC to the second ("2026-12-01T08:00:00Z"); absl::InfinitePast() and the Unix epoch
// (an unset proto Timestamp) print as "-".
std::string TimeToString(absl::Time t);

// Conversions between Abseil and protobuf time types.
google::protobuf::Timestamp ToProtoTime(absl::Time t);
absl::Time FromProtoTime(const google::protobuf::Timestamp& t);
google::protobuf::Duration ToProtoDuration(absl::Duration d);
absl::Duration FromProtoDuration(const google::protobuf::Duration& d);
// TimeToString(FromProtoTime(t)): "-" for an unset timestamp.
std::string TimeToString(const google::protobuf::Timestamp& t);

// Enum names as people write them: the proto value name without its prefix, in lower case with
// '-' for '_' (FABRIC_INFINIBAND <-> "infiniband", GROUP_BY_CENTER_TYPE <-> "center-type").
// Parsing ignores case and accepts '_' for '-'; the UNSPECIFIED values are never accepted.
// INVALID_ARGUMENT names the accepted values.
absl::StatusOr<v1::CenterType> ParseCenterType(absl::string_view text);  // government|carrier|...
absl::StatusOr<v1::Fabric> ParseFabric(absl::string_view text);  // ethernet|roce|infiniband|nvlink
absl::StatusOr<v1::Locality> ParseLocality(absl::string_view text);  // node|domain|center|any
absl::StatusOr<v1::Health> ParseHealth(absl::string_view text);      // healthy|degraded|down
absl::StatusOr<v1::Role> ParseRole(absl::string_view text);          // admin|operator|buyer
absl::StatusOr<v1::GroupBy> ParseGroupBy(absl::string_view text);    // none|center|region|...
// The names of values; a value this build does not know prints as its number.
std::string CenterTypeName(v1::CenterType v);
std::string FabricName(v1::Fabric v);
std::string LocalityName(v1::Locality v);
std::string HealthName(v1::Health v);
std::string RoleName(v1::Role v);
std::string AllocationStateName(v1::AllocationState v);  // held|reserved|active|ended
std::string EndReasonName(v1::EndReason v);              // released|expired|lapsed|...
std::string RejectReasonName(v1::RejectReason v);  // no-matching-capacity|price-above-ceiling|...

// What would work instead, in one line for a person, from the hints of a rejection: the lowest
// price ceiling that would be granted, the largest block free now, the earliest start. Empty when
// the rejection carries no hint.
std::string RejectionHint(const v1::Rejection& rejection);

// A plain-text table: a header row and left-aligned columns two spaces apart, sized to their
// widest cell (East Asian wide characters count as two columns). Not thread-safe.
//
//   Table t({"ID", "STATE"});
//   t.AddRow({"a-1", "active"});
//   std::cout << t.Render();
class Table {
 public:
  explicit Table(std::vector<std::string> headers);

  // A row with one cell per header; missing cells are empty and extra ones are dropped.
  void AddRow(std::vector<std::string> cells);
  size_t rows() const { return rows_.size(); }
  // Every line ends with '\n' and has no trailing spaces.
  std::string Render() const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// Columns a terminal uses to show UTF-8 `text`.
size_t DisplayWidth(absl::string_view text);

}  // namespace suanli

#endif  // SUANLI_SDK_FORMAT_H_
