#include "broker/validate.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "scheduler/gpu_models.h"

namespace suanli::broker {
namespace {

using scheduler::kMicrosPerUnit;

constexpr int kMaxGpusPerNode = 16;
constexpr int32_t kMaxRequestGpus = 1 << 20;
constexpr scheduler::Micros kMaxPrice = 1'000 * kMicrosPerUnit;
const absl::Duration kMaxDuration = absl::Hours(24 * 366);
const absl::Duration kHorizon = absl::Hours(24 * 3653);
constexpr size_t kMaxListItems = 64;
// google.protobuf.Timestamp's range: 0001-01-01 to 9999-12-31.
constexpr int64_t kMinSeconds = -62135596800;
constexpr int64_t kMaxSeconds = 253402300799;

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

std::string KnownModels() {
  std::vector<std::string> names;
  for (const scheduler::GpuModel& m : scheduler::AllGpuModels()) names.emplace_back(m.name);
  return absl::StrJoin(names, ", ");
}

absl::Status CheckModel(absl::string_view field, const std::string& model) {
  if (scheduler::FindGpuModel(model) == nullptr) {
    return Invalid(field, absl::StrCat("unknown GPU model '", model, "'; known: ", KnownModels()));
  }
  return absl::OkStatus();
}

// A short printable label (region, tag): 1..64 characters of [A-Za-z0-9-_.:].
absl::Status CheckLabel(absl::string_view field, absl::string_view v) {
  if (v.empty() || v.size() > 64) {
    return Invalid(field, absl::StrCat("must be 1..64 characters, got ", v.size()));
  }
  for (char ch : v) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_' &&
        ch != '.' && ch != ':') {
      return Invalid(field, absl::StrCat("'", absl::CHexEscape(v),
                                         "' may hold only letters, digits and - _ . :"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckList(absl::string_view field, size_t n) {
  if (n > kMaxListItems) {
    return Invalid(field, absl::StrCat("at most ", kMaxListItems, " items, got ", n));
  }
  return absl::OkStatus();
}

absl::StatusOr<scheduler::CenterType> CoreCenterType(absl::string_view field, v1::CenterType t) {
  switch (t) {
    case v1::CENTER_TYPE_GOVERNMENT:
      return scheduler::CenterType::kGovernment;
    case v1::CENTER_TYPE_CARRIER:
      return scheduler::CenterType::kCarrier;
    case v1::CENTER_TYPE_INTERNET:
      return scheduler::CenterType::kInternet;
    case v1::CENTER_TYPE_ENTERPRISE:
      return scheduler::CenterType::kEnterprise;
    case v1::CENTER_TYPE_ACADEMIC:
      return scheduler::CenterType::kAcademic;
    default:
      return Invalid(field, "must be one of government, carrier, internet, enterprise, academic");
  }
}

absl::StatusOr<scheduler::Fabric> CoreFabric(absl::string_view field, v1::Fabric f) {
  switch (f) {
    case v1::FABRIC_ETHERNET:
      return scheduler::Fabric::kEthernet;
    case v1::FABRIC_ROCE:
      return scheduler::Fabric::kRoce;
    case v1::FABRIC_INFINIBAND:
      return scheduler::Fabric::kInfiniband;
    case v1::FABRIC_NVLINK:
      return scheduler::Fabric::kNvlink;
    default:
      return Invalid(field, "must be one of ethernet, roce, infiniband, nvlink");
  }
}

absl::Status CheckPrice(absl::string_view field, int64_t micros) {
  if (micros <= 0 || micros > kMaxPrice) {
    return Invalid(field, absl::StrCat("must be more than 0 and at most 1,000 currency units per "
                                       "GPU-hour (1,000,000,000 micros), got ",
                                       micros));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckId(absl::string_view field, absl::string_view id) {
  if (id.empty() || id.size() > 64) {
    return Invalid(field, absl::StrCat("an id must be 1..64 characters, got ", id.size()));
  }
  if (!absl::ascii_isalnum(static_cast<unsigned char>(id[0]))) {
    return Invalid(
        field, absl::StrCat("id '", absl::CHexEscape(id), "' must start with a letter or a digit"));
  }
  for (char ch : id) {
    const bool ok = absl::ascii_islower(static_cast<unsigned char>(ch)) ||
                    absl::ascii_isdigit(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' ||
                    ch == '.';
    if (!ok) {
      return Invalid(
          field, absl::StrCat("id '", absl::CHexEscape(id), "' may hold only a-z, 0-9 and - _ ."));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::Time> FromProto(absl::string_view field,
                                     const google::protobuf::Timestamp& t) {
  if (t.seconds() < kMinSeconds || t.seconds() > kMaxSeconds || t.nanos() < 0 ||
      t.nanos() > 999'999'999) {
    return Invalid(field, "not a valid timestamp");
  }
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

absl::StatusOr<Period> ValidatePeriod(const google::protobuf::Timestamp* from,
                                      const google::protobuf::Timestamp* to, absl::Time now) {
  Period p;
  p.to = now;
  if (to != nullptr) {
    absl::StatusOr<absl::Time> t = FromProto("to", *to);
    if (!t.ok()) return t.status();
    p.to = *t;
  }
  p.from = p.to - absl::Hours(24);
  if (from != nullptr) {
    absl::StatusOr<absl::Time> t = FromProto("from", *from);
    if (!t.ok()) return t.status();
    p.from = *t;
  }
  if (p.from >= p.to) return absl::InvalidArgumentError("from: must be before to");
  return p;
}

absl::StatusOr<absl::Duration> FromProto(absl::string_view field,
                                         const google::protobuf::Duration& d) {
  constexpr int64_t kMax = 315'576'000'000;  // protobuf's bound, about 10,000 years
  if (d.seconds() < -kMax || d.seconds() > kMax || d.nanos() < -999'999'999 ||
      d.nanos() > 999'999'999 || (d.seconds() > 0 && d.nanos() < 0) ||
      (d.seconds() < 0 && d.nanos() > 0)) {
    return Invalid(field, "not a valid duration");
  }
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

google::protobuf::Timestamp ToProto(absl::Time t) {
  google::protobuf::Timestamp p;
  const int64_t us = absl::ToUnixMicros(t);
  int64_t s = us / 1'000'000, rem = us % 1'000'000;
  if (rem < 0) {
    rem += 1'000'000;
    --s;
  }
  p.set_seconds(s);
  p.set_nanos(static_cast<int32_t>(rem * 1000));
  return p;
}

google::protobuf::Duration ToProto(absl::Duration d) {
  google::protobuf::Duration p;
  const int64_t us = absl::ToInt64Microseconds(d);
  p.set_seconds(us / 1'000'000);
  p.set_nanos(static_cast<int32_t>((us % 1'000'000) * 1000));
  return p;
}

absl::StatusOr<scheduler::Request> ValidateAllocationRequest(const v1::AllocationRequest& r,
                                                             absl::string_view buyer,
                                                             absl::Time now) {
  scheduler::Request q;
  q.buyer.assign(buyer.data(), buyer.size());
  if (r.gpus() < 1 || r.gpus() > kMaxRequestGpus) {
    return Invalid("request.gpus",
                   absl::StrCat("must be between 1 and ", kMaxRequestGpus, ", got ", r.gpus()));
  }
  q.gpus = r.gpus();
  if (r.gpus_per_node() < 0 || r.gpus_per_node() > kMaxGpusPerNode) {
    return Invalid("request.gpus_per_node",
                   absl::StrCat("must be between 0 (any packing) and ", kMaxGpusPerNode, ", got ",
                                r.gpus_per_node()));
  }
  if (r.gpus_per_node() > 0 && r.gpus() % r.gpus_per_node() != 0) {
    return Invalid("request.gpus_per_node",
                   absl::StrCat("gpus (", r.gpus(), ") must be a multiple of gpus_per_node (",
                                r.gpus_per_node(), ")"));
  }
  q.gpus_per_node = r.gpus_per_node();
  switch (r.locality()) {
    case v1::LOCALITY_UNSPECIFIED:
    case v1::LOCALITY_ANY:
      q.locality = scheduler::Locality::kAny;
      break;
    case v1::LOCALITY_NODE:
      q.locality = scheduler::Locality::kNode;
      if (r.gpus() > kMaxGpusPerNode) {
        return Invalid("request.locality", absl::StrCat("node puts all ", r.gpus(),
                                                        " GPUs on one node; no node has "
                                                        "more than ",
                                                        kMaxGpusPerNode));
      }
      if (r.gpus_per_node() > 0 && r.gpus_per_node() != r.gpus()) {
        return Invalid("request.gpus_per_node", "with locality node it must be 0 or equal to gpus");
      }
      break;
    case v1::LOCALITY_DOMAIN:
      q.locality = scheduler::Locality::kDomain;
      break;
    case v1::LOCALITY_CENTER:
      q.locality = scheduler::Locality::kCenter;
      break;
    default:
      return Invalid("request.locality", "must be one of node, domain, center, any");
  }
  if (r.min_fabric() == v1::FABRIC_UNSPECIFIED) {
    q.min_fabric = scheduler::Fabric::kEthernet;
  } else {
    absl::StatusOr<scheduler::Fabric> f = CoreFabric("request.min_fabric", r.min_fabric());
    if (!f.ok()) return f.status();
    q.min_fabric = *f;
  }
  if (absl::Status s = CheckList("request.models", r.models_size()); !s.ok()) return s;
  for (const std::string& m : r.models()) {
    if (absl::Status s = CheckModel("request.models", m); !s.ok()) return s;
    q.models.push_back(m);
  }
  if (absl::Status s = CheckList("request.regions", r.regions_size()); !s.ok()) return s;
  for (const std::string& region : r.regions()) {
    if (absl::Status s = CheckLabel("request.regions", region); !s.ok()) return s;
    q.regions.push_back(region);
  }
  if (absl::Status s = CheckList("request.center_types", r.center_types_size()); !s.ok()) return s;
  for (int t : r.center_types()) {
    absl::StatusOr<scheduler::CenterType> ct =
        CoreCenterType("request.center_types", static_cast<v1::CenterType>(t));
    if (!ct.ok()) return ct.status();
    q.center_types.push_back(*ct);
  }
  if (absl::Status s = CheckList("request.required_tags", r.required_tags_size()); !s.ok()) {
    return s;
  }
  for (const std::string& tag : r.required_tags()) {
    if (absl::Status s = CheckLabel("request.required_tags", tag); !s.ok()) return s;
    q.required_tags.push_back(tag);
  }
  if (r.max_price_micros_per_gpu_hour() == 0) {
    return Invalid("request.max_price_micros_per_gpu_hour",
                   "a price ceiling per GPU-hour is required");
  }
  if (absl::Status s =
          CheckPrice("request.max_price_micros_per_gpu_hour", r.max_price_micros_per_gpu_hour());
      !s.ok()) {
    return s;
  }
  q.max_price_per_gpu_hour = r.max_price_micros_per_gpu_hour();
  if (!r.has_duration()) return Invalid("request.duration", "required (e.g. 4h)");
  absl::StatusOr<absl::Duration> d = FromProto("request.duration", r.duration());
  if (!d.ok()) return d.status();
  if (*d <= absl::ZeroDuration() || *d > kMaxDuration) {
    return Invalid("request.duration", "must be more than 0 and at most 366 days");
  }
  if (*d < absl::Microseconds(1)) {
    return Invalid("request.duration", "must be at least one microsecond");
  }
  q.duration = absl::Trunc(*d, absl::Microseconds(1));
  if (r.has_start()) {
    absl::StatusOr<absl::Time> start = FromProto("request.start", r.start());
    if (!start.ok()) return start.status();
    if (*start - now > kHorizon - absl::Hours(24)) {
      return Invalid("request.start", "must be within 10 years from now");
    }
    if (*start > now)
      q.start = absl::Trunc(*start - absl::UnixEpoch(), absl::Microseconds(1)) + absl::UnixEpoch();
  }
  if (absl::Status s = ValidateIdempotencyKey(r.idempotency_key()); !s.ok()) return s;
  return q;
}

absl::StatusOr<absl::Duration> ValidateHold(const google::protobuf::Duration& hold) {
  absl::StatusOr<absl::Duration> d = FromProto("hold", hold);
  if (!d.ok()) return d.status();
  if (*d < absl::Microseconds(1) || *d > absl::Hours(1)) {
    return Invalid("hold", "a binding quote is held for more than 0 and at most 1 hour");
  }
  return absl::Trunc(*d, absl::Microseconds(1));
}

absl::StatusOr<scheduler::CenterSpec> ValidateCenter(const v1::Center& c,
                                                     absl::string_view operator_id) {
  if (absl::Status s = CheckId("center.id", c.id()); !s.ok()) return s;
  if (c.name().size() > 200) return Invalid("center.name", "at most 200 characters");
  if (absl::Status s = CheckLabel("center.region", c.region()); !s.ok()) return s;
  absl::StatusOr<scheduler::CenterType> t = CoreCenterType("center.type", c.type());
  if (!t.ok()) return t.status();
  if (absl::Status s = CheckList("center.tags", c.tags_size()); !s.ok()) return s;
  scheduler::CenterSpec spec;
  for (const std::string& tag : c.tags()) {
    if (absl::Status s = CheckLabel("center.tags", tag); !s.ok()) return s;
    spec.tags.push_back(tag);
  }
  spec.id = c.id();
  spec.operator_id.assign(operator_id.data(), operator_id.size());
  spec.name = c.name().empty() ? c.id() : c.name();
  spec.region = c.region();
  spec.type = *t;
  return spec;
}

absl::StatusOr<scheduler::DomainSpec> ValidateDomain(const v1::FabricDomain& d) {
  if (absl::Status s = CheckId("domain.center_id", d.center_id()); !s.ok()) return s;
  if (absl::Status s = CheckId("domain.id", d.id()); !s.ok()) return s;
  absl::StatusOr<scheduler::Fabric> f = CoreFabric("domain.fabric", d.fabric());
  if (!f.ok()) return f.status();
  if (d.gbps() < 0 || d.gbps() > 100'000) {
    return Invalid("domain.gbps", absl::StrCat("must be 0..100000, got ", d.gbps()));
  }
  scheduler::DomainSpec spec;
  spec.center_id = d.center_id();
  spec.id = d.id();
  spec.fabric = *f;
  spec.gbps = d.gbps();
  return spec;
}

absl::StatusOr<scheduler::NodeSpec> ValidateNode(const v1::Node& n) {
  if (absl::Status s = CheckId("node.id", n.id()); !s.ok()) return s;
  if (absl::Status s = CheckId("node.center_id", n.center_id()); !s.ok()) return s;
  if (absl::Status s = CheckId("node.domain_id", n.domain_id()); !s.ok()) return s;
  if (absl::Status s = CheckModel("node.model", n.model()); !s.ok()) return s;
  if (n.gpus() < 1 || n.gpus() > kMaxGpusPerNode) {
    return Invalid("node.gpus", absl::StrCat("node '", n.id(), "': must be 1..", kMaxGpusPerNode,
                                             ", got ", n.gpus()));
  }
  scheduler::NodeSpec spec;
  spec.id = n.id();
  spec.center_id = n.center_id();
  spec.domain_id = n.domain_id();
  spec.model = n.model();
  spec.gpus = n.gpus();
  return spec;
}

absl::StatusOr<scheduler::OfferSpec> ValidateOffer(const v1::Offer& o, absl::Time now) {
  if (absl::Status s = CheckId("offer.id", o.id()); !s.ok()) return s;
  if (absl::Status s = CheckId("offer.center_id", o.center_id()); !s.ok()) return s;
  if (o.domain_id().empty() == (o.node_ids_size() == 0)) {
    return Invalid("offer", "name either domain_id or node_ids, not both and not neither");
  }
  scheduler::OfferSpec spec;
  if (!o.domain_id().empty()) {
    if (absl::Status s = CheckId("offer.domain_id", o.domain_id()); !s.ok()) return s;
    spec.domain_id = o.domain_id();
  }
  if (o.node_ids_size() > 10'000) {
    return Invalid("offer.node_ids", absl::StrCat("at most 10,000, got ", o.node_ids_size()));
  }
  for (const std::string& id : o.node_ids()) {
    if (absl::Status s = CheckId("offer.node_ids", id); !s.ok()) return s;
    spec.node_ids.push_back(id);
  }
  spec.from = now;
  if (o.has_from()) {
    absl::StatusOr<absl::Time> from = FromProto("offer.from", o.from());
    if (!from.ok()) return from.status();
    spec.from = *from;
  }
  if (!o.has_until()) return Invalid("offer.until", "required: the end of the offer's window");
  absl::StatusOr<absl::Time> until = FromProto("offer.until", o.until());
  if (!until.ok()) return until.status();
  spec.until = *until;
  spec.from = absl::FromUnixMicros(absl::ToUnixMicros(spec.from));
  spec.until = absl::FromUnixMicros(absl::ToUnixMicros(spec.until));
  if (spec.until <= spec.from) return Invalid("offer.until", "must be after `from`");
  if (spec.until <= now) return Invalid("offer.until", "is in the past");
  if (spec.until - now > kHorizon - absl::Hours(24) ||
      now - spec.from > kHorizon - absl::Hours(24)) {
    return Invalid("offer", "the window must lie within 10 years of now");
  }
  if (absl::Status s = CheckPrice("offer.price_micros_per_gpu_hour", o.price_micros_per_gpu_hour());
      !s.ok()) {
    return s;
  }
  spec.price_per_gpu_hour = o.price_micros_per_gpu_hour();
  if (o.has_min_lease()) {
    absl::StatusOr<absl::Duration> lease = FromProto("offer.min_lease", o.min_lease());
    if (!lease.ok()) return lease.status();
    if (*lease < absl::ZeroDuration() || *lease > kMaxDuration) {
      return Invalid("offer.min_lease", "must be 0..366 days");
    }
    spec.min_lease = absl::Trunc(*lease, absl::Microseconds(1));
  }
  spec.whole_node_only = o.whole_node_only();
  spec.id = o.id();
  spec.center_id = o.center_id();
  return spec;
}

absl::StatusOr<scheduler::Health> ValidateHealth(v1::Health h) {
  switch (h) {
    case v1::HEALTH_HEALTHY:
      return scheduler::Health::kHealthy;
    case v1::HEALTH_DEGRADED:
      return scheduler::Health::kDegraded;
    case v1::HEALTH_DOWN:
      return scheduler::Health::kDown;
    default:
      return Invalid("health", "must be one of healthy, degraded, down");
  }
}

absl::Status ValidateAccountName(absl::string_view name) {
  if (name.empty() || name.size() > 200) {
    return Invalid("name", absl::StrCat("must be 1..200 characters, got ", name.size()));
  }
  for (char ch : name) {
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) {
      return Invalid("name", "must not hold control characters");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateRole(v1::Role role) {
  if (role == v1::ROLE_ADMIN || role == v1::ROLE_OPERATOR || role == v1::ROLE_BUYER) {
    return absl::OkStatus();
  }
  return Invalid("role", "must be one of admin, operator, buyer");
}

absl::Status ValidateIdempotencyKey(absl::string_view key) {
  if (key.size() > 128) {
    return Invalid("request.idempotency_key",
                   absl::StrCat("at most 128 characters, got ", key.size()));
  }
  for (char ch : key) {
    if (ch < 0x21 || ch > 0x7e) {
      return Invalid("request.idempotency_key", "only printable ASCII without spaces");
    }
  }
  return absl::OkStatus();
}

v1::CenterType ToProto(scheduler::CenterType t) {
  switch (t) {
    case scheduler::CenterType::kGovernment:
      return v1::CENTER_TYPE_GOVERNMENT;
    case scheduler::CenterType::kCarrier:
      return v1::CENTER_TYPE_CARRIER;
    case scheduler::CenterType::kInternet:
      return v1::CENTER_TYPE_INTERNET;
    case scheduler::CenterType::kEnterprise:
      return v1::CENTER_TYPE_ENTERPRISE;
    case scheduler::CenterType::kAcademic:
      return v1::CENTER_TYPE_ACADEMIC;
  }
  return v1::CENTER_TYPE_UNSPECIFIED;
}

v1::Fabric ToProto(scheduler::Fabric f) {
  switch (f) {
    case scheduler::Fabric::kEthernet:
      return v1::FABRIC_ETHERNET;
    case scheduler::Fabric::kRoce:
      return v1::FABRIC_ROCE;
    case scheduler::Fabric::kInfiniband:
      return v1::FABRIC_INFINIBAND;
    case scheduler::Fabric::kNvlink:
      return v1::FABRIC_NVLINK;
  }
  return v1::FABRIC_UNSPECIFIED;
}

v1::Health ToProto(scheduler::Health h) {
  switch (h) {
    case scheduler::Health::kHealthy:
      return v1::HEALTH_HEALTHY;
    case scheduler::Health::kDegraded:
      return v1::HEALTH_DEGRADED;
    case scheduler::Health::kDown:
      return v1::HEALTH_DOWN;
  }
  return v1::HEALTH_UNSPECIFIED;
}

v1::RejectReason ToProto(scheduler::RejectReason r) {
  switch (r) {
    case scheduler::RejectReason::kNoMatchingCapacity:
      return v1::REJECT_REASON_NO_MATCHING_CAPACITY;
    case scheduler::RejectReason::kPriceAboveCeiling:
      return v1::REJECT_REASON_PRICE_ABOVE_CEILING;
    case scheduler::RejectReason::kInsufficientCapacity:
      return v1::REJECT_REASON_INSUFFICIENT_CAPACITY;
    case scheduler::RejectReason::kNone:
      break;
  }
  return v1::REJECT_REASON_UNSPECIFIED;
}

std::string LowerName(v1::CenterType t) {
  std::string name = v1::CenterType_Name(t);
  return absl::AsciiStrToLower(absl::string_view(name).substr(sizeof("CENTER_TYPE_") - 1));
}

std::string LowerName(v1::Fabric f) {
  std::string name = v1::Fabric_Name(f);
  return absl::AsciiStrToLower(absl::string_view(name).substr(sizeof("FABRIC_") - 1));
}

const char* RoleName(v1::Role r) {
  switch (r) {
    case v1::ROLE_ADMIN:
      return "admin";
    case v1::ROLE_OPERATOR:
      return "operator";
    case v1::ROLE_BUYER:
      return "buyer";
    default:
      return "unknown";
  }
}

}  // namespace suanli::broker
