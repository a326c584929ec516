// Rule-by-rule tests of the allocation core (scheduler/matcher.h). The randomized comparison with
// a brute-force reference lives in matcher_property_test.cc.
#include "scheduler/matcher.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace suanli::scheduler {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);
constexpr Micros kUnit = kMicrosPerUnit;

// A small market: builders for centers, domains, nodes and offers, and request helpers.
class MatcherTest : public ::testing::Test {
 protected:
  void Center(const std::string& id, const std::string& op = "op1",
              const std::string& region = "cn-east-2", CenterType type = CenterType::kCarrier,
              std::vector<std::string> tags = {}) {
    CenterSpec c;
    c.id = id;
    c.operator_id = op;
    c.name = id;
    c.region = region;
    c.type = type;
    c.tags = std::move(tags);
    ASSERT_TRUE(m_.AddCenter(c).ok());
  }
  void Domain(const std::string& center, const std::string& id,
              Fabric fabric = Fabric::kInfiniband) {
    ASSERT_TRUE(m_.AddDomain({center, id, fabric, 400}).ok());
  }
  // Adds `count` nodes named center-domain-i.
  void Nodes(const std::string& center, const std::string& domain, int count, int gpus = 8,
             const std::string& model = "H100-SXM5-80G") {
    std::vector<NodeSpec> batch;
    batch.reserve(static_cast<size_t>(count));
    for (int i = 0; i < count; ++i) {
      batch.push_back({absl::StrCat(center, "-", domain, "-", i), center, domain, model, gpus});
    }
    ASSERT_TRUE(m_.AddNodes(batch).ok());
  }
  void Offer(const std::string& id, const std::string& center, const std::string& domain,
             double price, absl::Duration until = absl::Hours(24 * 30),
             absl::Duration from = absl::ZeroDuration(), bool whole_only = false,
             absl::Duration min_lease = absl::ZeroDuration()) {
    OfferSpec o;
    o.id = id;
    o.center_id = center;
    o.domain_id = domain;
    o.from = kT0 + from;
    o.until = kT0 + until;
    o.price_per_gpu_hour = static_cast<Micros>(price * kUnit);
    o.whole_node_only = whole_only;
    o.min_lease = min_lease;
    ASSERT_TRUE(m_.AddOffer(o, kT0).ok());
  }
  static Request Ask(int gpus, int per_node, Locality loc, double ceiling = 100,
                     absl::Duration d = absl::Hours(4)) {
    Request r;
    r.buyer = "buyer1";
    r.gpus = gpus;
    r.gpus_per_node = per_node;
    r.locality = loc;
    r.max_price_per_gpu_hour = static_cast<Micros>(ceiling * kUnit);
    r.duration = d;
    return r;
  }
  Decision Must(const Request& r, absl::Time now = kT0) {
    absl::StatusOr<Decision> d = m_.Allocate(r, now);
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? *d : Decision{};
  }
  std::vector<std::string> NodesOf(const Allocation& a) {
    std::vector<std::string> out;
    for (const Slice& s : a.slices) out.push_back(m_.NodeId(s.node));
    return out;
  }
  // One center c1 with one domain d1 of `nodes` nodes, all on sale in offer o1 for 30 days.
  void SmallMarket(int nodes, int gpus = 8, double price = 10) {
    Center("c1");
    Domain("c1", "d1");
    Nodes("c1", "d1", nodes, gpus);
    Offer("o1", "c1", "d1", price);
  }
  // One center c1 with domains d1 and d2 of two 8-GPU nodes each, on sale at the same price.
  void TwoDomains() {
    Center("c1");
    for (const char* d : {"d1", "d2"}) {
      Domain("c1", d);
      Nodes("c1", d, 2);
      Offer(absl::StrCat("o-", d), "c1", d, 10);
    }
  }
  void ExpectClean() {
    const AuditReport rep = m_.Audit();
    EXPECT_EQ(rep.violations, 0) << (rep.problems.empty() ? "" : rep.problems[0]);
  }

  Matcher m_;
};

// ---- validation

TEST_F(MatcherTest, InvalidRequestsAreRefusedAndChangeNothing) {
  SmallMarket(2);
  struct Case {
    const char* what;
    Request r;
  };
  std::vector<Case> cases;
  cases.push_back({"zero gpus", Ask(0, 0, Locality::kAny)});
  cases.push_back({"not a multiple", Ask(6, 4, Locality::kDomain)});
  cases.push_back({"too big for a node", Ask(24, 0, Locality::kNode)});
  cases.push_back({"node packing mismatch", Ask(4, 2, Locality::kNode)});
  Request no_duration = Ask(1, 0, Locality::kAny);
  no_duration.duration = absl::ZeroDuration();
  cases.push_back({"zero duration", no_duration});
  cases.push_back({"zero ceiling", Ask(1, 0, Locality::kAny, 0)});
  Request unknown = Ask(1, 0, Locality::kAny);
  unknown.models = {"H100-PCIE-FAKE"};
  cases.push_back({"unknown model", unknown});
  for (const Case& c : cases) {
    absl::StatusOr<Decision> d = m_.Allocate(c.r, kT0);
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_FALSE(d.status().message().empty()) << c.what;
  }
  EXPECT_EQ(m_.Totals().live_allocations, 0);
  EXPECT_EQ(m_.Totals().sold_gpus_now, 0);
}

TEST_F(MatcherTest, CapacityErrorsNameTheProblemAndChangeNothing) {
  Center("c1");
  EXPECT_EQ(m_.AddCenter({"c1", "op1", "n", "cn-east-2", CenterType::kCarrier, {}}).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(m_.AddDomain({"nope", "d1", Fabric::kRoce, 200}).code(), absl::StatusCode::kNotFound);
  Domain("c1", "d1");
  // A batch with one bad node adds none.
  std::vector<NodeSpec> batch = {{"n1", "c1", "d1", "H100-SXM5-80G", 8},
                                 {"n2", "c1", "d1", "NOT-A-GPU", 8}};
  EXPECT_EQ(m_.AddNodes(batch).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m_.Totals().nodes, 0);
  batch = {{"n1", "c1", "d1", "H100-SXM5-80G", 8}, {"n1", "c1", "d1", "H100-SXM5-80G", 8}};
  EXPECT_EQ(m_.AddNodes(batch).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(m_.Totals().nodes, 0);
  Nodes("c1", "d1", 1);
  Offer("o1", "c1", "d1", 10, absl::Hours(100));
  OfferSpec overlap;
  overlap.id = "o2";
  overlap.center_id = "c1";
  overlap.domain_id = "d1";
  overlap.from = kT0 + absl::Hours(50);
  overlap.until = kT0 + absl::Hours(200);
  overlap.price_per_gpu_hour = kUnit;
  EXPECT_EQ(m_.AddOffer(overlap, kT0).code(), absl::StatusCode::kFailedPrecondition);
  overlap.from = kT0 - absl::Hours(10);
  overlap.until = kT0 - absl::Hours(1);
  EXPECT_EQ(m_.AddOffer(overlap, kT0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m_.WithdrawOffer("o2", kT0).code(), absl::StatusCode::kNotFound);
}

// ---- feasibility rules

TEST_F(MatcherTest, GangStaysInsideOneDomain) {
  TwoDomains();
  // Three whole nodes exist in the center, but no domain holds three.
  Decision d = Must(Ask(24, 8, Locality::kDomain));
  EXPECT_FALSE(d.granted);
  EXPECT_EQ(d.rejection.reason, RejectReason::kInsufficientCapacity);
  EXPECT_EQ(d.rejection.largest_block, 16);
  // A two-node gang sits in one domain.
  d = Must(Ask(16, 8, Locality::kDomain));
  ASSERT_TRUE(d.granted);
  ASSERT_EQ(d.allocation.slices.size(), 2u);
  EXPECT_EQ(NodesOf(d.allocation), (std::vector<std::string>{"c1-d1-0", "c1-d1-1"}));
  // Locality center may span domains.
  Request spread = Ask(16, 8, Locality::kCenter);
  EXPECT_FALSE(Must(Ask(24, 8, Locality::kCenter)).granted);
  EXPECT_TRUE(Must(spread).granted);
  ExpectClean();
}

TEST_F(MatcherTest, NodeLocalityPutsEveryGpuOnOneNode) {
  SmallMarket(2, 4);
  Decision d = Must(Ask(6, 0, Locality::kNode));
  EXPECT_FALSE(d.granted);  // 8 GPUs free, but no node has 6
  EXPECT_EQ(d.rejection.reason, RejectReason::kNoMatchingCapacity);
  ASSERT_TRUE(Must(Ask(3, 0, Locality::kNode)).granted);
  d = Must(Ask(2, 0, Locality::kNode, 100));
  ASSERT_TRUE(d.granted);
  EXPECT_EQ(d.allocation.slices.size(), 1u);
  d = Must(Ask(4, 0, Locality::kNode));
  EXPECT_FALSE(d.granted);  // 3 GPUs free, on two nodes
  EXPECT_EQ(d.rejection.reason, RejectReason::kInsufficientCapacity);
  EXPECT_EQ(d.rejection.largest_block, 2);
  d = Must(Ask(3, 0, Locality::kAny));
  ASSERT_TRUE(d.granted);
  EXPECT_EQ(d.allocation.slices.size(), 2u);
}

TEST_F(MatcherTest, SlicesHaveExactlyGpusPerNode) {
  SmallMarket(3);
  Decision d = Must(Ask(12, 4, Locality::kDomain));
  ASSERT_TRUE(d.granted);
  ASSERT_EQ(d.allocation.slices.size(), 3u);
  for (const Slice& s : d.allocation.slices) EXPECT_EQ(s.gpus, 4);
}

TEST_F(MatcherTest, OnlyHealthyNodesAreSold) {
  SmallMarket(1);
  ASSERT_TRUE(m_.SetNodeHealth("c1-d1-0", Health::kDegraded).ok());
  Decision d = Must(Ask(1, 0, Locality::kNode));
  EXPECT_FALSE(d.granted);
  EXPECT_EQ(d.rejection.reason, RejectReason::kNoMatchingCapacity);
  ASSERT_TRUE(m_.SetNodeHealth("c1-d1-0", Health::kHealthy).ok());
  EXPECT_TRUE(Must(Ask(1, 0, Locality::kNode)).granted);
  EXPECT_EQ(m_.SetNodeHealth("ghost", Health::kDown).code(), absl::StatusCode::kNotFound);
}

TEST_F(MatcherTest, StaticFiltersMatchModelRegionTypeTagsAndFabric) {
  Center("c1", "op1", "cn-east-2", CenterType::kGovernment, {"data-in-cn"});
  Domain("c1", "ib", Fabric::kInfiniband);
  Nodes("c1", "ib", 1, 8, "A800-SXM4-80G");
  Offer("o1", "c1", "ib", 10);
  Request r = Ask(1, 0, Locality::kNode);
  r.models = {"A800-SXM4-80G"};
  r.regions = {"cn-east-2"};
  r.center_types = {CenterType::kGovernment};
  r.required_tags = {"data-in-cn"};
  r.min_fabric = Fabric::kInfiniband;
  EXPECT_TRUE(m_.Quote(r, kT0)->granted);
  for (int i = 0; i < 5; ++i) {
    Request bad = r;
    switch (i) {
      case 0:
        bad.models = {"H100-SXM5-80G"};
        break;
      case 1:
        bad.regions = {"cn-north-1"};
        break;
      case 2:
        bad.center_types = {CenterType::kInternet};
        break;
      case 3:
        bad.required_tags = {"gov-cloud"};
        break;
      case 4:
        bad.min_fabric = Fabric::kNvlink;
        break;
    }
    absl::StatusOr<Decision> d = m_.Quote(bad, kT0);
    ASSERT_TRUE(d.ok());
    EXPECT_FALSE(d->granted) << i;
    EXPECT_EQ(d->rejection.reason, RejectReason::kNoMatchingCapacity) << i;
  }
}

TEST_F(MatcherTest, OfferWindowMustCoverTheWholeInterval) {
  Center("c1");
  Domain("c1", "d1");
  Nodes("c1", "d1", 1);
  Offer("o1", "c1", "d1", 10, /*until=*/absl::Hours(10), /*from=*/absl::Hours(2));
  Decision d = Must(Ask(8, 8, Locality::kNode, 100, absl::Hours(4)));
  EXPECT_FALSE(d.granted);  // starts before the window opens
  ASSERT_TRUE(d.rejection.earliest_start.has_value());
  EXPECT_EQ(*d.rejection.earliest_start, kT0 + absl::Hours(2));
  Request later = Ask(8, 8, Locality::kNode, 100, absl::Hours(4));
  later.start = kT0 + absl::Hours(2);
  d = Must(later);
  ASSERT_TRUE(d.granted);
  EXPECT_EQ(d.allocation.state, AllocationState::kReserved);
  Request too_long = Ask(1, 0, Locality::kNode, 100, absl::Hours(9));
  too_long.start = kT0 + absl::Hours(2);
  EXPECT_FALSE(Must(too_long).granted);  // would end after the window closes
}

TEST_F(MatcherTest, MinimumLeaseAndWholeNodeOnlyOffersAreKept) {
  Center("c1");
  Domain("c1", "d1");
  Domain("c1", "d2");
  Nodes("c1", "d1", 1);
  Nodes("c1", "d2", 1);
  Offer("o1", "c1", "d1", 10, absl::Hours(1000), absl::ZeroDuration(), /*whole_only=*/true);
  Offer("o2", "c1", "d2", 10, absl::Hours(1000), absl::ZeroDuration(), false,
        /*min_lease=*/absl::Hours(24));
  EXPECT_FALSE(Must(Ask(2, 0, Locality::kNode, 100, absl::Hours(4))).granted);
  Decision whole = Must(Ask(8, 8, Locality::kNode, 100, absl::Hours(4)));
  ASSERT_TRUE(whole.granted);
  EXPECT_EQ(NodesOf(whole.allocation), std::vector<std::string>{"c1-d1-0"});
  EXPECT_TRUE(Must(Ask(2, 0, Locality::kNode, 100, absl::Hours(24))).granted);
}

// ---- policy

TEST_F(MatcherTest, LowestTotalPriceWins) {
  Center("c1");
  Center("c2", "op2");
  Domain("c1", "d1");
  Domain("c2", "d1");
  Nodes("c1", "d1", 1);
  Nodes("c2", "d1", 1);
  Offer("o1", "c1", "d1", 12);
  Offer("o2", "c2", "d1", 11);
  Decision d = Must(Ask(4, 0, Locality::kNode));
  ASSERT_TRUE(d.granted);
  EXPECT_EQ(NodesOf(d.allocation), std::vector<std::string>{"c2-d1-0"});
  EXPECT_EQ(d.allocation.slices[0].price_per_gpu_hour, 11 * kUnit);
  EXPECT_EQ(d.allocation.total_price, kUnit * 4 * 11 * 4);  // 4 GPUs x 11 x 4 h
}

TEST_F(MatcherTest, TiesGoToTheTightestFit) {
  TwoDomains();
  // First GPU: every node is whole, every domain untouched: the lowest node.
  Decision a = Must(Ask(2, 0, Locality::kNode));
  ASSERT_TRUE(a.granted);
  EXPECT_EQ(NodesOf(a.allocation), std::vector<std::string>{"c1-d1-0"});
  // The next small request goes to the broken node (best fit), not a whole one.
  Decision b = Must(Ask(3, 0, Locality::kNode));
  EXPECT_EQ(NodesOf(b.allocation), std::vector<std::string>{"c1-d1-0"});
  // A request the broken node cannot hold breaks a node in the already broken domain, keeping
  // domain d2 whole for a gang.
  Decision c = Must(Ask(4, 0, Locality::kNode));
  EXPECT_EQ(NodesOf(c.allocation), std::vector<std::string>{"c1-d1-1"});
  Decision gang = Must(Ask(16, 8, Locality::kDomain));
  ASSERT_TRUE(gang.granted);
  EXPECT_EQ(NodesOf(gang.allocation), (std::vector<std::string>{"c1-d2-0", "c1-d2-1"}));
  ExpectClean();
}

TEST_F(MatcherTest, TiesAfterFitGoToTheOperatorLeastRecentlySoldTo) {
  Center("c1", "op1", "cn-east-2");
  Center("c2", "op2", "cn-north-1");
  Domain("c1", "d1");
  Domain("c2", "d1");
  Nodes("c1", "d1", 2);
  Nodes("c2", "d1", 2);
  Offer("o1", "c1", "d1", 10);
  Offer("o2", "c2", "d1", 10);
  // Touch both domains: op1 sells first, then op2.
  ASSERT_EQ(NodesOf(Must(Ask(8, 8, Locality::kNode)).allocation),
            std::vector<std::string>{"c1-d1-0"});
  Request north = Ask(8, 8, Locality::kNode);
  north.regions = {"cn-north-1"};
  ASSERT_EQ(NodesOf(Must(north).allocation), std::vector<std::string>{"c2-d1-0"});
  // Equal price and fit: op1 was sold to least recently.
  EXPECT_EQ(NodesOf(Must(Ask(8, 8, Locality::kNode)).allocation),
            std::vector<std::string>{"c1-d1-1"});
  EXPECT_EQ(NodesOf(Must(Ask(8, 8, Locality::kNode)).allocation),
            std::vector<std::string>{"c2-d1-1"});
}

TEST_F(MatcherTest, AnyPackingTakesTheCheapestGpusFirst) {
  Center("c1");
  Domain("c1", "d1");
  Domain("c1", "d2");
  Nodes("c1", "d1", 1);
  Nodes("c1", "d2", 1);
  Offer("o1", "c1", "d1", 20);
  Offer("o2", "c1", "d2", 10);
  Decision d = Must(Ask(10, 0, Locality::kAny));
  ASSERT_TRUE(d.granted);
  ASSERT_EQ(d.allocation.slices.size(), 2u);
  EXPECT_EQ(m_.NodeId(d.allocation.slices[0].node), "c1-d1-0");
  EXPECT_EQ(d.allocation.slices[0].gpus, 2);  // the dearer node gives only what is missing
  EXPECT_EQ(d.allocation.slices[1].gpus, 8);
}

// ---- rejections and hints

TEST_F(MatcherTest, PriceRejectionSaysTheCeilingThatWouldFit) {
  SmallMarket(1, 8, 25.5);
  Decision d = Must(Ask(8, 8, Locality::kNode, 20));
  EXPECT_FALSE(d.granted);
  EXPECT_EQ(d.rejection.reason, RejectReason::kPriceAboveCeiling);
  EXPECT_EQ(d.rejection.min_ceiling, 25'500'000);
  EXPECT_NE(d.rejection.message.find("25.500000"), std::string::npos) << d.rejection.message;
  EXPECT_EQ(m_.Totals().live_allocations, 0);  // a rejection takes nothing
}

TEST_F(MatcherTest, CapacityRejectionSaysTheLargestBlockAndEarliestStart) {
  SmallMarket(2);
  Decision first = Must(Ask(8, 8, Locality::kNode, 100, absl::Hours(5)));
  ASSERT_TRUE(first.granted);
  Decision d = Must(Ask(16, 8, Locality::kDomain, 100, absl::Hours(2)));
  EXPECT_FALSE(d.granted);
  EXPECT_EQ(d.rejection.reason, RejectReason::kInsufficientCapacity);
  EXPECT_EQ(d.rejection.largest_block, 8);
  ASSERT_TRUE(d.rejection.earliest_start.has_value());
  EXPECT_EQ(*d.rejection.earliest_start, kT0 + absl::Hours(5));
  // Asking at that time succeeds.
  Request later = Ask(16, 8, Locality::kDomain, 100, absl::Hours(2));
  later.start = *d.rejection.earliest_start;
  EXPECT_TRUE(Must(later).granted);
}

TEST_F(MatcherTest, UnknownRegionIsNoMatchingCapacity) {
  SmallMarket(1);
  Request r = Ask(1, 0, Locality::kNode);
  r.regions = {"mars-1"};
  Decision d = Must(r);
  EXPECT_EQ(d.rejection.reason, RejectReason::kNoMatchingCapacity);
  EXPECT_FALSE(d.rejection.message.empty());
}

// ---- lifecycle

TEST_F(MatcherTest, NeverSellsAGpuTwice) {
  SmallMarket(1);
  ASSERT_TRUE(Must(Ask(5, 0, Locality::kNode)).granted);
  EXPECT_FALSE(Must(Ask(4, 0, Locality::kNode)).granted);
  EXPECT_TRUE(Must(Ask(3, 0, Locality::kNode)).granted);
  EXPECT_FALSE(Must(Ask(1, 0, Locality::kAny)).granted);
  EXPECT_EQ(m_.Totals().sold_gpus_now, 8);
  ExpectClean();
}

TEST_F(MatcherTest, AllocationsExpireAtTheirEndWithoutARequest) {
  SmallMarket(1);
  Decision d = Must(Ask(8, 8, Locality::kNode, 100, absl::Hours(3)));
  ASSERT_TRUE(d.granted);
  m_.TakeEvents();
  m_.Advance(kT0 + absl::Hours(3) - absl::Seconds(1));
  EXPECT_NE(m_.Find(d.allocation.id), nullptr);
  m_.Advance(kT0 + absl::Hours(3));
  EXPECT_EQ(m_.Find(d.allocation.id), nullptr);
  const std::vector<AllocationEvent> ev = m_.TakeEvents();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].reason, EndReason::kExpired);
  EXPECT_EQ(ev[0].at, kT0 + absl::Hours(3));
  EXPECT_EQ(m_.Totals().sold_gpus_now, 0);
  EXPECT_TRUE(Must(Ask(8, 8, Locality::kNode), kT0 + absl::Hours(3)).granted);
}

TEST_F(MatcherTest, ReservationsBecomeActiveAtTheirStart) {
  SmallMarket(1);
  Request r = Ask(8, 8, Locality::kNode, 100, absl::Hours(2));
  r.start = kT0 + absl::Hours(5);
  Decision d = Must(r);
  ASSERT_TRUE(d.granted);
  EXPECT_EQ(d.allocation.state, AllocationState::kReserved);
  // Before it starts, a short job fits in front of it; a long one does not.
  EXPECT_TRUE(m_.Quote(Ask(8, 8, Locality::kNode, 100, absl::Hours(5)), kT0)->granted);
  EXPECT_FALSE(m_.Quote(Ask(8, 8, Locality::kNode, 100, absl::Hours(6)), kT0)->granted);
  m_.Advance(kT0 + absl::Hours(5));
  EXPECT_EQ(m_.Find(d.allocation.id)->state, AllocationState::kActive);
  EXPECT_EQ(m_.Totals().sold_gpus_now, 8);
  ExpectClean();
}

TEST_F(MatcherTest, ReleaseFreesTheGpusOnce) {
  SmallMarket(1);
  Decision d = Must(Ask(8, 8, Locality::kNode));
  ASSERT_TRUE(m_.Release(d.allocation.id, kT0 + absl::Hours(1)).ok());
  EXPECT_EQ(m_.Release(d.allocation.id, kT0 + absl::Hours(1)).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Must(Ask(8, 8, Locality::kNode), kT0 + absl::Hours(1)).granted);
}

TEST_F(MatcherTest, ExtendOnlyWhileTheSameGpusStayFree) {
  Center("c1");
  Domain("c1", "d1");
  Nodes("c1", "d1", 1);
  Offer("o1", "c1", "d1", 10, absl::Hours(20));
  Decision a = Must(Ask(8, 8, Locality::kNode, 100, absl::Hours(2)));
  ASSERT_TRUE(a.granted);
  absl::StatusOr<Allocation> ext = m_.Extend(a.allocation.id, kT0 + absl::Hours(4), kT0);
  ASSERT_TRUE(ext.ok()) << ext.status();
  EXPECT_EQ(ext->end, kT0 + absl::Hours(4));
  EXPECT_EQ(ext->total_price, kUnit * 8 * 10 * 4);
  // Someone books the node from hour 6: extending past it must fail and change nothing.
  Request next = Ask(8, 8, Locality::kNode, 100, absl::Hours(2));
  next.start = kT0 + absl::Hours(6);
  ASSERT_TRUE(Must(next).granted);
  EXPECT_EQ(m_.Extend(a.allocation.id, kT0 + absl::Hours(7), kT0).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(m_.Find(a.allocation.id)->end, kT0 + absl::Hours(4));
  EXPECT_TRUE(m_.Extend(a.allocation.id, kT0 + absl::Hours(6), kT0).ok());
  // Not past the offer's window, and not backwards.
  EXPECT_EQ(m_.Extend(a.allocation.id, kT0 + absl::Hours(5), kT0).status().code(),
            absl::StatusCode::kInvalidArgument);
  ExpectClean();
}

TEST_F(MatcherTest, ExtendFailsPastTheOfferAndAfterWithdrawal) {
  Center("c1");
  Domain("c1", "d1");
  Nodes("c1", "d1", 1);
  Offer("o1", "c1", "d1", 10, absl::Hours(10));
  Decision a = Must(Ask(4, 0, Locality::kNode, 100, absl::Hours(2)));
  EXPECT_EQ(m_.Extend(a.allocation.id, kT0 + absl::Hours(11), kT0).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(m_.WithdrawOffer("o1", kT0).ok());
  EXPECT_NE(m_.Find(a.allocation.id), nullptr);  // what was sold stays sold
  EXPECT_FALSE(Must(Ask(1, 0, Locality::kNode)).granted);
  EXPECT_EQ(m_.Extend(a.allocation.id, kT0 + absl::Hours(3), kT0).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(MatcherTest, QuoteTakesNothingAndMatchesAllocate) {
  SmallMarket(2);
  const Request r = Ask(12, 0, Locality::kDomain);
  absl::StatusOr<Decision> q = m_.Quote(r, kT0);
  ASSERT_TRUE(q.ok() && q->granted);
  EXPECT_EQ(m_.Totals().live_allocations, 0);
  Decision d = Must(r);
  ASSERT_TRUE(d.granted);
  ASSERT_EQ(q->allocation.slices.size(), d.allocation.slices.size());
  for (size_t i = 0; i < d.allocation.slices.size(); ++i) {
    EXPECT_EQ(q->allocation.slices[i].node, d.allocation.slices[i].node);
    EXPECT_EQ(q->allocation.slices[i].gpus, d.allocation.slices[i].gpus);
  }
  EXPECT_EQ(q->allocation.total_price, d.allocation.total_price);
}

TEST_F(MatcherTest, BindingQuoteHoldsCapacityUntilRedeemedOnce) {
  SmallMarket(1);
  absl::StatusOr<Decision> h = m_.Hold(Ask(8, 8, Locality::kNode), absl::Seconds(30), kT0);
  ASSERT_TRUE(h.ok() && h->granted);
  EXPECT_EQ(h->allocation.state, AllocationState::kHeld);
  EXPECT_FALSE(Must(Ask(1, 0, Locality::kNode)).granted);  // held for the quote's owner
  EXPECT_EQ(m_.Redeem(h->allocation.id, "someone-else", kT0).status().code(),
            absl::StatusCode::kPermissionDenied);
  const absl::Time at = kT0 + absl::Seconds(20);
  absl::StatusOr<Allocation> a = m_.Redeem(h->allocation.id, "buyer1", at);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->state, AllocationState::kActive);
  EXPECT_EQ(a->start, at);
  EXPECT_EQ(a->end, at + absl::Hours(4));  // the full duration from the redeem
  EXPECT_EQ(a->total_price, h->allocation.total_price);
  EXPECT_EQ(m_.Redeem(h->allocation.id, "buyer1", at).status().code(), absl::StatusCode::kNotFound);
  ExpectClean();
}

TEST_F(MatcherTest, BindingQuoteLapsesByItself) {
  SmallMarket(1);
  absl::StatusOr<Decision> h = m_.Hold(Ask(8, 8, Locality::kNode), absl::Seconds(30), kT0);
  ASSERT_TRUE(h.ok() && h->granted);
  m_.TakeEvents();
  m_.Advance(kT0 + absl::Seconds(30));
  EXPECT_EQ(m_.Find(h->allocation.id), nullptr);
  const std::vector<AllocationEvent> ev = m_.TakeEvents();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].reason, EndReason::kLapsed);
  EXPECT_EQ(m_.Redeem(h->allocation.id, "buyer1", kT0 + absl::Seconds(31)).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(Must(Ask(8, 8, Locality::kNode), kT0 + absl::Seconds(31)).granted);
  EXPECT_EQ(m_.Hold(Ask(1, 0, Locality::kNode), absl::Hours(2), kT0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(MatcherTest, NodesWithSalesCannotBeRemoved) {
  SmallMarket(2);
  Decision d = Must(Ask(8, 8, Locality::kNode));
  const std::string busy = NodesOf(d.allocation)[0];
  EXPECT_EQ(m_.RemoveNode(busy).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(m_.RemoveNode("c1-d1-1").ok());
  EXPECT_EQ(m_.Totals().nodes, 1);
  EXPECT_FALSE(Must(Ask(8, 8, Locality::kNode)).granted);
  ExpectClean();
}

TEST_F(MatcherTest, TimeNeverGoesBackwards) {
  SmallMarket(1);
  Decision d = Must(Ask(8, 8, Locality::kNode, 100, absl::Hours(1)));
  m_.Advance(kT0 + absl::Hours(2));
  EXPECT_EQ(m_.Find(d.allocation.id), nullptr);
  // A call with an older time acts at the latest time seen.
  Decision again = Must(Ask(8, 8, Locality::kNode, 100, absl::Hours(1)), kT0);
  ASSERT_TRUE(again.granted);
  EXPECT_EQ(again.allocation.start, kT0 + absl::Hours(2));
}

TEST(PriceFor, RoundsHalfUpToAMicroUnit) {
  EXPECT_EQ(PriceFor(10 * kUnit, absl::Hours(1)), 10 * kUnit);
  EXPECT_EQ(PriceFor(1, absl::Minutes(30)), 1);  // half a micro-unit rounds up
  EXPECT_EQ(PriceFor(1, absl::Minutes(29)), 0);
  EXPECT_EQ(PriceFor(int64_t{2048} * 28 * kUnit, absl::Hours(24 * 30)),
            int64_t{2048} * 28 * 24 * 30 * kUnit);
}

// Everything a store would keep of a live allocation, read back from a Matcher.
RestoreSpec SpecOf(const Matcher& m, const Allocation& a) {
  std::optional<RestoreSpec> spec = m.RestoreSpecOf(a.id);
  EXPECT_TRUE(spec.has_value());
  return spec.value_or(RestoreSpec{});
}

class RestoreTest : public MatcherTest {
 protected:
  // The same capacity as `m_`, in a second Matcher: two centers, one domain each.
  void Build(Matcher& m) {
    for (const char* c : {"c1", "c2"}) {
      ASSERT_TRUE(
          m.AddCenter({c, std::string("op-") + c, c, "cn-east-2", CenterType::kCarrier, {}}).ok());
      ASSERT_TRUE(m.AddDomain({c, "d1", Fabric::kInfiniband, 400}).ok());
      std::vector<NodeSpec> nodes;
      nodes.reserve(4);
      for (int i = 0; i < 4; ++i) {
        nodes.push_back({absl::StrCat(c, "-n", i), c, "d1", "H100-SXM5-80G", 8});
      }
      ASSERT_TRUE(m.AddNodes(nodes).ok());
      OfferSpec o;
      o.id = absl::StrCat("o-", c);
      o.center_id = c;
      o.domain_id = "d1";
      o.from = kT0;
      o.until = kT0 + absl::Hours(24 * 30);
      o.price_per_gpu_hour = (std::string(c) == "c1" ? 10 : 11) * kUnit;
      ASSERT_TRUE(m.AddOffer(o, kT0).ok());
    }
  }
};

TEST_F(RestoreTest, RebuildsLiveAllocationsAndDecidesAlike) {
  Build(m_);
  std::vector<AllocationId> ids;
  ids.push_back(Must(Ask(3, 0, Locality::kNode)).allocation.id);
  ids.push_back(Must(Ask(16, 8, Locality::kDomain)).allocation.id);
  Request later = Ask(8, 8, Locality::kNode, 100, absl::Hours(10));
  later.start = kT0 + absl::Hours(2);
  ids.push_back(Must(later).allocation.id);
  absl::StatusOr<Decision> hold = m_.Hold(Ask(2, 0, Locality::kNode), absl::Minutes(5), kT0);
  ASSERT_TRUE(hold.ok() && hold->granted);
  ids.push_back(hold->allocation.id);
  ASSERT_TRUE(m_.Release(ids[0], kT0).ok());  // ended: not restored

  Matcher fresh;
  Build(fresh);
  for (AllocationId id : ids) {
    const Allocation* a = m_.Find(id);
    if (a == nullptr) continue;
    absl::StatusOr<Allocation> r = fresh.Restore(SpecOf(m_, *a), kT0);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->state, a->state);
    EXPECT_EQ(r->total_price, a->total_price);
  }
  EXPECT_EQ(fresh.Audit().violations, 0);
  EXPECT_EQ(fresh.Totals().sold_gpus_now, m_.Totals().sold_gpus_now);
  EXPECT_EQ(fresh.Totals().live_allocations, m_.Totals().live_allocations);
  // The restored hold is still redeemable, and both markets answer new requests alike.
  EXPECT_TRUE(fresh.Redeem(ids[3], "buyer1", kT0 + absl::Minutes(1)).ok());
  EXPECT_TRUE(m_.Redeem(ids[3], "buyer1", kT0 + absl::Minutes(1)).ok());
  for (int gpus : {1, 4, 8, 16, 40}) {
    const Request r = Ask(gpus, gpus > 8 ? 8 : 0, gpus > 8 ? Locality::kDomain : Locality::kNode);
    Decision a = Must(r, kT0 + absl::Minutes(1));
    absl::StatusOr<Decision> b = fresh.Allocate(r, kT0 + absl::Minutes(1));
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(a.granted, b->granted) << gpus;
    EXPECT_EQ(a.allocation.total_price, b->allocation.total_price) << gpus;
    EXPECT_EQ(a.rejection.reason, b->rejection.reason) << gpus;
    EXPECT_EQ(a.rejection.largest_block, b->rejection.largest_block) << gpus;
    // New ids never reuse restored ones.
    if (b->granted) {
      EXPECT_GT(b->allocation.id, ids.back()) << gpus;
    }
  }
  EXPECT_EQ(fresh.Audit().violations, 0);
}

TEST_F(RestoreTest, RefusesWhatDoesNotFitAndChangesNothing) {
  Build(m_);
  Decision whole = Must(Ask(8, 8, Locality::kNode));
  ASSERT_TRUE(whole.granted);
  RestoreSpec spec = SpecOf(m_, whole.allocation);
  spec.id = 999;
  // The same GPUs again: not free.
  EXPECT_EQ(m_.Restore(spec, kT0).status().code(), absl::StatusCode::kFailedPrecondition);
  // A live id.
  spec = SpecOf(m_, whole.allocation);
  EXPECT_EQ(m_.Restore(spec, kT0).status().code(), absl::StatusCode::kAlreadyExists);
  // A node that is gone, a price no offer asks.
  spec.id = 1000;
  spec.slices[0].node_id = "ghost";
  EXPECT_EQ(m_.Restore(spec, kT0).status().code(), absl::StatusCode::kFailedPrecondition);
  spec.slices[0].node_id = "c1-n3";
  spec.slices[0].price_per_gpu_hour = 1;
  EXPECT_EQ(m_.Restore(spec, kT0).status().code(), absl::StatusCode::kFailedPrecondition);
  spec.slices[0].price_per_gpu_hour = 10 * kUnit;
  spec.end = spec.start;
  EXPECT_EQ(m_.Restore(spec, kT0).status().code(), absl::StatusCode::kInvalidArgument);
  // A hold held past its end must have started: only start-now holds are.
  spec.state = AllocationState::kHeld;
  spec.start = kT0 + absl::Hours(1);
  spec.end = kT0 + absl::Hours(2);
  spec.held_end = kT0 + absl::Hours(3);
  spec.hold_expires = kT0 + absl::Minutes(30);
  EXPECT_EQ(m_.Restore(spec, kT0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m_.Totals().live_allocations, 1);
  EXPECT_EQ(m_.Audit().violations, 0);
}

TEST_F(RestoreTest, WhatEndedWhileDownEndsAtOnce) {
  Build(m_);
  Decision d = Must(Ask(8, 8, Locality::kNode, 100, absl::Hours(1)));
  ASSERT_TRUE(d.granted);
  Matcher fresh;
  Build(fresh);
  fresh.TakeEvents();
  absl::StatusOr<Allocation> r = fresh.Restore(SpecOf(m_, d.allocation), kT0 + absl::Hours(2));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(fresh.Find(d.allocation.id), nullptr);
  const std::vector<AllocationEvent> ev = fresh.TakeEvents();
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev.back().reason, EndReason::kExpired);
  EXPECT_EQ(ev.back().at, kT0 + absl::Hours(1));
  EXPECT_EQ(fresh.Totals().sold_gpus_now, 0);
}

// A restored hold's lapse is on the timeline like any other: many released sales after the
// restore must not drop it.
TEST_F(RestoreTest, RestoredHoldLapsesAfterManyReleasedSales) {
  Build(m_);
  absl::StatusOr<Decision> hold = m_.Hold(Ask(8, 8, Locality::kNode), absl::Minutes(30), kT0);
  ASSERT_TRUE(hold.ok() && hold->granted);
  Matcher fresh;
  Build(fresh);
  ASSERT_TRUE(fresh.Restore(SpecOf(m_, hold->allocation), kT0).ok());
  for (int i = 0; i < 20'000; ++i) {
    absl::StatusOr<Decision> d = fresh.Allocate(Ask(1, 0, Locality::kNode), kT0);
    ASSERT_TRUE(d.ok() && d->granted);
    ASSERT_TRUE(fresh.Release(d->allocation.id, kT0).ok());
  }
  fresh.TakeEvents();
  fresh.Advance(kT0 + absl::Minutes(30) - absl::Seconds(1));
  EXPECT_NE(fresh.Find(hold->allocation.id), nullptr);
  fresh.Advance(kT0 + absl::Minutes(30));
  EXPECT_EQ(fresh.Find(hold->allocation.id), nullptr);
  const std::vector<AllocationEvent> ev = fresh.TakeEvents();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].reason, EndReason::kLapsed);
  EXPECT_EQ(fresh.Audit().violations, 0);
}

TEST_F(MatcherTest, HoldWhoseIntervalEndsBeforeItsTtlLapsesAtTheEnd) {
  SmallMarket(1);
  Request r = Ask(8, 8, Locality::kNode, 100, absl::Minutes(5));
  r.start = kT0 + absl::Minutes(10);
  absl::StatusOr<Decision> h = m_.Hold(r, absl::Minutes(60), kT0);
  ASSERT_TRUE(h.ok() && h->granted);
  m_.TakeEvents();
  m_.Advance(kT0 + absl::Minutes(20));
  EXPECT_EQ(m_.Find(h->allocation.id), nullptr);
  const std::vector<AllocationEvent> ev = m_.TakeEvents();
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev.back().reason, EndReason::kLapsed);
  EXPECT_EQ(ev.back().at, kT0 + absl::Minutes(15));
  EXPECT_EQ(m_.Redeem(h->allocation.id, "buyer1", kT0 + absl::Minutes(21)).status().code(),
            absl::StatusCode::kNotFound);
  ExpectClean();
  EXPECT_TRUE(Must(Ask(8, 8, Locality::kNode), kT0 + absl::Minutes(21)).granted);
}

TEST_F(MatcherTest, CenterHintsWorkWithMoreCentersThanDomains) {
  for (int i = 0; i < 6; ++i) Center(absl::StrCat("c", i));
  Domain("c5", "d1");
  Nodes("c5", "d1", 1);
  Offer("o1", "c5", "d1", 10);
  Decision d = Must(Ask(16, 0, Locality::kCenter));
  EXPECT_FALSE(d.granted);
  EXPECT_EQ(d.rejection.reason, RejectReason::kInsufficientCapacity);
  EXPECT_EQ(d.rejection.largest_block, 8);
  ExpectClean();
}

TEST_F(MatcherTest, TimesAndPricesBeyondTheLimitsAreRefused) {
  SmallMarket(1);
  Request far = Ask(1, 0, Locality::kNode);
  far.start = absl::InfiniteFuture();
  EXPECT_EQ(m_.Allocate(far, kT0).status().code(), absl::StatusCode::kInvalidArgument);
  far.start = kT0 + absl::Hours(24 * 365 * 11);
  EXPECT_EQ(m_.Allocate(far, kT0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m_.Allocate(Ask(1, 0, Locality::kNode, 1'000'001), kT0).status().code(),
            absl::StatusCode::kInvalidArgument);
  OfferSpec o;
  o.id = "o-dear";
  o.center_id = "c1";
  o.domain_id = "d1";
  o.from = kT0 + absl::Hours(24 * 40);
  o.until = kT0 + absl::Hours(24 * 50);
  o.price_per_gpu_hour = 1'001 * kUnit;
  EXPECT_EQ(m_.AddOffer(o, kT0).code(), absl::StatusCode::kInvalidArgument);
  o.price_per_gpu_hour = kUnit;
  o.until = absl::InfiniteFuture();
  EXPECT_EQ(m_.AddOffer(o, kT0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m_.Totals().live_allocations, 0);
}

TEST_F(MatcherTest, HoldHintsCheckTheLeaseAgainstTheDurationNotTheTtl) {
  Center("c1");
  Domain("c1", "d1");
  Nodes("c1", "d1", 1);
  Offer("o1", "c1", "d1", 10, absl::Hours(24 * 30), absl::ZeroDuration(), false,
        /*min_lease=*/absl::Minutes(90));
  // 60 minutes is shorter than the lease, even though 60 + a 40-minute ttl is not.
  absl::StatusOr<Decision> h =
      m_.Hold(Ask(1, 0, Locality::kNode, 20, absl::Minutes(60)), absl::Minutes(40), kT0);
  ASSERT_TRUE(h.ok());
  EXPECT_FALSE(h->granted);
  EXPECT_EQ(h->rejection.reason, RejectReason::kNoMatchingCapacity);
  EXPECT_FALSE(h->rejection.min_ceiling.has_value());
}

}  // namespace
}  // namespace suanli::scheduler

namespace suanli::scheduler {
namespace {

TEST_F(MatcherTest, CatalogListsWhatIsOnSaleWithFreeGpusNow) {
  Center("c1");
  Domain("c1", "ib0");
  Domain("c1", "ib1");
  Nodes("c1", "ib0", 3);
  Nodes("c1", "ib1", 2, 4, "L40S-48G");
  Offer("o-dear", "c1", "ib0", 30);
  Offer("o-cheap", "c1", "ib1", 10);
  ASSERT_TRUE(m_.SetNodeHealth("c1-ib0-2", Health::kDown).ok());
  ASSERT_TRUE(Must(Ask(5, 0, Locality::kNode)).granted);  // 5 of one 8-GPU node

  std::vector<CatalogLine> lines = m_.Catalog();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].offer_id, "o-cheap");  // cheapest first
  EXPECT_EQ(lines[0].model, "L40S-48G");
  EXPECT_EQ(lines[0].gpus_per_node, 4);
  EXPECT_EQ(lines[0].nodes, 2);
  EXPECT_EQ(lines[0].free_gpus, 8);
  EXPECT_EQ(lines[1].offer_id, "o-dear");
  EXPECT_EQ(lines[1].nodes, 2) << "the down node is not on sale";
  EXPECT_EQ(lines[1].free_gpus, 8 + 3);
  EXPECT_EQ(lines[1].free_whole_nodes, 1);
  EXPECT_EQ(lines[1].price_per_gpu_hour, 30 * kUnit);

  ASSERT_TRUE(m_.WithdrawOffer("o-cheap", kT0).ok());
  lines = m_.Catalog();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].offer_id, "o-dear");
  m_.Advance(kT0 + absl::Hours(24 * 31));  // past every window
  EXPECT_TRUE(m_.Catalog().empty());
}

TEST_F(MatcherTest, ReservedIdsAreNeverHandedOut) {
  Center("c1");
  Domain("c1", "ib0");
  Nodes("c1", "ib0", 2);
  Offer("o1", "c1", "ib0", 10);
  m_.ReserveIds(1000);
  EXPECT_EQ(Must(Ask(8, 8, Locality::kAny)).allocation.id, 1000u);
  m_.ReserveIds(10);  // never lowers
  EXPECT_EQ(Must(Ask(8, 8, Locality::kAny)).allocation.id, 1001u);
}

// Released sales leave their end on the timeline; when those pile up the core drops them. What
// is still due (a hold's lapse, a reservation's start and end, an extended end) must survive.
TEST_F(MatcherTest, WhatIsDueSurvivesManyReleasedSales) {
  SmallMarket(4);
  absl::StatusOr<Decision> hold =
      m_.Hold(Ask(8, 8, Locality::kNode, 100, absl::Hours(4)), absl::Hours(1), kT0);
  ASSERT_TRUE(hold.ok() && hold->granted);
  Request later = Ask(8, 8, Locality::kNode, 100, absl::Hours(2));
  later.start = kT0 + absl::Hours(5);
  const Decision reserved = Must(later);
  ASSERT_TRUE(reserved.granted);
  const Decision extended = Must(Ask(8, 8, Locality::kNode, 100, absl::Hours(2)));
  ASSERT_TRUE(extended.granted);
  ASSERT_TRUE(m_.Extend(extended.allocation.id, kT0 + absl::Hours(3), kT0).ok());
  // Thousands of sales released at once, each leaving an end ten hours out.
  for (int i = 0; i < 20'000; ++i) {
    const Decision d = Must(Ask(1, 0, Locality::kNode, 100, absl::Hours(10)));
    ASSERT_TRUE(d.granted);
    ASSERT_TRUE(m_.Release(d.allocation.id, kT0).ok());
  }
  m_.TakeEvents();
  EXPECT_LE(m_.NextEventTime(), kT0 + absl::Hours(1));

  m_.Advance(kT0 + absl::Hours(1));
  EXPECT_EQ(m_.Find(hold->allocation.id), nullptr);
  m_.Advance(kT0 + absl::Hours(2) + absl::Minutes(30));
  EXPECT_NE(m_.Find(extended.allocation.id), nullptr);  // not at its old end
  m_.Advance(kT0 + absl::Hours(3));
  EXPECT_EQ(m_.Find(extended.allocation.id), nullptr);
  m_.Advance(kT0 + absl::Hours(5));
  ASSERT_NE(m_.Find(reserved.allocation.id), nullptr);
  EXPECT_EQ(m_.Find(reserved.allocation.id)->state, AllocationState::kActive);
  m_.Advance(kT0 + absl::Hours(7));
  EXPECT_EQ(m_.Find(reserved.allocation.id), nullptr);

  const std::vector<AllocationEvent> ev = m_.TakeEvents();
  ASSERT_EQ(ev.size(), 4u);
  EXPECT_EQ(ev[0].reason, EndReason::kLapsed);
  EXPECT_EQ(ev[0].at, kT0 + absl::Hours(1));
  EXPECT_EQ(ev[1].reason, EndReason::kExpired);
  EXPECT_EQ(ev[1].at, kT0 + absl::Hours(3));
  EXPECT_EQ(ev[2].state, AllocationState::kActive);
  EXPECT_EQ(ev[2].at, kT0 + absl::Hours(5));
  EXPECT_EQ(ev[3].reason, EndReason::kExpired);
  EXPECT_EQ(ev[3].at, kT0 + absl::Hours(7));
  EXPECT_EQ(m_.Totals().live_allocations, 0);
  ExpectClean();
}

TEST_F(MatcherTest, NextEventTimeIsNeverLaterThanTheNextChange) {
  Center("c1");
  Domain("c1", "ib0");
  Nodes("c1", "ib0", 2);
  Offer("o1", "c1", "ib0", 10);
  EXPECT_EQ(m_.NextEventTime(), absl::InfiniteFuture());
  ASSERT_TRUE(Must(Ask(8, 8, Locality::kAny, 100, absl::Hours(2))).granted);
  Request later = Ask(8, 8, Locality::kAny, 100, absl::Hours(1));
  later.start = kT0 + absl::Minutes(30);
  ASSERT_TRUE(Must(later).granted);
  EXPECT_LE(m_.NextEventTime(), kT0 + absl::Minutes(30));  // the reservation's start
  m_.Advance(kT0 + absl::Minutes(30));
  EXPECT_LE(m_.NextEventTime(), kT0 + absl::Minutes(90));  // its end
  m_.Advance(kT0 + absl::Hours(3));
  EXPECT_EQ(m_.NextEventTime(), absl::InfiniteFuture());
  EXPECT_EQ(m_.Totals().live_allocations, 0);
}

}  // namespace
}  // namespace suanli::scheduler
