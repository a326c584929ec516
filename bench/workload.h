// The std workload of shared/WORKLOAD.md: a market topology and a request stream, both generated
// from a seed (the same seed gives the same market and the same requests). Used by the core
// benchmark and, later, by the end-to-end load tool, so that both measure the same work.
//
//   StdMarket market = MakeStdMarket(/*gpus=*/1 << 20, /*seed=*/1, t0);
//   RequestStream stream(market, /*seed=*/1);
//   scheduler::Request r = stream.Next(now);
#ifndef SUANLI_BENCH_WORKLOAD_H_
#define SUANLI_BENCH_WORKLOAD_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "scheduler/types.h"

namespace suanli::bench {

struct StdMarket {
  std::vector<scheduler::CenterSpec> centers;
  std::vector<scheduler::DomainSpec> domains;
  std::vector<scheduler::NodeSpec> nodes;
  std::vector<scheduler::OfferSpec> offers;
  std::vector<std::string> regions;
  int64_t gpus = 0;
};

// The std topology scaled to `gpus`: 1,024 nodes of 8 GPUs per center, fewer centers down to 8,
// then smaller domains, the smallest down to 8 nodes (so at least 8,192 GPUs; sizes in between
// round down to the topology). Offers open at t0.
StdMarket MakeStdMarket(int64_t gpus, uint64_t seed, absl::Time t0);

enum class RequestKind : uint8_t { kInference, kWholeNode, kGang, kLargeGang };
const char* RequestKindName(RequestKind k);

// The request mix of WORKLOAD.md: 50% inference, 25% whole node, 20% gang, 5% large gang; 10%
// start within 7 days; 20% with a tight (0.85x base) ceiling, the rest 1.3x base.
class RequestStream {
 public:
  RequestStream(const StdMarket& market, uint64_t seed);
  // The next request, with start relative to `now`; sets *kind when given.
  scheduler::Request Next(absl::Time now, RequestKind* kind = nullptr);

 private:
  int Class();  // a model class index drawn with the capacity shares
  std::mt19937_64 rng_;
  std::vector<std::string> regions_;
  uint64_t n_ = 0;
};

}  // namespace suanli::bench

#endif  // SUANLI_BENCH_WORKLOAD_H_
