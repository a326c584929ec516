// The std workload matches shared/WORKLOAD.md: the topology at full and reduced size, and the
// request mix.
#include "bench/workload.h"

#include <map>
#include <set>

#include "gtest/gtest.h"

namespace suanli::bench {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

TEST(StdMarket, FullSizeHasTheDocumentedTopology) {
  const StdMarket m = MakeStdMarket(1 << 20, 1, kT0);
  EXPECT_EQ(m.gpus, 1 << 20);
  EXPECT_EQ(m.centers.size(), 128u);
  EXPECT_EQ(m.domains.size(), 1024u);
  EXPECT_EQ(m.nodes.size(), 131072u);
  EXPECT_EQ(m.offers.size(), 1024u);
  std::map<scheduler::CenterType, int> types;
  std::set<std::string> regions;
  for (const auto& c : m.centers) {
    ++types[c.type];
    regions.insert(c.region);
  }
  EXPECT_EQ(types[scheduler::CenterType::kGovernment], 16);
  EXPECT_EQ(types[scheduler::CenterType::kCarrier], 48);
  EXPECT_EQ(types[scheduler::CenterType::kInternet], 48);
  EXPECT_EQ(types[scheduler::CenterType::kEnterprise], 8);
  EXPECT_EQ(types[scheduler::CenterType::kAcademic], 8);
  EXPECT_EQ(regions.size(), 16u);
  // Domains of 256, 256, 128, 128, 64, 64, 64, 64 nodes in every center.
  std::map<std::string, int> per_domain;
  for (const auto& n : m.nodes) ++per_domain[n.center_id + "/" + n.domain_id];
  EXPECT_EQ(per_domain["ctr-0/dom-0"], 256);
  EXPECT_EQ(per_domain["ctr-0/dom-3"], 128);
  EXPECT_EQ(per_domain["ctr-0/dom-7"], 64);
  // Offers run 30 to 120 days from t0.
  for (const auto& o : m.offers) {
    EXPECT_EQ(o.from, kT0);
    EXPECT_GE(o.until - o.from, absl::Hours(24 * 30));
    EXPECT_LE(o.until - o.from, absl::Hours(24 * 120));
  }
}

TEST(StdMarket, SmallerSizesKeepEightCentersThenShrinkDomains) {
  const StdMarket m = MakeStdMarket(65536, 1, kT0);
  EXPECT_EQ(m.centers.size(), 8u);
  EXPECT_EQ(m.gpus, 65536);
  // The smallest: 8 centers of domains 32, 32, 16, 16, 8, 8, 8, 8 nodes.
  const StdMarket tiny = MakeStdMarket(1, 1, kT0);
  EXPECT_EQ(tiny.nodes.size(), 8u * 128);
  EXPECT_EQ(tiny.gpus, 8192);
}

TEST(StdMarket, SameSeedSameMarket) {
  const StdMarket a = MakeStdMarket(65536, 7, kT0);
  const StdMarket b = MakeStdMarket(65536, 7, kT0);
  ASSERT_EQ(a.offers.size(), b.offers.size());
  for (size_t i = 0; i < a.offers.size(); ++i) {
    EXPECT_EQ(a.offers[i].price_per_gpu_hour, b.offers[i].price_per_gpu_hour);
  }
}

TEST(RequestStream, HasTheDocumentedMix) {
  const StdMarket m = MakeStdMarket(65536, 1, kT0);
  RequestStream stream(m, 1);
  std::map<RequestKind, int> kinds;
  int future = 0;
  constexpr int kN = 100000;
  for (int i = 0; i < kN; ++i) {
    RequestKind k;
    const scheduler::Request r = stream.Next(kT0, &k);
    ++kinds[k];
    if (r.start.has_value()) {
      ++future;
      EXPECT_LE(*r.start - kT0, absl::Hours(24 * 7));
    }
    switch (k) {
      case RequestKind::kInference:
        EXPECT_TRUE(r.gpus == 1 || r.gpus == 2 || r.gpus == 4);
        EXPECT_EQ(r.locality, scheduler::Locality::kNode);
        break;
      case RequestKind::kWholeNode:
        EXPECT_EQ(r.gpus, 8);
        break;
      case RequestKind::kGang:
        EXPECT_GE(r.gpus, 16);
        EXPECT_LE(r.gpus, 128);
        EXPECT_EQ(r.locality, scheduler::Locality::kDomain);
        break;
      case RequestKind::kLargeGang:
        EXPECT_GE(r.gpus, 256);
        EXPECT_LE(r.gpus, 2048);
        break;
    }
  }
  // Shares within one percentage point of 50 / 25 / 20 / 5 and 10% future starts.
  EXPECT_NEAR(kinds[RequestKind::kInference], kN * 0.50, kN * 0.01);
  EXPECT_NEAR(kinds[RequestKind::kWholeNode], kN * 0.25, kN * 0.01);
  EXPECT_NEAR(kinds[RequestKind::kGang], kN * 0.20, kN * 0.01);
  EXPECT_NEAR(kinds[RequestKind::kLargeGang], kN * 0.05, kN * 0.01);
  EXPECT_NEAR(future, kN * 0.10, kN * 0.01);
}

}  // namespace
}  // namespace suanli::bench
