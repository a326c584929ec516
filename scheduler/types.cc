#include "scheduler/types.h"

namespace suanli::scheduler {

const char* CenterTypeName(CenterType t) {
  switch (t) {
    case CenterType::kGovernment:
      return "government";
    case CenterType::kCarrier:
      return "carrier";
    case CenterType::kInternet:
      return "internet";
    case CenterType::kEnterprise:
      return "enterprise";
    case CenterType::kAcademic:
      return "academic";
  }
  return "unknown";
}

const char* FabricName(Fabric f) {
  switch (f) {
    case Fabric::kEthernet:
      return "ethernet";
    case Fabric::kRoce:
      return "roce";
    case Fabric::kInfiniband:
      return "infiniband";
    case Fabric::kNvlink:
      return "nvlink";
  }
  return "unknown";
}

const char* HealthName(Health h) {
  switch (h) {
    case Health::kHealthy:
      return "healthy";
    case Health::kDegraded:
      return "degraded";
    case Health::kDown:
      return "down";
  }
  return "unknown";
}

const char* LocalityName(Locality l) {
  switch (l) {
    case Locality::kNode:
      return "node";
    case Locality::kDomain:
      return "domain";
    case Locality::kCenter:
      return "center";
    case Locality::kAny:
      return "any";
  }
  return "unknown";
}

const char* RejectReasonName(RejectReason r) {
  switch (r) {
    case RejectReason::kNone:
      return "none";
    case RejectReason::kNoMatchingCapacity:
      return "no_matching_capacity";
    case RejectReason::kPriceAboveCeiling:
      return "price_above_ceiling";
    case RejectReason::kInsufficientCapacity:
      return "insufficient_capacity";
  }
  return "unknown";
}

int32_t Allocation::gpus() const {
  int32_t n = 0;
  for (const Slice& s : slices) n += s.gpus;
  return n;
}

Micros PriceFor(int64_t gpu_rate, absl::Duration d) {
  // gpu_rate micro-units per hour times d in microseconds, divided by 3.6e9 us/h, half up.
  const __int128 num = static_cast<__int128>(gpu_rate) * absl::ToInt64Microseconds(d);
  constexpr __int128 kUsPerHour = 3'600'000'000;
  return static_cast<Micros>((num + kUsPerHour / 2) / kUsPerHour);
}

}  // namespace suanli::scheduler
