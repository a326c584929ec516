// The decision latency histogram (broker/latency_histogram.h): fixed log-linear buckets that never
// overlap or leave gaps, and nearest-rank quantiles that are never below the true value and at
// most 12.5% above it.
#include "broker/latency_histogram.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace suanli::broker {
namespace {

TEST(LatencyHistogramTest, BucketsTileTheRangeWithoutGapsOrOverlaps) {
  // Small values have a bucket each.
  for (int64_t v = 0; v < 16; ++v) {
    EXPECT_EQ(LatencyHistogram::BucketOf(v), v);
    EXPECT_EQ(LatencyHistogram::BucketLow(static_cast<int>(v)), v);
    EXPECT_EQ(LatencyHistogram::BucketHigh(static_cast<int>(v)), v);
  }
  const int last = LatencyHistogram::BucketOf(std::numeric_limits<int64_t>::max());
  EXPECT_EQ(LatencyHistogram::BucketHigh(last), std::numeric_limits<int64_t>::max());
  for (int b = 1; b <= last; ++b) {
    SCOPED_TRACE(b);
    ASSERT_EQ(LatencyHistogram::BucketLow(b), LatencyHistogram::BucketHigh(b - 1) + 1);
    const int64_t low = LatencyHistogram::BucketLow(b);
    const int64_t high = LatencyHistogram::BucketHigh(b);
    ASSERT_EQ(LatencyHistogram::BucketOf(low), b);
    ASSERT_EQ(LatencyHistogram::BucketOf(high), b);
    // No bucket is wider than an eighth of its lower bound.
    if (b >= 16) {
      ASSERT_LE(high - low + 1, low / 8);
    }
  }
  EXPECT_EQ(LatencyHistogram::BucketOf(-5), 0);
}

TEST(LatencyHistogramTest, EmptyIsZeroAndOneValueIsItself) {
  LatencyHistogram h;
  EXPECT_EQ(h.count(), 0);
  EXPECT_EQ(h.QuantileNanos(0.5), 0);
  EXPECT_EQ(h.QuantileNanos(0.999), 0);
  h.Record(absl::Nanoseconds(12'345));
  EXPECT_EQ(h.count(), 1);
  // The bucket's upper bound is clamped to the largest value recorded.
  EXPECT_EQ(h.QuantileNanos(0.5), 12'345);
  EXPECT_EQ(h.QuantileNanos(0.999), 12'345);
  EXPECT_EQ(h.min_nanos(), 12'345);
  EXPECT_EQ(h.max_nanos(), 12'345);
}

TEST(LatencyHistogramTest, NearestRankOnAKnownDistribution) {
  LatencyHistogram h;
  // 1..1000 microseconds, once each.
  for (int i = 1; i <= 1000; ++i) h.Record(absl::Microseconds(i));
  ASSERT_EQ(h.count(), 1000);
  const int64_t p50 = h.QuantileNanos(0.5);
  const int64_t p99 = h.QuantileNanos(0.99);
  const int64_t p999 = h.QuantileNanos(0.999);
  EXPECT_GE(p50, 500'000);
  EXPECT_LE(p50, 500'000 + 500'000 / 8);
  EXPECT_GE(p99, 990'000);
  EXPECT_LE(p99, 990'000 + 990'000 / 8);
  EXPECT_GE(p999, 999'000);
  EXPECT_LE(p999, 1'000'000);  // never above the largest value
  EXPECT_EQ(h.QuantileNanos(1.0), 1'000'000);
  EXPECT_LE(p50, p99);
  EXPECT_LE(p99, p999);
}

TEST(LatencyHistogramTest, MergeEqualsRecordingEverythingInOne) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  std::lognormal_distribution<double> latency(9.0, 1.5);  // around 8us, long tail
  LatencyHistogram a, b, all;
  std::vector<int64_t> values;
  for (int i = 0; i < 20'000; ++i) {
    const auto v = static_cast<int64_t>(latency(rng));
    values.push_back(v);
    (i % 3 == 0 ? a : b).RecordNanos(v);
    all.RecordNanos(v);
  }
  a.Merge(b);
  std::sort(values.begin(), values.end());
  for (double q : {0.5, 0.9, 0.99, 0.999, 1.0}) {
    SCOPED_TRACE(q);
    EXPECT_EQ(a.QuantileNanos(q), all.QuantileNanos(q));
    // The exact nearest-rank value, and the reported one at most 12.5% above it.
    const auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(values.size()) - 1e-9));
    const int64_t exact = values[std::max<size_t>(rank, 1) - 1];
    EXPECT_GE(a.QuantileNanos(q), exact);
    EXPECT_LE(a.QuantileNanos(q), exact + exact / 8 + 1);
  }
  EXPECT_EQ(a.count(), 20'000);
  EXPECT_EQ(a.min_nanos(), values.front());
  EXPECT_EQ(a.max_nanos(), values.back());
}

// What ForEachBucket, min_nanos and max_nanos report rebuilds the histogram exactly through
// AddBucket and RestoreMinMax.
TEST(LatencyHistogramTest, BucketsAndMinMaxRebuildItExactly) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  std::lognormal_distribution<double> latency(9.0, 2.0);
  LatencyHistogram h;
  for (int i = 0; i < 5'000; ++i) h.RecordNanos(static_cast<int64_t>(latency(rng)));
  h.RecordNanos(0);
  h.RecordNanos(std::numeric_limits<int64_t>::max());

  LatencyHistogram rebuilt;
  int last = -1;
  int64_t total = 0;
  h.ForEachBucket([&](int bucket, int64_t n) {
    EXPECT_GT(bucket, last);  // increasing, each used bucket once
    EXPECT_GT(n, 0);
    last = bucket;
    total += n;
    EXPECT_TRUE(rebuilt.AddBucket(bucket, n));
  });
  EXPECT_EQ(total, h.count());
  EXPECT_EQ(last, LatencyHistogram::MaxBucket());
  ASSERT_TRUE(rebuilt.RestoreMinMax(h.min_nanos(), h.max_nanos()));
  EXPECT_EQ(rebuilt.count(), h.count());
  EXPECT_EQ(rebuilt.min_nanos(), h.min_nanos());
  EXPECT_EQ(rebuilt.max_nanos(), h.max_nanos());
  for (double q : {0.001, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0}) {
    SCOPED_TRACE(q);
    EXPECT_EQ(rebuilt.QuantileNanos(q), h.QuantileNanos(q));
  }
}

TEST(LatencyHistogramTest, AddBucketWithoutMinMaxUsesTheBucketBounds) {
  LatencyHistogram h;
  const int b = LatencyHistogram::BucketOf(1'000);
  ASSERT_TRUE(h.AddBucket(b, 3));
  EXPECT_EQ(h.count(), 3);
  EXPECT_EQ(h.min_nanos(), LatencyHistogram::BucketLow(b));
  EXPECT_EQ(h.max_nanos(), LatencyHistogram::BucketHigh(b));
  EXPECT_EQ(h.QuantileNanos(0.5), LatencyHistogram::BucketHigh(b));
}

TEST(LatencyHistogramTest, AddBucketAndRestoreMinMaxRefuseWhatCannotBe) {
  LatencyHistogram h;
  EXPECT_FALSE(h.RestoreMinMax(1, 2));  // empty
  EXPECT_FALSE(h.AddBucket(-1, 1));
  EXPECT_FALSE(h.AddBucket(LatencyHistogram::MaxBucket() + 1, 1));
  EXPECT_FALSE(h.AddBucket(3, 0));
  EXPECT_FALSE(h.AddBucket(3, -2));
  EXPECT_EQ(h.count(), 0);
  ASSERT_TRUE(h.AddBucket(3, std::numeric_limits<int64_t>::max() - 1));
  EXPECT_FALSE(h.AddBucket(4, 2));  // the count would overflow
  ASSERT_TRUE(h.AddBucket(LatencyHistogram::BucketOf(100), 1));
  EXPECT_FALSE(h.RestoreMinMax(4, 100));   // 4 is not in the lowest bucket (3)
  EXPECT_FALSE(h.RestoreMinMax(3, 1000));  // 1000 is not in the highest bucket
  EXPECT_FALSE(h.RestoreMinMax(100, 3));   // min > max
  EXPECT_TRUE(h.RestoreMinMax(3, 100));
  EXPECT_EQ(h.min_nanos(), 3);
  EXPECT_EQ(h.max_nanos(), 100);
}

}  // namespace
}  // namespace suanli::broker
