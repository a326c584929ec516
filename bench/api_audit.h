// The end-of-run audit of suanli-bench, made through the API: from the market the bench
// registered, what it asked for each allocation it was granted, and every allocation the broker
// lists for the bench's buyers, it counts the problems WORKLOAD.md calls violations.
//
//   AuditInput in{&market, &asked, &listed};
//   AuditResult r = AuditAllocations(in);
//   if (r.violations > 0) for (const std::string& p : r.problems) std::cerr << p << "\n";
//
// A problem is one of:
//   - a node oversold: at some instant the GPUs of the allocations that hold it (their intervals
//     [start, end) as listed, a released allocation up to its release) exceed its GPUs;
//   - a grant that does not satisfy its request: GPU count, gpus_per_node, models, locality,
//     regions, center types, tags, minimum fabric, price (each slice at its domain's ask and
//     within the ceiling, the total the price of the interval), start (the asked one, or between
//     the call's send and its answer for a start-now request), duration (exact, shorter only
//     when released), the offer's window;
//   - a slice that does not match the market: an unknown node, or the wrong center, domain,
//     model or offer for it;
//   - a grant the bench was told about that the broker does not list, or a listed allocation the
//     bench was never granted, listed twice, of another buyer, held, or released by nobody.
//
// Pure function of its input; thread-safe.
#ifndef SUANLI_BENCH_API_AUDIT_H_
#define SUANLI_BENCH_API_AUDIT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "bench/workload.h"
#include "suanli/v1/common.pb.h"

namespace suanli::bench {

// What the bench knows about one allocation it was granted.
struct AskedGrant {
  v1::AllocationRequest request;  // as sent (a future start as an absolute time)
  std::string buyer_id;           // the account that asked
  absl::Time sent;                // wall clock just before the call
  absl::Time received;            // wall clock just after the answer
  bool released = false;          // the bench released it (and was answered OK)
};

struct AuditInput {
  const StdMarket* market = nullptr;  // as registered: node ids, GPUs, models, offers
  // By allocation id: every grant the bench was answered.
  const absl::flat_hash_map<std::string, AskedGrant>* asked = nullptr;
  const std::vector<v1::Allocation>* listed = nullptr;  // every allocation the buyers list
  // How far a start-now allocation's start may be outside [sent, received] (clock steps).
  absl::Duration clock_slack = absl::Seconds(1);
};

struct AuditResult {
  int64_t allocations = 0;  // listed allocations checked
  int64_t slices = 0;       // their slices
  int64_t violations = 0;   // problems found
  // The first kMaxProblems problems, each a line for a person.
  std::vector<std::string> problems;
  static constexpr size_t kMaxProblems = 20;
};

AuditResult AuditAllocations(const AuditInput& in);

}  // namespace suanli::bench

#endif  // SUANLI_BENCH_API_AUDIT_H_
