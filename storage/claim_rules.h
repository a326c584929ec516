// The rules of ClaimRow (storage/store.h) that a batch can break on its own, checked the same way
// by every backend before it writes anything. (Whether a node ends up oversold depends on what
// is stored; the database checks that, see migrations/002_allocation_claims.sql.)
#ifndef SUANLI_STORAGE_CLAIM_RULES_H_
#define SUANLI_STORAGE_CLAIM_RULES_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "storage/store.h"

namespace suanli::storage {

// OK when every claim of `batch` is for an allocation the batch writes, names a node, has
// 0 < gpus <= node_gpus and a finite, non-empty interval, and no allocation has two claims on one
// node. Otherwise INVALID_ARGUMENT naming the first bad claim, prefixed with `store` (the
// store's name for messages).
absl::Status CheckClaims(absl::string_view store, const Batch& batch);

// OK when every ledger entry of `batch` has an id above 0 (distinct within the batch), at least
// one leg, no empty or repeated account, and legs that sum to exactly 0 (without overflow).
// Otherwise INVALID_ARGUMENT naming the first bad entry, prefixed with `store`.
absl::Status CheckLedger(absl::string_view store, const Batch& batch);

}  // namespace suanli::storage

#endif  // SUANLI_STORAGE_CLAIM_RULES_H_
