#include "storage/claim_rules.h"

#include <cstdint>
#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace suanli::storage {

absl::Status CheckClaims(absl::string_view store, const Batch& batch) {
  if (batch.claims.empty()) return absl::OkStatus();
  absl::flat_hash_set<int64_t> written;
  for (const AllocationRow& row : batch.allocations) written.insert(row.id);
  absl::flat_hash_set<std::pair<int64_t, std::string>> seen;
  for (const ClaimRow& c : batch.claims) {
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(store, ": claim of allocation ",
                                                     c.allocation_id, " on node \"",
                                                     absl::CHexEscape(c.node_id), "\": ", why));
    };
    if (!written.contains(c.allocation_id)) {
      return bad("the batch does not write that allocation (claims come with their allocation)");
    }
    if (c.node_id.empty()) return bad("names no node");
    if (c.node_gpus <= 0) return bad(absl::StrCat("node_gpus ", c.node_gpus, " is not above 0"));
    if (c.gpus <= 0 || c.gpus > c.node_gpus) {
      return bad(absl::StrCat("gpus ", c.gpus, " is not in 1..", c.node_gpus, " (node_gpus)"));
    }
    const bool finite = c.from != absl::InfinitePast() && c.from != absl::InfiniteFuture() &&
                        c.until != absl::InfinitePast() && c.until != absl::InfiniteFuture();
    if (!finite || absl::ToUnixMicros(c.until) <= absl::ToUnixMicros(c.from)) {
      return bad("its interval must be finite and end after it starts (to the microsecond)");
    }
    if (!seen.insert({c.allocation_id, c.node_id}).second) {
      return bad("the allocation has a second claim on that node");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckLedger(absl::string_view store, const Batch& batch) {
  absl::flat_hash_set<int64_t> ids;
  for (const LedgerEntryRow& e : batch.ledger) {
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(store, ": ledger entry ", e.id,
                                                     " (allocation ", e.allocation_id, ") ", why));
    };
    if (e.id <= 0) return bad("has an id that is not above 0");
    if (!ids.insert(e.id).second) return bad("appears twice in the batch");
    if (e.legs.empty()) return bad("has no legs");
    absl::flat_hash_set<std::string> accounts;
    int64_t sum = 0;
    for (const LedgerLeg& leg : e.legs) {
      if (leg.account.empty()) return bad("has a leg without an account");
      if (!accounts.insert(leg.account).second) {
        return bad(absl::StrCat("posts to account '", absl::CHexEscape(leg.account), "' twice"));
      }
      if (__builtin_add_overflow(sum, leg.amount_micros, &sum)) return bad("overflows int64");
    }
    if (sum != 0) return bad(absl::StrCat("does not balance: its legs sum to ", sum, " micros"));
  }
  return absl::OkStatus();
}

}  // namespace suanli::storage
