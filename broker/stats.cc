// Market::MarketStats: the figures of OpsService.GetMarketStats (docs/LEDGER.md defines each).
#include <algorithm>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "broker/ledger.h"
#include "broker/market.h"
#include "broker/validate.h"
#include "scheduler/gpu_models.h"

namespace suanli::broker {
namespace {

absl::Time TimeOfProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

double Hours(absl::Time from, absl::Time to) {
  return to > from ? absl::ToDoubleHours(to - from) : 0.0;
}

// Overlap of [a, b) with [from, to), in hours.
double OverlapHours(absl::Time a, absl::Time b, absl::Time from, absl::Time to) {
  return Hours(std::max(a, from), std::min(b, to));
}

double PflopsPerGpu(const std::string& model) {
  const scheduler::GpuModel* m = scheduler::FindGpuModel(model);
  return m == nullptr ? 0.0 : m->dense_tflops / 1000.0;
}

}  // namespace

absl::StatusOr<v1::GetMarketStatsResponse> Market::MarketStats(const Principal& p,
                                                               const v1::GetMarketStatsRequest& r,
                                                               absl::Time now) const {
  const bool admin = p.role == v1::ROLE_ADMIN;
  if (!admin && p.role != v1::ROLE_OPERATOR) {
    return absl::PermissionDeniedError("market figures need an admin or operator key");
  }
  absl::StatusOr<Period> period =
      ValidatePeriod(r.has_from() ? &r.from() : nullptr, r.has_to() ? &r.to() : nullptr, now);
  if (!period.ok()) return period.status();
  const absl::Time from = period->from;
  const absl::Time to = period->to;
  if (!v1::GroupBy_IsValid(r.group_by())) {
    return absl::InvalidArgumentError(absl::StrCat("group_by: unknown value ", r.group_by()));
  }

  auto visible = [&](const std::string& center_id) {
    if (admin) return true;
    auto c = centers_.find(center_id);
    return c != centers_.end() && c->second.operator_id() == p.account_id;
  };
  auto group_of = [&](const std::string& center_id, const std::string& model) -> std::string {
    auto c = centers_.find(center_id);
    switch (r.group_by()) {
      case v1::GROUP_BY_CENTER:
        return center_id;
      case v1::GROUP_BY_REGION:
        return c == centers_.end() ? std::string() : c->second.region();
      case v1::GROUP_BY_OPERATOR:
        return c == centers_.end() ? std::string() : c->second.operator_id();
      case v1::GROUP_BY_MODEL:
        return model;
      case v1::GROUP_BY_CENTER_TYPE:
        return c == centers_.end() ? std::string() : v1::CenterType_Name(c->second.type());
      default:
        return std::string();
    }
  };
  std::map<std::string, v1::MarketStatsRow> rows;
  auto row = [&](const std::string& group) -> v1::MarketStatsRow& {
    v1::MarketStatsRow& out = rows[group];
    out.set_group(group);
    return out;
  };
  if (r.group_by() == v1::GROUP_BY_NONE) row("");

  // Offered: each node's time under at least one offer (withdrawn offers until their
  // withdrawal; a removed node until its removal), times its GPUs.
  auto offered = [&](const v1::Node& node, const std::vector<std::string>& offer_ids,
                     absl::Time gone) {
    if (!visible(node.center_id())) return;
    std::vector<std::pair<absl::Time, absl::Time>> spans;
    for (const std::string& offer_id : offer_ids) {
      const v1::Offer& o = offers_.at(offer_id);
      absl::Time until = std::min(TimeOfProto(o.until()), gone);
      auto w = withdrawn_at_.find(offer_id);
      if (o.withdrawn() && w != withdrawn_at_.end()) until = std::min(until, w->second);
      const absl::Time a = std::max(TimeOfProto(o.from()), from);
      const absl::Time b = std::min(until, to);
      if (a < b) spans.emplace_back(a, b);
    }
    std::sort(spans.begin(), spans.end());
    double hours = 0;
    absl::Time covered = absl::InfinitePast();
    for (const auto& [a, b] : spans) {
      const absl::Time start = std::max(a, covered);
      if (b > start) hours += Hours(start, b);
      covered = std::max(covered, b);
    }
    if (hours == 0) return;
    v1::MarketStatsRow& out = row(group_of(node.center_id(), node.model()));
    out.set_offered_gpu_hours(out.offered_gpu_hours() + hours * node.gpus());
    out.set_offered_pflops_hours(out.offered_pflops_hours() +
                                 hours * node.gpus() * PflopsPerGpu(node.model()));
  };
  static const std::vector<std::string> kNoOffers;
  for (const auto& [node_id, node] : nodes_) {
    auto it = node_offers_.find(node_id);
    offered(node, it != node_offers_.end() ? it->second : kNoOffers, absl::InfiniteFuture());
  }
  for (const RetiredNode& r : retired_nodes_) offered(r.node, r.offers, r.removed_at);

  // Sold: every slice of every allocation that was sold (not a hold that lapsed or was
  // cancelled), over its [start, end) within the range. Idle fragments at `to`: GPUs taken on a
  // node at `to` by any live allocation or hold.
  std::map<std::string, int64_t> taken_at_to;  // by node
  for (const auto& [id, rec] : allocs_) {
    const v1::Allocation& a = rec.a;
    const absl::Time start = TimeOfProto(a.start());
    const absl::Time end = TimeOfProto(a.end());
    const bool held = a.state() == v1::ALLOCATION_STATE_HELD;
    const absl::Time claim_end = held && rec.held_end > end ? rec.held_end : end;
    const bool sold = !held && a.total_price_micros() > 0;
    for (const v1::Slice& s : a.slices()) {
      if (!visible(s.center_id())) continue;
      if (start <= to && to < claim_end && (held || sold)) taken_at_to[s.node_id()] += s.gpus();
      if (!sold) continue;
      const double hours = OverlapHours(start, end, from, to);
      if (hours == 0) continue;
      v1::MarketStatsRow& out = row(group_of(s.center_id(), s.model()));
      out.set_sold_gpu_hours(out.sold_gpu_hours() + hours * s.gpus());
      out.set_sold_pflops_hours(out.sold_pflops_hours() +
                                hours * s.gpus() * PflopsPerGpu(s.model()));
    }
  }
  for (const auto& [node_id, taken] : taken_at_to) {
    auto n = nodes_.find(node_id);
    if (n == nodes_.end() || taken <= 0 || taken >= n->second.gpus()) continue;
    bool on_sale = false;
    auto it = node_offers_.find(node_id);
    if (it != node_offers_.end()) {
      for (const std::string& offer_id : it->second) {
        const v1::Offer& o = offers_.at(offer_id);
        auto w = withdrawn_at_.find(offer_id);
        const bool gone = o.withdrawn() && (w == withdrawn_at_.end() || w->second <= to);
        if (!gone && TimeOfProto(o.from()) <= to && to < TimeOfProto(o.until())) on_sale = true;
      }
    }
    if (!on_sale || n->second.health() != v1::HEALTH_HEALTHY) continue;
    v1::MarketStatsRow& out = row(group_of(n->second.center_id(), n->second.model()));
    out.set_idle_fragment_gpus(out.idle_fragment_gpus() + n->second.gpus() - taken);
  }

  // GMV and commission: the ledger entries posted in the range. Each operator's gross (its leg
  // plus its commission) is apportioned over its slices of the allocation by their rates, so
  // every grouping adds up to the same totals to the micro.
  for (const storage::LedgerEntryRow& e : ledger_) {
    if (e.at < from || e.at >= to) continue;
    std::map<std::string, std::pair<int64_t, int64_t>> by_operator;  // gross, commission
    for (const storage::LedgerLeg& leg : e.legs) {
      const std::string op = OperatorOf(leg.account);
      if (op.empty() && !absl::StartsWith(leg.account, kCommissionPrefix)) continue;
      by_operator[op].first += leg.amount_micros;
      if (absl::StartsWith(leg.account, kCommissionPrefix)) {
        by_operator[op].second += leg.amount_micros;
      }
    }
    auto rec = allocs_.find(static_cast<uint64_t>(e.allocation_id));
    for (const auto& [op, amounts] : by_operator) {
      if (!admin && op != p.account_id) continue;
      std::vector<const v1::Slice*> slices;
      std::vector<int64_t> weights;
      if (rec != allocs_.end()) {
        for (const v1::Slice& s : rec->second.a.slices()) {
          auto c = centers_.find(s.center_id());
          if (c == centers_.end() || c->second.operator_id() != op) continue;
          slices.push_back(&s);
          weights.push_back(int64_t{s.gpus()} * s.price_micros_per_gpu_hour());
        }
      }
      if (slices.empty()) {
        if (!admin) continue;
        v1::MarketStatsRow& out = row(r.group_by() == v1::GROUP_BY_OPERATOR ? op : "");
        out.set_gmv_micros(out.gmv_micros() + amounts.first);
        out.set_commission_micros(out.commission_micros() + amounts.second);
        continue;
      }
      const std::vector<int64_t> gross = Apportion(amounts.first, weights);
      const std::vector<int64_t> commission = Apportion(amounts.second, weights);
      for (size_t i = 0; i < slices.size(); ++i) {
        v1::MarketStatsRow& out = row(group_of(slices[i]->center_id(), slices[i]->model()));
        out.set_gmv_micros(out.gmv_micros() + gross[i]);
        out.set_commission_micros(out.commission_micros() + commission[i]);
      }
    }
  }

  // Decisions and their latency: counted per minute and stored with each batch, so across
  // restarts; market-wide, so only for admins (an operator does not see other tenants' demand), the
  // counts only in the ungrouped row.
  LatencyHistogram latency;
  if (admin) {
    const int64_t first = absl::ToUnixSeconds(from) / 60;
    for (auto it = decisions_.lower_bound(first);
         it != decisions_.end() && absl::FromUnixSeconds(it->first * 60) < to; ++it) {
      latency.Merge(it->second.latency);
      if (r.group_by() != v1::GROUP_BY_NONE) continue;
      v1::MarketStatsRow& out = row("");
      out.set_requests(out.requests() + it->second.requests);
      out.set_grants(out.grants() + it->second.grants);
      for (const auto& [reason, n] : it->second.rejections) {
        (*out.mutable_rejections_by_reason())[reason] += n;
      }
    }
  }

  v1::GetMarketStatsResponse response;
  std::vector<v1::MarketStatsRow*> ordered;
  for (auto& [group, out] : rows) {
    if (out.offered_gpu_hours() > 0) {
      out.set_utilization(std::min(1.0, out.sold_gpu_hours() / out.offered_gpu_hours()));
    }
    if (out.requests() > 0) {
      out.set_fill_rate(static_cast<double>(out.grants()) / static_cast<double>(out.requests()));
    }
    ordered.push_back(&out);
  }
  std::stable_sort(ordered.begin(), ordered.end(),
                   [](const v1::MarketStatsRow* x, const v1::MarketStatsRow* y) {
                     return x->gmv_micros() > y->gmv_micros();
                   });
  for (v1::MarketStatsRow* out : ordered) *response.add_rows() = std::move(*out);
  // Nanoseconds to microseconds: a ratio for people, not money.
  response.set_decision_p50_us(static_cast<double>(latency.QuantileNanos(0.5)) / 1000.0);
  response.set_decision_p99_us(static_cast<double>(latency.QuantileNanos(0.99)) / 1000.0);
  response.set_decision_p999_us(static_cast<double>(latency.QuantileNanos(0.999)) / 1000.0);
  response.set_decisions_timed(latency.count());
  return response;
}

}  // namespace suanli::broker
