#include "broker/market_view.h"

#include "absl/strings/match.h"

#include <map>
#include <utility>

#include "broker/auth.h"
#include "suanli/v1/operator.pb.h"

namespace suanli::broker {
namespace {

// The catalog entries on sale now (their window has begun). A node is in at most one offer over
// any moment, so these cover disjoint nodes; entries of offers that start later list nodes that
// may be on sale now under another offer, and would count them twice.
std::vector<const v1::CatalogEntry*> OnSaleNow(const CatalogSnapshot& catalog) {
  const int64_t now = absl::ToUnixSeconds(catalog.at);
  std::vector<const v1::CatalogEntry*> out;
  for (const v1::CatalogEntry& e : catalog.entries) {
    if (e.from().seconds() <= now && now < e.until().seconds()) out.push_back(&e);
  }
  return out;
}

}  // namespace

absl::StatusOr<MarketSample> SampleMarket(const Market& market, absl::Time now, int recent) {
  MarketSample s;
  s.at = now;
  s.totals = market.Totals();
  Principal admin;
  admin.role = v1::ROLE_ADMIN;
  v1::ListSoldAllocationsRequest r;
  r.mutable_page()->set_page_size(recent);
  absl::StatusOr<v1::ListSoldAllocationsResponse> sold = market.ListSoldAllocations(admin, r, now);
  if (!sold.ok()) return sold.status();
  s.recent.assign(sold->allocations().begin(), sold->allocations().end());
  for (const storage::LedgerEntryRow& entry : market.Ledger()) {
    for (const storage::LedgerLeg& leg : entry.legs) {
      if (absl::StartsWith(leg.account, "buyer:")) s.gmv_micros -= leg.amount_micros;
      if (absl::StartsWith(leg.account, "commission:")) s.commission_micros += leg.amount_micros;
    }
  }
  return s;
}

std::vector<CapacityGroup> CapacityByModelRegion(const CatalogSnapshot& catalog) {
  std::map<std::pair<std::string, std::string>, CapacityGroup> groups;
  for (const v1::CatalogEntry* e : OnSaleNow(catalog)) {
    CapacityGroup& g = groups[{e->model(), e->region()}];
    g.model = e->model();
    g.region = e->region();
    g.gpus += static_cast<int64_t>(e->nodes()) * e->gpus_per_node();
    g.free_gpus += e->free_gpus();
  }
  std::vector<CapacityGroup> out;
  out.reserve(groups.size());
  for (auto& [key, g] : groups) out.push_back(std::move(g));
  return out;
}

std::vector<CapacityGroup> CapacityByCenter(const CatalogSnapshot& catalog) {
  std::map<std::string, CapacityGroup> groups;
  for (const v1::CatalogEntry* e : OnSaleNow(catalog)) {
    CapacityGroup& g = groups[e->center_id()];
    g.center_id = e->center_id();
    g.center_name = e->center_name();
    g.region = e->region();
    g.gpus += static_cast<int64_t>(e->nodes()) * e->gpus_per_node();
    g.free_gpus += e->free_gpus();
  }
  std::vector<CapacityGroup> out;
  out.reserve(groups.size());
  for (auto& [key, g] : groups) out.push_back(std::move(g));
  return out;
}

}  // namespace suanli::broker
