#include "bench/api_audit.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "scheduler/types.h"
#include "sdk/format.h"

namespace suanli::bench {
namespace {

struct DomainInfo {
  const scheduler::CenterSpec* center = nullptr;
  const scheduler::DomainSpec* domain = nullptr;
  const scheduler::OfferSpec* offer = nullptr;  // the domain's one offer
};

struct NodeInfo {
  const scheduler::NodeSpec* node = nullptr;
  const DomainInfo* domain = nullptr;
  size_t index = 0;  // into the per-node event lists
};

// One end of an allocation's hold on a node: +gpus at its start, -gpus at its end.
struct Edge {
  int64_t at_us = 0;
  int32_t delta = 0;
  bool operator<(const Edge& o) const {
    // At the same instant, ends come before starts: [a, b) and [b, c) do not overlap.
    return at_us != o.at_us ? at_us < o.at_us : delta < o.delta;
  }
};

// The proto enums number the scheduler's values from 1 (0 is "unspecified").
int FabricRank(v1::Fabric f) { return static_cast<int>(f); }
int FabricRank(scheduler::Fabric f) { return static_cast<int>(f) + 1; }
v1::CenterType ToProto(scheduler::CenterType t) {
  return static_cast<v1::CenterType>(static_cast<int>(t) + 1);
}

class Auditor {
 public:
  explicit Auditor(const AuditInput& in) : in_(in) {
    const StdMarket& m = *in.market;
    absl::flat_hash_map<std::string, const scheduler::CenterSpec*> centers;
    for (const scheduler::CenterSpec& c : m.centers) centers[c.id] = &c;
    for (const scheduler::DomainSpec& d : m.domains) {
      DomainInfo& info = domains_[DomainKey(d.center_id, d.id)];
      info.domain = &d;
      info.center = centers.at(d.center_id);
    }
    for (const scheduler::OfferSpec& o : m.offers) {
      domains_.at(DomainKey(o.center_id, o.domain_id)).offer = &o;
    }
    for (const scheduler::NodeSpec& n : m.nodes) {
      NodeInfo& info = nodes_[n.id];
      info.node = &n;
      info.domain = &domains_.at(DomainKey(n.center_id, n.domain_id));
      info.index = edges_.size();
      edges_.emplace_back();
    }
  }

  AuditResult Run() {
    absl::flat_hash_set<std::string> seen;
    for (const v1::Allocation& a : *in_.listed) {
      ++result_.allocations;
      result_.slices += a.slices_size();
      if (!seen.insert(a.id()).second) {
        Problem(a.id(), "listed more than once");
        continue;
      }
      auto it = in_.asked->find(a.id());
      if (it == in_.asked->end()) {
        Problem(a.id(), "listed, but the bench was never granted it");
        HoldNodes(a);
        continue;
      }
      CheckGrant(a, it->second);
      HoldNodes(a);
    }
    for (const auto& [id, asked] : *in_.asked) {
      if (!seen.contains(id)) Problem(id, "granted to the bench, but not listed by the broker");
    }
    CheckOversell();
    return std::move(result_);
  }

 private:
  static std::string DomainKey(const std::string& center, const std::string& domain) {
    return absl::StrCat(center, "/", domain);
  }

  void Problem(const std::string& id, const std::string& what) {
    ++result_.violations;
    if (result_.problems.size() < AuditResult::kMaxProblems) {
      result_.problems.push_back(absl::StrCat("allocation ", id, ": ", what));
    }
  }

  void CheckGrant(const v1::Allocation& a, const AskedGrant& asked) {
    const v1::AllocationRequest& r = asked.request;
    if (a.buyer_id() != asked.buyer_id) {
      Problem(a.id(), absl::StrCat("buyer ", a.buyer_id(), ", asked by ", asked.buyer_id));
    }
    if (a.state() != v1::ALLOCATION_STATE_ACTIVE && a.state() != v1::ALLOCATION_STATE_RESERVED &&
        a.state() != v1::ALLOCATION_STATE_ENDED) {
      Problem(a.id(), absl::StrCat("state ", v1::AllocationState_Name(a.state())));
    }
    const bool released = a.end_reason() == v1::END_REASON_RELEASED;
    if (a.state() == v1::ALLOCATION_STATE_ENDED && a.end_reason() != v1::END_REASON_EXPIRED &&
        !released) {
      Problem(a.id(), absl::StrCat("ended as ", v1::EndReason_Name(a.end_reason())));
    }
    if (released != asked.released) {
      Problem(a.id(), released ? "released, but the bench never released it"
                               : "the bench released it, but it is not ended as released");
    }

    // Shape: GPUs, packing, models, locality, and where the capacity is.
    int64_t gpus = 0;
    int64_t rate = 0;  // sum of GPUs x price per GPU-hour
    absl::flat_hash_set<std::string> nodes;
    const DomainInfo* first_domain = nullptr;
    const absl::Time end_of_alloc = FromProtoTime(a.end());
    for (const v1::Slice& s : a.slices()) {
      gpus += s.gpus();
      rate += static_cast<int64_t>(s.gpus()) * s.price_micros_per_gpu_hour();
      if (!nodes.insert(s.node_id()).second) {
        Problem(a.id(), absl::StrCat("node ", s.node_id(), " in two slices"));
      }
      auto n = nodes_.find(s.node_id());
      if (n == nodes_.end()) {
        Problem(a.id(), absl::StrCat("slice on unknown node ", s.node_id()));
        continue;
      }
      const scheduler::NodeSpec& node = *n->second.node;
      const DomainInfo& dom = *n->second.domain;
      if (first_domain == nullptr) first_domain = &dom;
      if (s.center_id() != node.center_id || s.domain_id() != node.domain_id ||
          s.model() != node.model) {
        Problem(a.id(), absl::StrCat("slice on ", s.node_id(), " says ", s.center_id(), "/",
                                     s.domain_id(), " ", s.model(), "; the node is ",
                                     node.center_id, "/", node.domain_id, " ", node.model));
      }
      if (s.gpus() < 1 || s.gpus() > node.gpus) {
        Problem(a.id(), absl::StrCat(s.gpus(), " GPUs on ", s.node_id(), " of ", node.gpus));
      }
      if (r.gpus_per_node() > 0 && s.gpus() != r.gpus_per_node()) {
        Problem(a.id(), absl::StrCat(s.gpus(), " GPUs on ", s.node_id(), ", asked ",
                                     r.gpus_per_node(), " per node"));
      }
      if (r.models_size() > 0 &&
          std::find(r.models().begin(), r.models().end(), node.model) == r.models().end()) {
        Problem(a.id(), absl::StrCat("model ", node.model, " not among those asked (",
                                     absl::StrJoin(r.models(), ","), ")"));
      }
      const scheduler::CenterSpec& center = *dom.center;
      if (r.regions_size() > 0 &&
          std::find(r.regions().begin(), r.regions().end(), center.region) == r.regions().end()) {
        Problem(a.id(), absl::StrCat("region ", center.region, " not among those asked"));
      }
      if (r.center_types_size() > 0 && std::find(r.center_types().begin(), r.center_types().end(),
                                                 ToProto(center.type)) == r.center_types().end()) {
        Problem(a.id(), absl::StrCat("center ", center.id, " of a type not asked"));
      }
      for (const std::string& tag : r.required_tags()) {
        if (std::find(center.tags.begin(), center.tags.end(), tag) == center.tags.end()) {
          Problem(a.id(), absl::StrCat("center ", center.id, " lacks tag ", tag));
        }
      }
      if (FabricRank(dom.domain->fabric) < FabricRank(r.min_fabric())) {
        Problem(a.id(), absl::StrCat("fabric of ", node.center_id, "/", node.domain_id,
                                     " below the minimum asked"));
      }
      if (r.locality() == v1::LOCALITY_DOMAIN && first_domain != &dom) {
        Problem(a.id(), "slices in more than one fabric domain, asked one");
      }
      if (r.locality() == v1::LOCALITY_CENTER && first_domain->center != dom.center) {
        Problem(a.id(), "slices in more than one center, asked one");
      }
      if (dom.offer == nullptr) {
        Problem(a.id(), absl::StrCat("slice on ", s.node_id(), ", which is on no offer"));
        continue;
      }
      if (s.offer_id() != dom.offer->id ||
          s.price_micros_per_gpu_hour() != dom.offer->price_per_gpu_hour) {
        Problem(a.id(),
                absl::StrCat("slice on ", s.node_id(), " under offer ", s.offer_id(), " at ",
                             s.price_micros_per_gpu_hour(), "; the domain's offer is ",
                             dom.offer->id, " at ", dom.offer->price_per_gpu_hour));
      }
      if (s.price_micros_per_gpu_hour() > r.max_price_micros_per_gpu_hour()) {
        Problem(a.id(), absl::StrCat("slice at ", s.price_micros_per_gpu_hour(),
                                     " per GPU-hour, above the ceiling ",
                                     r.max_price_micros_per_gpu_hour()));
      }
      if (end_of_alloc > dom.offer->until) {
        Problem(a.id(), absl::StrCat("ends after the window of offer ", dom.offer->id));
      }
    }
    if (gpus != r.gpus()) Problem(a.id(), absl::StrCat(gpus, " GPUs, asked ", r.gpus()));
    if (r.locality() == v1::LOCALITY_NODE && a.slices_size() != 1) {
      Problem(a.id(), absl::StrCat(a.slices_size(), " nodes, asked one"));
    }

    // Time and price.
    const absl::Time start = FromProtoTime(a.start());
    const absl::Time end = end_of_alloc;
    if (r.has_start()) {
      if (start != FromProtoTime(r.start())) {
        Problem(a.id(), absl::StrCat("starts ", absl::FormatTime(start), ", asked ",
                                     absl::FormatTime(FromProtoTime(r.start()))));
      }
    } else if (start < asked.sent - in_.clock_slack || start > asked.received + in_.clock_slack) {
      Problem(a.id(), absl::StrCat("starts ", absl::FormatTime(start), ", outside the call (sent ",
                                   absl::FormatTime(asked.sent), ", answered ",
                                   absl::FormatTime(asked.received), ")"));
    }
    const absl::Duration duration = FromProtoDuration(r.duration());
    if (released ? (end < start || end - start > duration) : end - start != duration) {
      Problem(a.id(), absl::StrCat("lasts ", absl::FormatDuration(end - start), ", asked ",
                                   absl::FormatDuration(duration), released ? " (released)" : ""));
    }
    if (a.total_price_micros() != scheduler::PriceFor(rate, end - start)) {
      Problem(a.id(), absl::StrCat("total price ", a.total_price_micros(), ", the interval costs ",
                                   scheduler::PriceFor(rate, end - start)));
    }
  }

  // Records the interval of every slice of `a` on its node, for CheckOversell.
  void HoldNodes(const v1::Allocation& a) {
    if (a.state() == v1::ALLOCATION_STATE_HELD) return;  // the bench never holds
    if (a.end_reason() == v1::END_REASON_LAPSED) return;
    const int64_t start = absl::ToUnixMicros(FromProtoTime(a.start()));
    const int64_t end = absl::ToUnixMicros(FromProtoTime(a.end()));
    if (end <= start) return;
    for (const v1::Slice& s : a.slices()) {
      auto n = nodes_.find(s.node_id());
      if (n == nodes_.end()) continue;  // reported by CheckGrant
      std::vector<Edge>& e = edges_[n->second.index];
      e.push_back({start, s.gpus()});
      e.push_back({end, -s.gpus()});
    }
  }

  void CheckOversell() {
    for (const auto& [id, info] : nodes_) {
      std::vector<Edge>& e = edges_[info.index];
      std::sort(e.begin(), e.end());
      int64_t held = 0;
      for (const Edge& x : e) {
        held += x.delta;
        if (held > info.node->gpus) {
          ++result_.violations;
          if (result_.problems.size() < AuditResult::kMaxProblems) {
            result_.problems.push_back(absl::StrCat("node ", id, ": ", held, " GPUs sold at ",
                                                    absl::FormatTime(absl::FromUnixMicros(x.at_us)),
                                                    ", it has ", info.node->gpus));
          }
          break;  // one problem per node
        }
      }
    }
  }

  const AuditInput& in_;
  absl::flat_hash_map<std::string, DomainInfo> domains_;
  absl::flat_hash_map<std::string, NodeInfo> nodes_;
  std::vector<std::vector<Edge>> edges_;  // by NodeInfo::index
  AuditResult result_;
};

}  // namespace

AuditResult AuditAllocations(const AuditInput& in) { return Auditor(in).Run(); }

}  // namespace suanli::bench
