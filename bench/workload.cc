#include "bench/workload.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace suanli::bench {
namespace {

using scheduler::CenterType;
using scheduler::Fabric;
using scheduler::Micros;

struct ModelClass {
  double share;
  const char* models[2];
  Micros base[2];
  Fabric fabric;
  int32_t gbps;
};

// WORKLOAD.md: capacity shares by domain, base asks per GPU-hour, fabric by class.
const ModelClass kClasses[] = {
    {0.35, {"H100-SXM5-80G", "H800-SXM5-80G"}, {28'000'000, 26'000'000}, Fabric::kInfiniband, 400},
    {0.10, {"H20-96G", "H20-96G"}, {9'000'000, 9'000'000}, Fabric::kInfiniband, 400},
    {0.25, {"A100-SXM4-80G", "A800-SXM4-80G"}, {14'000'000, 13'000'000}, Fabric::kInfiniband, 400},
    {0.20, {"Ascend910B-64G", "Ascend910B-64G"}, {11'000'000, 11'000'000}, Fabric::kRoce, 200},
    {0.10, {"L40S-48G", "RTX4090-24G"}, {6'000'000, 3'500'000}, Fabric::kEthernet, 100},
};
constexpr int kNumClasses = 5;

const char* kRegionNames[16] = {
    "cn-north-1",     "cn-north-2",     "cn-north-3",     "cn-northeast-1",
    "cn-northeast-2", "cn-east-1",      "cn-east-2",      "cn-east-3",
    "cn-central-1",   "cn-central-2",   "cn-south-1",     "cn-south-2",
    "cn-northwest-1", "cn-northwest-2", "cn-southwest-1", "cn-southwest-2",
};

// 16 government, 48 carrier, 48 internet, 8 enterprise, 8 academic per 128 centers.
CenterType TypeOf(int center) {
  static const CenterType kPattern[16] = {
      CenterType::kGovernment, CenterType::kGovernment, CenterType::kCarrier,
      CenterType::kCarrier,    CenterType::kCarrier,    CenterType::kCarrier,
      CenterType::kCarrier,    CenterType::kCarrier,    CenterType::kInternet,
      CenterType::kInternet,   CenterType::kInternet,   CenterType::kInternet,
      CenterType::kInternet,   CenterType::kInternet,   CenterType::kEnterprise,
      CenterType::kAcademic,
  };
  return kPattern[center % 16];
}

int DrawClass(std::mt19937_64& rng) {
  double u = std::uniform_real_distribution<double>(0, 1)(rng);
  for (int i = 0; i < kNumClasses; ++i) {
    if (u < kClasses[i].share) return i;
    u -= kClasses[i].share;
  }
  return kNumClasses - 1;
}

Micros Scale(Micros base, double f) { return static_cast<Micros>(std::llround(base * f)); }

}  // namespace

const char* RequestKindName(RequestKind k) {
  switch (k) {
    case RequestKind::kInference:
      return "inference";
    case RequestKind::kWholeNode:
      return "whole_node";
    case RequestKind::kGang:
      return "gang";
    case RequestKind::kLargeGang:
      return "large_gang";
  }
  return "unknown";
}

StdMarket MakeStdMarket(int64_t gpus, uint64_t seed, absl::Time t0) {
  std::mt19937_64 rng(seed);
  StdMarket m;
  const int64_t nodes = std::max<int64_t>(gpus / 8, int64_t{8} * 8 * 8);
  // Full size: 1,024 nodes per center in domains of 256, 256, 128, 128, 64 x 4. Fewer centers
  // first (down to 8), then every domain scaled down together (down to 8 nodes).
  static const int kFullDomains[8] = {256, 256, 128, 128, 64, 64, 64, 64};
  int64_t centers = nodes / 1024;
  int64_t per_center = 1024;
  if (centers < 8) {
    centers = 8;
    // Domains shrink together; the smallest (64 at full size) stops at 8 nodes.
    per_center = std::max<int64_t>(nodes / 8, 128);
  }
  const double scale = static_cast<double>(per_center) / 1024.0;
  for (int c = 0; c < centers; ++c) {
    scheduler::CenterSpec cs;
    cs.id = absl::StrCat("ctr-", c);
    cs.operator_id = absl::StrCat("op-", c % std::max<int64_t>(centers / 2, 1));
    cs.name = absl::StrCat("Center ", c);
    cs.region = kRegionNames[c % 16];
    cs.type = TypeOf(c);
    if (cs.type == CenterType::kGovernment) cs.tags.push_back("gov-cloud");
    cs.tags.push_back("data-in-cn");
    const double factor = std::uniform_real_distribution<double>(0.8, 1.2)(rng);
    for (int d = 0; d < 8; ++d) {
      const int cls = DrawClass(rng);
      const int which = static_cast<int>(rng() % 2);
      const ModelClass& mc = kClasses[cls];
      scheduler::DomainSpec ds;
      ds.center_id = cs.id;
      ds.id = absl::StrCat("dom-", d);
      ds.fabric = mc.fabric;
      ds.gbps = mc.gbps;
      const int size = std::max(8, static_cast<int>(std::lround(kFullDomains[d] * scale)));
      for (int n = 0; n < size; ++n) {
        scheduler::NodeSpec ns;
        ns.id = absl::StrCat(cs.id, "-", d, "-", n);
        ns.center_id = cs.id;
        ns.domain_id = ds.id;
        ns.model = mc.models[which];
        ns.gpus = 8;
        m.nodes.push_back(std::move(ns));
        m.gpus += 8;
      }
      scheduler::OfferSpec o;
      o.id = absl::StrCat("off-", c, "-", d);
      o.center_id = cs.id;
      o.domain_id = ds.id;
      o.from = t0;
      o.until = t0 + absl::Hours(24 * std::uniform_int_distribution<int>(30, 120)(rng));
      o.price_per_gpu_hour = Scale(mc.base[which], factor);
      m.domains.push_back(std::move(ds));
      m.offers.push_back(std::move(o));
    }
    m.centers.push_back(std::move(cs));
  }
  for (const char* r : kRegionNames) m.regions.push_back(r);
  return m;
}

RequestStream::RequestStream(const StdMarket& market, uint64_t seed)
    : rng_(seed ^ 0x9e3779b97f4a7c15ULL), regions_(market.regions) {}

int RequestStream::Class() { return DrawClass(rng_); }

scheduler::Request RequestStream::Next(absl::Time now, RequestKind* kind_out) {
  auto uni = [this](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); };
  auto chance = [this](double p) { return std::bernoulli_distribution(p)(rng_); };
  scheduler::Request r;
  r.buyer = absl::StrCat("buyer-", uni(0, 63));
  const double u = std::uniform_real_distribution<double>(0, 1)(rng_);
  RequestKind kind = u < 0.50   ? RequestKind::kInference
                     : u < 0.75 ? RequestKind::kWholeNode
                     : u < 0.95 ? RequestKind::kGang
                                : RequestKind::kLargeGang;
  Micros base = 0;
  if (kind == RequestKind::kInference) {
    static const int kSizes[3] = {1, 2, 4};
    r.gpus = kSizes[uni(0, 2)];
    r.gpus_per_node = r.gpus;
    r.locality = scheduler::Locality::kNode;
    const int n_models = uni(1, 3);
    for (int i = 0; i < n_models; ++i) {
      const ModelClass& mc = kClasses[Class()];
      const int which = uni(0, 1);
      if (std::find(r.models.begin(), r.models.end(), mc.models[which]) == r.models.end()) {
        r.models.push_back(mc.models[which]);
        if (base == 0) base = mc.base[which];
      }
    }
    if (chance(0.5)) {
      const int n_regions = uni(1, 3);
      for (int i = 0; i < n_regions; ++i) {
        r.regions.push_back(
            regions_[static_cast<size_t>(uni(0, static_cast<int>(regions_.size()) - 1))]);
      }
    }
    r.duration = absl::Hours(uni(1, 24));
  } else {
    const ModelClass& mc = kClasses[Class()];
    const bool both = mc.models[0] != std::string(mc.models[1]) && chance(0.5);
    const int which = uni(0, 1);
    r.models.push_back(mc.models[which]);
    if (both) r.models.push_back(mc.models[1 - which]);
    base = mc.base[which];
    r.gpus_per_node = 8;
    switch (kind) {
      case RequestKind::kWholeNode:
        r.gpus = 8;
        r.locality = scheduler::Locality::kNode;
        r.duration = absl::Hours(uni(4, 72));
        break;
      case RequestKind::kGang:
        r.gpus = 8 * uni(2, 16);
        r.locality = scheduler::Locality::kDomain;
        r.duration = absl::Hours(24 * uni(1, 14));
        break;
      default:
        r.gpus = 8 * uni(32, 256);
        r.locality = scheduler::Locality::kDomain;
        r.duration = absl::Hours(24 * uni(3, 30));
        break;
    }
  }
  r.max_price_per_gpu_hour = Scale(base, chance(0.2) ? 0.85 : 1.3);
  if (chance(0.1)) r.start = now + absl::Seconds(uni(1, 7 * 24 * 3600));
  ++n_;
  if (kind_out != nullptr) *kind_out = kind;
  return r;
}

}  // namespace suanli::bench
