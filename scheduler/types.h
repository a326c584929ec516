// Value types of the allocation core: what operators register, what buyers ask for, and what the
// core answers. Plain structs; no behaviour beyond small helpers.
//
// Units: money is int64 micro-units of the currency (1 currency unit = 1,000,000); prices are per
// GPU-hour. Times are absl::Time / absl::Duration.
#ifndef SUANLI_SCHEDULER_TYPES_H_
#define SUANLI_SCHEDULER_TYPES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace suanli::scheduler {

// Money in micro-units of the currency.
using Micros = int64_t;
inline constexpr Micros kMicrosPerUnit = 1'000'000;

// Dense index of a node inside one Matcher; stable for the node's lifetime.
using NodeIndex = uint32_t;
// Allocation and binding-quote ids are assigned by the Matcher, start at 1, and are never reused.
using AllocationId = uint64_t;

enum class CenterType : uint8_t { kGovernment, kCarrier, kInternet, kEnterprise, kAcademic };
inline constexpr int kNumCenterTypes = 5;

// Fabric kinds, ordered by capability: a request's minimum fabric accepts that kind and any later.
enum class Fabric : uint8_t { kEthernet, kRoce, kInfiniband, kNvlink };

enum class Health : uint8_t { kHealthy, kDegraded, kDown };

// Where the GPUs of one allocation may come from.
enum class Locality : uint8_t {
  kNode,    // all GPUs on one node
  kDomain,  // all nodes inside one fabric domain (a gang)
  kCenter,  // all nodes inside one center
  kAny,     // anywhere that matches the rest of the request
};

const char* CenterTypeName(CenterType t);
const char* FabricName(Fabric f);
const char* HealthName(Health h);
const char* LocalityName(Locality l);

// A computing center, owned by one operator account.
struct CenterSpec {
  std::string id;           // unique in the market
  std::string operator_id;  // the owning operator account
  std::string name;
  std::string region;  // e.g. "cn-east-2"
  CenterType type = CenterType::kGovernment;
  std::vector<std::string> tags;  // compliance tags, e.g. "data-in-cn"; at most 64 distinct
};

// A set of nodes in one center with full-bandwidth interconnect.
struct DomainSpec {
  std::string center_id;
  std::string id;  // unique within its center
  Fabric fabric = Fabric::kEthernet;
  int32_t gbps = 0;  // per-node bandwidth, Gbit/s
};

// One server.
struct NodeSpec {
  std::string id;  // unique in the market
  std::string center_id;
  std::string domain_id;
  std::string model;  // a canonical GPU model name, see gpu_models.h
  int32_t gpus = 8;   // GPUs on the node, 1..16
};

// An operator's listing: capacity on sale over [from, until) at an ask price.
struct OfferSpec {
  std::string id;  // unique in the market
  std::string center_id;
  // Either a domain (every node it holds when the offer is added) or an explicit node list in the
  // center; exactly one of the two.
  std::string domain_id;
  std::vector<std::string> node_ids;
  absl::Time from;
  absl::Time until;
  Micros price_per_gpu_hour = 0;  // ask, > 0
  absl::Duration min_lease = absl::ZeroDuration();
  // Whole-node-only capacity is sold only as whole nodes: to requests whose slice on a node is
  // all of that node's GPUs.
  bool whole_node_only = false;
};

// A buyer's request. Fields left empty accept anything.
struct Request {
  std::string buyer;                // the buyer account
  std::vector<std::string> models;  // any of these canonical models; empty = any model
  int32_t gpus = 0;                 // total GPUs, >= 1
  // GPUs on every node used; 0 = any packing. When > 0, gpus must be a multiple of it.
  int32_t gpus_per_node = 0;
  Locality locality = Locality::kAny;
  Fabric min_fabric = Fabric::kEthernet;
  std::vector<std::string> regions;                // empty = any region
  std::vector<CenterType> center_types;            // empty = any type
  std::vector<std::string> required_tags;          // every one must be on the center
  Micros max_price_per_gpu_hour = 0;               // ceiling per GPU-hour, > 0
  std::optional<absl::Time> start;                 // absent or not after now = start now
  absl::Duration duration = absl::ZeroDuration();  // > 0
};

// GPUs taken on one node.
struct Slice {
  NodeIndex node = 0;
  int32_t gpus = 0;
  Micros price_per_gpu_hour = 0;  // the ask of the offer the slice was sold under
};

enum class AllocationState : uint8_t {
  kHeld,      // a binding quote: capacity held until the hold lapses or is redeemed
  kReserved,  // sold, starts in the future
  kActive,    // sold and running
  kEnded,
};

enum class EndReason : uint8_t { kNone, kReleased, kExpired, kLapsed, kRedeemed };

struct Allocation {
  AllocationId id = 0;
  std::string buyer;
  std::vector<Slice> slices;  // sorted by node index
  absl::Time start;
  absl::Time end;
  // Price of the whole allocation over [start, end), rounded half up to a micro-unit.
  Micros total_price = 0;
  AllocationState state = AllocationState::kActive;
  EndReason end_reason = EndReason::kNone;
  absl::Time hold_expires;  // kHeld only: when the binding quote lapses
  // kHeld only: the end of the interval held; a start-now hold is held past `end` by its ttl so
  // that a redeem at any time within the ttl gets the full duration.
  absl::Time held_end;
  int32_t gpus() const;
};

// A live allocation or hold as a store keeps it, to put back after a restart (Matcher::Restore).
struct RestoreSpec {
  struct Part {
    std::string node_id;
    int32_t gpus = 0;
    Micros price_per_gpu_hour = 0;
    // The offer it was sold under (Matcher::RestoreSpecOf); when empty, an offer covering the
    // interval at the price, preferring a live one.
    std::string offer_id;
  };
  AllocationId id = 0;
  std::string buyer;
  std::vector<Part> slices;
  absl::Time start;
  absl::Time end;
  AllocationState state = AllocationState::kActive;  // kHeld, kReserved or kActive
  absl::Time hold_expires;                           // kHeld
  absl::Time held_end;                               // kHeld
};

// Why a request was not granted.
enum class RejectReason : uint8_t {
  kNone,
  // No healthy capacity matches the request's models, regions, center types, tags, fabric,
  // packing and lease at all, whatever the price, time or quantity.
  kNoMatchingCapacity,
  // It would fit now, but only above the price ceiling; see Rejection::min_ceiling.
  kPriceAboveCeiling,
  // Not enough matching capacity is free for the interval; see largest_block and earliest_start.
  kInsufficientCapacity,
};

const char* RejectReasonName(RejectReason r);

// What a rejection says would work instead. Each hint keeps every other field of the request.
struct Rejection {
  RejectReason reason = RejectReason::kNone;
  // kPriceAboveCeiling: the lowest ceiling per GPU-hour at which the request would be granted.
  std::optional<Micros> min_ceiling;
  // The most GPUs a request of the same shape (packing, locality, ceiling, start) would be
  // granted at the asked start; 0 when none.
  int32_t largest_block = 0;
  // kInsufficientCapacity: the earliest start at which the request as asked would be granted,
  // when the capacity and offers known now allow one.
  std::optional<absl::Time> earliest_start;
  std::string message;  // for a person
};

// The answer to allocate, quote or hold.
struct Decision {
  bool granted = false;
  Allocation allocation;  // granted: the allocation (or, for a quote, what it would be)
  Rejection rejection;    // not granted: why, and what would work
};

// Something that happened to an allocation as time passed (see Matcher::Advance).
struct AllocationEvent {
  AllocationId id = 0;
  AllocationState state = AllocationState::kEnded;  // the new state
  EndReason reason = EndReason::kNone;
  absl::Time at;
};

// Price of `gpu_rate` (sum over slices of gpus x price per GPU-hour) for `d`, rounded half up.
Micros PriceFor(int64_t gpu_rate, absl::Duration d);

}  // namespace suanli::scheduler

#endif  // SUANLI_SCHEDULER_TYPES_H_
