// The allocation core: the market's capacity, what has been sold of it over time, and the
// decisions that sell more. Pure C++: no I/O, no threads, no clocks of its own; every call that
// depends on time takes `now`, and time never goes backwards (a `now` earlier than one seen
// before is taken as the latest one seen).
//
//   Matcher m;
//   m.AddCenter({.id = "c1", .operator_id = "op1", .region = "cn-east-2", ...});
//   m.AddDomain({.center_id = "c1", .id = "ib0", .fabric = Fabric::kInfiniband, .gbps = 400});
//   m.AddNodes({{.id = "n1", .center_id = "c1", .domain_id = "ib0", .model = "H100-SXM5-80G"}});
//   m.AddOffer({.id = "o1", .center_id = "c1", .domain_id = "ib0", .from = t0, .until = t1,
//               .price_per_gpu_hour = 28 * kMicrosPerUnit}, now);
//   absl::StatusOr<Decision> d = m.Allocate(request, now);
//
// WHAT A GRANT GUARANTEES
// A granted allocation has exactly `gpus` GPUs. Every slice is on a healthy node of an accepted
// model, in a center of an accepted region and type carrying every required tag, in a domain of at
// least the minimum fabric, sold under one offer whose window contains the allocation's whole
// interval [start, end), whose minimum lease is met, and whose ask is not above the ceiling.
// With gpus_per_node = k > 0 every slice has exactly k GPUs; otherwise slices may be any size
// (locality kNode: one slice). The slices respect the locality (one node, one domain, one center).
// No node ever has more GPUs sold at any instant than it has: not at grant time and not later, as
// nothing here ever adds to a sold interval without checking (extension checks the same GPUs).
//
// WHICH GRANT (the policy of DESIGN.md §5)
// Among all feasible allocations the core picks, lexicographically:
//   1. the lowest total price (sum over slices of GPUs x ask);
//   2. the fewest slices on nodes of a domain that has no live allocation yet (keeps whole domains
//      whole for gangs);
//   3. the fewest nodes broken (a node wholly free over the interval that is left partly sold);
//   4. the fewest GPUs left free on the nodes it touches (best fit);
//   5. the operators least recently sold to (sum over slices of the operator's last-sale number);
//   6. the lowest node indices (a deterministic last resort).
// Terms 2-5 are sums over slices. For fixed-size slices (gpus_per_node > 0, or locality kNode)
// the choice is exactly optimal under this order. For any-packing requests over several nodes the
// price (1) is exactly optimal, and the remaining terms order how the core fills: it takes nodes
// in the order of the per-slice terms, each as full as the request still needs.
//
// REJECTIONS
// A rejection changes nothing and carries a reason (see RejectReason) and hints:
//   kNoMatchingCapacity    no healthy capacity matches the request's static constraints at all;
//   kPriceAboveCeiling     it would fit at `start`, but not under the ceiling: min_ceiling is the
//                          lowest ceiling that would be granted;
//   kInsufficientCapacity  not enough is free: largest_block is the most GPUs the same shape
//                          would get now, earliest_start the first start at which the request
//                          as asked would be granted (looked for among the next capacity changes
//                          of each group, at most 64 per group; absent when none is found).
// Invalid requests (zero GPUs, an unknown model, a packing that does not divide the GPUs, ...)
// return INVALID_ARGUMENT and change nothing.
//
// BINDING QUOTES
// Hold() is Allocate() whose result is held for `ttl` at the quoted price: the capacity is taken
// out of the market (for a start-now request, over [now, now + ttl + duration) so that a redeem at
// any time within the ttl gets the full duration). Redeem() turns it into an allocation once; if
// not redeemed, it lapses by itself when time passes its expiry.
//
// THREAD SAFETY
// Not thread-safe. The broker's engine thread is its only caller.
#ifndef SUANLI_SCHEDULER_MATCHER_H_
#define SUANLI_SCHEDULER_MATCHER_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "scheduler/types.h"

namespace suanli::scheduler {

// Figures about the market at the current time.
struct MarketTotals {
  int64_t nodes = 0;             // registered, not removed
  int64_t gpus = 0;              // on those nodes
  int64_t sold_gpus_now = 0;     // GPUs of live allocations and holds running now
  int64_t live_allocations = 0;  // held, reserved or active
};

// Capacity on sale now in one fabric domain under one offer, of one GPU model and node size.
struct CatalogLine {
  std::string offer_id;
  std::string center_id;
  std::string domain_id;
  std::string model;
  int32_t gpus_per_node = 0;
  int32_t nodes = 0;             // healthy nodes on sale
  int32_t free_gpus = 0;         // free now on those nodes
  int32_t free_whole_nodes = 0;  // of them wholly free now
  Micros price_per_gpu_hour = 0;
  absl::Time from;
  absl::Time until;
  absl::Duration min_lease;
  bool whole_node_only = false;
};

// What Audit() found; empty `problems` means every invariant holds.
struct AuditReport {
  int64_t violations = 0;
  std::vector<std::string> problems;  // the first few, for a person
};

class Matcher {
 public:
  Matcher();
  ~Matcher();
  Matcher(const Matcher&) = delete;
  Matcher& operator=(const Matcher&) = delete;

  // ---- Capacity. Each returns INVALID_ARGUMENT for malformed input, ALREADY_EXISTS for a
  // duplicate id, NOT_FOUND for an unknown parent, RESOURCE_EXHAUSTED when a center would bring
  // the market's distinct tags over 64, and changes nothing on error.

  absl::Status AddCenter(const CenterSpec& spec);
  absl::Status AddDomain(const DomainSpec& spec);
  // Adds all nodes or none.
  absl::Status AddNodes(const std::vector<NodeSpec>& specs);
  // FAILED_PRECONDITION while the node has live allocations or holds.
  absl::Status RemoveNode(absl::string_view node_id);
  // Only healthy nodes are sold; live allocations on a node that turns unhealthy stay as they are.
  absl::Status SetNodeHealth(absl::string_view node_id, Health health);
  // Offers cover the nodes they name (or the domain holds) when added. FAILED_PRECONDITION when
  // the window overlaps another offer on one of those nodes; INVALID_ARGUMENT when `until` is not
  // after both `from` and `now`.
  absl::Status AddOffer(const OfferSpec& spec, absl::Time now);
  // Takes the offer off the market. What was already sold under it stays sold (and cannot be
  // extended).
  absl::Status WithdrawOffer(absl::string_view offer_id, absl::Time now);

  // ---- Buying.

  // Grants the request whole or rejects it (see the policy above).
  absl::StatusOr<Decision> Allocate(const Request& request, absl::Time now);
  // What Allocate would answer now, without taking anything.
  absl::StatusOr<Decision> Quote(const Request& request, absl::Time now);
  // A binding quote: like Allocate, but held (state kHeld) until now + ttl. ttl must be in
  // (0, 1h].
  absl::StatusOr<Decision> Hold(const Request& request, absl::Duration ttl, absl::Time now);
  // Turns a live hold of `buyer` into an allocation at the held price: [now, now + duration) for
  // a start-now request, the held interval otherwise. NOT_FOUND for an unknown, lapsed or already
  // redeemed hold; PERMISSION_DENIED when the hold is another buyer's.
  absl::StatusOr<Allocation> Redeem(AllocationId hold_id, absl::string_view buyer, absl::Time now);
  // Ends a live allocation (or cancels a hold) now; its GPUs are free again from now.
  absl::Status Release(AllocationId id, absl::Time now);
  // Moves the end of a live (reserved or active) allocation later, only if every GPU it holds
  // stays free until new_end on a healthy node under the same offer; FAILED_PRECONDITION
  // otherwise, with the reason. INVALID_ARGUMENT when new_end is not after the current end.
  absl::StatusOr<Allocation> Extend(AllocationId id, absl::Time new_end, absl::Time now);

  // ---- Restart.

  // Puts back a live allocation or hold exactly as it was sold: same id, nodes, GPUs, prices,
  // interval and state, for rebuilding the market after a restart. Capacity must be rebuilt
  // first, by replaying its calls in their order (withdrawn offers included: an allocation sold
  // under an offer withdrawn since is restored under it). Ids restored here are never handed out
  // again. The operator recency tie-break starts again from the order of the restores.
  // Returns the allocation as restored. ALREADY_EXISTS for a live id; INVALID_ARGUMENT for a
  // malformed spec; FAILED_PRECONDITION when a node is gone, no offer at the slice's price
  // covers the interval, or the node has not enough GPUs free over it. Changes nothing on error.
  // An allocation whose end (or hold) has passed by `now` is restored and ended at once, with
  // its event, as if time had passed with the broker up.
  absl::StatusOr<Allocation> Restore(const RestoreSpec& spec, absl::Time now);

  // ---- Time.

  // Moves time to `now`: reserved allocations whose start has come become active, allocations
  // whose end has come expire, holds whose ttl has passed lapse. Every other call does this first.
  void Advance(absl::Time now);
  // The events since the last call (state changes caused by time passing and by calls), oldest
  // first.
  std::vector<AllocationEvent> TakeEvents();
  // When the next change caused by time passing (an activation, expiry or lapse) may be due:
  // never later than the real one, sometimes earlier (Advance then finds nothing to do).
  // absl::InfiniteFuture() when nothing is pending.
  absl::Time NextEventTime() const;

  // ---- Reading.

  // A live allocation or hold, or nullptr. The pointer is valid until the next non-const call.
  const Allocation* Find(AllocationId id) const;
  // The registered id of a node index from a slice.
  const std::string& NodeId(NodeIndex node) const;
  // What a store keeps of a live allocation or hold to Restore it after a restart (node ids and
  // the offer each slice was sold under included), or nullopt when `id` is not live.
  std::optional<RestoreSpec> RestoreSpecOf(AllocationId id) const;
  MarketTotals Totals() const;
  // What is on sale: one line per domain, offer, model and node size, for every offer not
  // withdrawn whose window has not ended, with at least one healthy node. Ordered by price,
  // then offer id, domain, model and node size. Linear in the number of such lines.
  std::vector<CatalogLine> Catalog() const;
  // Ids below `next` are never handed out, for a restart that knows ids of allocations that have
  // ended (and so are not restored).
  void ReserveIds(AllocationId next);
  absl::Time now() const;
  // Checks every invariant from scratch (no node oversold at any instant, indexes consistent with
  // the calendar, live allocations consistent with their slices). Slow; for tests and audits.
  AuditReport Audit() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace suanli::scheduler

#endif  // SUANLI_SCHEDULER_MATCHER_H_
