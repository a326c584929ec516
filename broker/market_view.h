// What the ops dashboard and /metrics show of the market, read from one Market at one moment.
// Uses Market's public API only.
//
//   absl::StatusOr<MarketSample> s = engine.Run<MarketSample>(
//       [](Market& m, absl::Time now, storage::Batch*) { return SampleMarket(m, now, 20); });
#ifndef SUANLI_BROKER_MARKET_VIEW_H_
#define SUANLI_BROKER_MARKET_VIEW_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "broker/market.h"
#include "scheduler/matcher.h"
#include "suanli/v1/common.pb.h"

namespace suanli::broker {

// GPUs on sale in one group (a model in a region, or a center), from a catalog snapshot.
struct CapacityGroup {
  std::string model;  // empty for a center
  std::string region;
  std::string center_id;  // empty for a model/region group
  std::string center_name;
  int64_t gpus = 0;  // on sale now: healthy nodes under a live offer, times GPUs per node
  int64_t free_gpus = 0;
};

struct MarketSample {
  absl::Time at;
  scheduler::MarketTotals totals;
  std::vector<v1::Allocation> recent;  // newest first: held, reserved or active and not yet over
  int64_t gmv_micros = 0;              // from the ledger: charged to buyers, net of refunds
  int64_t commission_micros = 0;       // from the ledger: the broker's commission
};

// The market's totals and its `recent` newest allocations that end after `now` (what an admin's
// ListSoldAllocations shows). Must run on the engine thread. Never fails today; StatusOr so that
// it can be handed to Engine::Run.
absl::StatusOr<MarketSample> SampleMarket(const Market& market, absl::Time now, int recent);

// GPUs on sale and free, by model and region (sorted by model, then region) and by center (sorted
// by id), counting the catalog entries whose offer window holds the snapshot's time (offers that
// start later are not on sale now). Any thread.
std::vector<CapacityGroup> CapacityByModelRegion(const CatalogSnapshot& catalog);
std::vector<CapacityGroup> CapacityByCenter(const CatalogSnapshot& catalog);

}  // namespace suanli::broker

#endif  // SUANLI_BROKER_MARKET_VIEW_H_
