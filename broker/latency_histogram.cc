#include "broker/latency_histogram.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace suanli::broker {
namespace {

constexpr int kSubBits = 3;          // 8 buckets per power of two
constexpr int kSub = 1 << kSubBits;  // 8
constexpr int kExact = 2 * kSub;     // values below 16 have a bucket each

}  // namespace

int LatencyHistogram::BucketOf(int64_t nanos) {
  if (nanos < kExact) return nanos < 0 ? 0 : static_cast<int>(nanos);
  const int exponent = 63 - __builtin_clzll(static_cast<uint64_t>(nanos));  // >= 4
  const int shift = exponent - kSubBits;
  const int mantissa = static_cast<int>(nanos >> shift);  // 8..15
  return shift * kSub + mantissa;
}

int64_t LatencyHistogram::BucketLow(int bucket) {
  if (bucket < kExact) return bucket;
  const int shift = bucket / kSub - 1;
  const uint64_t mantissa = static_cast<uint64_t>(bucket % kSub) + kSub;
  return static_cast<int64_t>(mantissa << shift);
}

int64_t LatencyHistogram::BucketHigh(int bucket) {
  if (bucket < kExact) return bucket;
  const int shift = bucket / kSub - 1;
  const uint64_t mantissa = static_cast<uint64_t>(bucket % kSub) + kSub;
  return static_cast<int64_t>(((mantissa + 1) << shift) - 1);
}

void LatencyHistogram::Record(absl::Duration latency) {
  // ToInt64Nanoseconds saturates at the int64 limits.
  RecordNanos(absl::ToInt64Nanoseconds(latency));
}

void LatencyHistogram::RecordNanos(int64_t nanos) {
  nanos = std::max<int64_t>(nanos, 0);
  ++buckets_[BucketOf(nanos)];
  ++count_;
  min_ = std::min(min_, nanos);
  max_ = std::max(max_, nanos);
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  if (other.count_ == 0) return;
  for (const auto& [bucket, n] : other.buckets_) buckets_[bucket] += n;
  count_ += other.count_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
}

int LatencyHistogram::MaxBucket() { return BucketOf(std::numeric_limits<int64_t>::max()); }

bool LatencyHistogram::AddBucket(int bucket, int64_t n) {
  if (bucket < 0 || bucket > MaxBucket() || n <= 0) return false;
  if (count_ > std::numeric_limits<int64_t>::max() - n) return false;
  buckets_[bucket] += n;
  count_ += n;
  min_ = std::min(min_, BucketLow(bucket));
  max_ = std::max(max_, BucketHigh(bucket));
  return true;
}

bool LatencyHistogram::RestoreMinMax(int64_t min, int64_t max) {
  if (count_ == 0 || min > max || min < 0) return false;
  if (BucketOf(min) != buckets_.begin()->first || BucketOf(max) != buckets_.rbegin()->first) {
    return false;
  }
  min_ = min;
  max_ = max;
  return true;
}

int64_t LatencyHistogram::QuantileNanos(double q) const {
  if (count_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  // The nearest rank, 1-based; the small slack keeps 0.999 * 1000 at 999 despite rounding.
  const double exact = q * static_cast<double>(count_);
  const int64_t rank =
      std::clamp<int64_t>(static_cast<int64_t>(std::ceil(exact - 1e-9)), 1, count_);
  int64_t seen = 0;
  for (const auto& [bucket, n] : buckets_) {
    seen += n;
    if (seen >= rank) return std::clamp(BucketHigh(bucket), min_, max_);
  }
  return max_;
}

}  // namespace suanli::broker
