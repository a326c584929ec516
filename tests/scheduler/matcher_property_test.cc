// Randomized property test: the Matcher against the brute-force ReferenceMatcher on small markets.
// Every operation is applied to both; every decision is compared:
//   - a request is granted exactly when the reference finds a feasible allocation;
//   - a grant is feasible, and optimal under the policy (same policy key as the reference's best
//     for fixed-size slices; the same price and the documented fill for any packing);
//   - a rejection has the reference's reason and hints;
//   - no node is ever sold beyond its GPUs at any instant (both the Matcher's audit and the
//     reference's own count).
// Seeds are printed on failure; SUANLI_PROPERTY_SEED=N replays one seed.
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "scheduler/gpu_models.h"
#include "scheduler/matcher.h"
#include "tests/scheduler/reference_matcher.h"

namespace suanli::scheduler {
namespace {

using testing::ReferenceMatcher;
using testing::RefResult;
using testing::RefTake;

constexpr int64_t kHour = 3'600'000'000;
const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

int64_t Us(absl::Time t) { return absl::ToUnixMicros(t); }
absl::Time At(int64_t us) { return absl::FromUnixMicros(us); }

const std::vector<std::string> kModels = {"H100-SXM5-80G", "H800-SXM5-80G", "A100-SXM4-80G"};
const std::vector<std::string> kRegions = {"cn-east-2", "cn-north-1", "cn-south-1"};
const std::vector<std::string> kTags = {"data-in-cn", "gov-cloud"};

class Driver {
 public:
  explicit Driver(uint64_t seed) : rng_(seed), seed_(seed) {}

  int64_t now() const { return now_; }

  void BuildMarket() {
    const int ops = Uniform(1, 3);
    const int centers = Uniform(2, 4);
    for (int c = 0; c < centers; ++c) {
      CenterSpec cs;
      cs.id = absl::StrCat("c", c);
      cs.operator_id = absl::StrCat("op", Uniform(0, ops - 1));
      cs.region = kRegions[Uniform(0, 1 + (c % 2))];
      cs.type = static_cast<CenterType>(Uniform(0, 2));
      if (Chance(0.4)) cs.tags.push_back(kTags[Uniform(0, 1)]);
      ASSERT_TRUE(m_->AddCenter(cs).ok());
      capacity_log_.push_back([cs](Matcher& m) { return m.AddCenter(cs); });
      ref_.AddCenter(cs);
      const int domains = Uniform(1, 3);
      for (int d = 0; d < domains; ++d) {
        DomainSpec ds;
        ds.center_id = cs.id;
        ds.id = absl::StrCat("d", d);
        ds.fabric = static_cast<Fabric>(Uniform(0, 3));
        ds.gbps = 100;
        ASSERT_TRUE(m_->AddDomain(ds).ok());
        capacity_log_.push_back([ds](Matcher& m) { return m.AddDomain(ds); });
        ref_.AddDomain(ds);
        const int nodes = Uniform(2, 5);
        const std::string& model = kModels[Uniform(0, 2)];
        std::vector<NodeSpec> batch;
        for (int n = 0; n < nodes; ++n) {
          NodeSpec ns;
          ns.id = absl::StrCat(cs.id, "-", ds.id, "-n", n);
          ns.center_id = cs.id;
          ns.domain_id = ds.id;
          ns.model = Chance(0.8) ? model : kModels[Uniform(0, 2)];
          static const int kCaps[] = {1, 2, 4, 8, 8};
          ns.gpus = kCaps[Uniform(0, 4)];
          batch.push_back(ns);
        }
        ASSERT_TRUE(m_->AddNodes(batch).ok());
        capacity_log_.push_back([batch](Matcher& m) { return m.AddNodes(batch); });
        for (const NodeSpec& ns : batch) {
          ref_.AddNode(ns);
          node_ids_.push_back(ns.id);
          node_center_.push_back(cs.id);
        }
        domain_keys_.emplace_back(cs.id, ds.id);
      }
    }
    // Most domains on sale from now; more offers come and go as the run goes on.
    for (const auto& [center, domain] : domain_keys_) {
      if (Chance(0.85)) DomainOffer(center, domain);
    }
    for (int i = 0; i < 2; ++i) RandomOffer();
  }

  void DomainOffer(const std::string& center, const std::string& domain) {
    OfferSpec o;
    o.id = absl::StrCat("o", next_offer_++);
    o.center_id = center;
    o.domain_id = domain;
    o.from = At(now_ - kHour);
    o.until = At(now_ + kHour * Uniform(100, 2000));
    o.price_per_gpu_hour = kMicrosPerUnit * Uniform(8, 14);
    o.whole_node_only = Chance(0.1);
    ASSERT_TRUE(m_->AddOffer(o, At(now_)).ok());
    LogOffer(o);
    ref_.AddOffer(o);
    offer_ids_.push_back(o.id);
  }

  void RandomOffer() {
    const auto& [center, domain] =
        domain_keys_[Uniform(0, static_cast<int>(domain_keys_.size()) - 1)];
    OfferSpec o;
    o.id = absl::StrCat("o", next_offer_++);
    o.center_id = center;
    if (Chance(0.7)) {
      o.domain_id = domain;
    } else {
      for (size_t i = 0; i < node_ids_.size(); ++i) {
        if (node_center_[i] == center && !ref_.node(i).removed && Chance(0.5)) {
          o.node_ids.push_back(node_ids_[i]);
        }
      }
      if (o.node_ids.empty()) o.domain_id = domain;
    }
    const int64_t from = now_ + kHour * Uniform(-4, 12);
    o.from = At(from);
    o.until = At(from + kHour * Uniform(4, 60));
    o.price_per_gpu_hour = kMicrosPerUnit * Uniform(8, 14) + (Chance(0.3) ? 500'000 : 0);
    if (Chance(0.15)) o.min_lease = absl::Hours(Uniform(1, 4));
    o.whole_node_only = Chance(0.15);
    const absl::Status st = m_->AddOffer(o, At(now_));
    // The reference's view of whether it may be added: some node, none on sale over an overlapping
    // window, not ended.
    bool empty = false;
    const bool overlap = OfferOverlaps(o, &empty);
    const bool past = Us(o.until) <= now_;
    if (overlap || past || empty) {
      EXPECT_FALSE(st.ok()) << "offer " << o.id << " should have been refused; seed " << seed_;
      return;
    }
    ASSERT_TRUE(st.ok()) << st << "; seed " << seed_;
    LogOffer(o);
    ref_.AddOffer(o);
    offer_ids_.push_back(o.id);
  }

  void LogOffer(const OfferSpec& o) {
    capacity_log_.push_back([o, t = now_](Matcher& m) { return m.AddOffer(o, At(t)); });
  }

  // A broker restart: a new Matcher rebuilt from the capacity calls and the live allocations,
  // as a store would keep them. The reference forgets operator recency the same way.
  void Restart() {
    auto fresh = std::make_unique<Matcher>();
    for (const auto& call : capacity_log_) ASSERT_TRUE(call(*fresh).ok()) << "seed " << seed_;
    for (const auto& [id, sold] : ref_.sold()) {
      const std::optional<RestoreSpec> spec = m_->RestoreSpecOf(id);
      ASSERT_TRUE(spec.has_value());
      absl::StatusOr<Allocation> r = fresh->Restore(*spec, At(now_));
      ASSERT_TRUE(r.ok()) << r.status() << " seed " << seed_ << " op " << op_;
    }
    fresh->Advance(At(now_));
    m_ = std::move(fresh);
    ref_.ResetRecency();
    ++restarts_;
  }

  bool OfferOverlaps(const OfferSpec& o, bool* empty) {
    // Rebuild the node set the way the reference does, then compare windows.
    std::vector<NodeIndex> covered;
    for (NodeIndex n = 0; n < ref_.node_count(); ++n) {
      const auto& nd = ref_.node(n);
      if (nd.removed || node_center_[n] != o.center_id) continue;
      const bool in =
          !o.domain_id.empty()
              ? node_ids_[n].find(absl::StrCat(o.center_id, "-", o.domain_id, "-")) == 0
              : std::find(o.node_ids.begin(), o.node_ids.end(), nd.id) != o.node_ids.end();
      if (in) covered.push_back(n);
    }
    *empty = covered.empty();
    for (const std::string& id : offer_ids_) {
      const auto& of = ref_.offer(ref_.OfferIndex(id));
      if (of.withdrawn) continue;
      if (!(of.from < Us(o.until) && Us(o.from) < of.until)) continue;
      for (NodeIndex n : covered) {
        if (std::find(of.nodes.begin(), of.nodes.end(), n) != of.nodes.end()) return true;
      }
    }
    return false;
  }

  Request RandomRequest() {
    Request r;
    r.buyer = absl::StrCat("b", Uniform(0, 2));
    if (Chance(0.6)) {
      r.models.push_back(kModels[Uniform(0, 2)]);
      if (Chance(0.4)) r.models.push_back(kModels[Uniform(0, 2)]);
    }
    const int shape = Uniform(0, 5);
    switch (shape) {
      case 0:  // inference on one node
        r.locality = Locality::kNode;
        r.gpus = Uniform(1, 4);
        break;
      case 1:  // whole nodes in a domain
        r.gpus_per_node = Chance(0.5) ? 8 : Uniform(1, 4);
        r.gpus = r.gpus_per_node * Uniform(1, 3);
        r.locality = Chance(0.5) ? Locality::kDomain : Locality::kCenter;
        break;
      case 2:  // any packing, grouped
        r.gpus = Uniform(1, 14);
        r.locality = static_cast<Locality>(Uniform(1, 3));
        break;
      case 3:  // fixed slices anywhere
        r.gpus_per_node = Uniform(1, 8);
        r.gpus = r.gpus_per_node * Uniform(1, 3);
        r.locality = Locality::kAny;
        break;
      default:
        r.gpus = Uniform(1, 12);
        r.locality = static_cast<Locality>(Uniform(0, 3));
        if (r.locality == Locality::kNode) r.gpus = Uniform(1, 8);
        break;
    }
    if (Chance(0.1)) r.min_fabric = static_cast<Fabric>(Uniform(0, 3));
    if (Chance(0.2)) r.regions.push_back(kRegions[Uniform(0, 2)]);
    if (Chance(0.1)) r.center_types.push_back(static_cast<CenterType>(Uniform(0, 2)));
    if (Chance(0.05)) r.required_tags.push_back(kTags[Uniform(0, 1)]);
    r.max_price_per_gpu_hour = kMicrosPerUnit * Uniform(8, 16);
    if (Chance(0.3)) r.start = At(now_ + kHour * Uniform(1, 24));
    r.duration = absl::Hours(Uniform(1, 8));
    if (Chance(0.05)) {
      // Minutes, so that holds can end before they lapse.
      r.start = At(now_ + int64_t{60'000'000} * Uniform(1, 40));
      r.duration = absl::Minutes(Uniform(1, 40));
    }
    return r;
  }

  // Checks the Matcher's grant against the reference's best, or its rejection against the
  // reference's reason and hints.
  void CheckDecision(const Request& r, const Decision& d, int64_t extra_end, const char* what) {
    const int64_t s = r.start.has_value() && Us(*r.start) > now_ ? Us(*r.start) : now_;
    const RefResult best = ref_.Best(r, s, true, 200000, extra_end);
    ++decisions_;
    const std::string ctx = absl::StrCat(what, " seed ", seed_, " op ", op_, " gpus ", r.gpus,
                                         " k ", r.gpus_per_node, " loc ", LocalityName(r.locality));
    ASSERT_EQ(d.granted, best.feasible)
        << ctx << " reason " << RejectReasonName(d.rejection.reason);
    ++reasons_[static_cast<int>(d.granted ? RejectReason::kNone : d.rejection.reason)];
    if (d.granted) {
      ++granted_;
      const Allocation& a = d.allocation;
      EXPECT_EQ(a.gpus(), r.gpus) << ctx;
      // The same choice: slices (node, GPUs) equal to the reference's optimum.
      ASSERT_EQ(a.slices.size(), best.takes.size()) << ctx;
      for (size_t i = 0; i < a.slices.size(); ++i) {
        EXPECT_EQ(a.slices[i].node, best.takes[i].node) << ctx << " slice " << i;
        EXPECT_EQ(a.slices[i].gpus, best.takes[i].gpus) << ctx << " slice " << i;
        EXPECT_EQ(a.slices[i].price_per_gpu_hour, ref_.offer(best.takes[i].offer).price) << ctx;
        if (r.gpus_per_node > 0) {
          EXPECT_EQ(a.slices[i].gpus, r.gpus_per_node) << ctx;
        }
      }
      if (r.locality == Locality::kNode) {
        EXPECT_EQ(a.slices.size(), 1u) << ctx;
      }
      int64_t rate = 0;
      for (const Slice& sl : a.slices) rate += int64_t{sl.gpus} * sl.price_per_gpu_hour;
      EXPECT_EQ(rate, best.key.rate) << ctx;
      return;
    }
    // The hints describe what was asked: for a start-now hold, the interval with its ttl.
    const Rejection& rj = d.rejection;
    if (!ref_.AnyStaticMatch(r, now_)) {
      EXPECT_EQ(rj.reason, RejectReason::kNoMatchingCapacity) << ctx;
      return;
    }
    EXPECT_EQ(rj.largest_block, ref_.LargestBlock(r, s, extra_end)) << ctx;
    const std::optional<Micros> ceiling = ref_.MinCeiling(r, s, extra_end);
    if (ceiling.has_value()) {
      EXPECT_EQ(rj.reason, RejectReason::kPriceAboveCeiling) << ctx;
      EXPECT_EQ(rj.min_ceiling, ceiling) << ctx;
      return;
    }
    EXPECT_EQ(rj.reason, RejectReason::kInsufficientCapacity) << ctx;
    const std::optional<int64_t> earliest = ref_.EarliestStart(r, s, extra_end);
    ASSERT_EQ(rj.earliest_start.has_value(), earliest.has_value()) << ctx;
    if (earliest.has_value()) {
      EXPECT_EQ(Us(*rj.earliest_start), *earliest) << ctx;
    }
  }

  // The Matcher's slices with the offer each was sold under (the one live offer covering it).
  std::vector<RefTake> TakesOf(const Allocation& a, int64_t start, int64_t end) {
    std::vector<RefTake> t;
    for (const Slice& sl : a.slices) {
      t.push_back({sl.node, sl.gpus, ref_.CoveringOffer(sl.node, start, end)});
    }
    return t;
  }

  void AdvanceBoth(int64_t to) {
    now_ = std::max(now_, to);
    m_->Advance(At(now_));
    // The reference forgets what ended: holds that lapsed, sales whose end came.
    std::vector<uint64_t> gone;
    for (const auto& [id, sold] : ref_.sold()) {
      auto h = hold_until_.find(id);
      if (h != hold_until_.end()) {
        // A hold lapses at its expiry, or at the end of what it holds if that comes first.
        if (h->second <= now_ || sold.end <= now_) gone.push_back(id);
      } else if (sold.end <= now_) {
        gone.push_back(id);
      }
    }
    for (uint64_t id : gone) {
      ref_.End(id);
      hold_until_.erase(id);
      holds_.erase(id);
    }
    for (const auto& [id, sold] : ref_.sold()) {
      ASSERT_NE(m_->Find(id), nullptr) << "allocation " << id << " ended early; seed " << seed_;
    }
  }

  void Step() {
    ++op_;
    const int op = Uniform(0, 999) / 10;
    if (op < 55) {
      const Request r = RandomRequest();
      if (Chance(0.1)) {
        absl::StatusOr<Decision> q = m_->Quote(r, At(now_));
        ASSERT_TRUE(q.ok()) << q.status();
        CheckDecision(r, *q, 0, "quote");
      }
      absl::StatusOr<Decision> d = m_->Allocate(r, At(now_));
      ASSERT_TRUE(d.ok()) << d.status();
      CheckDecision(r, *d, 0, "allocate");
      if (::testing::Test::HasFatalFailure()) return;
      if (d->granted) {
        const Allocation& a = d->allocation;
        ref_.RecordSale(a.id, Us(a.start), Us(a.end), TakesOf(a, Us(a.start), Us(a.end)), false);
      }
    } else if (op < 60) {
      const Request r = RandomRequest();
      const int64_t ttl = int64_t{60'000'000} * Uniform(1, 59);
      absl::StatusOr<Decision> d = m_->Hold(r, absl::Microseconds(ttl), At(now_));
      ASSERT_TRUE(d.ok()) << d.status();
      const bool start_now = !(r.start.has_value() && Us(*r.start) > now_);
      CheckDecision(r, *d, start_now ? ttl : 0, "hold");
      if (::testing::Test::HasFatalFailure()) return;
      if (d->granted) {
        const Allocation& a = d->allocation;
        const int64_t held_end = Us(a.end) + (start_now ? ttl : 0);
        ref_.RecordSale(a.id, Us(a.start), held_end, TakesOf(a, Us(a.start), held_end), true);
        hold_until_[a.id] = now_ + ttl;
        holds_[a.id] = {start_now, Us(a.end) - Us(a.start), a.buyer};
      }
    } else if (op < 66) {
      if (holds_.empty()) return;
      auto it = holds_.begin();
      std::advance(it, Uniform(0, static_cast<int>(holds_.size()) - 1));
      const uint64_t id = it->first;
      const HoldInfo h = it->second;
      if (Chance(0.2)) {
        EXPECT_EQ(m_->Redeem(id, "someone-else", At(now_)).status().code(),
                  absl::StatusCode::kPermissionDenied);
      }
      absl::StatusOr<Allocation> a = m_->Redeem(id, h.buyer, At(now_));
      ASSERT_TRUE(a.ok()) << a.status() << " seed " << seed_;
      if (h.start_now) {
        EXPECT_EQ(Us(a->start), now_);
        ref_.SetInterval(id, now_, now_ + h.duration);
      }
      EXPECT_EQ(Us(a->end) - Us(a->start), h.duration);
      ref_.Unhold(id);
      hold_until_.erase(id);
      holds_.erase(id);
      EXPECT_EQ(m_->Redeem(id, h.buyer, At(now_)).status().code(), absl::StatusCode::kNotFound);
    } else if (op < 74) {
      const uint64_t id = PickLive();
      if (id == 0) return;
      ASSERT_TRUE(m_->Release(id, At(now_)).ok());
      ref_.End(id);
      EXPECT_EQ(m_->Release(id, At(now_)).code(), absl::StatusCode::kNotFound);
    } else if (op < 82) {
      const uint64_t id = PickLive();
      if (id == 0) return;
      const auto& sold = ref_.sold().at(id);
      const int64_t new_end = sold.end + kHour * Uniform(1, 12);
      bool can = true;
      for (const RefTake& t : sold.takes) {
        const auto& nd = ref_.node(t.node);
        if (nd.removed || nd.health != Health::kHealthy) can = false;
        if (ref_.FreeOver(t.node, sold.end, new_end) < t.gpus) can = false;
        // The same offer must still be on sale and reach the new end.
        if (t.offer < 0 || ref_.offer(t.offer).withdrawn || ref_.offer(t.offer).until < new_end) {
          can = false;
        }
      }
      absl::StatusOr<Allocation> a = m_->Extend(id, At(new_end), At(now_));
      ASSERT_EQ(a.ok(), can) << a.status() << " seed " << seed_ << " op " << op_;
      if (a.ok()) ref_.SetInterval(id, sold.start, new_end);
    } else if (op < 90) {
      AdvanceBoth(now_ + Uniform(0, 3) * kHour + Uniform(0, 1) * int64_t{1'800'000'000});
    } else if (op < 94) {
      const NodeIndex n =
          static_cast<NodeIndex>(Uniform(0, static_cast<int>(ref_.node_count()) - 1));
      if (ref_.node(n).removed) return;
      const Health h = Chance(0.7) ? Health::kHealthy : static_cast<Health>(Uniform(1, 2));
      ASSERT_TRUE(m_->SetNodeHealth(node_ids_[n], h).ok());
      capacity_log_.push_back(
          [id = node_ids_[n], h](Matcher& m) { return m.SetNodeHealth(id, h); });
      ref_.SetHealth(n, h);
    } else if (op < 97) {
      RandomOffer();
    } else if (op == 97 && Chance(0.3)) {
      Restart();
    } else if (op < 98) {
      if (offer_ids_.empty()) return;
      const std::string id = offer_ids_[Uniform(0, static_cast<int>(offer_ids_.size()) - 1)];
      const bool was = ref_.offer(ref_.OfferIndex(id)).withdrawn;
      const absl::Status st = m_->WithdrawOffer(id, At(now_));
      EXPECT_EQ(st.ok(), !was) << st;
      if (st.ok()) {
        capacity_log_.push_back([id, t = now_](Matcher& m) { return m.WithdrawOffer(id, At(t)); });
      }
      ref_.WithdrawOffer(id);
    } else if (Chance(0.1)) {
      const NodeIndex n =
          static_cast<NodeIndex>(Uniform(0, static_cast<int>(ref_.node_count()) - 1));
      if (ref_.node(n).removed) return;
      bool busy = false;
      for (const auto& [id, sold] : ref_.sold()) {
        for (const RefTake& t : sold.takes) busy |= t.node == n;
      }
      const absl::Status st = m_->RemoveNode(node_ids_[n]);
      ASSERT_EQ(st.ok(), !busy) << st;
      if (st.ok()) {
        ref_.RemoveNode(n);
        capacity_log_.push_back([id = node_ids_[n]](Matcher& m) { return m.RemoveNode(id); });
      }
    }
  }

  void CheckInvariants() {
    const AuditReport rep = m_->Audit();
    ASSERT_EQ(rep.violations, 0) << "seed " << seed_ << " op " << op_ << ": "
                                 << (rep.problems.empty() ? "" : rep.problems[0]);
    ASSERT_EQ(ref_.Oversold(), 0) << "seed " << seed_;
    for (const auto& [id, sold] : ref_.sold()) {
      const Allocation* a = m_->Find(id);
      ASSERT_NE(a, nullptr) << "seed " << seed_;
    }
    EXPECT_EQ(m_->Totals().live_allocations, static_cast<int64_t>(ref_.sold().size()))
        << "seed " << seed_ << " op " << op_;
  }

  int64_t decisions() const { return decisions_; }
  int64_t restarts() const { return restarts_; }
  const std::map<int, int64_t>& reasons() const { return reasons_; }
  int64_t granted() const { return granted_; }
  int64_t ops() const { return op_; }

 private:
  struct HoldInfo {
    bool start_now;
    int64_t duration;
    std::string buyer;
  };

  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool Chance(double p) { return std::bernoulli_distribution(p)(rng_); }

  uint64_t PickLive() {
    std::vector<uint64_t> ids;
    for (const auto& [id, sold] : ref_.sold()) {
      if (!holds_.count(id)) ids.push_back(id);
    }
    if (ids.empty()) return 0;
    return ids[Uniform(0, static_cast<int>(ids.size()) - 1)];
  }

  std::mt19937_64 rng_;
  uint64_t seed_;
  int64_t now_ = Us(kT0);
  std::unique_ptr<Matcher> m_ = std::make_unique<Matcher>();
  // Every capacity call that succeeded, in order, to rebuild a Matcher on a restart.
  std::vector<std::function<absl::Status(Matcher&)>> capacity_log_;
  ReferenceMatcher ref_;
  std::vector<std::string> node_ids_, node_center_, offer_ids_;
  std::vector<std::pair<std::string, std::string>> domain_keys_;
  std::map<uint64_t, int64_t> hold_until_;
  std::map<uint64_t, HoldInfo> holds_;
  int next_offer_ = 0;
  int64_t op_ = 0, decisions_ = 0, granted_ = 0, restarts_ = 0;
  std::map<int, int64_t> reasons_;
};

int Scale() {
  const char* s = std::getenv("SUANLI_PROPERTY_SCALE");
  const int v = s == nullptr ? 1 : std::atoi(s);
  return v < 1 ? 1 : v;
}

TEST(MatcherProperty, AgreesWithBruteForceReference) {
  int first = 1, last = 1000 / Scale();
  if (const char* one = std::getenv("SUANLI_PROPERTY_SEED")) first = last = std::atoi(one);
  constexpr int kOpsPerSeed = 1200;
  int64_t ops = 0, decisions = 0, granted = 0, restarts = 0;
  std::map<int, int64_t> reasons;
  for (int seed = first; seed <= last; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed, " (replay: SUANLI_PROPERTY_SEED=", seed, ")"));
    Driver d(static_cast<uint64_t>(seed));
    d.BuildMarket();
    if (HasFatalFailure()) return;
    for (int i = 0; i < kOpsPerSeed; ++i) {
      d.Step();
      if (HasFatalFailure()) return;
      if (i % 50 == 0) {
        d.CheckInvariants();
        if (HasFatalFailure()) return;
      }
    }
    d.CheckInvariants();
    if (HasFatalFailure()) return;
    ops += d.ops();
    decisions += d.decisions();
    granted += d.granted();
    restarts += d.restarts();
    for (const auto& [r, n] : d.reasons()) reasons[r] += n;
  }
  std::printf("property: %lld operations, %lld decisions compared (%lld granted), %lld restarts\n",
              static_cast<long long>(ops), static_cast<long long>(decisions),
              static_cast<long long>(granted), static_cast<long long>(restarts));
  for (const auto& [r, n] : reasons) {
    std::printf("  %-22s %lld\n",
                r == 0 ? "granted" : RejectReasonName(static_cast<RejectReason>(r)),
                static_cast<long long>(n));
  }
  // The run must have exercised every outcome broadly, and restarts.
  EXPECT_GT(restarts, 100);
  EXPECT_GT(granted, decisions / 5);
  for (RejectReason r : {RejectReason::kNoMatchingCapacity, RejectReason::kPriceAboveCeiling,
                         RejectReason::kInsufficientCapacity}) {
    EXPECT_GT(reasons[static_cast<int>(r)], decisions / 50) << RejectReasonName(r);
  }
}

}  // namespace
}  // namespace suanli::scheduler
