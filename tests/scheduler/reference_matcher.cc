#include "tests/scheduler/reference_matcher.h"

#include <algorithm>
#include <numeric>
#include <set>
#include <tuple>

namespace suanli::scheduler::testing {
namespace {

int64_t Us(absl::Time t) { return absl::ToUnixMicros(t); }
int64_t Us(absl::Duration d) { return absl::ToInt64Microseconds(d); }

struct Shape {
  bool fixed;
  int x;
  int need;
};

Shape ShapeOf(const Request& r) {
  if (r.locality == Locality::kNode) return {true, r.gpus, 1};
  if (r.gpus_per_node > 0) return {true, r.gpus_per_node, r.gpus / r.gpus_per_node};
  return {false, 1, r.gpus};
}

template <typename T>
bool Contains(const std::vector<T>& v, const T& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

}  // namespace

bool PolicyKey::operator<(const PolicyKey& o) const {
  return std::tie(rate, dsum, bsum, lsum, rsum, nodes) <
         std::tie(o.rate, o.dsum, o.bsum, o.lsum, o.rsum, o.nodes);
}
bool PolicyKey::operator==(const PolicyKey& o) const {
  return std::tie(rate, dsum, bsum, lsum, rsum, nodes) ==
         std::tie(o.rate, o.dsum, o.bsum, o.lsum, o.rsum, o.nodes);
}

void ReferenceMatcher::AddCenter(const CenterSpec& s) {
  centers_.push_back({s.id, s.operator_id, s.region, s.type, s.tags});
  op_last_sale_.emplace(s.operator_id, 0);
}

void ReferenceMatcher::AddDomain(const DomainSpec& s) {
  for (size_t c = 0; c < centers_.size(); ++c) {
    if (centers_[c].id == s.center_id) {
      domains_.push_back({static_cast<int>(c), s.id, s.fabric});
      return;
    }
  }
}

void ReferenceMatcher::AddNode(const NodeSpec& s) {
  for (size_t d = 0; d < domains_.size(); ++d) {
    if (domains_[d].id == s.domain_id && centers_[domains_[d].center].id == s.center_id) {
      nodes_.push_back({s.id, static_cast<int>(d), s.model, s.gpus});
      return;
    }
  }
}

void ReferenceMatcher::AddOffer(const OfferSpec& s) {
  Offer o;
  o.id = s.id;
  o.from = Us(s.from);
  o.until = Us(s.until);
  o.min_lease = Us(s.min_lease);
  o.price = s.price_per_gpu_hour;
  o.whole_only = s.whole_node_only;
  for (NodeIndex n = 0; n < nodes_.size(); ++n) {
    const Node& nd = nodes_[n];
    if (nd.removed) continue;
    const Domain& d = domains_[nd.domain];
    if (centers_[d.center].id != s.center_id) continue;
    if (!s.domain_id.empty() ? d.id == s.domain_id : Contains(s.node_ids, nd.id)) {
      o.nodes.push_back(n);
    }
  }
  offers_.push_back(std::move(o));
}

void ReferenceMatcher::WithdrawOffer(const std::string& id) {
  for (Offer& o : offers_) {
    if (o.id == id) o.withdrawn = true;
  }
}

int ReferenceMatcher::OfferIndex(const std::string& id) const {
  for (size_t i = 0; i < offers_.size(); ++i) {
    if (offers_[i].id == id) return static_cast<int>(i);
  }
  return -1;
}

int ReferenceMatcher::FreeOver(NodeIndex n, int64_t s, int64_t e) const {
  std::vector<int64_t> points = {s};
  for (const auto& [id, sold] : sold_) {
    for (const RefTake& t : sold.takes) {
      if (t.node == n && sold.start > s && sold.start < e) points.push_back(sold.start);
    }
  }
  int max_used = 0;
  for (int64_t p : points) {
    int used = 0;
    for (const auto& [id, sold] : sold_) {
      if (sold.start <= p && p < sold.end) {
        for (const RefTake& t : sold.takes) {
          if (t.node == n) used += t.gpus;
        }
      }
    }
    max_used = std::max(max_used, used);
  }
  return nodes_[n].cap - max_used;
}

int ReferenceMatcher::CoveringOffer(NodeIndex n, int64_t s, int64_t e) const {
  for (size_t i = 0; i < offers_.size(); ++i) {
    const Offer& o = offers_[i];
    if (!o.withdrawn && o.from <= s && e <= o.until && Contains(o.nodes, n)) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

bool ReferenceMatcher::NodeStatic(NodeIndex n, const Request& r, int x, bool fixed) const {
  const Node& nd = nodes_[n];
  if (nd.removed || nd.health != Health::kHealthy) return false;
  if (!r.models.empty() && !Contains(r.models, nd.model)) return false;
  if (nd.cap < x) return false;
  const Domain& d = domains_[nd.domain];
  if (d.fabric < r.min_fabric) return false;
  const Center& c = centers_[d.center];
  if (!r.regions.empty() && !Contains(r.regions, c.region)) return false;
  if (!r.center_types.empty() && !Contains(r.center_types, c.type)) return false;
  for (const std::string& t : r.required_tags) {
    if (!Contains(c.tags, t)) return false;
  }
  return true;
}

int ReferenceMatcher::Group(NodeIndex n, Locality l) const {
  switch (l) {
    case Locality::kDomain:
      return nodes_[n].domain;
    case Locality::kCenter:
      return domains_[nodes_[n].domain].center;
    default:
      return 0;
  }
}

bool ReferenceMatcher::DomainLive(int domain) const {
  for (const auto& [id, sold] : sold_) {
    for (const RefTake& t : sold.takes) {
      if (nodes_[t.node].domain == domain) return true;
    }
  }
  return false;
}

namespace {
struct Elig {
  NodeIndex node;
  int f;
  int offer;
  Micros price;
  uint8_t d;
  uint64_t r;
  int cap;
};
}  // namespace

RefResult ReferenceMatcher::Best(const Request& r, int64_t s, bool check_price, int64_t max_subsets,
                                 int64_t extra) const {
  const Shape sh = ShapeOf(r);
  const int64_t d = Us(r.duration);
  const int64_t e = s + d + extra;
  std::map<int, std::vector<Elig>> groups;
  for (NodeIndex n = 0; n < nodes_.size(); ++n) {
    if (!NodeStatic(n, r, sh.x, sh.fixed)) continue;
    const int o = CoveringOffer(n, s, e);
    if (o < 0) continue;
    const Offer& of = offers_[o];
    if (of.min_lease > d) continue;
    if (check_price && of.price > r.max_price_per_gpu_hour) continue;
    if (of.whole_only && !(sh.fixed && sh.x == nodes_[n].cap)) continue;
    const int f = FreeOver(n, s, e);
    if (f < sh.x) continue;
    const Node& nd = nodes_[n];
    groups[Group(n, r.locality)].push_back(
        {n, f, o, of.price, static_cast<uint8_t>(DomainLive(nd.domain) ? 0 : 1),
         op_last_sale_.at(centers_[domains_[nd.domain].center].op), nd.cap});
  }
  RefResult best;
  auto consider = [&](const std::vector<std::pair<const Elig*, int>>& picks) {
    PolicyKey k;
    std::vector<RefTake> takes;
    for (const auto& [el, take] : picks) {
      k.rate += int64_t{take} * el->price;
      k.dsum += el->d;
      k.bsum += (el->f == el->cap && take < el->cap) ? 1 : 0;
      k.lsum += el->f - take;
      k.rsum += el->r;
      takes.push_back({el->node, take, el->offer});
    }
    std::sort(takes.begin(), takes.end(),
              [](const RefTake& a, const RefTake& b) { return a.node < b.node; });
    for (const RefTake& t : takes) k.nodes.push_back(t.node);
    if (!best.feasible || k < best.key) {
      best.feasible = true;
      best.key = std::move(k);
      best.takes = std::move(takes);
    }
  };
  for (auto& [g, el] : groups) {
    if (sh.fixed) {
      if (static_cast<int>(el.size()) < sh.need) continue;
      // Every subset of `need` nodes.
      std::vector<int> idx(sh.need);
      std::iota(idx.begin(), idx.end(), 0);
      int64_t seen = 0;
      while (true) {
        if (++seen > max_subsets) {
          best.exhaustive = false;
          break;
        }
        std::vector<std::pair<const Elig*, int>> picks;
        picks.reserve(idx.size());
        for (int i : idx) picks.emplace_back(&el[i], sh.x);
        consider(picks);
        int i = sh.need - 1;
        while (i >= 0 && idx[i] == static_cast<int>(el.size()) - sh.need + i) --i;
        if (i < 0) break;
        ++idx[i];
        for (int j = i + 1; j < sh.need; ++j) idx[j] = idx[j - 1] + 1;
      }
    } else {
      int64_t total = 0;
      for (const Elig& x : el) total += x.f;
      if (total < sh.need) continue;
      // The documented fill: per-slice terms with a one-GPU slice, each node as full as needed.
      std::vector<const Elig*> order;
      for (const Elig& x : el) order.push_back(&x);
      std::sort(order.begin(), order.end(), [](const Elig* a, const Elig* b) {
        const int ba = (a->f == a->cap && 1 < a->cap), bb = (b->f == b->cap && 1 < b->cap);
        return std::tie(a->price, a->d, ba, a->f, a->r, a->node) <
               std::tie(b->price, b->d, bb, b->f, b->r, b->node);
      });
      std::vector<std::pair<const Elig*, int>> picks;
      int rem = sh.need;
      for (const Elig* x : order) {
        if (rem == 0) break;
        const int take = std::min(x->f, rem);
        picks.emplace_back(x, take);
        rem -= take;
      }
      consider(picks);
    }
  }
  return best;
}

bool ReferenceMatcher::AnyStaticMatch(const Request& r, int64_t now) const {
  const Shape sh = ShapeOf(r);
  for (NodeIndex n = 0; n < nodes_.size(); ++n) {
    if (!NodeStatic(n, r, sh.x, sh.fixed)) continue;
    for (const Offer& o : offers_) {
      if (o.withdrawn || o.until <= now || !Contains(o.nodes, n)) continue;
      if (o.min_lease > Us(r.duration)) continue;
      if (o.whole_only && !(sh.fixed && sh.x == nodes_[n].cap)) continue;
      return true;
    }
  }
  return false;
}

std::optional<Micros> ReferenceMatcher::MinCeiling(const Request& r, int64_t s,
                                                   int64_t extra) const {
  std::set<Micros> prices;
  for (const Offer& o : offers_) {
    if (!o.withdrawn) prices.insert(o.price);
  }
  for (Micros p : prices) {
    Request q = r;
    q.max_price_per_gpu_hour = p;
    if (Best(q, s, true, 1, extra).feasible) return p;
  }
  return std::nullopt;
}

int32_t ReferenceMatcher::LargestBlock(const Request& r, int64_t s, int64_t extra) const {
  const Shape sh = ShapeOf(r);
  const int64_t d = Us(r.duration);
  const int64_t e = s + d + extra;
  const bool single = r.locality == Locality::kNode;
  const int x = single ? 1 : sh.x;
  const bool fixed = single ? false : sh.fixed;
  std::map<int, int64_t> per_group;
  int64_t best = 0;
  for (NodeIndex n = 0; n < nodes_.size(); ++n) {
    if (!NodeStatic(n, r, x, fixed)) continue;
    const int o = CoveringOffer(n, s, e);
    if (o < 0) continue;
    const Offer& of = offers_[o];
    if (of.min_lease > d || of.price > r.max_price_per_gpu_hour) continue;
    if (of.whole_only && !(fixed && x == nodes_[n].cap)) continue;
    const int f = FreeOver(n, s, e);
    if (f < x) continue;
    if (single) {
      best = std::max<int64_t>(best, f);
      continue;
    }
    int64_t& g = per_group[Group(n, r.locality)];
    g += fixed ? x : f;
    best = std::max(best, g);
  }
  if (single) return static_cast<int32_t>(best);
  return static_cast<int32_t>(std::min<int64_t>(best, r.gpus));
}

std::optional<int64_t> ReferenceMatcher::EarliestStart(const Request& r, int64_t s,
                                                       int64_t extra) const {
  std::set<int64_t> times = {s};
  for (const Offer& o : offers_) {
    if (o.from > s) times.insert(o.from);
  }
  for (const auto& [id, sold] : sold_) {
    if (sold.end > s) times.insert(sold.end);
  }
  for (int64_t t : times) {
    if (Best(r, t, true, 1, extra).feasible) return t;
  }
  return std::nullopt;
}

void ReferenceMatcher::RecordSale(uint64_t id, int64_t start, int64_t end,
                                  const std::vector<RefTake>& takes, bool held) {
  sold_[id] = {start, end, takes, held};
  for (const RefTake& t : takes) {
    op_last_sale_[centers_[domains_[nodes_[t.node].domain].center].op] = sale_seq_ + 1;
  }
  ++sale_seq_;
}

void ReferenceMatcher::ResetRecency() {
  for (auto& [op, seq] : op_last_sale_) seq = 0;
  sale_seq_ = 0;
  for (const auto& [id, sold] : sold_) {
    for (const RefTake& t : sold.takes) {
      op_last_sale_[centers_[domains_[nodes_[t.node].domain].center].op] = sale_seq_ + 1;
    }
    ++sale_seq_;
  }
}

void ReferenceMatcher::SetInterval(uint64_t id, int64_t start, int64_t end) {
  sold_[id].start = start;
  sold_[id].end = end;
}

int64_t ReferenceMatcher::Oversold() const {
  int64_t bad = 0;
  for (NodeIndex n = 0; n < nodes_.size(); ++n) {
    for (const auto& [id, sold] : sold_) {
      bool on = false;
      for (const RefTake& t : sold.takes) on |= t.node == n;
      if (!on) continue;
      int used = 0;
      for (const auto& [id2, s2] : sold_) {
        if (s2.start <= sold.start && sold.start < s2.end) {
          for (const RefTake& t : s2.takes) {
            if (t.node == n) used += t.gpus;
          }
        }
      }
      if (used > nodes_[n].cap) ++bad;
    }
  }
  return bad;
}

}  // namespace suanli::scheduler::testing
