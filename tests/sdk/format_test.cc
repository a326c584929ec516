// sdk/format.h: every parser's accepted and rejected inputs, and what the printers print.
#include "sdk/format.h"

#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace suanli {
namespace {

using ::testing::HasSubstr;

// ---- Money --------------------------------------------------------------------------------------

TEST(ParseMoney, AcceptsUnitsWithUpToSixDecimalsExactly) {
  const struct {
    const char* text;
    int64_t micros;
  } cases[] = {
      {"25.50", 25'500'000},
      {"25.5", 25'500'000},
      {"25", 25'000'000},
      {"0", 0},
      {"0.0", 0},
      {"0.000001", 1},
      {"0.1", 100'000},
      {"30.00", 30'000'000},
      {"1.999999", 1'999'999},
      {"007.10", 7'100'000},
      // 0.1 + 0.2 style amounts that floating point would not hold exactly.
      {"0.3", 300'000},
      {"123456789.123456", 123'456'789'123'456},
      {"9223372036854.775807", std::numeric_limits<int64_t>::max()},
  };
  for (const auto& c : cases) {
    absl::StatusOr<int64_t> micros = ParseMoney(c.text);
    ASSERT_TRUE(micros.ok()) << c.text << ": " << micros.status();
    EXPECT_EQ(*micros, c.micros) << c.text;
  }
}

TEST(ParseMoney, RejectsWhatIsNotAnExactAmount) {
  const struct {
    const char* text;
    const char* why;
  } cases[] = {
      {"", "empty"},
      {"1.0000001", "at most 6 decimals"},
      {"0.0000001", "at most 6 decimals"},
      {"-1", "negative"},
      {"-0.5", "negative"},
      {"abc", "expected a number"},
      {"1e3", "expected a number"},
      {"1,5", "expected a number"},
      {"1,000.00", "expected a number"},
      {".5", "expected a number"},
      {"1.", "expected a number"},
      {".", "expected a number"},
      {"+1", "expected a number"},
      {" 1", "expected a number"},
      {"1 ", "expected a number"},
      {"1.2.3", "expected a number"},
      {"25.50 CNY", "expected a number"},
      {"9223372036854.775808", "too large"},
      {"9223372036855", "too large"},
      {"99999999999999999999999", "too large"},
  };
  for (const auto& c : cases) {
    absl::StatusOr<int64_t> micros = ParseMoney(c.text);
    ASSERT_FALSE(micros.ok()) << '"' << c.text << "\" gave " << *micros;
    EXPECT_EQ(micros.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_THAT(micros.status().message(), HasSubstr(c.why)) << c.text;
    EXPECT_THAT(micros.status().message(), HasSubstr(absl::StrCat("\"", c.text, "\"")));
  }
}

TEST(FormatMoney, PrintsAtLeastTwoDecimalsAndNoMoreThanNeeded) {
  EXPECT_EQ(FormatMoney(25'500'000), "25.50");
  EXPECT_EQ(FormatMoney(30'000'000), "30.00");
  EXPECT_EQ(FormatMoney(0), "0.00");
  EXPECT_EQ(FormatMoney(1), "0.000001");
  EXPECT_EQ(FormatMoney(25'123'400), "25.1234");
  EXPECT_EQ(FormatMoney(1'999'999), "1.999999");
  EXPECT_EQ(FormatMoney(-1'500'000), "-1.50");
  EXPECT_EQ(FormatMoney(std::numeric_limits<int64_t>::max()), "9223372036854.775807");
  EXPECT_EQ(FormatMoney(std::numeric_limits<int64_t>::min()), "-9223372036854.775808");
}

TEST(FormatMoney, RoundTripsThroughParseMoney) {
  for (int64_t micros : {int64_t{0}, int64_t{1}, int64_t{10}, int64_t{999'999}, int64_t{1'000'000},
                         int64_t{25'500'000}, int64_t{123'456'789}}) {
    absl::StatusOr<int64_t> back = ParseMoney(FormatMoney(micros));
    ASSERT_TRUE(back.ok()) << micros;
    EXPECT_EQ(*back, micros);
  }
}

// ---- Durations ----------------------------------------------------------------------------------

TEST(ParseDuration, AcceptsWholeNumbersWithUnitsLargestFirst) {
  const struct {
    const char* text;
    absl::Duration d;
  } cases[] = {
      {"30s", absl::Seconds(30)},
      {"90m", absl::Minutes(90)},
      {"2h", absl::Hours(2)},
      {"3d", absl::Hours(72)},
      {"1h30m", absl::Minutes(90)},
      {"1d2h3m4s", absl::Hours(26) + absl::Minutes(3) + absl::Seconds(4)},
      {"500ms", absl::Milliseconds(500)},
      {"1s500ms", absl::Milliseconds(1500)},
      {"1m30s", absl::Seconds(90)},
      {"0s", absl::ZeroDuration()},
      {"366d", absl::Hours(24 * 366)},
  };
  for (const auto& c : cases) {
    absl::StatusOr<absl::Duration> d = ParseDuration(c.text);
    ASSERT_TRUE(d.ok()) << c.text << ": " << d.status();
    EXPECT_EQ(*d, c.d) << c.text;
  }
}

TEST(ParseDuration, RejectsEverythingElse) {
  for (const char* text : {"", "5", "h", "1.5h", "-1h", "2x", "1h1h", "30m1h", "1ms1s", "1 h",
                           "1h ", "1H", "+1h", "99999999999999d", "40000d", "1h30", "P1D"}) {
    absl::StatusOr<absl::Duration> d = ParseDuration(text);
    EXPECT_FALSE(d.ok()) << '"' << text << "\" gave " << *d;
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(d.status().message(), HasSubstr("bad duration")) << text;
  }
}

TEST(DurationToString, IsTheInverseOfParseDuration) {
  EXPECT_EQ(DurationToString(absl::Minutes(90)), "1h30m");
  EXPECT_EQ(DurationToString(absl::Hours(72)), "3d");
  EXPECT_EQ(DurationToString(absl::ZeroDuration()), "0s");
  EXPECT_EQ(DurationToString(absl::Milliseconds(1500)), "1s500ms");
  EXPECT_EQ(DurationToString(-absl::Hours(2)), "-2h");
  for (const char* text : {"30s", "90m", "2h", "3d", "1h30m", "1d2h3m4s", "500ms"}) {
    absl::StatusOr<absl::Duration> d = ParseDuration(text);
    ASSERT_TRUE(d.ok()) << text;
    absl::StatusOr<absl::Duration> again = ParseDuration(DurationToString(*d));
    ASSERT_TRUE(again.ok()) << text;
    EXPECT_EQ(*again, *d) << text;
  }
}

// ---- Times --------------------------------------------------------------------------------------

const absl::Time kNow = absl::FromUnixSeconds(1'800'000'000);  // 2027-01-15T08:00:00Z

TEST(ParseTime, AcceptsRfc3339DatesNowAndRelativeTimes) {
  const absl::Time dec1 =
      absl::FromCivil(absl::CivilSecond(2026, 12, 1, 8, 0, 0), absl::UTCTimeZone());
  const struct {
    const char* text;
    absl::Time t;
  } cases[] = {
      {"2026-12-01T08:00:00Z", dec1},
      {"2026-12-01T16:00:00+08:00", dec1},
      {"2026-12-01T08:00:00.5Z", dec1 + absl::Milliseconds(500)},
      {"2026-12-01", dec1 - absl::Hours(8)},
      {"now", kNow},
      {"NOW", kNow},
      {"+2h", kNow + absl::Hours(2)},
      {"+1d12h", kNow + absl::Hours(36)},
  };
  for (const auto& c : cases) {
    absl::StatusOr<absl::Time> t = ParseTime(c.text, kNow);
    ASSERT_TRUE(t.ok()) << c.text << ": " << t.status();
    EXPECT_EQ(*t, c.t) << c.text;
  }
}

TEST(ParseTime, RejectsEverythingElse) {
  for (const char* text :
       {"", "tomorrow", "2026-12-01T08:00:00", "2026-13-01T08:00:00Z", "2026-12-01 08:00:00Z", "+",
        "+2", "-2h", "+-2h", "12/01/2026", "1800000000"}) {
    absl::StatusOr<absl::Time> t = ParseTime(text, kNow);
    EXPECT_FALSE(t.ok()) << '"' << text << "\" gave " << *t;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(t.status().message(), HasSubstr("bad time")) << text;
  }
}

TEST(TimeToString, PrintsRfc3339InUtc) {
  EXPECT_EQ(TimeToString(kNow), "2027-01-15T08:00:00Z");
  EXPECT_EQ(TimeToString(absl::UnixEpoch()), "-");
  EXPECT_EQ(TimeToString(google::protobuf::Timestamp()), "-");
  EXPECT_EQ(TimeToString(ToProtoTime(kNow)), "2027-01-15T08:00:00Z");
}

TEST(ProtoTime, ConvertsBothWays) {
  const absl::Time t = kNow + absl::Nanoseconds(123);
  EXPECT_EQ(FromProtoTime(ToProtoTime(t)), t);
  EXPECT_EQ(ToProtoTime(t).seconds(), 1'800'000'000);
  EXPECT_EQ(ToProtoTime(t).nanos(), 123);
  const absl::Duration d = absl::Hours(4) + absl::Nanoseconds(7);
  EXPECT_EQ(FromProtoDuration(ToProtoDuration(d)), d);
  EXPECT_EQ(ToProtoDuration(absl::Hours(4)).seconds(), 14'400);
}

// ---- Enums --------------------------------------------------------------------------------------

TEST(Enums, ParseTheNamesPeopleWrite) {
  EXPECT_EQ(*ParseCenterType("government"), v1::CENTER_TYPE_GOVERNMENT);
  EXPECT_EQ(*ParseCenterType("carrier"), v1::CENTER_TYPE_CARRIER);
  EXPECT_EQ(*ParseCenterType("internet"), v1::CENTER_TYPE_INTERNET);
  EXPECT_EQ(*ParseCenterType("Enterprise"), v1::CENTER_TYPE_ENTERPRISE);
  EXPECT_EQ(*ParseCenterType("academic"), v1::CENTER_TYPE_ACADEMIC);
  EXPECT_EQ(*ParseFabric("ethernet"), v1::FABRIC_ETHERNET);
  EXPECT_EQ(*ParseFabric("roce"), v1::FABRIC_ROCE);
  EXPECT_EQ(*ParseFabric("InfiniBand"), v1::FABRIC_INFINIBAND);
  EXPECT_EQ(*ParseFabric("nvlink"), v1::FABRIC_NVLINK);
  EXPECT_EQ(*ParseLocality("node"), v1::LOCALITY_NODE);
  EXPECT_EQ(*ParseLocality("domain"), v1::LOCALITY_DOMAIN);
  EXPECT_EQ(*ParseLocality("center"), v1::LOCALITY_CENTER);
  EXPECT_EQ(*ParseLocality("any"), v1::LOCALITY_ANY);
  EXPECT_EQ(*ParseHealth("healthy"), v1::HEALTH_HEALTHY);
  EXPECT_EQ(*ParseHealth("degraded"), v1::HEALTH_DEGRADED);
  EXPECT_EQ(*ParseHealth("down"), v1::HEALTH_DOWN);
  EXPECT_EQ(*ParseRole("admin"), v1::ROLE_ADMIN);
  EXPECT_EQ(*ParseRole("operator"), v1::ROLE_OPERATOR);
  EXPECT_EQ(*ParseRole("buyer"), v1::ROLE_BUYER);
  EXPECT_EQ(*ParseGroupBy("none"), v1::GROUP_BY_NONE);
  EXPECT_EQ(*ParseGroupBy("center-type"), v1::GROUP_BY_CENTER_TYPE);
  EXPECT_EQ(*ParseGroupBy("center_type"), v1::GROUP_BY_CENTER_TYPE);
}

TEST(Enums, RejectUnknownAndUnspecifiedNamesAndListTheChoices) {
  absl::StatusOr<v1::Fabric> fabric = ParseFabric("token-ring");
  ASSERT_FALSE(fabric.ok());
  EXPECT_EQ(fabric.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(fabric.status().message(),
              HasSubstr("unknown fabric \"token-ring\"; expected ethernet|roce|infiniband|nvlink"));
  absl::StatusOr<v1::CenterType> type = ParseCenterType("unspecified");
  ASSERT_FALSE(type.ok());
  EXPECT_THAT(type.status().message(),
              HasSubstr("center type \"unspecified\"; expected "
                        "government|carrier|internet|enterprise|academic"));
  EXPECT_FALSE(ParseLocality("").ok());
  EXPECT_FALSE(ParseHealth("HEALTH_HEALTHY").ok());
  EXPECT_FALSE(ParseRole("root").ok());
  EXPECT_THAT(ParseRole("root").status().message(), HasSubstr("admin|operator|buyer"));
}

TEST(Enums, PrintTheSameNames) {
  EXPECT_EQ(CenterTypeName(v1::CENTER_TYPE_CARRIER), "carrier");
  EXPECT_EQ(FabricName(v1::FABRIC_INFINIBAND), "infiniband");
  EXPECT_EQ(LocalityName(v1::LOCALITY_DOMAIN), "domain");
  EXPECT_EQ(HealthName(v1::HEALTH_DEGRADED), "degraded");
  EXPECT_EQ(RoleName(v1::ROLE_BUYER), "buyer");
  EXPECT_EQ(AllocationStateName(v1::ALLOCATION_STATE_ACTIVE), "active");
  EXPECT_EQ(EndReasonName(v1::END_REASON_LAPSED), "lapsed");
  EXPECT_EQ(RejectReasonName(v1::REJECT_REASON_PRICE_ABOVE_CEILING), "price-above-ceiling");
  EXPECT_EQ(FabricName(static_cast<v1::Fabric>(42)), "42");
}

// ---- Rejection hints ----------------------------------------------------------------------------

TEST(RejectionHint, SaysWhatWouldWork) {
  v1::Rejection price;
  price.set_reason(v1::REJECT_REASON_PRICE_ABOVE_CEILING);
  price.set_min_ceiling_micros(31'200'000);
  price.set_largest_block_gpus(16);
  EXPECT_EQ(RejectionHint(price),
            "a price ceiling of 31.20 per GPU-hour would be granted; at most 16 GPUs of this "
            "shape are free at the asked start");

  v1::Rejection later;
  later.set_reason(v1::REJECT_REASON_INSUFFICIENT_CAPACITY);
  later.set_largest_block_gpus(0);
  *later.mutable_earliest_start() = ToProtoTime(kNow);
  EXPECT_EQ(RejectionHint(later),
            "no GPUs of this shape are free at the asked start; it would be granted starting at "
            "2027-01-15T08:00:00Z");

  v1::Rejection none;
  none.set_reason(v1::REJECT_REASON_NO_MATCHING_CAPACITY);
  EXPECT_THAT(RejectionHint(none), HasSubstr("no capacity on sale matches"));

  EXPECT_EQ(RejectionHint(v1::Rejection()), "");
}

// ---- Tables -------------------------------------------------------------------------------------

TEST(Table, AlignsColumnsTwoSpacesApartWithoutTrailingSpaces) {
  Table t({"ID", "STATE", "GPUS"});
  t.AddRow({"alloc-1", "active", "16"});
  t.AddRow({"a2", "held"});                   // a missing cell is empty
  t.AddRow({"a3", "ended", "8", "ignored"});  // an extra one is dropped
  EXPECT_EQ(t.rows(), size_t{3});
  EXPECT_EQ(t.Render(),
            "ID       STATE   GPUS\n"
            "alloc-1  active  16\n"
            "a2       held\n"
            "a3       ended   8\n");
}

TEST(Table, CountsWideCharactersAsTwoColumns) {
  EXPECT_EQ(DisplayWidth("abc"), size_t{3});
  EXPECT_EQ(DisplayWidth("算力"), size_t{4});
  EXPECT_EQ(DisplayWidth("é"), size_t{1});
  Table t({"NAME", "REGION"});
  t.AddRow({"算力中心", "cn-east-2"});
  t.AddRow({"dc", "cn-north-1"});
  EXPECT_EQ(t.Render(),
            "NAME      REGION\n"
            "算力中心  cn-east-2\n"
            "dc        cn-north-1\n");
}

}  // namespace
}  // namespace suanli
