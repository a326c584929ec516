// Fuzzes request validation (broker/validate.h): any bytes, read as the message the first byte
// names, must never crash the checks, and whatever passes them must never be refused as malformed
// (INVALID_ARGUMENT) by the allocation core: validation is complete with respect to the core.
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "absl/time/time.h"
#include "broker/validate.h"
#include "google/protobuf/stubs/logging.h"
#include "scheduler/matcher.h"
#include "suanli/v1/common.pb.h"

namespace {

using suanli::scheduler::Matcher;

const absl::Time kNow = absl::FromUnixSeconds(1'800'000'000);

// A small market every input is tried against.
Matcher* Market() {
  static Matcher* m = [] {
    auto* mm = new Matcher();
    (void)mm->AddCenter({.id = "c1", .operator_id = "op", .name = "c1", .region = "cn-east-2"});
    (void)mm->AddDomain({.center_id = "c1", .id = "d1"});
    std::vector<suanli::scheduler::NodeSpec> nodes;
    for (int i = 0; i < 4; ++i) {
      nodes.push_back({.id = "n" + std::to_string(i),
                       .center_id = "c1",
                       .domain_id = "d1",
                       .model = "H100-SXM5-80G",
                       .gpus = 8});
    }
    (void)mm->AddNodes(nodes);
    suanli::scheduler::OfferSpec o;
    o.id = "o1";
    o.center_id = "c1";
    o.domain_id = "d1";
    o.from = kNow;
    o.until = kNow + absl::Hours(24 * 30);
    o.price_per_gpu_hour = 10'000'000;
    (void)mm->AddOffer(o, kNow);
    return mm;
  }();
  return m;
}

void Fail(const char* what, const absl::Status& s) {
  std::fprintf(stderr, "validated %s refused by the core: %s\n", what, s.ToString().c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  // Inputs with invalid UTF-8 in string fields are refused by the parser; it need not say so.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t kind = data[0] % 4;
  const void* body = data + 1;
  const int len = static_cast<int>(size - 1);
  switch (kind) {
    case 0: {
      suanli::v1::AllocationRequest r;
      if (!r.ParseFromArray(body, len)) return 0;
      absl::StatusOr<suanli::scheduler::Request> q =
          suanli::broker::ValidateAllocationRequest(r, "buyer", kNow);
      if (!q.ok()) return 0;
      absl::StatusOr<suanli::scheduler::Decision> d = Market()->Quote(*q, kNow);
      if (!d.ok() && absl::IsInvalidArgument(d.status())) Fail("request", d.status());
      break;
    }
    case 1: {
      suanli::v1::Offer o;
      if (!o.ParseFromArray(body, len)) return 0;
      o.set_center_id("c1");
      absl::StatusOr<suanli::scheduler::OfferSpec> spec = suanli::broker::ValidateOffer(o, kNow);
      if (!spec.ok()) return 0;
      Matcher m;
      (void)m.AddCenter({.id = "c1", .operator_id = "op", .region = "r"});
      (void)m.AddDomain({.center_id = "c1", .id = spec->domain_id.empty() ? "d" : spec->domain_id});
      std::vector<suanli::scheduler::NodeSpec> nodes;
      for (const std::string& id : spec->node_ids) {
        nodes.push_back({.id = id, .center_id = "c1", .domain_id = "d", .model = "L40S-48G"});
      }
      if (spec->node_ids.empty()) {
        nodes.push_back(
            {.id = "n", .center_id = "c1", .domain_id = spec->domain_id, .model = "L40S-48G"});
      }
      if (!m.AddNodes(nodes).ok()) return 0;  // a node named twice: the core says so itself
      absl::Status s = m.AddOffer(*spec, kNow);
      if (absl::IsInvalidArgument(s) && s.message() != "the offer names a node twice") {
        Fail("offer", s);
      }
      break;
    }
    case 2: {
      suanli::v1::Center c;
      if (!c.ParseFromArray(body, len)) return 0;
      absl::StatusOr<suanli::scheduler::CenterSpec> spec = suanli::broker::ValidateCenter(c, "op");
      if (!spec.ok()) return 0;
      Matcher m;
      absl::Status s = m.AddCenter(*spec);
      // More than 64 distinct tags in one market is a market-wide limit, not a malformed center.
      if (absl::IsInvalidArgument(s) && spec->tags.size() <= 64) Fail("center", s);
      break;
    }
    default: {
      suanli::v1::Node n;
      if (!n.ParseFromArray(body, len)) return 0;
      absl::StatusOr<suanli::scheduler::NodeSpec> spec = suanli::broker::ValidateNode(n);
      if (!spec.ok()) return 0;
      Matcher m;
      (void)m.AddCenter({.id = spec->center_id, .operator_id = "op", .region = "r"});
      (void)m.AddDomain({.center_id = spec->center_id, .id = spec->domain_id});
      absl::Status s = m.AddNodes({*spec});
      if (absl::IsInvalidArgument(s)) Fail("node", s);
      break;
    }
  }
  return 0;
}
