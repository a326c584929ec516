// A histogram of latencies with fixed, log-linear buckets, for percentiles that cost little to
// keep: every power of two of nanoseconds is split into 8 equal buckets (the first 16 ns are one
// bucket each), so a bucket is at most 12.5% wider than its lower bound, whatever the scale.
// Only buckets that were used take memory. Integer nanoseconds throughout.
//
//   LatencyHistogram h;
//   h.Record(absl::Microseconds(12));
//   h.Merge(other);
//   int64_t p99 = h.QuantileNanos(0.99);   // 0 when empty
//
// To store one and rebuild it exactly (the market keeps its per-minute histograms):
//   h.ForEachBucket([&](int bucket, int64_t n) { ... });   // with h.min_nanos(), h.max_nanos()
//   LatencyHistogram g;
//   g.AddBucket(bucket, n);  // for each stored bucket
//   g.RestoreMinMax(min, max);
//
// Thread-compatible (the market keeps its histograms on the engine thread).
#ifndef SUANLI_BROKER_LATENCY_HISTOGRAM_H_
#define SUANLI_BROKER_LATENCY_HISTOGRAM_H_

#include <cstdint>
#include <limits>

#include "absl/container/btree_map.h"
#include "absl/time/time.h"

namespace suanli::broker {

class LatencyHistogram {
 public:
  // The bucket of `nanos` (negative counts as 0), and the inclusive range of values it holds:
  // [BucketLow(i), BucketHigh(i)]. Buckets are numbered in increasing order of their values.
  static int BucketOf(int64_t nanos);
  static int64_t BucketLow(int bucket);
  static int64_t BucketHigh(int bucket);

  // Counts one latency (a negative one as 0; one beyond int64 nanoseconds as the largest).
  void Record(absl::Duration latency);
  void RecordNanos(int64_t nanos);
  // Adds every count of `other`.
  void Merge(const LatencyHistogram& other);

  // Calls f(bucket, count) for each used bucket, in increasing order of bucket.
  template <typename F>
  void ForEachBucket(F f) const {
    for (const auto& [bucket, n] : buckets_) f(bucket, n);
  }
  // The largest bucket number (that of the largest int64).
  static int MaxBucket();
  // Adds `n` counts to `bucket` (what ForEachBucket reported), as if values in it were recorded;
  // until RestoreMinMax, the smallest and largest values become the bucket's bounds where they
  // widen them. False, and nothing changed, when the bucket is out of [0, MaxBucket()], n <= 0,
  // or the total count would overflow.
  bool AddBucket(int bucket, int64_t n);
  // Sets the smallest and largest values recorded to what min_nanos() and max_nanos() reported
  // when the buckets were read. False, and nothing changed, when the histogram is empty, min >
  // max, or min (max) is not in the lowest (highest) used bucket.
  bool RestoreMinMax(int64_t min, int64_t max);

  // The latency at quantile `q` (0 < q <= 1; clamped) by the nearest-rank method: the smallest
  // recorded value v such that at least q of the counts are <= v, reported as the upper bound of
  // v's bucket and kept within the smallest and largest values recorded. So the answer is never
  // below the true quantile and at most 12.5% above it. 0 when nothing was recorded.
  int64_t QuantileNanos(double q) const;

  int64_t count() const { return count_; }
  // The smallest and largest values recorded (0 when empty).
  int64_t min_nanos() const { return count_ == 0 ? 0 : min_; }
  int64_t max_nanos() const { return count_ == 0 ? 0 : max_; }

 private:
  absl::btree_map<int, int64_t> buckets_;  // bucket -> count; only used ones
  int64_t count_ = 0;
  int64_t min_ = std::numeric_limits<int64_t>::max();
  int64_t max_ = 0;
};

}  // namespace suanli::broker

#endif  // SUANLI_BROKER_LATENCY_HISTOGRAM_H_
