// Settlement statements of operators and invoices of buyers, summed from the ledger's entries
// (broker/ledger.h) over a period [from, to): an entry belongs to the period when it was posted at
// or after `from` and before `to`. Everything is integer micro-units and exact: a statement's
// gross, commission and net are the sums of the operator's legs (operator:<id> + commission:<id>,
// commission:<id>, operator:<id>) of the period's entries, and an invoice's total due is minus the
// sum of the buyer's legs (buyer:<id>). So over any period the operators' net plus commission
// equals the buyers' total due, to the micro-unit.
//
// Pure functions of the entries they are given and of what `facts` says of the allocations;
// thread-compatible. The market (Market::OperatorStatement and friends) adds who may read what.
//
//   std::vector<const storage::LedgerEntryRow*> mine = ...;  // the operator's entries, any time
//   v1::Statement s = StatementOf("op-1", mine, from, to, facts, /*with_lines=*/true);
#ifndef SUANLI_BROKER_SETTLEMENT_H_
#define SUANLI_BROKER_SETTLEMENT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "storage/store.h"
#include "suanli/v1/common.pb.h"

namespace suanli::broker {

// What a statement or an invoice shows of an allocation besides its ledger entries.
struct AllocationFacts {
  std::string buyer_id;
  int32_t gpus = 0;                 // over all its slices
  std::vector<std::string> models;  // distinct, sorted
  absl::Time start;                 // as it stands now
  absl::Time end;
  // One operator's part of the allocation: its GPUs and its rate (the sum over its slices of
  // gpus * price per GPU-hour, the weight its share of every charge is apportioned by).
  struct Part {
    int32_t gpus = 0;
    int64_t rate_micros_per_hour = 0;
  };
  std::map<std::string, Part> operators;  // by operator account id
};

// The facts of an allocation by id; nullptr when they are not known (the lines then show 0 GPUs
// and GPU-hours, and the amounts all the same).
using FactsOf = std::function<const AllocationFacts*(int64_t allocation_id)>;

// The statement of `operator_id` over [from, to). `entries` holds at least every entry with a leg
// of the operator (operator:<id> or commission:<id>) posted before `to`, in id order; others are
// skipped. A line per entry of the period; the opening balance sums the operator:<id> legs
// posted before `from`. Without `with_lines` the lines are left out and the totals kept.
// operator_name is left empty.
v1::Statement StatementOf(absl::string_view operator_id,
                          const std::vector<const storage::LedgerEntryRow*>& entries,
                          absl::Time from, absl::Time to, const FactsOf& facts, bool with_lines);

// The invoice of `buyer_id` over [from, to). `entries` holds at least every entry with a
// buyer:<id> leg posted before `to`, in id order; others are skipped. One InvoiceAllocation per
// allocation with entries in the period (ordered by allocation id as a number), each with those
// entries; the opening balance is what the buyer was charged before `from`. Without
// `with_allocations` the allocations are left out and the counts and totals kept. buyer_name is
// left empty.
v1::Invoice InvoiceOf(absl::string_view buyer_id,
                      const std::vector<const storage::LedgerEntryRow*>& entries, absl::Time from,
                      absl::Time to, const FactsOf& facts, bool with_allocations);

// The proto kind of a stored entry kind (broker::EntryKind numbering); UNSPECIFIED for others.
v1::LedgerEntryKind LedgerEntryKindOf(int32_t kind);

}  // namespace suanli::broker

#endif  // SUANLI_BROKER_SETTLEMENT_H_
