#include "scheduler/matcher.h"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "scheduler/gpu_models.h"
#include "scheduler/timeline.h"

namespace suanli::scheduler {
namespace {

using PoolIndex = uint32_t;
constexpr int kMaxGpusPerNode = 16;
constexpr int32_t kMaxRequestGpus = 1 << 20;
constexpr int kMaxEarliestCandidates = 64;
// How far ahead anything may be sold or offered; keeps every sum of times inside int64.
const absl::Duration kHorizon = absl::Hours(24 * 3653);
// The highest ask and ceiling, per GPU-hour: 1,000 currency units. With it the price of any
// allocation (at most 2^20 GPUs for 366 days) fits in int64 micro-units.
constexpr Micros kMaxPrice = 1'000 * kMicrosPerUnit;
constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

int64_t Us(absl::Time t) { return absl::ToUnixMicros(t); }
int64_t Us(absl::Duration d) { return absl::ToInt64Microseconds(d); }
absl::Time FromUs(int64_t us) { return absl::FromUnixMicros(us); }

// A sold interval on one node.
struct Seg {
  int64_t start;
  int64_t end;
  int32_t gpus;
  AllocationId alloc;
};

// A node's place in one pool's index: `row` is its free GPUs now (-1: not sellable, being
// unhealthy or removed). A sellable node with a sale that starts in the future is also listed in
// the pool's `future` list under its first such start: until then its free count is the
// row's, after it the calendar must be asked.
// Where the node is listed in the pool's other lists follows from `row` and the pool's brief of
// the node (see ListKeys).
struct Member {
  PoolIndex pool;
  uint32_t local;
  int16_t row;
};

struct CenterRec {
  std::string id, operator_id, name, region;
  uint32_t region_id;
  uint32_t op;  // dense operator index
  CenterType type;
  uint64_t tag_mask;
  std::vector<uint32_t> domains;
};

struct DomainRec {
  std::string id;
  uint32_t center;
  Fabric fabric;
  int32_t gbps;
  std::vector<NodeIndex> nodes;
  std::vector<PoolIndex> pools;
  int32_t live_segments = 0;  // sold intervals (any time) on its nodes
};

struct NodeRec {
  uint32_t domain;
  ModelId model;
  int16_t cap;
  int16_t free_now;
  int16_t future = 0;  // segments that start after now
  Health health = Health::kHealthy;
  bool removed = false;
  absl::InlinedVector<Seg, 2> segs;
  absl::InlinedVector<Member, 1> members;
  absl::InlinedVector<uint32_t, 1> offers;
  std::string id;
};

struct OfferRec {
  std::string id;
  uint32_t center;
  int64_t from, until, min_lease;
  Micros price;
  bool whole_only;
  bool withdrawn = false;
  std::vector<PoolIndex> pools;
};

// What most questions about a node's calendar need, kept beside the pool's index (one cache line
// per node) so that they are answered without reading the node. "Started" sales are those that
// began by the time of the node's last change; the others are its future sales.
struct alignas(64) Brief {
  int64_t busy_started = std::numeric_limits<int64_t>::min();  // latest end of started sales
  int64_t started_min_end = kNever;                            // earliest end of started sales
  int64_t busy_all = std::numeric_limits<int64_t>::min();      // latest end of all its sales
  int64_t first_future = kNever;  // the earliest start of its future sales
  int64_t future_end = 0;         // the end of the future sale that starts first
  // The longest gap between future sales, from the first one's start to the last one's end (0
  // when none, kNever when not worked out): a longer interval inside that span does not fit.
  // Started sales are not counted, so the gap may be longer than what is really free.
  int64_t future_gap = 0;
  int32_t nfuture = 0;
  int32_t nsegs = 0;        // all the node's sales
  int32_t future_gpus = 0;  // the GPUs of the future sale that starts first

  bool operator==(const Brief& o) const {
    return std::tie(busy_started, started_min_end, busy_all, first_future, future_end, future_gap,
                    nfuture, nsegs, future_gpus) ==
           std::tie(o.busy_started, o.started_min_end, o.busy_all, o.first_future, o.future_end,
                    o.future_gap, o.nfuture, o.nsegs, o.future_gpus);
  }
};

// The nodes of one domain covered by one offer with one model and size: one price, one window.
// The first cache line holds what scans over many pools read (matching, bounds, hints), so that
// passing over a pool that cannot serve costs one line.
struct alignas(64) Pool {
  Micros price;
  int64_t from, until, min_lease;
  // Copies of the domain's and center's attributes, so that matching a pool reads only the pool.
  uint64_t tag_mask;
  uint32_t region_id;
  int32_t whole_now = 0;      // nodes wholly free now: count[cap]
  int32_t sellable = 0;       // sellable nodes: clean.size() + future.size()
  uint16_t domain_pools = 0;  // live pools of its domain (this one included)
  int16_t cap;
  ModelId model;
  bool whole_only;
  bool dead = false;
  Fabric fabric;
  CenterType center_type;
  // The rest is read only for pools that might serve.
  uint32_t offer, domain, center;
  std::vector<NodeIndex> nodes;  // ascending node index; local index = position
  uint32_t words;
  std::vector<uint64_t> bits;  // cap + 1 rows of `words` words: row f = nodes with f free now
  std::vector<int32_t> count;  // per row
  // Sellable nodes with a future sale, by (first future start, local index).
  std::vector<std::pair<int64_t, uint32_t>> future;
  // Every other sellable node, by (the end of its last sale, local index): wholly free from then.
  std::vector<std::pair<int64_t, uint32_t>> clean;
  std::vector<Brief> brief;  // per local index
  // The nodes of `future` again, by (the end of their last sale, local index), and how many of
  // them have more than one sale in the future.
  std::vector<std::pair<int64_t, uint32_t>> future_by_end;
  std::vector<uint32_t> multi_future;  // unordered local indexes
  // The nodes of `future` wholly free now, by (first future start, local index).
  std::vector<std::pair<int64_t, uint32_t>> future_whole;
  uint64_t* Row(int r) { return bits.data() + static_cast<size_t>(r) * words; }
  const uint64_t* Row(int r) const { return bits.data() + static_cast<size_t>(r) * words; }
};

// The position of the n-th set bit (n >= 1) of a row of `words` words, or UINT32_MAX when it has
// fewer than n.
inline uint32_t NthBit(const uint64_t* row, uint32_t words, int64_t n) {
  for (uint32_t w = 0; w < words; ++w) {
    const int ones = __builtin_popcountll(row[w]);
    if (n > ones) {
      n -= ones;
      continue;
    }
    uint64_t bits = row[w];
    for (int64_t k = 1; k < n; ++k) bits &= bits - 1;
    return w * 64 + static_cast<uint32_t>(__builtin_ctzll(bits));
  }
  return std::numeric_limits<uint32_t>::max();
}

// Calls fn(local) for every set bit of a row, in ascending order, while fn returns true.
template <typename Fn>
bool ForEachBit(const uint64_t* row, uint32_t words, Fn fn) {
  for (uint32_t w = 0; w < words; ++w) {
    for (uint64_t bits = row[w]; bits != 0; bits &= bits - 1) {
      if (!fn(w * 64 + static_cast<uint32_t>(__builtin_ctzll(bits)))) return false;
    }
  }
  return true;
}

struct LiveRec {
  Allocation a;
  absl::InlinedVector<PoolIndex, 4> slice_pool;
  int64_t start, end, hold_until;
  int64_t rate;  // sum of gpus x price
  bool activated;
  bool padded = false;  // a start-now hold, held past its duration by its ttl
};

// A pending move of one node's entry in one of a pool's sorted lists.
struct ListMove {
  ListMove(std::vector<std::pair<int64_t, uint32_t>>* l, uint32_t n, int64_t f, int64_t t)
      : list(l), local(n), from(f), to(t) {}
  std::vector<std::pair<int64_t, uint32_t>>* list;
  uint32_t local;
  int64_t from, to;
};

enum class EvKind : uint8_t { kEnd = 0, kHoldLapse = 1, kActivate = 2 };
struct TimeEv {
  int64_t t;
  EvKind kind;
  AllocationId id;
  bool operator>(const TimeEv& o) const {
    return std::tie(t, kind, id) > std::tie(o.t, o.kind, o.id);
  }
};

// A request checked and turned into indexes.
struct Compiled {
  uint64_t model_mask = 0;  // 0 = any
  absl::InlinedVector<ModelId, 4> models;
  int32_t gpus = 0;
  bool fixed = false;  // every slice has exactly x GPUs
  int32_t x = 1;       // slice size (fixed) or 1 (any packing)
  int32_t need = 0;    // nodes (fixed) or GPUs (any packing)
  Locality locality = Locality::kAny;
  Fabric min_fabric = Fabric::kEthernet;
  absl::InlinedVector<uint32_t, 4> regions;  // empty = any
  uint8_t type_mask = 0;                     // 0 = any
  uint64_t tag_mask = 0;
  bool impossible_tag = false;
  Micros ceiling = 0;
  int64_t s = 0, e = 0, d = 0;  // the interval [s, e) and its length
  int64_t lease = 0;            // what offers' minimum lease is checked against (the duration)
  bool start_now = true;
};

// A node a group could take, with the per-slice policy terms.
struct Cand {
  Micros price;
  uint8_t d;   // on a domain with no live allocation
  uint8_t b;   // would break a whole node
  int16_t l;   // GPUs left free on the node
  uint64_t r;  // operator's last-sale number
  NodeIndex node;
  int16_t f;  // free over the interval
  PoolIndex pool;
};

struct KappaOrder {
  bool operator()(const Cand& a, const Cand& b) const {
    return std::tie(a.price, a.d, a.b, a.l, a.r, a.node) <
           std::tie(b.price, b.d, b.b, b.l, b.r, b.node);
  }
};
constexpr KappaOrder KappaLess{};

struct Take {
  NodeIndex node;
  int32_t gpus;
  PoolIndex pool;
  Micros price;
};

// A group's best pick and its policy key.
struct Pick {
  bool ok = false;
  int64_t rate = 0;  // sum of gpus x price
  int64_t dsum = 0, bsum = 0, lsum = 0;
  uint64_t rsum = 0;
  absl::InlinedVector<Take, 4> takes;  // sorted by node
};

bool PickLess(const Pick& a, const Pick& b) {
  if (!b.ok) return a.ok;
  if (!a.ok) return false;
  auto ka = std::tie(a.rate, a.dsum, a.bsum, a.lsum, a.rsum);
  auto kb = std::tie(b.rate, b.dsum, b.bsum, b.lsum, b.rsum);
  if (ka != kb) return ka < kb;
  return std::lexicographical_compare(a.takes.begin(), a.takes.end(), b.takes.begin(),
                                      b.takes.end(),
                                      [](const Take& p, const Take& q) { return p.node < q.node; });
}

}  // namespace

struct Matcher::State {
  int64_t now = std::numeric_limits<int64_t>::min();
  std::vector<CenterRec> centers;
  std::vector<DomainRec> domains;
  std::vector<NodeRec> nodes;
  std::vector<OfferRec> offers;
  std::vector<Pool> pools;
  absl::flat_hash_map<std::string, uint32_t> center_by_id, domain_by_key, offer_by_id;
  absl::flat_hash_map<std::string, NodeIndex> node_by_id;
  absl::flat_hash_map<std::string, uint32_t> region_ids, tag_ids, operator_ids;
  std::vector<uint64_t> op_last_sale;
  uint64_t sale_seq = 0;
  std::vector<std::vector<PoolIndex>> model_pools;  // per model, by (price, index)
  std::vector<PoolIndex> all_pools;                 // by (price, index)
  // Live allocations and holds. Each record lives on the heap, so that the table growing moves
  // pointers, not records (the std workload's 32k-entry doubling took 6.5 ms with them inline).
  using LiveMap = absl::flat_hash_map<AllocationId, std::unique_ptr<LiveRec>>;
  LiveMap live;
  AllocationId next_id = 1;
  // Activations, ends and lapses to come. Events of allocations that ended early or moved stay
  // in it until they come due or Schedule drops them (see Pending).
  Timeline<TimeEv> timeline;
  std::vector<AllocationEvent> events;
  int64_t active_nodes = 0, total_gpus = 0, used_now = 0;
  // Scratch space reused across decisions.
  std::vector<Cand> cands;
  std::vector<PoolIndex> group_pools;
  uint32_t seen_epoch = 0;
  std::vector<uint32_t> group_seen_mark;
  std::vector<uint64_t> exact_mask;
  bool batching = false;
  std::vector<ListMove> pending;
  std::vector<std::pair<int64_t, uint32_t>> drop, add, rebuilt;
  std::vector<std::vector<PoolIndex>> group_lists;     // EarliestStart's pools by group
  std::vector<uint32_t> touched;                       // the groups group_lists holds
  std::vector<std::pair<int64_t, int64_t>> group_sum;  // per group: capacity, under the ceiling
  std::vector<std::pair<int64_t, int64_t>> windows;
  std::vector<std::pair<int64_t, int>> sweep;

  // ---------------------------------------------------------------- calendar

  // GPUs free on node n over [s, e).
  int FreeOver(const NodeRec& n, int64_t s, int64_t e) const {
    return n.cap - MaxUsed(n.segs.data(), n.segs.data() + n.segs.size(), s, e);
  }

  // The most GPUs the sales [first, last) use at one instant of [s, e).
  static int MaxUsed(const Seg* first, const Seg* last, int64_t s, int64_t e) {
    // Most nodes have at most one sale overlapping the interval.
    int overlapping = 0, only = 0;
    for (const Seg* a = first; a != last; ++a) {
      if (a->end <= s || a->start >= e) continue;
      ++overlapping;
      only = a->gpus;
    }
    if (overlapping <= 1) return only;
    int max_used = 0;
    for (const Seg* a = first; a != last; ++a) {
      if (a->end <= s || a->start >= e) continue;
      // Usage at the later of s and a->start, a point where usage can peak.
      const int64_t p = std::max(s, a->start);
      int used = 0;
      for (const Seg* b = first; b != last; ++b) {
        if (b->start <= p && p < b->end) used += b->gpus;
      }
      max_used = std::max(max_used, used);
    }
    return max_used;
  }

  static bool Sellable(const NodeRec& n) { return !n.removed && n.health == Health::kHealthy; }
  static int DesiredRow(const NodeRec& n) { return Sellable(n) ? n.free_now : -1; }
  // Where the node belongs in the future list, from its calendar (the index keeps it in its
  // brief; Audit compares the two).
  static int64_t DesiredFfs(const NodeRec& n, int64_t now) {
    if (!Sellable(n) || n.future == 0) return kNever;
    int64_t ffs = kNever;
    for (const Seg& sg : n.segs) {
      if (sg.start > now) ffs = std::min(ffs, sg.start);
    }
    return ffs;
  }
  static int64_t DesiredBusy(const NodeRec& n) {
    if (!Sellable(n) || n.future > 0) return kNever;
    int64_t busy = std::numeric_limits<int64_t>::min();
    for (const Seg& sg : n.segs) busy = std::max(busy, sg.end);
    return busy;
  }

  // Tells each live pool of the domain how many live pools the domain has.
  void CountDomainPools(uint32_t d) {
    for (PoolIndex pi : domains[d].pools) {
      pools[pi].domain_pools = static_cast<uint16_t>(domains[d].pools.size());
    }
  }

  // Moves a node's entry in a sorted (key, local) list from key `from` to key `to` (kNever: none).
  static void Relist(std::vector<std::pair<int64_t, uint32_t>>& list, uint32_t local, int64_t from,
                     int64_t to) {
    if (from == to) return;
    const auto key = std::make_pair(to, local);
    if (from != kNever && to != kNever) {
      // Move the entry: shift only what lies between its old and new places.
      const auto old_it = std::lower_bound(list.begin(), list.end(), std::make_pair(from, local));
      const auto new_it = std::lower_bound(list.begin(), list.end(), key);
      if (new_it > old_it) {
        std::move(old_it + 1, new_it, old_it);
        *(new_it - 1) = key;
      } else {
        std::move_backward(new_it, old_it, old_it + 1);
        *new_it = key;
      }
      return;
    }
    if (from != kNever) {
      list.erase(std::lower_bound(list.begin(), list.end(), std::make_pair(from, local)));
    }
    if (to != kNever) list.insert(std::lower_bound(list.begin(), list.end(), key), key);
  }

  static Brief BriefOf(const NodeRec& n, int64_t now) {
    Brief brief;
    for (const Seg& sg : n.segs) {
      brief.busy_all = std::max(brief.busy_all, sg.end);
      if (sg.start <= now) {
        brief.busy_started = std::max(brief.busy_started, sg.end);
        brief.started_min_end = std::min(brief.started_min_end, sg.end);
      } else {
        ++brief.nfuture;
        if (sg.start < brief.first_future) {
          brief.first_future = sg.start;
          brief.future_end = sg.end;
          brief.future_gpus = sg.gpus;
        }
      }
      ++brief.nsegs;
    }
    if (brief.nfuture > 1) brief.future_gap = FutureGap(n, now, brief.nfuture);
    return brief;
  }

  // The longest gap between the node's future sales (see Brief::future_gap).
  static int64_t FutureGap(const NodeRec& n, int64_t now, int32_t nfuture) {
    constexpr int kMax = 16;
    if (nfuture > kMax) return kNever;
    std::pair<int64_t, int64_t> f[kMax];
    int k = 0;
    for (const Seg& sg : n.segs) {
      if (sg.start > now) f[k++] = {sg.start, sg.end};
    }
    std::sort(f, f + k);
    int64_t gap = 0, run = f[0].second;
    for (int i = 1; i < k; ++i) {
      gap = std::max(gap, f[i].first - run);
      run = std::max(run, f[i].second);
    }
    return gap;
  }

  // The keys under which a node with free-now row `row` (-1: not sellable) and brief `b` is
  // listed in its pool's sorted lists (kNever: not listed), and whether it is in multi_future.
  struct ListKeys {
    int64_t ffs, busy, end, whole;
    bool multi;
  };
  static ListKeys KeysOf(int row, int cap, const Brief& b) {
    ListKeys k;
    const bool sellable = row >= 0;
    k.ffs = sellable && b.nfuture > 0 ? b.first_future : kNever;  // the future list
    k.busy = sellable && b.nfuture == 0 ? b.busy_all : kNever;    // the clean list
    k.end = k.ffs == kNever ? kNever : b.busy_all;                // future_by_end
    k.whole = row == cap ? k.ffs : kNever;                        // future_whole
    k.multi = k.ffs != kNever && b.nfuture > 1;
    return k;
  }

  // Brings the node's place in every pool's index up to date.
  void Reindex(NodeIndex idx) {
    NodeRec& n = nodes[idx];
    const int16_t want = static_cast<int16_t>(DesiredRow(n));
    const Brief brief = BriefOf(n, now);
    const ListKeys to = KeysOf(want, n.cap, brief);
    for (Member& m : n.members) {
      Pool& p = pools[m.pool];
      Brief& kept = p.brief[m.local];
      const ListKeys from = KeysOf(m.row, n.cap, kept);
      kept = brief;
      Move(p.future_by_end, m.local, from.end, to.end);
      Move(p.future_whole, m.local, from.whole, to.whole);
      if (to.multi != from.multi) {
        std::vector<uint32_t>& multi = p.multi_future;
        if (to.multi) {
          multi.push_back(m.local);
        } else {
          multi.erase(std::find(multi.begin(), multi.end(), m.local));
        }
      }
      if (m.row != want) {
        const uint32_t w = m.local >> 6;
        const uint64_t bit = uint64_t{1} << (m.local & 63);
        if (m.row >= 0) {
          p.Row(m.row)[w] &= ~bit;
          --p.count[m.row];
          --p.sellable;
        }
        if (want >= 0) {
          p.Row(want)[w] |= bit;
          ++p.count[want];
          ++p.sellable;
        }
        p.whole_now = p.count[p.cap];
        m.row = want;
      }
      Move(p.future, m.local, from.ffs, to.ffs);
      Move(p.clean, m.local, from.busy, to.busy);
    }
  }

  // List moves are applied at once while batching (an allocation's nodes change together; each
  // node at most once), so that a pool's list is rebuilt once instead of shifted per node.
  // Batches of at most kShiftMoves nodes are not held back: their moves would be applied one by
  // one anyway.
  static constexpr size_t kShiftMoves = 4;
  void Move(std::vector<std::pair<int64_t, uint32_t>>& list, uint32_t local, int64_t from,
            int64_t to) {
    if (from == to) return;
    if (batching) {
      pending.emplace_back(&list, local, from, to);
    } else {
      Relist(list, local, from, to);
    }
  }
  void BeginBatch(size_t nodes) { batching = nodes > kShiftMoves; }
  void EndBatch() {
    batching = false;
    if (pending.empty()) return;
    std::sort(pending.begin(), pending.end(), [](const ListMove& a, const ListMove& b) {
      return std::less<const void*>()(a.list, b.list);
    });
    for (size_t i = 0; i < pending.size();) {
      size_t j = i;
      while (j < pending.size() && pending[j].list == pending[i].list) ++j;
      std::vector<std::pair<int64_t, uint32_t>>& list = *pending[i].list;
      if (j - i <= kShiftMoves) {
        for (size_t k = i; k < j; ++k)
          Relist(list, pending[k].local, pending[k].from, pending[k].to);
      } else {
        // Rebuild: drop the old keys, merge in the new ones.
        drop.clear();
        add.clear();
        for (size_t k = i; k < j; ++k) {
          if (pending[k].from != kNever) drop.emplace_back(pending[k].from, pending[k].local);
          if (pending[k].to != kNever) add.emplace_back(pending[k].to, pending[k].local);
        }
        std::sort(drop.begin(), drop.end());
        std::sort(add.begin(), add.end());
        rebuilt.clear();
        rebuilt.reserve(list.size() - drop.size() + add.size());
        size_t d = 0, a = 0;
        for (const auto& e : list) {
          if (d < drop.size() && drop[d] == e) {
            ++d;
            continue;
          }
          while (a < add.size() && add[a] < e) rebuilt.push_back(add[a++]);
          rebuilt.push_back(e);
        }
        while (a < add.size()) rebuilt.push_back(add[a++]);
        list.swap(rebuilt);
      }
      i = j;
    }
    pending.clear();
  }

  // ---------------------------------------------------------------- time

  void AdvanceTo(int64_t t) {
    if (t <= now) return;
    RunTimeline(t);
    now = t;
  }

  // The allocation the event is for while the event still has something to do, else
  // live.end(): the allocation is live and the event is the one due for it (not superseded by an
  // extension, a redeem or an activation).
  LiveMap::iterator Pending(const TimeEv& ev) {
    auto it = live.find(ev.id);
    if (it == live.end()) return it;
    const LiveRec& rec = *it->second;
    bool due = false;
    switch (ev.kind) {
      case EvKind::kActivate:
        due = !rec.activated && rec.start == ev.t;
        break;
      case EvKind::kEnd:
        due = rec.end == ev.t;
        break;
      case EvKind::kHoldLapse:
        due = rec.a.state == AllocationState::kHeld && rec.hold_until == ev.t;
        break;
    }
    return due ? it : live.end();
  }

  // Adds an event to the timeline. Events that no longer have anything to do (allocations
  // released before their end: most of them in a busy market) are dropped once they may
  // outnumber the live allocations 4 to 1, kTidyStep per call (~3 us), so that the timeline stays
  // near the size of what is live without one call paying for all (a single pass was 3-4 ms at
  // the std workload's size).
  static constexpr size_t kTidyStep = 64;
  void Schedule(const TimeEv& ev) {
    timeline.push(ev);
    timeline.Tidy(4 * live.size() + 4096, kTidyStep,
                  [&](const TimeEv& e) { return Pending(e) != live.end(); });
  }

  // Applies every timeline event due by t, in time order.
  void RunTimeline(int64_t t) {
    // Time moves event by event so that each change sees the calendar as of its own instant.
    while (!timeline.empty() && timeline.front().t <= t) {
      const TimeEv ev = timeline.front();
      timeline.pop();
      now = std::max(now, ev.t);
      auto it = Pending(ev);
      if (it == live.end()) continue;
      LiveRec& rec = *it->second;
      switch (ev.kind) {
        case EvKind::kActivate:
          Activate(rec);
          if (rec.a.state == AllocationState::kReserved) {
            rec.a.state = AllocationState::kActive;
            events.push_back({rec.a.id, AllocationState::kActive, EndReason::kNone, FromUs(ev.t)});
          }
          break;
        case EvKind::kEnd:
          // A hold whose interval is over before its ttl lapses with it.
          Finish(it,
                 rec.a.state == AllocationState::kHeld ? EndReason::kLapsed : EndReason::kExpired,
                 ev.t);
          break;
        case EvKind::kHoldLapse:
          Finish(it, EndReason::kLapsed, ev.t);
          break;
      }
    }
  }

  // Walking an allocation's nodes is a chain of cache misses (node record, then its pool's
  // brief); fetching them a few slices ahead overlaps them.
  static constexpr size_t kNodeAhead = 6, kBriefAhead = 3;
  template <typename Slices>
  void PrefetchAhead(const Slices& slices, size_t i) const {
    if (i + kNodeAhead < slices.size()) {
      const char* rec = reinterpret_cast<const char*>(&nodes[slices[i + kNodeAhead].node]);
      for (size_t line = 0; line < sizeof(NodeRec); line += 64) __builtin_prefetch(rec + line);
    }
    if (i + kBriefAhead < slices.size()) {
      const NodeRec& n = nodes[slices[i + kBriefAhead].node];
      for (const Member& m : n.members) __builtin_prefetch(&pools[m.pool].brief[m.local], 1);
    }
  }

  void Activate(LiveRec& rec) {
    rec.activated = true;
    BeginBatch(rec.a.slices.size());
    for (size_t i = 0; i < rec.a.slices.size(); ++i) {
      const Slice& sl = rec.a.slices[i];
      PrefetchAhead(rec.a.slices, i);
      NodeRec& n = nodes[sl.node];
      n.free_now = static_cast<int16_t>(n.free_now - sl.gpus);
      --n.future;
      used_now += sl.gpus;
      Reindex(sl.node);
    }
    EndBatch();
  }

  // Removes an allocation's sold intervals and forgets it.
  void Finish(LiveMap::iterator it, EndReason why, int64_t at) {
    LiveRec& rec = *it->second;
    BeginBatch(rec.a.slices.size());
    for (size_t i = 0; i < rec.a.slices.size(); ++i) {
      const Slice& sl = rec.a.slices[i];
      PrefetchAhead(rec.a.slices, i);
      NodeRec& n = nodes[sl.node];
      for (size_t k = 0; k < n.segs.size(); ++k) {
        if (n.segs[k].alloc == rec.a.id) {
          n.segs.erase(n.segs.begin() + static_cast<ptrdiff_t>(k));
          break;
        }
      }
      if (rec.activated) {
        n.free_now = static_cast<int16_t>(n.free_now + sl.gpus);
        used_now -= sl.gpus;
      } else {
        --n.future;
      }
      --domains[n.domain].live_segments;
      Reindex(sl.node);
    }
    EndBatch();
    events.push_back({rec.a.id, AllocationState::kEnded, why, FromUs(at)});
    live.erase(it);
  }

  // ---------------------------------------------------------------- requests

  absl::Status Compile(const Request& r, Compiled* c) const {
    if (r.gpus < 1 || r.gpus > kMaxRequestGpus) {
      return absl::InvalidArgumentError(
          absl::StrCat("gpus must be between 1 and ", kMaxRequestGpus, ", got ", r.gpus));
    }
    if (r.gpus_per_node < 0 || r.gpus_per_node > kMaxGpusPerNode) {
      return absl::InvalidArgumentError(absl::StrCat("gpus_per_node must be between 0 and ",
                                                     kMaxGpusPerNode, ", got ", r.gpus_per_node));
    }
    if (r.gpus_per_node > 0 && r.gpus % r.gpus_per_node != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "gpus (", r.gpus, ") must be a multiple of gpus_per_node (", r.gpus_per_node, ")"));
    }
    if (r.locality == Locality::kNode) {
      if (r.gpus > kMaxGpusPerNode) {
        return absl::InvalidArgumentError(absl::StrCat("locality=node asks for ", r.gpus,
                                                       " GPUs on one node; no node has more than ",
                                                       kMaxGpusPerNode));
      }
      if (r.gpus_per_node > 0 && r.gpus_per_node != r.gpus) {
        return absl::InvalidArgumentError(
            "locality=node puts all GPUs on one node: gpus_per_node must be 0 or equal gpus");
      }
    }
    if (r.duration <= absl::ZeroDuration() || r.duration > absl::Hours(24 * 366)) {
      return absl::InvalidArgumentError("duration must be more than 0 and at most 366 days");
    }
    if (r.max_price_per_gpu_hour <= 0 || r.max_price_per_gpu_hour > kMaxPrice) {
      return absl::InvalidArgumentError(
          "max_price_per_gpu_hour must be more than 0 and at most 1,000 currency units");
    }
    c->models.clear();
    c->model_mask = 0;
    for (const std::string& name : r.models) {
      const GpuModel* m = FindGpuModel(name);
      if (m == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("unknown GPU model '", name, "'"));
      }
      const uint64_t bit = uint64_t{1} << m->id;
      if ((c->model_mask & bit) == 0) c->models.push_back(m->id);
      c->model_mask |= bit;
    }
    c->gpus = r.gpus;
    c->locality = r.locality;
    if (r.locality == Locality::kNode) {
      c->fixed = true;
      c->x = r.gpus;
      c->need = 1;
    } else if (r.gpus_per_node > 0) {
      c->fixed = true;
      c->x = r.gpus_per_node;
      c->need = r.gpus / r.gpus_per_node;
    } else {
      c->fixed = false;
      c->x = 1;
      c->need = r.gpus;
    }
    c->min_fabric = r.min_fabric;
    c->regions.clear();
    for (const std::string& reg : r.regions) {
      auto it = region_ids.find(reg);
      c->regions.push_back(it == region_ids.end() ? std::numeric_limits<uint32_t>::max()
                                                  : it->second);
    }
    c->type_mask = 0;
    for (CenterType t : r.center_types)
      c->type_mask |= static_cast<uint8_t>(1u << static_cast<int>(t));
    c->tag_mask = 0;
    c->impossible_tag = false;
    for (const std::string& tag : r.required_tags) {
      auto it = tag_ids.find(tag);
      if (it == tag_ids.end()) {
        c->impossible_tag = true;
      } else {
        c->tag_mask |= uint64_t{1} << it->second;
      }
    }
    c->ceiling = r.max_price_per_gpu_hour;
    c->s = now;
    if (r.start.has_value() && *r.start > FromUs(now)) {
      if (*r.start - FromUs(now) > kHorizon) {
        return absl::InvalidArgumentError("start must be within 10 years from now");
      }
      c->s = Us(*r.start);
    }
    c->start_now = c->s <= now;
    c->d = Us(r.duration);
    c->lease = c->d;
    c->e = c->s + c->d;
    return absl::OkStatus();
  }

  // Everything about a pool that does not depend on what is free.
  bool StaticMatch(const Pool& p, const Compiled& c, bool check_price, bool check_window) const {
    if (p.dead) return false;
    if (c.model_mask != 0 && (c.model_mask & (uint64_t{1} << p.model)) == 0) return false;
    if (check_price && p.price > c.ceiling) return false;
    if (check_window && (p.from > c.s || p.until < c.e)) return false;
    if (p.min_lease > c.lease) return false;
    if (c.x > p.cap) return false;
    if (p.whole_only && !(c.fixed && c.x == p.cap)) return false;
    if (p.fabric < c.min_fabric) return false;
    if (c.impossible_tag || (p.tag_mask & c.tag_mask) != c.tag_mask) return false;
    if (c.type_mask != 0 && (c.type_mask & (1u << static_cast<int>(p.center_type))) == 0) {
      return false;
    }
    if (!c.regions.empty() &&
        std::find(c.regions.begin(), c.regions.end(), p.region_id) == c.regions.end()) {
      return false;
    }
    return true;
  }

  int32_t SellableCount(const Pool& p) const {
    int32_t n = 0;
    for (int r = 0; r <= p.cap; ++r) n += p.count[r];
    return n;
  }

  // The pools that match a request statically, in (price, index) order: a merge of the price
  // lists of the request's models.
  class PoolCursor {
   public:
    PoolCursor(const State& st, const Compiled& c, bool check_price)
        : st_(st), c_(c), check_price_(check_price) {
      if (c.model_mask == 0 || c.models.size() > 8) {
        lists_[k_++] = &st.all_pools;
      } else {
        for (ModelId m : c.models) {
          if (m < st.model_pools.size() && !st.model_pools[m].empty()) {
            lists_[k_++] = &st.model_pools[m];
          }
        }
      }
    }
    // The next matching pool, or false when none is left at a price of at most `at_most` (a pool
    // above it is not consumed).
    bool Next(PoolIndex* out, Micros at_most = std::numeric_limits<Micros>::max()) {
      while (true) {
        size_t best = k_;
        for (size_t i = 0; i < k_; ++i) {
          if (pos_[i] == lists_[i]->size()) continue;
          if (best == k_ || Before((*lists_[i])[pos_[i]], (*lists_[best])[pos_[best]])) best = i;
        }
        if (best == k_) return false;
        const PoolIndex pi = (*lists_[best])[pos_[best]];
        const Pool& p = st_.pools[pi];
        if (p.price > at_most) return false;
        ++pos_[best];
        if (check_price_ && p.price > c_.ceiling) return false;  // lists are sorted by price
        if (!st_.StaticMatch(p, c_, check_price_, /*check_window=*/true)) continue;
        *out = pi;
        return true;
      }
    }

   private:
    bool Before(PoolIndex a, PoolIndex b) const {
      return std::tie(st_.pools[a].price, a) < std::tie(st_.pools[b].price, b);
    }
    const State& st_;
    const Compiled& c_;
    bool check_price_;
    const std::vector<PoolIndex>* lists_[8];
    size_t pos_[8] = {};
    size_t k_ = 0;
  };

  // Calls fn(pool) for every pool that matches the request statically, in (price, index) order,
  // until fn returns false.
  template <typename Fn>
  void ForEachPool(const Compiled& c, bool check_price, Fn fn) const {
    PoolCursor cursor(*this, c, check_price);
    PoolIndex pi;
    while (cursor.Next(&pi)) {
      if (!fn(pi)) return;
    }
  }

  // Calls fn(local, f) for the sellable nodes of the pool whose free count over the request's
  // interval the rows do not give (f is that count): at a start-now request, the nodes whose
  // first future sale starts before the request ends; otherwise every sellable node that might
  // hold a slice.
  template <typename Fn>
  void ForEachExact(const Pool& p, const Compiled& c, Fn fn) const {
    if (c.start_now) {
      for (const auto& [ffs, local] : p.future) {
        if (ffs >= c.e) break;
        // Free over the interval is at most free now: too few now, too few over it. A sale that
        // starts inside the interval leaves no whole node.
        if (c.x >= p.cap) continue;
        const int row = RowOf(p, local, c.x);
        if (row >= c.x) fn(local, PoolFreeOver(p, local, c.s, c.e, row));
      }
      return;
    }
    // A future start: nodes wholly free by then answer from the clean list; a node still busy
    // then cannot take a whole-node slice, and otherwise the calendar answers.
    for (const auto& [busy, local] : p.clean) {
      if (busy <= c.s) {
        fn(local, p.cap);
      } else if (c.x < p.cap) {
        fn(local, PoolFreeOver(p, local, c.s, c.e));
      } else {
        break;  // sorted: the rest are busy then too
      }
    }
    if (c.x < p.cap) {
      for (const auto& [ffs, local] : p.future) fn(local, PoolFreeOver(p, local, c.s, c.e));
    } else {
      ForEachWholeFreeDirty(p, c.s, c.e, [&](uint32_t local) { fn(local, p.cap); });
    }
  }

  // At a start-now request: marks the pool's exact nodes in exact_mask (sized to the pool); for
  // whole nodes only those that are wholly free now matter.
  void MarkExact(const Pool& p, const Compiled& c) {
    exact_mask.assign(p.words, 0);
    for (const auto& [ffs, local] : c.x == p.cap ? p.future_whole : p.future) {
      if (ffs >= c.e) break;
      exact_mask[local >> 6] |= uint64_t{1} << (local & 63);
    }
  }

  bool HasExact(const Pool& p, const Compiled& c) const {
    return !c.start_now || (!p.future.empty() && p.future.front().first < c.e);
  }

  // Appends the pool's best candidates in per-slice order until their capacity covers `budget`
  // (nodes for fixed slices, GPUs otherwise). Returns the capacity appended.
  int64_t Collect(PoolIndex pi, const Compiled& c, int64_t budget, std::vector<Cand>* out) {
    const Pool& p = pools[pi];
    const uint8_t d = domains[p.domain].live_segments == 0 ? 1 : 0;
    const uint64_t r = op_last_sale[centers[p.center].op];
    int64_t got = 0;
    auto emit = [&](uint32_t local, int f) {
      Cand cd;
      cd.price = p.price;
      cd.d = d;
      cd.b = (f == p.cap && c.x < p.cap) ? 1 : 0;
      cd.l = static_cast<int16_t>(f - c.x);
      cd.r = r;
      cd.node = p.nodes[local];
      cd.f = static_cast<int16_t>(f);
      cd.pool = pi;
      out->push_back(cd);
      got += c.fixed ? 1 : f;
    };
    const size_t first = out->size();
    const bool exact = HasExact(p, c);
    if (!c.start_now && c.fixed && c.x == p.cap) {
      // Whole nodes at a future start: every candidate has the same terms, so the lowest node
      // indexes win. Mark the wholly free nodes, then take them in index order.
      exact_mask.assign(p.words, 0);
      auto mark = [&](uint32_t local) { exact_mask[local >> 6] |= uint64_t{1} << (local & 63); };
      for (const auto& [busy, local] : p.clean) {
        if (busy > c.s) break;
        mark(local);
      }
      for (const auto& [busy, local] : p.future_by_end) {
        if (busy > c.s) break;
        mark(local);
      }
      // Only nodes below the budget-th one marked so far can still be among the lowest: the
      // others need not be asked.
      ForEachWholeFreeDirty(p, c.s, c.e, mark, NthBit(exact_mask.data(), p.words, budget),
                            /*skip_ended=*/true);
      ForEachBit(exact_mask.data(), p.words, [&](uint32_t local) {
        emit(local, p.cap);
        return got < budget;
      });
      return got;
    }
    if (!c.start_now && c.fixed && c.x < p.cap && budget == 1) {
      // One partial slice at a future start: the best node has the fewest GPUs free that still
      // hold it. A node with no sale starting before the interval ends has at least its row free
      // over it, so rows are walked upwards until they pass the best found; the other nodes are
      // asked first.
      int best_f = p.cap + 1;
      exact_mask.assign(p.words, 0);
      for (const auto& [ffs, local] : p.future) {
        if (ffs >= c.e) break;
        exact_mask[local >> 6] |= uint64_t{1} << (local & 63);
        if (TooBusy(p, local, c)) continue;
        const int f = PoolFreeOver(p, local, c.s, c.e);
        if (f >= c.x) {
          emit(local, f);
          best_f = std::min(best_f, f);
        }
      }
      for (int r = 0; r <= p.cap && r <= best_f; ++r) {
        if (p.count[r] == 0) continue;
        ForEachBit(p.Row(r), p.words, [&](uint32_t local) {
          if ((exact_mask[local >> 6] >> (local & 63)) & 1) return true;
          const int f = PoolFreeOver(p, local, c.s, c.e, r);
          if (f >= c.x) {
            emit(local, f);
            best_f = std::min(best_f, f);
          }
          return true;
        });
      }
    } else if (c.start_now) {
      if (exact) {
        MarkExact(p, c);
        // The exact nodes answer from their calendars; only those whose row holds a slice can
        // (free over the interval is at most free now), found a word at a time.
        if (c.x < p.cap) {
          for (uint32_t w = 0; w < p.words; ++w) {
            uint64_t rows = 0;
            for (int f = c.x; f <= p.cap; ++f) rows |= p.Row(f)[w];
            for (uint64_t bits = exact_mask[w] & rows; bits != 0; bits &= bits - 1) {
              const uint32_t local = w * 64 + static_cast<uint32_t>(__builtin_ctzll(bits));
              const int f = PoolFreeOver(p, local, c.s, c.e, RowOf(p, local, c.x));
              if (f >= c.x) emit(local, f);
            }
          }
        }
      }
    } else {
      ForEachExact(p, c, [&](uint32_t local, int f) {
        if (f >= c.x) emit(local, f);
      });
    }
    if (c.start_now) {
      // The rest answer from the index: rows in order of the per-slice terms (best fit first,
      // whole nodes last) and ascending node index within a row.
      const int64_t exact_got = got;
      got = 0;
      for (int f = c.x; f <= p.cap && got < budget; ++f) {
        if (p.count[f] == 0) continue;
        ForEachBit(p.Row(f), p.words, [&](uint32_t local) {
          if (exact && ((exact_mask[local >> 6] >> (local & 63)) & 1)) return true;
          emit(local, f);
          return got < budget;
        });
      }
      got += exact_got;
    }
    if (!exact) return got;
    // Only the best `budget` can be taken: select them, then order them.
    const auto begin = out->begin() + static_cast<ptrdiff_t>(first);
    if (c.fixed && out->end() - begin > budget) {
      std::nth_element(begin, begin + budget, out->end(), KappaLess);
      out->resize(first + static_cast<size_t>(budget));
      got = budget;
    }
    std::sort(begin, out->end(), KappaLess);
    return got;
  }

  // False when the pool surely holds fewer than `want` slices for the request (fixed slices), by
  // one look at its sizes and, for whole nodes at a future start, one probe of its clean list:
  // every node with a future sale counts at most once, so the clean nodes free by the start must
  // make up the rest.
  static bool CouldHold(const Pool& p, const Compiled& c, int64_t want) {
    if (!c.fixed) return true;
    const auto nodes = int64_t{p.sellable};
    if (nodes < want) return false;
    if (c.start_now || c.x != p.cap) return true;
    const int64_t rest = want - static_cast<int64_t>(p.future.size());
    return rest <= 0 || p.clean[static_cast<size_t>(rest - 1)].first <= c.s;
  }

  // A bound on Capacity from the index alone: free now bounds free over any start-now interval.
  int64_t UpperBound(PoolIndex pi, const Compiled& c) const {
    const Pool& p = pools[pi];
    int64_t got = 0;
    if (!c.start_now) {
      if (c.x < p.cap) return int64_t{p.sellable} * (c.fixed ? 1 : p.cap);
      // Whole nodes: the clean ones wholly free by the start, and of the others those whose sales
      // all end by the start, whose future sale starts after the interval, or that have several
      // future sales.
      const int64_t dirty = KeysAtMost(p.future_by_end, c.s) +
                            (p.future.end() - std::lower_bound(p.future.begin(), p.future.end(),
                                                               std::make_pair(c.e, uint32_t{0}))) +
                            static_cast<int64_t>(p.multi_future.size());
      return (CleanFreeBy(p, c.s) + dirty) * (c.fixed ? 1 : p.cap);
    }
    if (c.x == p.cap) return int64_t{p.whole_now} * (c.fixed ? 1 : p.cap);
    for (int f = c.x; f <= p.cap; ++f) got += c.fixed ? p.count[f] : int64_t{p.count[f]} * f;
    return got;
  }

  // Capacity a pool offers for the request: nodes with at least x free (fixed) or free GPUs.
  int64_t Capacity(PoolIndex pi, const Compiled& c) const {
    const Pool& p = pools[pi];
    int64_t got = 0;
    auto add = [&](int f, int64_t n) { got += c.fixed ? n : n * f; };
    if (c.start_now) {
      got = UpperBound(pi, c);
      if (got == 0 || !HasExact(p, c)) return got;
      if (c.x == p.cap) {
        // Whole nodes: a sale starting inside the interval takes a wholly free node out.
        return got - KeysAtMost(p.future_whole, c.e - 1) * (c.fixed ? 1 : p.cap);
      }
      // Exact nodes count with their calendar's answer instead of their row's.
      for (const auto& [ffs, local] : p.future) {
        if (ffs >= c.e) break;
        const int row = RowOf(p, local, c.x);
        if (row >= c.x) add(row, -1);
      }
    } else if (c.x == p.cap) {
      // Whole nodes at a future start: the clean ones free by then, counted from the list.
      got = CleanFreeBy(p, c.s) * (c.fixed ? 1 : p.cap);
      ForEachWholeFreeDirty(p, c.s, c.e, [&](uint32_t) { add(p.cap, 1); });
      return got;
    }
    ForEachExact(p, c, [&](uint32_t, int f) {
      if (f >= c.x) add(f, 1);
    });
    return got;
  }

  // The row (free GPUs now) of a sellable node, looking no lower than `lowest`; -1 when below.
  static int RowOf(const Pool& p, uint32_t local, int lowest) {
    for (int f = p.cap; f >= lowest; --f) {
      if ((p.Row(f)[local >> 6] >> (local & 63)) & 1) return f;
    }
    return -1;
  }

  // How many entries of a sorted (key, local) list have key <= t.
  static int64_t KeysAtMost(const std::vector<std::pair<int64_t, uint32_t>>& list, int64_t t) {
    return std::upper_bound(list.begin(), list.end(),
                            std::make_pair(t, std::numeric_limits<uint32_t>::max())) -
           list.begin();
  }

  // How many of the pool's clean nodes are wholly free from time t on.
  static int64_t CleanFreeBy(const Pool& p, int64_t t) { return KeysAtMost(p.clean, t); }

  // Fills one group from its pools (in price order), level by level of price. next_pool(&pi,
  // at_most) gives the next pool in that order, or false when none is left at a price of at most
  // at_most; a level is not looked past once it fills the request.
  template <typename PoolSource>
  Pick FillGroup(const Compiled& c, PoolSource&& next_pool) {
    Pick pick;
    int64_t remaining = c.need;
    PoolIndex pi;
    constexpr Micros kAnyPrice = std::numeric_limits<Micros>::max();
    bool have = next_pool(&pi, kAnyPrice);
    while (have && remaining > 0) {
      const Micros level = pools[pi].price;
      cands.clear();
      int pools_in_level = 0;
      do {
        Collect(pi, c, remaining, &cands);
        ++pools_in_level;
      } while (next_pool(&pi, level));
      // One pool's candidates come in order already.
      if (pools_in_level > 1) std::sort(cands.begin(), cands.end(), KappaLess);
      for (const Cand& cd : cands) {
        if (remaining == 0) break;
        const int32_t take =
            c.fixed ? c.x : static_cast<int32_t>(std::min<int64_t>(cd.f, remaining));
        remaining -= c.fixed ? 1 : take;
        pick.takes.push_back({cd.node, take, cd.pool, cd.price});
        pick.rate += int64_t{take} * cd.price;
        pick.dsum += cd.d;
        const int cap = pools[cd.pool].cap;
        pick.bsum += (cd.f == cap && take < cap) ? 1 : 0;
        pick.lsum += cd.f - take;
        pick.rsum += cd.r;
      }
      if (remaining > 0) have = next_pool(&pi, kAnyPrice);
    }
    if (remaining > 0) return Pick{};
    pick.ok = true;
    std::sort(pick.takes.begin(), pick.takes.end(),
              [](const Take& a, const Take& b) { return a.node < b.node; });
    return pick;
  }

  // The eligible pools of one group (a domain or a center), by (price, index).
  void GroupPools(const Compiled& c, bool check_price, uint32_t group) {
    group_pools.clear();
    auto add = [&](const std::vector<PoolIndex>& ps) {
      for (PoolIndex pi : ps) {
        if (StaticMatch(pools[pi], c, check_price, true)) group_pools.push_back(pi);
      }
    };
    if (c.locality == Locality::kDomain) {
      add(domains[group].pools);
    } else {
      for (uint32_t dm : centers[group].domains) add(domains[dm].pools);
    }
    std::sort(group_pools.begin(), group_pools.end(), [&](PoolIndex a, PoolIndex b) {
      return std::tie(pools[a].price, a) < std::tie(pools[b].price, b);
    });
  }

  uint32_t GroupOf(const Pool& p, Locality l) const {
    return l == Locality::kDomain ? p.domain : p.center;
  }

  void NewEpoch() {
    ++seen_epoch;
    const size_t n = std::max(domains.size(), centers.size());
    if (group_seen_mark.size() < n) group_seen_mark.resize(n, 0);
  }

  // The best allocation for the request, or !ok.
  Pick Match(const Compiled& c, bool check_price) {
    if (c.locality == Locality::kAny || c.locality == Locality::kNode) {
      // One group: the whole market, filled straight from the price-ordered pools.
      PoolCursor cursor(*this, c, check_price);
      return FillGroup(c, [&](PoolIndex* out, Micros at_most) {
        while (cursor.Next(out, at_most)) {
          if (UpperBound(*out, c) > 0) return true;
        }
        return false;
      });
    }
    // Groups: domains or centers. A group's price is at least its cheapest pool's price times
    // the GPUs asked, so once that bound passes the best found, nothing later can win.
    Pick best;
    NewEpoch();
    ForEachPool(c, check_price, [&](PoolIndex pi) {
      const Pool& p = pools[pi];
      if (best.ok && int64_t{p.price} * c.gpus > best.rate) return false;
      const uint32_t g = GroupOf(p, c.locality);
      if (group_seen_mark[g] == seen_epoch) return true;
      group_seen_mark[g] = seen_epoch;
      if (c.locality == Locality::kDomain && p.domain_pools == 1) {
        if (!CouldHold(p, c, c.need)) return true;
        group_pools.assign(1, pi);  // the cursor has matched it already
      } else {
        GroupPools(c, check_price, g);
      }
      int64_t bound = 0;
      for (PoolIndex q : group_pools) bound += UpperBound(q, c);
      if (bound < c.need) return true;
      size_t i = 0;
      Pick pick = FillGroup(c, [&](PoolIndex* out, Micros at_most) {
        if (i == group_pools.size() || pools[group_pools[i]].price > at_most) return false;
        *out = group_pools[i++];
        return true;
      });
      if (PickLess(pick, best)) best = std::move(pick);
      return true;
    });
    return best;
  }

  // ---------------------------------------------------------------- rejection hints

  // One pass over the pools by price, ignoring the ceiling: `min_ceiling` is the price at which
  // some group first holds enough capacity; `largest` the most capacity one group holds under the
  // ceiling (nodes for fixed slices, GPUs otherwise).
  void ScanHints(const Compiled& c, std::optional<Micros>* min_ceiling, int64_t* largest) {
    NewEpoch();
    if (group_sum.size() < group_seen_mark.size()) group_sum.resize(group_seen_mark.size());
    const bool one_group = c.locality == Locality::kAny || c.locality == Locality::kNode;
    ForEachPool(c, /*check_price=*/false, [&](PoolIndex pi) {
      const Pool& p = pools[pi];
      const bool under = p.price <= c.ceiling;
      if (!under && min_ceiling->has_value()) return false;
      const uint32_t g = one_group ? 0 : GroupOf(p, c.locality);
      if (group_seen_mark[g] != seen_epoch) {
        group_seen_mark[g] = seen_epoch;
        group_sum[g] = {0, 0};
      }
      // A domain with one pool whose bound can change neither answer needs no exact count.
      const bool alone = c.locality == Locality::kDomain && p.domain_pools == 1;
      const int64_t matters = under ? std::min(*largest + 1, int64_t{c.need}) : c.need;
      if (alone && (!CouldHold(p, c, matters) || UpperBound(pi, c) < matters)) return true;
      const int64_t capa = Capacity(pi, c);
      group_sum[g].first += capa;
      if (under) {
        group_sum[g].second += capa;
        *largest = std::max(*largest, group_sum[g].second);
      }
      if (group_sum[g].first >= c.need && !min_ceiling->has_value()) *min_ceiling = p.price;
      return true;
    });
  }

  // The most GPUs free on one node at the request's start under its ceiling.
  int32_t LargestNode(const Compiled& c) {
    int64_t best = 0;
    Compiled one = c;  // any node size counts
    one.x = 1;
    one.fixed = false;
    ForEachPool(one, true, [&](PoolIndex pi) {
      const Pool& p = pools[pi];
      ForEachExact(p, one, [&](uint32_t, int f) { best = std::max<int64_t>(best, f); });
      if (!one.start_now) return true;
      // The fullest row holding a node that the index answers for.
      const bool exact = HasExact(p, one);
      if (exact) MarkExact(p, one);
      for (int f = p.cap; f > best; --f) {
        if (p.count[f] == 0) continue;
        const bool found = !ForEachBit(p.Row(f), p.words, [&](uint32_t local) {
          return exact && ((exact_mask[local >> 6] >> (local & 63)) & 1);
        });
        if (found) {
          best = f;
          break;
        }
      }
      return true;
    });
    return static_cast<int32_t>(best);
  }

  // True when the brief shows the pool's node has fewer than c.x GPUs free at some instant of
  // the request's interval (which starts after now): the future sale that starts first overlaps
  // the interval and leaves too few, or every started sale still runs at the start and leaves too
  // few now.
  bool TooBusy(const Pool& p, uint32_t local, const Compiled& c) const {
    const Brief& b = p.brief[local];
    if (b.nfuture > 0 && b.first_future < c.e && b.future_end > c.s &&
        p.cap - b.future_gpus < c.x) {
      return true;  // the future sale that starts first overlaps and leaves too few
    }
    return b.started_min_end > c.s && b.started_min_end != kNever && RowOf(p, local, c.x) < c.x;
  }

  // GPUs free on the pool's node over [s, e) (s >= now), from its brief when that says enough,
  // else from its calendar (on the node record). `row`, when known (>= 0), is its free count now.
  int PoolFreeOver(const Pool& p, uint32_t local, int64_t s, int64_t e, int row = -1) const {
    const Brief& b = p.brief[local];
    if (b.busy_all <= s) return p.cap;
    if (b.busy_started <= s) {
      // Only future sales can overlap the interval.
      if (e <= b.first_future) return p.cap;
      if (b.nfuture == 1) return b.future_end > s ? p.cap - b.future_gpus : p.cap;
    } else if (row >= 0) {
      // Every started sale still runs when the interval is busiest: at s when no future sale
      // starts before e (as busy as now), else when the only future sale overlapping runs too.
      if (e <= b.first_future) {
        if (b.started_min_end > s) return row;
      } else if (b.nfuture == 1 && b.future_end > s &&
                 b.started_min_end > std::max(s, b.first_future)) {
        return row - b.future_gpus;
      }
    }
    return FreeOver(nodes[p.nodes[local]], s, e);
  }

  // Calls fn(local) for each node of the pool with a future sale that is wholly free over [s, e)
  // (s > now), reading the lists: nodes whose every sale ends by s; nodes with one future sale
  // that starts after the interval and started sales that end by s; nodes with several future
  // sales, asked one by one.
  // Only nodes with a local index below `below` are visited, except that with skip_ended false
  // the first kind always is; with skip_ended true the first kind is left out.
  template <typename Fn>
  void ForEachWholeFreeDirty(const Pool& p, int64_t s, int64_t e, Fn fn,
                             uint32_t below = std::numeric_limits<uint32_t>::max(),
                             bool skip_ended = false) const {
    if (!skip_ended) {
      for (const auto& [busy, local] : p.future_by_end) {
        if (busy > s) break;
        fn(local);
      }
    }
    for (auto it = std::lower_bound(p.future.begin(), p.future.end(), std::make_pair(e, 0u));
         it != p.future.end(); ++it) {
      if (it->second >= below) continue;
      const Brief& b = p.brief[it->second];
      if (b.busy_all > s && b.nfuture == 1 && b.busy_started <= s) fn(it->second);
    }
    for (uint32_t local : p.multi_future) {
      if (local < below && p.brief[local].busy_all > s && WholeFree(p, local, s, e)) fn(local);
    }
  }

  // True when the pool's node is wholly free over [s, e).
  bool WholeFree(const Pool& p, uint32_t local, int64_t s, int64_t e) const {
    const Brief& b = p.brief[local];
    if (b.nfuture == 0) return b.busy_all <= s;
    if (b.nfuture == 1) return b.busy_started <= s && (e <= b.first_future || b.future_end <= s);
    // Several future sales: a started sale still running at s, or none starting before e, answer
    // without the calendar.
    if (b.busy_started > s) return false;
    if (e <= b.first_future || b.busy_all <= s) return true;
    // From here the interval starts before the last sale ends and ends after the first future
    // sale starts: it can only lie in a gap between future sales.
    if (s < b.first_future || e - s > b.future_gap) return false;
    return PoolFreeOver(p, local, s, e) == p.cap;
  }

  // WholeWindows for a node of a pool, from its brief when that says enough.
  void PoolWholeWindows(const Pool& p, uint32_t local, int64_t from, int64_t d, int64_t until,
                        int64_t bound, std::vector<std::pair<int64_t, int64_t>>* out) const {
    const Brief& b = p.brief[local];
    if (b.nfuture > 1 && b.future_gap >= d) {
      // A gap between its future sales might hold the duration: the calendar says where.
      WholeWindows(nodes[p.nodes[local]], from, d, until, bound, out);
      return;
    }
    // Otherwise its windows are before its first future sale and after its last sale.
    const int64_t last = std::min(until - d, bound - 1);
    if (b.nfuture > 0) {
      const int64_t a = std::max(from, b.busy_started);
      const int64_t z = std::min(last, b.first_future - d);
      if (a <= z) out->emplace_back(a, z);
    }
    const int64_t a = std::max(from, b.busy_all);
    if (a <= last) out->emplace_back(a, last);
  }

  // Appends to `out` the ranges [a, b] of start times t in [from, bound) at which node n is
  // wholly free over [t, t + d) with t + d <= until: the gaps between its sales.
  static void WholeWindows(const NodeRec& n, int64_t from, int64_t d, int64_t until, int64_t bound,
                           std::vector<std::pair<int64_t, int64_t>>* out) {
    std::pair<int64_t, int64_t> segs[16];
    size_t k = 0;
    for (const Seg& sg : n.segs) {
      if (sg.end > from && k < 16) segs[k++] = {sg.start, sg.end};
    }
    if (k == 16) {  // very busy node: fall back to sorting all of them
      std::vector<std::pair<int64_t, int64_t>> all;
      for (const Seg& sg : n.segs) {
        if (sg.end > from) all.emplace_back(sg.start, sg.end);
      }
      std::sort(all.begin(), all.end());
      return WindowsOf(all.data(), all.size(), from, d, until, bound, out);
    }
    std::sort(segs, segs + k);
    WindowsOf(segs, k, from, d, until, bound, out);
  }
  static void WindowsOf(const std::pair<int64_t, int64_t>* segs, size_t k, int64_t from, int64_t d,
                        int64_t until, int64_t bound,
                        std::vector<std::pair<int64_t, int64_t>>* out) {
    const int64_t last = std::min(until - d, bound - 1);
    int64_t t = from;
    for (size_t i = 0; i < k && t <= last; ++i) {
      if (segs[i].second <= t) continue;
      if (segs[i].first - d >= t) out->emplace_back(t, std::min(segs[i].first - d, last));
      t = std::max(t, segs[i].second);
    }
    if (t <= last) out->emplace_back(t, last);
  }

  // The earliest time t >= from at which node n has x GPUs free over [t, t + d) and t + d <=
  // until; kNever when none.
  int64_t NodeEarliest(const NodeRec& n, int x, int64_t from, int64_t d, int64_t until) const {
    int64_t t = from;
    for (size_t guard = 0; guard <= n.segs.size() + 1; ++guard) {
      if (t + d > until) return kNever;
      if (FreeOver(n, t, t + d) >= x) return t;
      // The next time usage can drop: the earliest end after t of a segment overlapping.
      int64_t next = kNever;
      for (const Seg& s : n.segs) {
        if (s.end > t && s.start < t + d) next = std::min(next, s.end);
      }
      if (next == kNever) return kNever;
      t = next;
    }
    return kNever;
  }

  // The request moved to start at t.
  Compiled At(const Compiled& c, int64_t t) const {
    Compiled at = c;
    at.s = t;
    at.e = t + c.d;
    at.start_now = t <= now;
    return at;
  }

  // True when one group's pools (or, for kAny/kNode, `pool_list`) hold enough capacity for `c`.
  // Capacity is enough: a group with enough capacity is always filled.
  bool FitsIn(const Compiled& c, const std::vector<PoolIndex>& pool_list) const {
    int64_t capa = 0;
    for (PoolIndex pi : pool_list) {
      if (!StaticMatch(pools[pi], c, true, true)) continue;
      capa += Capacity(pi, c);
      if (capa >= c.need) return true;
    }
    return false;
  }

  // The earliest start >= the asked one at which the request would be granted.
  //
  // For whole-node slices the clean lists answer most of it: a clean node is wholly free from
  // the end of its last sale on, so a group's clean nodes alone first hold `need` slices at the
  // need-th smallest such end (clamped to the window). The smallest of these over all groups is
  // a time that works; a group can only do better with the help of its nodes with future sales,
  // and only such groups (and groups of other shapes) are searched through the calendar.
  std::optional<int64_t> EarliestStart(const Compiled& c) {
    // The statically matching pools (price included, window not), by group.
    const bool grouped = c.locality == Locality::kDomain || c.locality == Locality::kCenter;
    // Groups are domains or centers (or the one market group 0).
    const size_t groups_needed = std::max(domains.size(), centers.size()) + 1;
    if (group_lists.size() < groups_needed) group_lists.resize(groups_needed);
    for (uint32_t g : touched) group_lists[g].clear();
    touched.clear();
    auto consider = [&](PoolIndex pi) {
      const Pool& p = pools[pi];
      if (!StaticMatch(p, c, true, false) || p.until <= c.s) return;
      // A domain whose only pool has too few nodes never holds the request.
      if (c.locality == Locality::kDomain && p.domain_pools == 1 &&
          int64_t{p.sellable} * (c.fixed ? 1 : p.cap) < c.need) {
        return;
      }
      const uint32_t g = grouped ? GroupOf(p, c.locality) : 0;
      if (group_lists[g].empty()) touched.push_back(g);
      group_lists[g].push_back(pi);
    };
    if (c.model_mask == 0) {
      for (PoolIndex pi : all_pools) consider(pi);
    } else {
      for (ModelId m : c.models) {
        for (PoolIndex pi : model_pools[m]) {
          if (pools[pi].price > c.ceiling) break;  // by price
          consider(pi);
        }
      }
    }
    int64_t best = kNever;
    std::vector<uint32_t> slow;
    for (uint32_t g : touched) {
      const std::vector<PoolIndex>& plist = group_lists[g];
      if (!WholeNodes(c, plist)) {
        slow.push_back(g);
        continue;
      }
      const int64_t t = CleanEarliest(c, plist);
      // With one pool the clean nodes' time is exact; across pools with different windows it is
      // checked.
      if (t != kNever && (plist.size() == 1 || FitsIn(At(c, t), plist))) best = std::min(best, t);
    }
    for (uint32_t g : touched) {
      const std::vector<PoolIndex>& plist = group_lists[g];
      // Each sweep may lower `best`, which rules out more of the groups after it.
      if (!WholeNodes(c, plist) || !CouldBeat(c, plist, best)) continue;
      best = std::min(best, SweepEarliest(c, plist, best));
    }
    for (uint32_t g : slow) {
      const int64_t t = SearchEarliest(c, group_lists[g], best);
      best = std::min(best, t);
    }
    if (best == kNever) return std::nullopt;
    return best;
  }

  // False when the whole-node group surely cannot hold the request before `best`.
  bool CouldBeat(const Compiled& c, const std::vector<PoolIndex>& plist, int64_t best) const {
    // How many nodes might be free for the duration before `best`, counted from the lists
    // where they say enough: clean nodes free by then; nodes with future sales whose every sale
    // ends early enough (room after them); nodes with one future sale and room before it,
    // which needs that sale to start a duration after `from`; and, at most, every node with
    // several future sales. Too few, and the group cannot do better than `best`.
    int64_t could = 0, sellable = 0;
    for (PoolIndex pi : plist) {
      sellable += pools[pi].sellable;
    }
    if (sellable < c.need) return false;
    if (plist.size() == 1) {
      // One probe: every node with a future sale counts at most once, so unless the clean
      // list holds the rest by `best`, the group cannot do better.
      const Pool& p = pools[plist[0]];
      const int64_t rest = c.need - static_cast<int64_t>(p.future.size());
      const int64_t last = std::min(p.until - c.d, best - 1);
      if (rest > 0 && (static_cast<int64_t>(p.clean.size()) < rest ||
                       p.clean[static_cast<size_t>(rest - 1)].first > last)) {
        return false;
      }
    }
    for (PoolIndex pi : plist) {
      const Pool& p = pools[pi];
      const int64_t from = std::max(c.s, p.from);
      const int64_t last = std::min(p.until - c.d, best - 1);
      if (from > last) continue;
      could += KeysAtMost(p.clean, last) + KeysAtMost(p.future_by_end, last) +
               static_cast<int64_t>(p.multi_future.size());
    }
    if (could < c.need) {
      // Add the gaps before a single future sale, then the count is exact but for multi-sale
      // nodes.
      for (PoolIndex pi : plist) {
        const Pool& p = pools[pi];
        const int64_t from = std::max(c.s, p.from);
        const int64_t last = std::min(p.until - c.d, best - 1);
        if (from > last) continue;
        for (auto it =
                 std::lower_bound(p.future.begin(), p.future.end(), std::make_pair(from + c.d, 0u));
             it != p.future.end() && could < c.need; ++it) {
          const Brief& b = p.brief[it->second];
          if (b.busy_all <= last || b.nfuture > 1) continue;  // counted already
          if (std::max(from, b.busy_started) <= std::min(last, it->first - c.d)) ++could;
        }
      }
    }
    return could >= c.need;
  }

  // True when every slice takes a whole node of every pool listed.
  static bool WholeNodes(const Compiled& c, const std::vector<PoolIndex>& plist,
                         const std::vector<Pool>& all) {
    if (!c.fixed) return false;
    for (PoolIndex pi : plist) {
      if (all[pi].cap != c.x) return false;
    }
    return true;
  }
  bool WholeNodes(const Compiled& c, const std::vector<PoolIndex>& plist) const {
    return WholeNodes(c, plist, pools);
  }

  // The first time >= the asked start at which the group's clean nodes alone are wholly free for
  // `need` slices over the whole duration, or kNever.
  int64_t CleanEarliest(const Compiled& c, const std::vector<PoolIndex>& plist) const {
    if (plist.size() == 1) {
      const Pool& p = pools[plist[0]];
      if (p.clean.size() < static_cast<size_t>(c.need)) return kNever;
      const int64_t t = std::max({c.s, p.from, p.clean[static_cast<size_t>(c.need - 1)].first});
      return t + c.d <= p.until ? t : kNever;
    }
    std::vector<int64_t> ts;
    for (PoolIndex pi : plist) {
      const Pool& p = pools[pi];
      const int64_t from = std::max(c.s, p.from);
      size_t taken = 0;
      for (const auto& [busy, local] : p.clean) {
        if (taken == static_cast<size_t>(c.need)) break;
        const int64_t t = std::max(from, busy);
        if (t + c.d > p.until) break;  // sorted: later ones end later still
        ts.push_back(t);
        ++taken;
      }
    }
    if (ts.size() < static_cast<size_t>(c.need)) return kNever;
    std::nth_element(ts.begin(), ts.begin() + (c.need - 1), ts.end());
    return ts[static_cast<size_t>(c.need - 1)];
  }

  // The group's earliest start before `bound` through the calendar, or kNever. Candidate times
  // are the moments each node could first hold a slice (and, for nodes with future sales or
  // any-packing requests, each later end of a sale); at most kMaxEarliestCandidates are tried.
  int64_t SearchEarliest(const Compiled& c, const std::vector<PoolIndex>& plist, int64_t bound) {
    if (WholeNodes(c, plist)) return SweepEarliest(c, plist, bound);
    std::vector<int64_t> ts;
    for (PoolIndex pi : plist) {
      const Pool& p = pools[pi];
      const int64_t from = std::max(c.s, p.from);
      if (from >= bound) continue;
      auto visit = [&](uint32_t local) {
        const NodeRec& n = nodes[p.nodes[local]];
        const int64_t t = NodeEarliest(n, c.x, from, c.d, p.until);
        if (t == kNever || t >= bound) return;
        ts.push_back(t);
        if (n.future > 0 || !c.fixed) {
          for (const Seg& sg : n.segs) {
            if (sg.end > t && sg.end < bound && sg.end + c.d <= p.until) ts.push_back(sg.end);
          }
        }
      };
      for (const auto& [busy, local] : p.clean) visit(local);
      for (const auto& [ffs, local] : p.future) visit(local);
    }
    // For fixed slices `need` nodes must each have had their first chance.
    if (c.fixed && ts.size() < static_cast<size_t>(c.need)) return kNever;
    std::sort(ts.begin(), ts.end());
    ts.erase(std::unique(ts.begin(), ts.end()), ts.end());
    int tries = 0;
    for (size_t i = 0; i < ts.size() && tries < kMaxEarliestCandidates; ++i, ++tries) {
      if (FitsIn(At(c, ts[i]), plist)) return ts[i];
    }
    return kNever;
  }

  // Whole-node slices: the first time before `bound` at which `need` nodes of the group are
  // wholly free for the duration, by a sweep over every node's free windows; kNever if none.
  int64_t SweepEarliest(const Compiled& c, const std::vector<PoolIndex>& plist, int64_t bound) {
    // Events: +1 when a window opens, -k just after k close. A clean node's window runs from the
    // end of its last sale to the pool's last start, so each pool's clean events come in order.
    sweep.clear();
    windows.clear();
    for (PoolIndex pi : plist) {
      const Pool& p = pools[pi];
      const int64_t from = std::max(c.s, p.from);
      const int64_t last = std::min(p.until - c.d, bound - 1);
      if (from > last) continue;
      const size_t mark = sweep.size();
      int open_clean = 0;
      for (const auto& [busy, local] : p.clean) {
        const int64_t a = std::max(from, busy);
        if (a > last) break;  // sorted by the end of the last sale
        sweep.emplace_back(a, 1);
        ++open_clean;
      }
      if (open_clean > 0) sweep.emplace_back(last + 1, -open_clean);
      std::inplace_merge(sweep.begin(), sweep.begin() + static_cast<ptrdiff_t>(mark), sweep.end());
      for (const auto& [ffs, local] : p.future) {
        PoolWholeWindows(p, local, from, c.d, p.until, bound, &windows);
      }
    }
    const size_t mark = sweep.size();
    for (const auto& [a, b] : windows) {
      sweep.emplace_back(a, 1);
      sweep.emplace_back(b + 1, -1);
    }
    std::sort(sweep.begin() + static_cast<ptrdiff_t>(mark), sweep.end());
    std::inplace_merge(sweep.begin(), sweep.begin() + static_cast<ptrdiff_t>(mark), sweep.end());
    int64_t open = 0;
    for (size_t i = 0; i < sweep.size();) {
      const int64_t t = sweep[i].first;
      for (; i < sweep.size() && sweep[i].first == t; ++i) open += sweep[i].second;
      if (open >= c.need) return t;
    }
    return kNever;
  }

  bool AnyStaticMatch(const Compiled& c) const {
    auto any = [&](const std::vector<PoolIndex>& list) {
      for (PoolIndex pi : list) {
        const Pool& p = pools[pi];
        if (p.until > now && StaticMatch(p, c, false, false) && p.sellable > 0) return true;
      }
      return false;
    };
    if (c.model_mask == 0) return any(all_pools);
    for (ModelId m : c.models) {
      if (m < model_pools.size() && any(model_pools[m])) return true;
    }
    return false;
  }

  Rejection Explain(const Compiled& c) {
    Rejection rj;
    if (!AnyStaticMatch(c)) {
      rj.reason = RejectReason::kNoMatchingCapacity;
      rj.message =
          "no healthy capacity matches the models, regions, center types, tags, fabric, "
          "packing and lease asked";
      return rj;
    }
    std::optional<Micros> m;
    int64_t largest = 0;
    ScanHints(c, &m, &largest);
    rj.largest_block =
        c.locality == Locality::kNode
            ? LargestNode(c)
            : static_cast<int32_t>(std::min<int64_t>(c.fixed ? largest * c.x : largest, c.gpus));
    if (m.has_value()) {
      rj.reason = RejectReason::kPriceAboveCeiling;
      rj.min_ceiling = *m;
      rj.message = absl::StrCat("capacity is free but not under the ceiling; it fits at ",
                                *m / kMicrosPerUnit, ".",
                                absl::Dec(*m % kMicrosPerUnit, absl::kZeroPad6), " per GPU-hour");
      return rj;
    }
    rj.reason = RejectReason::kInsufficientCapacity;
    if (std::optional<int64_t> t = EarliestStart(c); t.has_value()) {
      rj.earliest_start = FromUs(*t);
    }
    rj.message = absl::StrCat(
        "not enough matching capacity is free; largest block now: ", rj.largest_block, " GPUs",
        rj.earliest_start.has_value()
            ? absl::StrCat("; earliest start that fits: ", absl::FormatTime(*rj.earliest_start))
            : std::string());
    return rj;
  }

  // ---------------------------------------------------------------- commit

  Allocation MakeAllocation(const Compiled& c, const Pick& pick, AllocationId id,
                            const std::string& buyer) const {
    Allocation a;
    a.id = id;
    a.buyer = buyer;
    a.slices.reserve(pick.takes.size());
    for (const Take& t : pick.takes) a.slices.push_back({t.node, t.gpus, t.price});
    a.start = FromUs(c.s);
    a.end = FromUs(c.e);
    a.total_price = PriceFor(pick.rate, absl::Microseconds(c.d));
    a.state = c.start_now ? AllocationState::kActive : AllocationState::kReserved;
    return a;
  }

  // Records a pick as sold over [s, e).
  LiveRec& Commit(Allocation a, const Pick& pick, int64_t s, int64_t e) {
    LiveRec rec;
    rec.a = std::move(a);
    rec.start = s;
    rec.end = e;
    rec.hold_until = 0;
    rec.rate = pick.rate;
    rec.activated = false;
    rec.slice_pool.reserve(pick.takes.size());
    for (size_t i = 0; i < pick.takes.size(); ++i) {
      const Take& t = pick.takes[i];
      PrefetchAhead(pick.takes, i);
      rec.slice_pool.push_back(t.pool);
      NodeRec& n = nodes[t.node];
      n.segs.push_back({s, e, t.gpus, rec.a.id});
      ++n.future;
      ++domains[n.domain].live_segments;
      op_last_sale[centers[domains[n.domain].center].op] = sale_seq + 1;
    }
    ++sale_seq;
    const AllocationId id = rec.a.id;
    LiveRec& stored = *live.emplace(id, std::make_unique<LiveRec>(std::move(rec))).first->second;
    if (s <= now) {
      Activate(stored);  // also reindexes
    } else {
      BeginBatch(stored.a.slices.size());
      for (const Slice& sl : stored.a.slices) Reindex(sl.node);
      EndBatch();
      Schedule({s, EvKind::kActivate, stored.a.id});
    }
    Schedule({e, EvKind::kEnd, stored.a.id});
    return stored;
  }
};

// ------------------------------------------------------------------ public API

Matcher::Matcher() : s_(std::make_unique<State>()) {
  s_->model_pools.resize(AllGpuModels().size());
}
Matcher::~Matcher() = default;

absl::Time Matcher::now() const {
  return s_->now == std::numeric_limits<int64_t>::min() ? absl::InfinitePast() : FromUs(s_->now);
}

absl::Status Matcher::AddCenter(const CenterSpec& spec) {
  State& s = *s_;
  if (spec.id.empty()) return absl::InvalidArgumentError("center id is empty");
  if (spec.operator_id.empty()) return absl::InvalidArgumentError("center operator_id is empty");
  if (spec.region.empty()) return absl::InvalidArgumentError("center region is empty");
  if (s.center_by_id.contains(spec.id)) {
    return absl::AlreadyExistsError(absl::StrCat("center '", spec.id, "' already exists"));
  }
  uint64_t mask = 0;
  size_t new_tags = 0;
  for (const std::string& t : spec.tags) {
    if (!s.tag_ids.contains(t)) ++new_tags;
  }
  if (s.tag_ids.size() + new_tags > 64) {
    return absl::ResourceExhaustedError(
        "the market supports at most 64 distinct center tags; reuse an existing tag");
  }
  for (const std::string& t : spec.tags) {
    auto [it, inserted] = s.tag_ids.emplace(t, static_cast<uint32_t>(s.tag_ids.size()));
    mask |= uint64_t{1} << it->second;
  }
  CenterRec c;
  c.id = spec.id;
  c.operator_id = spec.operator_id;
  c.name = spec.name;
  c.region = spec.region;
  c.region_id =
      s.region_ids.emplace(spec.region, static_cast<uint32_t>(s.region_ids.size())).first->second;
  auto [op, op_new] =
      s.operator_ids.emplace(spec.operator_id, static_cast<uint32_t>(s.operator_ids.size()));
  if (op_new) s.op_last_sale.push_back(0);
  c.op = op->second;
  c.type = spec.type;
  c.tag_mask = mask;
  s.center_by_id.emplace(spec.id, static_cast<uint32_t>(s.centers.size()));
  s.centers.push_back(std::move(c));
  return absl::OkStatus();
}

absl::Status Matcher::AddDomain(const DomainSpec& spec) {
  State& s = *s_;
  if (spec.id.empty()) return absl::InvalidArgumentError("domain id is empty");
  if (spec.gbps < 0) return absl::InvalidArgumentError("domain gbps must not be negative");
  auto cit = s.center_by_id.find(spec.center_id);
  if (cit == s.center_by_id.end()) {
    return absl::NotFoundError(absl::StrCat("center '", spec.center_id, "' not found"));
  }
  std::string key = absl::StrCat(spec.center_id, "/", spec.id);
  if (s.domain_by_key.contains(key)) {
    return absl::AlreadyExistsError(absl::StrCat("domain '", key, "' already exists"));
  }
  DomainRec d;
  d.id = spec.id;
  d.center = cit->second;
  d.fabric = spec.fabric;
  d.gbps = spec.gbps;
  const uint32_t idx = static_cast<uint32_t>(s.domains.size());
  s.domain_by_key.emplace(std::move(key), idx);
  s.centers[cit->second].domains.push_back(idx);
  s.domains.push_back(std::move(d));
  return absl::OkStatus();
}

absl::Status Matcher::AddNodes(const std::vector<NodeSpec>& specs) {
  State& s = *s_;
  absl::flat_hash_map<absl::string_view, int> batch_ids;
  std::vector<std::pair<uint32_t, ModelId>> resolved;
  resolved.reserve(specs.size());
  for (const NodeSpec& n : specs) {
    if (n.id.empty()) return absl::InvalidArgumentError("node id is empty");
    if (n.gpus < 1 || n.gpus > kMaxGpusPerNode) {
      return absl::InvalidArgumentError(
          absl::StrCat("node '", n.id, "': gpus must be 1..", kMaxGpusPerNode, ", got ", n.gpus));
    }
    const GpuModel* m = FindGpuModel(n.model);
    if (m == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("node '", n.id, "': unknown GPU model '", n.model, "'"));
    }
    auto dit = s.domain_by_key.find(absl::StrCat(n.center_id, "/", n.domain_id));
    if (dit == s.domain_by_key.end()) {
      return absl::NotFoundError(absl::StrCat("node '", n.id, "': domain '", n.center_id, "/",
                                              n.domain_id, "' not found"));
    }
    if (s.node_by_id.contains(n.id) || !batch_ids.emplace(n.id, 0).second) {
      return absl::AlreadyExistsError(absl::StrCat("node '", n.id, "' already exists"));
    }
    resolved.emplace_back(dit->second, m->id);
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    NodeRec n;
    n.id = specs[i].id;
    n.domain = resolved[i].first;
    n.model = resolved[i].second;
    n.cap = static_cast<int16_t>(specs[i].gpus);
    n.free_now = n.cap;
    const NodeIndex idx = static_cast<NodeIndex>(s.nodes.size());
    s.node_by_id.emplace(n.id, idx);
    s.domains[n.domain].nodes.push_back(idx);
    s.nodes.push_back(std::move(n));
    ++s.active_nodes;
    s.total_gpus += specs[i].gpus;
  }
  return absl::OkStatus();
}

absl::Status Matcher::RemoveNode(absl::string_view node_id) {
  State& s = *s_;
  auto it = s.node_by_id.find(node_id);
  if (it == s.node_by_id.end()) {
    return absl::NotFoundError(absl::StrCat("node '", node_id, "' not found"));
  }
  NodeRec& n = s.nodes[it->second];
  if (!n.segs.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("node '", node_id, "' has ", n.segs.size(),
                     " live allocations or holds; release them first"));
  }
  n.removed = true;
  s.Reindex(it->second);
  --s.active_nodes;
  s.total_gpus -= n.cap;
  auto& dn = s.domains[n.domain].nodes;
  dn.erase(std::remove(dn.begin(), dn.end(), it->second), dn.end());
  s.node_by_id.erase(it);
  return absl::OkStatus();
}

absl::Status Matcher::SetNodeHealth(absl::string_view node_id, Health health) {
  State& s = *s_;
  auto it = s.node_by_id.find(node_id);
  if (it == s.node_by_id.end()) {
    return absl::NotFoundError(absl::StrCat("node '", node_id, "' not found"));
  }
  s.nodes[it->second].health = health;
  s.Reindex(it->second);
  return absl::OkStatus();
}

absl::Status Matcher::AddOffer(const OfferSpec& spec, absl::Time now_t) {
  State& s = *s_;
  s.AdvanceTo(Us(now_t));
  if (spec.id.empty()) return absl::InvalidArgumentError("offer id is empty");
  if (s.offer_by_id.contains(spec.id)) {
    return absl::AlreadyExistsError(absl::StrCat("offer '", spec.id, "' already exists"));
  }
  if (spec.price_per_gpu_hour <= 0 || spec.price_per_gpu_hour > kMaxPrice) {
    return absl::InvalidArgumentError(
        "offer price_per_gpu_hour must be more than 0 and at most 1,000 currency units");
  }
  if (spec.until - now_t > kHorizon || now_t - spec.from > kHorizon) {
    return absl::InvalidArgumentError("an offer's window must lie within 10 years of now");
  }
  if (spec.min_lease > kHorizon) {
    return absl::InvalidArgumentError("an offer's min_lease must be at most 10 years");
  }
  if (spec.min_lease < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("offer min_lease must not be negative");
  }
  const int64_t from = Us(spec.from), until = Us(spec.until);
  if (until <= from) return absl::InvalidArgumentError("offer 'until' must be after 'from'");
  if (until <= s.now) return absl::InvalidArgumentError("offer 'until' is in the past");
  auto cit = s.center_by_id.find(spec.center_id);
  if (cit == s.center_by_id.end()) {
    return absl::NotFoundError(absl::StrCat("center '", spec.center_id, "' not found"));
  }
  if (spec.domain_id.empty() == spec.node_ids.empty()) {
    return absl::InvalidArgumentError("an offer names either a domain or a list of nodes");
  }
  std::vector<NodeIndex> covered;
  if (!spec.domain_id.empty()) {
    auto dit = s.domain_by_key.find(absl::StrCat(spec.center_id, "/", spec.domain_id));
    if (dit == s.domain_by_key.end()) {
      return absl::NotFoundError(
          absl::StrCat("domain '", spec.center_id, "/", spec.domain_id, "' not found"));
    }
    covered = s.domains[dit->second].nodes;
    if (covered.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("domain '", spec.domain_id, "' has no nodes to offer"));
    }
  } else {
    for (const std::string& id : spec.node_ids) {
      auto nit = s.node_by_id.find(id);
      if (nit == s.node_by_id.end()) {
        return absl::NotFoundError(absl::StrCat("node '", id, "' not found"));
      }
      if (s.domains[s.nodes[nit->second].domain].center != cit->second) {
        return absl::InvalidArgumentError(
            absl::StrCat("node '", id, "' is not in center '", spec.center_id, "'"));
      }
      covered.push_back(nit->second);
    }
    std::sort(covered.begin(), covered.end());
    if (std::adjacent_find(covered.begin(), covered.end()) != covered.end()) {
      return absl::InvalidArgumentError("the offer names a node twice");
    }
  }
  for (NodeIndex ni : covered) {
    for (uint32_t oi : s.nodes[ni].offers) {
      const OfferRec& o = s.offers[oi];
      if (!o.withdrawn && o.from < until && from < o.until) {
        return absl::FailedPreconditionError(absl::StrCat("node '", s.nodes[ni].id,
                                                          "' is already on sale in offer '", o.id,
                                                          "' over an overlapping window"));
      }
    }
  }
  const uint32_t oidx = static_cast<uint32_t>(s.offers.size());
  OfferRec o;
  o.id = spec.id;
  o.center = cit->second;
  o.from = from;
  o.until = until;
  o.min_lease = Us(spec.min_lease);
  o.price = spec.price_per_gpu_hour;
  o.whole_only = spec.whole_node_only;
  // One pool per (domain, model, size).
  std::sort(covered.begin(), covered.end(), [&](NodeIndex a, NodeIndex b) {
    const NodeRec& x = s.nodes[a];
    const NodeRec& y = s.nodes[b];
    return std::tie(x.domain, x.model, x.cap, a) < std::tie(y.domain, y.model, y.cap, b);
  });
  for (size_t i = 0; i < covered.size();) {
    const NodeRec& first = s.nodes[covered[i]];
    size_t j = i;
    Pool p;
    p.offer = oidx;
    p.domain = first.domain;
    p.center = s.domains[first.domain].center;
    p.model = first.model;
    p.cap = first.cap;
    p.price = o.price;
    p.from = from;
    p.until = until;
    p.min_lease = o.min_lease;
    p.whole_only = o.whole_only;
    p.fabric = s.domains[p.domain].fabric;
    p.center_type = s.centers[p.center].type;
    p.region_id = s.centers[p.center].region_id;
    p.tag_mask = s.centers[p.center].tag_mask;
    while (j < covered.size() && s.nodes[covered[j]].domain == first.domain &&
           s.nodes[covered[j]].model == first.model && s.nodes[covered[j]].cap == first.cap) {
      p.nodes.push_back(covered[j]);
      ++j;
    }
    p.words = static_cast<uint32_t>((p.nodes.size() + 63) / 64);
    p.bits.assign(static_cast<size_t>(p.cap + 1) * p.words, 0);
    p.count.assign(static_cast<size_t>(p.cap + 1), 0);
    p.brief.assign(p.nodes.size(), Brief{});
    const PoolIndex pi = static_cast<PoolIndex>(s.pools.size());
    for (uint32_t local = 0; local < p.nodes.size(); ++local) {
      s.nodes[p.nodes[local]].members.push_back({pi, local, -1});
    }
    s.domains[p.domain].pools.push_back(pi);
    o.pools.push_back(pi);
    s.pools.push_back(std::move(p));
    s.CountDomainPools(s.pools[pi].domain);
    for (uint32_t local = 0; local < s.pools[pi].nodes.size(); ++local) {
      s.Reindex(s.pools[pi].nodes[local]);
    }
    auto by_price = [&](PoolIndex a, PoolIndex b) {
      return std::tie(s.pools[a].price, a) < std::tie(s.pools[b].price, b);
    };
    auto& ml = s.model_pools[s.pools[pi].model];
    ml.insert(std::upper_bound(ml.begin(), ml.end(), pi, by_price), pi);
    s.all_pools.insert(std::upper_bound(s.all_pools.begin(), s.all_pools.end(), pi, by_price), pi);
    i = j;
  }
  for (NodeIndex ni : covered) s.nodes[ni].offers.push_back(oidx);
  s.offer_by_id.emplace(o.id, oidx);
  s.offers.push_back(std::move(o));
  return absl::OkStatus();
}

absl::Status Matcher::WithdrawOffer(absl::string_view offer_id, absl::Time now_t) {
  State& s = *s_;
  s.AdvanceTo(Us(now_t));
  auto it = s.offer_by_id.find(offer_id);
  if (it == s.offer_by_id.end() || s.offers[it->second].withdrawn) {
    return absl::NotFoundError(absl::StrCat("offer '", offer_id, "' not found"));
  }
  OfferRec& o = s.offers[it->second];
  o.withdrawn = true;
  for (PoolIndex pi : o.pools) {
    Pool& p = s.pools[pi];
    p.dead = true;
    auto drop = [pi](std::vector<PoolIndex>& v) {
      v.erase(std::remove(v.begin(), v.end(), pi), v.end());
    };
    drop(s.model_pools[p.model]);
    drop(s.all_pools);
    drop(s.domains[p.domain].pools);
    for (NodeIndex ni : p.nodes) {
      auto& mem = s.nodes[ni].members;
      mem.erase(
          std::remove_if(mem.begin(), mem.end(), [pi](const Member& m) { return m.pool == pi; }),
          mem.end());
    }
    std::fill(p.bits.begin(), p.bits.end(), 0);
    std::fill(p.count.begin(), p.count.end(), 0);
    p.whole_now = 0;
    p.sellable = 0;
    s.CountDomainPools(p.domain);
    p.future.clear();
    p.clean.clear();
    p.future_by_end.clear();
    p.future_whole.clear();
    p.multi_future.clear();
  }
  return absl::OkStatus();
}

absl::StatusOr<Decision> Matcher::Quote(const Request& request, absl::Time now_t) {
  State& s = *s_;
  s.AdvanceTo(Us(now_t));
  Compiled c;
  if (absl::Status st = s.Compile(request, &c); !st.ok()) return st;
  Decision d;
  Pick pick = s.Match(c, true);
  if (!pick.ok) {
    d.rejection = s.Explain(c);
    return d;
  }
  d.granted = true;
  d.allocation = s.MakeAllocation(c, pick, 0, request.buyer);
  return d;
}

absl::StatusOr<Decision> Matcher::Allocate(const Request& request, absl::Time now_t) {
  State& s = *s_;
  s.AdvanceTo(Us(now_t));
  Compiled c;
  if (absl::Status st = s.Compile(request, &c); !st.ok()) return st;
  Decision d;
  Pick pick = s.Match(c, true);
  if (!pick.ok) {
    d.rejection = s.Explain(c);
    return d;
  }
  d.granted = true;
  const AllocationId id = s.next_id++;
  LiveRec& rec = s.Commit(s.MakeAllocation(c, pick, id, request.buyer), pick, c.s, c.e);
  s.events.push_back({id, rec.a.state, EndReason::kNone, FromUs(s.now)});
  d.allocation = rec.a;
  return d;
}

absl::StatusOr<Decision> Matcher::Hold(const Request& request, absl::Duration ttl,
                                       absl::Time now_t) {
  State& s = *s_;
  s.AdvanceTo(Us(now_t));
  if (ttl <= absl::ZeroDuration() || ttl > absl::Hours(1)) {
    return absl::InvalidArgumentError("a hold's ttl must be more than 0 and at most 1 hour");
  }
  Compiled c;
  if (absl::Status st = s.Compile(request, &c); !st.ok()) return st;
  // A start-now hold keeps the GPUs until the latest redeem's full duration.
  Compiled held = c;
  if (c.start_now) held.e = c.e + Us(ttl);
  Decision d;
  Pick pick = s.Match(held, true);
  if (!pick.ok) {
    // The hints are for what the hold would hold: the interval with the ttl added.
    Compiled padded = held;
    padded.d = held.e - held.s;
    d.rejection = s.Explain(padded);
    return d;
  }
  d.granted = true;
  const AllocationId id = s.next_id++;
  Allocation a = s.MakeAllocation(c, pick, id, request.buyer);
  a.state = AllocationState::kHeld;
  a.hold_expires = FromUs(s.now + Us(ttl));
  a.held_end = FromUs(held.e);
  LiveRec& rec = s.Commit(std::move(a), pick, held.s, held.e);
  rec.a.state = AllocationState::kHeld;
  rec.padded = c.start_now;
  rec.hold_until = s.now + Us(ttl);
  s.Schedule({rec.hold_until, EvKind::kHoldLapse, id});
  s.events.push_back({id, AllocationState::kHeld, EndReason::kNone, FromUs(s.now)});
  d.allocation = rec.a;
  return d;
}

absl::StatusOr<Allocation> Matcher::Redeem(AllocationId hold_id, absl::string_view buyer,
                                           absl::Time now_t) {
  State& s = *s_;
  s.AdvanceTo(Us(now_t));
  auto it = s.live.find(hold_id);
  if (it == s.live.end() || it->second->a.state != AllocationState::kHeld) {
    return absl::NotFoundError(
        absl::StrCat("binding quote ", hold_id, " not found: unknown, lapsed or redeemed"));
  }
  LiveRec& rec = *it->second;
  if (rec.a.buyer != buyer) {
    return absl::PermissionDeniedError(
        absl::StrCat("binding quote ", hold_id, " belongs to another buyer"));
  }
  const int64_t duration = Us(rec.a.end - rec.a.start);
  if (rec.padded) {
    // A start-now hold: the allocation runs [now, now + duration), inside the held interval.
    const int64_t new_end = s.now + duration;
    rec.start = s.now;
    rec.end = new_end;
    for (const Slice& sl : rec.a.slices) {
      for (Seg& sg : s.nodes[sl.node].segs) {
        if (sg.alloc == hold_id) {
          sg.start = s.now;
          sg.end = new_end;
        }
      }
      s.Reindex(sl.node);
    }
    rec.a.start = FromUs(s.now);
    rec.a.end = FromUs(new_end);
    s.Schedule({new_end, EvKind::kEnd, hold_id});
  }
  rec.a.state = rec.activated ? AllocationState::kActive : AllocationState::kReserved;
  rec.a.hold_expires = absl::InfinitePast();
  rec.a.held_end = absl::InfinitePast();
  rec.hold_until = 0;
  rec.padded = false;
  s.events.push_back({hold_id, rec.a.state, EndReason::kRedeemed, FromUs(s.now)});
  return rec.a;
}

absl::Status Matcher::Release(AllocationId id, absl::Time now_t) {
  State& s = *s_;
  s.AdvanceTo(Us(now_t));
  auto it = s.live.find(id);
  if (it == s.live.end()) {
    return absl::NotFoundError(absl::StrCat("allocation ", id, " not found or already ended"));
  }
  s.Finish(it, EndReason::kReleased, s.now);
  return absl::OkStatus();
}

absl::StatusOr<Allocation> Matcher::Extend(AllocationId id, absl::Time new_end_t,
                                           absl::Time now_t) {
  State& s = *s_;
  s.AdvanceTo(Us(now_t));
  auto it = s.live.find(id);
  if (it == s.live.end()) {
    return absl::NotFoundError(absl::StrCat("allocation ", id, " not found or already ended"));
  }
  LiveRec& rec = *it->second;
  if (rec.a.state == AllocationState::kHeld) {
    return absl::FailedPreconditionError("a binding quote cannot be extended; redeem it first");
  }
  const int64_t new_end = Us(new_end_t);
  if (new_end <= rec.end) {
    return absl::InvalidArgumentError("the new end must be after the allocation's current end");
  }
  if (new_end - rec.start > Us(absl::Hours(24 * 366))) {
    return absl::InvalidArgumentError("an allocation may last at most 366 days");
  }
  for (size_t i = 0; i < rec.a.slices.size(); ++i) {
    const Slice& sl = rec.a.slices[i];
    const NodeRec& n = s.nodes[sl.node];
    const Pool& p = s.pools[rec.slice_pool[i]];
    if (p.dead) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the offer on node '", n.id, "' was withdrawn; the allocation cannot be extended"));
    }
    if (p.until < new_end) {
      return absl::FailedPreconditionError(absl::StrCat("node '", n.id, "' is on sale only until ",
                                                        absl::FormatTime(FromUs(p.until))));
    }
    if (n.health != Health::kHealthy || n.removed) {
      return absl::FailedPreconditionError(
          absl::StrCat("node '", n.id, "' is ", HealthName(n.health), "; it cannot be extended"));
    }
    if (s.FreeOver(n, rec.end, new_end) < sl.gpus) {
      return absl::FailedPreconditionError(
          absl::StrCat("node '", n.id,
                       "' is sold to someone else before the new end; the same GPUs are not "
                       "free"));
    }
  }
  for (const Slice& sl : rec.a.slices) {
    for (Seg& sg : s.nodes[sl.node].segs) {
      if (sg.alloc == id) sg.end = new_end;
    }
    s.Reindex(sl.node);
  }
  rec.end = new_end;
  rec.a.end = FromUs(new_end);
  rec.a.total_price = PriceFor(rec.rate, FromUs(new_end) - rec.a.start);
  s.Schedule({new_end, EvKind::kEnd, id});
  return rec.a;
}

absl::StatusOr<Allocation> Matcher::Restore(const RestoreSpec& spec, absl::Time now_t) {
  State& s = *s_;
  s.AdvanceTo(Us(now_t));
  if (spec.id == 0) return absl::InvalidArgumentError("restore: allocation id 0");
  if (s.live.contains(spec.id)) {
    return absl::AlreadyExistsError(absl::StrCat("restore: allocation ", spec.id, " is live"));
  }
  const bool held = spec.state == AllocationState::kHeld;
  if (!held && spec.state != AllocationState::kReserved && spec.state != AllocationState::kActive) {
    return absl::InvalidArgumentError("restore: only held, reserved or active allocations");
  }
  const int64_t start = Us(spec.start), end = Us(spec.end);
  const int64_t e = held ? Us(spec.held_end) : end;
  if (start >= end || e < end) {
    return absl::InvalidArgumentError(
        absl::StrCat("restore: allocation ", spec.id, " has an empty or inverted interval"));
  }
  if (held && e > end && start > s.now) {
    // Only a start-now hold is held past its end, and it started when it was made.
    return absl::InvalidArgumentError(
        absl::StrCat("restore: hold ", spec.id, " is held past its end but starts in the future"));
  }
  if (spec.end - spec.start > absl::Hours(24 * 366) || spec.start - FromUs(s.now) > kHorizon) {
    return absl::InvalidArgumentError(
        absl::StrCat("restore: allocation ", spec.id, " lies beyond the horizon"));
  }
  if (spec.slices.empty()) return absl::InvalidArgumentError("restore: no slices");
  Pick pick;
  for (const RestoreSpec::Part& part : spec.slices) {
    auto nit = s.node_by_id.find(part.node_id);
    if (nit == s.node_by_id.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("restore: allocation ", spec.id, ": node '", part.node_id, "' is gone"));
    }
    const NodeRec& n = s.nodes[nit->second];
    if (part.gpus < 1 || part.gpus > n.cap) {
      return absl::InvalidArgumentError(absl::StrCat("restore: allocation ", spec.id, ": ",
                                                     part.gpus, " GPUs on node '", n.id, "'"));
    }
    // The offer it was sold under: one that covers the interval at the slice's price; a live
    // one if there is one, else a withdrawn one (what was sold under it stays sold).
    PoolIndex pool = 0;
    bool covered = false, live_offer = false;
    for (uint32_t oi : n.offers) {
      const OfferRec& o = s.offers[oi];
      if (o.from > start || e > o.until || o.price != part.price_per_gpu_hour) continue;
      if (!part.offer_id.empty() && o.id != part.offer_id) continue;
      if (covered && (live_offer || o.withdrawn)) continue;
      for (PoolIndex pi : o.pools) {
        const Pool& p = s.pools[pi];
        if (std::binary_search(p.nodes.begin(), p.nodes.end(), nit->second)) {
          pool = pi;
          covered = true;
          live_offer = !o.withdrawn;
        }
      }
    }
    if (!covered) {
      return absl::FailedPreconditionError(absl::StrCat("restore: allocation ", spec.id,
                                                        ": no offer on node '", n.id,
                                                        "' covers its interval at its price"));
    }
    if (s.FreeOver(n, start, e) < part.gpus) {
      return absl::FailedPreconditionError(absl::StrCat("restore: allocation ", spec.id, ": node '",
                                                        n.id, "' has not enough GPUs free"));
    }
    pick.takes.push_back({nit->second, part.gpus, pool, part.price_per_gpu_hour});
    pick.rate += int64_t{part.gpus} * part.price_per_gpu_hour;
  }
  std::sort(pick.takes.begin(), pick.takes.end(),
            [](const Take& a, const Take& b) { return a.node < b.node; });
  for (size_t i = 1; i < pick.takes.size(); ++i) {
    if (pick.takes[i].node == pick.takes[i - 1].node) {
      return absl::InvalidArgumentError("restore: two slices on one node");
    }
  }
  pick.ok = true;
  Allocation a;
  a.id = spec.id;
  a.buyer = spec.buyer;
  for (const Take& t : pick.takes) a.slices.push_back({t.node, t.gpus, t.price});
  a.start = spec.start;
  a.end = spec.end;
  a.total_price = PriceFor(pick.rate, spec.end - spec.start);
  a.state = held ? AllocationState::kHeld
                 : (start <= s.now ? AllocationState::kActive : AllocationState::kReserved);
  if (held) {
    a.hold_expires = spec.hold_expires;
    a.held_end = spec.held_end;
  }
  LiveRec& rec = s.Commit(std::move(a), pick, start, e);
  if (held) {
    rec.hold_until = Us(spec.hold_expires);
    rec.padded = e > end;
    s.Schedule({rec.hold_until, EvKind::kHoldLapse, spec.id});
  }
  s.next_id = std::max(s.next_id, spec.id + 1);
  const Allocation restored = rec.a;
  // What has ended while the broker was down ends now.
  s.RunTimeline(s.now);
  return restored;
}

void Matcher::Advance(absl::Time now_t) { s_->AdvanceTo(Us(now_t)); }

std::vector<AllocationEvent> Matcher::TakeEvents() {
  std::vector<AllocationEvent> out;
  out.swap(s_->events);
  return out;
}

const Allocation* Matcher::Find(AllocationId id) const {
  auto it = s_->live.find(id);
  return it == s_->live.end() ? nullptr : &it->second->a;
}

const std::string& Matcher::NodeId(NodeIndex node) const { return s_->nodes.at(node).id; }

std::optional<RestoreSpec> Matcher::RestoreSpecOf(AllocationId id) const {
  auto it = s_->live.find(id);
  if (it == s_->live.end()) return std::nullopt;
  const LiveRec& rec = *it->second;
  RestoreSpec spec;
  spec.id = rec.a.id;
  spec.buyer = rec.a.buyer;
  for (size_t i = 0; i < rec.a.slices.size(); ++i) {
    const Slice& sl = rec.a.slices[i];
    spec.slices.push_back({s_->nodes[sl.node].id, sl.gpus, sl.price_per_gpu_hour,
                           s_->offers[s_->pools[rec.slice_pool[i]].offer].id});
  }
  spec.start = rec.a.start;
  spec.end = rec.a.end;
  spec.state = rec.a.state;
  spec.hold_expires = rec.a.hold_expires;
  spec.held_end = rec.a.held_end;
  return spec;
}

MarketTotals Matcher::Totals() const {
  MarketTotals t;
  t.nodes = s_->active_nodes;
  t.gpus = s_->total_gpus;
  t.sold_gpus_now = s_->used_now;
  t.live_allocations = static_cast<int64_t>(s_->live.size());
  return t;
}

std::vector<CatalogLine> Matcher::Catalog() const {
  const State& s = *s_;
  std::vector<CatalogLine> out;
  for (const Pool& p : s.pools) {
    const OfferRec& o = s.offers[p.offer];
    if (p.dead || o.withdrawn || o.until <= s.now) continue;
    int32_t nodes = 0, free = 0;
    for (int f = 0; f <= p.cap; ++f) {
      nodes += p.count[f];
      free += f * p.count[f];
    }
    if (nodes == 0) continue;
    const DomainRec& d = s.domains[p.domain];
    CatalogLine line;
    line.offer_id = o.id;
    line.center_id = s.centers[p.center].id;
    line.domain_id = d.id;
    line.model = std::string(AllGpuModels()[p.model].name);
    line.gpus_per_node = p.cap;
    line.nodes = nodes;
    line.free_gpus = free;
    line.free_whole_nodes = p.count[p.cap];
    line.price_per_gpu_hour = o.price;
    line.from = FromUs(o.from);
    line.until = FromUs(o.until);
    line.min_lease = absl::Microseconds(o.min_lease);
    line.whole_node_only = o.whole_only;
    out.push_back(std::move(line));
  }
  std::sort(out.begin(), out.end(), [](const CatalogLine& a, const CatalogLine& b) {
    return std::tie(a.price_per_gpu_hour, a.offer_id, a.domain_id, a.model, a.gpus_per_node) <
           std::tie(b.price_per_gpu_hour, b.offer_id, b.domain_id, b.model, b.gpus_per_node);
  });
  return out;
}

absl::Time Matcher::NextEventTime() const {
  return s_->timeline.empty() ? absl::InfiniteFuture() : FromUs(s_->timeline.front().t);
}

void Matcher::ReserveIds(AllocationId next) { s_->next_id = std::max(s_->next_id, next); }

AuditReport Matcher::Audit() const {
  const State& s = *s_;
  AuditReport rep;
  auto problem = [&rep](std::string msg) {
    ++rep.violations;
    if (rep.problems.size() < 20) rep.problems.push_back(std::move(msg));
  };
  int64_t used_now = 0;
  for (NodeIndex ni = 0; ni < s.nodes.size(); ++ni) {
    const NodeRec& n = s.nodes[ni];
    int used = 0, future = 0;
    for (const Seg& a : n.segs) {
      if (a.start <= s.now && s.now < a.end) used += a.gpus;
      if (a.start > s.now) ++future;
      if (a.start >= a.end) problem(absl::StrCat("node ", n.id, ": empty interval"));
      // Oversell check at every point where usage can peak.
      int at = 0;
      for (const Seg& b : n.segs) {
        if (b.start <= a.start && a.start < b.end) at += b.gpus;
      }
      if (at > n.cap) {
        problem(absl::StrCat("node ", n.id, ": ", at, " GPUs sold at ",
                             absl::FormatTime(FromUs(a.start)), " of ", n.cap));
      }
      auto lit = s.live.find(a.alloc);
      if (lit == s.live.end()) {
        problem(absl::StrCat("node ", n.id, ": interval of unknown allocation ", a.alloc));
      }
    }
    used_now += used;
    if (n.free_now != n.cap - used) {
      problem(absl::StrCat("node ", n.id, ": free_now ", n.free_now, " but calendar says ",
                           n.cap - used));
    }
    if (n.future != future) problem(absl::StrCat("node ", n.id, ": future count mismatch"));
    const int want = State::DesiredRow(n);
    const int64_t want_ffs = State::DesiredFfs(n, s.now);
    const Brief brief = State::BriefOf(n, s.now);
    for (const Member& m : n.members) {
      const Pool& p = s.pools[m.pool];
      const Brief& kept = p.brief[m.local];
      if (!(kept == brief)) {
        problem(absl::StrCat("node ", n.id, ": brief is stale"));
      }
      if (m.row != want) problem(absl::StrCat("node ", n.id, ": indexed in the wrong row"));
      for (int r = 0; r <= p.cap; ++r) {
        const bool set = (p.Row(r)[m.local >> 6] >> (m.local & 63)) & 1;
        if (set != (r == m.row)) problem(absl::StrCat("node ", n.id, ": pool bit mismatch"));
      }
      // The keys the lists are kept under, from the row and brief, against the calendar's.
      const State::ListKeys keys = State::KeysOf(m.row, p.cap, kept);
      const bool listed =
          std::binary_search(p.future.begin(), p.future.end(), std::make_pair(want_ffs, m.local));
      if (keys.ffs != want_ffs || (want_ffs != kNever && !listed)) {
        problem(absl::StrCat("node ", n.id, ": future list mismatch"));
      }
      const int64_t want_busy = State::DesiredBusy(n);
      const bool in_clean =
          std::binary_search(p.clean.begin(), p.clean.end(), std::make_pair(want_busy, m.local));
      if (keys.busy != want_busy || (want_busy != kNever && !in_clean)) {
        problem(absl::StrCat("node ", n.id, ": clean list mismatch"));
      }
      const int64_t want_end = want_ffs == kNever ? kNever : brief.busy_all;
      if (want_end != kNever && !std::binary_search(p.future_by_end.begin(), p.future_by_end.end(),
                                                    std::make_pair(want_end, m.local))) {
        problem(absl::StrCat("node ", n.id, ": future_by_end list mismatch"));
      }
      const int64_t want_whole = want == p.cap ? want_ffs : kNever;
      if (want_whole != kNever && !std::binary_search(p.future_whole.begin(), p.future_whole.end(),
                                                      std::make_pair(want_whole, m.local))) {
        problem(absl::StrCat("node ", n.id, ": future_whole list mismatch"));
      }
    }
  }
  if (used_now != s.used_now) problem("sold GPUs now: running total disagrees with the calendar");
  for (const Pool& p : s.pools) {
    for (int r = 0; r <= p.cap; ++r) {
      int32_t bitsum = 0;
      for (uint32_t w = 0; w < p.words; ++w) bitsum += __builtin_popcountll(p.Row(r)[w]);
      if (bitsum != p.count[r]) problem("pool row count disagrees with its bits");
    }
    if (!std::is_sorted(p.future.begin(), p.future.end())) problem("pool future list unsorted");
    if (!std::is_sorted(p.clean.begin(), p.clean.end())) problem("pool clean list unsorted");
    size_t whole = 0;
    for (const auto& [ffs, local] : p.future) {
      whole += (p.Row(p.cap)[local >> 6] >> (local & 63)) & 1;
      if (((p.Row(p.cap)[local >> 6] >> (local & 63)) & 1) &&
          !std::binary_search(p.future_whole.begin(), p.future_whole.end(),
                              std::make_pair(ffs, local))) {
        problem("pool future_whole misses a node");
      }
    }
    if (whole != p.future_whole.size()) problem("pool future_whole size is stale");
    if (p.future_by_end.size() != p.future.size()) problem("pool future lists disagree");
    int32_t multi = 0;
    for (const auto& [busy, local] : p.future_by_end) {
      if (p.brief[local].busy_all != busy) problem("pool future_by_end key is stale");
      multi += p.brief[local].nfuture > 1 ? 1 : 0;
    }
    if (multi != static_cast<int32_t>(p.multi_future.size())) {
      problem("pool multi_future count is stale");
    }
    if (static_cast<int32_t>(p.future.size() + p.clean.size()) != s.SellableCount(p)) {
      problem("pool lists do not hold every sellable node once");
    }
    if (p.sellable != s.SellableCount(p) || p.whole_now != p.count[p.cap]) {
      problem("pool's cached counts disagree with its rows");
    }
    if (!p.dead && p.domain_pools != s.domains[p.domain].pools.size()) {
      problem("pool's count of its domain's pools is stale");
    }
  }
  for (const auto& [id, rec_ptr] : s.live) {
    const LiveRec& rec = *rec_ptr;
    int32_t g = 0;
    for (size_t i = 0; i < rec.a.slices.size(); ++i) {
      const Slice& sl = rec.a.slices[i];
      g += sl.gpus;
      const NodeRec& n = s.nodes[sl.node];
      int found = 0;
      for (const Seg& sg : n.segs) {
        if (sg.alloc == id) {
          ++found;
          if (sg.gpus != sl.gpus || sg.start != rec.start || sg.end != rec.end) {
            problem(absl::StrCat("allocation ", id, ": slice disagrees with the calendar"));
          }
        }
      }
      if (found != 1) problem(absl::StrCat("allocation ", id, ": slice not in the calendar"));
      const Pool& p = s.pools[rec.slice_pool[i]];
      if (sl.price_per_gpu_hour != p.price) problem(absl::StrCat("allocation ", id, ": price"));
      if (p.from > rec.start || p.until < rec.end) {
        problem(absl::StrCat("allocation ", id, ": outside its offer's window"));
      }
    }
    if (g != rec.a.gpus()) problem("gpus");
  }
  return rep;
}

}  // namespace suanli::scheduler
