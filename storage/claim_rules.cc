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

}  // namespace suanli::storage
