// The broker's durable state behind one interface, with an embedded SQLite backend and a
// PostgreSQL one. The broker's engine is the only writer: it hands the store one Batch per engine
// batch and answers its callers only after Commit returns OK (persist before acknowledge). At
// start the broker calls Load and rebuilds the market from what it returns.
//
// What is kept:
//   - accounts and API keys (keys only as a hash of their secret), inserted or replaced;
//   - the capacity journal: every call that changed capacity (centers, domains, nodes, health,
//     offers), appended in the order it was applied, replayed in that order at start;
//   - allocations (every one ever granted or held, ended ones included), inserted or replaced,
//     each a serialized suanli.v1.Allocation plus what restoring it needs;
//   - claims: the GPUs each live allocation takes on each node, which the store checks so that
//     no node is ever stored oversold;
//   - idempotency records: the first answer to an Allocate with a buyer's idempotency key;
//   - the ledger: immutable double-entry entries whose legs sum to zero (appended, never changed);
//   - decision counts per minute (the market's requests, grants, rejections and decision
//     latencies), inserted or replaced, so that market figures survive a restart.
//
//   absl::StatusOr<std::unique_ptr<Store>> store = OpenStore("sqlite:var/suanli.db");
//   // or OpenStore("postgresql://suanli@db.example.com:5432/suanli")
//   storage::Batch b;
//   b.accounts.push_back({...});
//   absl::Status s = (*store)->Commit(b);  // durable when OK
//
// Errors: INVALID_ARGUMENT for a malformed URL, FAILED_PRECONDITION for a schema newer than this
// build knows, UNAVAILABLE when the store cannot be reached or written (the batch then left no
// trace), DATA_LOSS when stored data cannot be read back.
//
// Thread safety: a Store is used by one thread at a time.
#ifndef SUANLI_STORAGE_STORE_H_
#define SUANLI_STORAGE_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace suanli::storage {

struct AccountRow {
  std::string id;    // unique
  int32_t role = 0;  // suanli.v1.Role
  std::string name;  // unique
  absl::Time created;
};

struct ApiKeyRow {
  std::string key_id;  // unique; the public part of the key
  std::string account_id;
  std::string secret_hash;  // SHA-256 of the secret, 32 raw bytes
  absl::Time created;
  bool revoked = false;
};

// One call that changed capacity. `payload` is the serialized request message named by `kind`
// (the broker's own numbering), with every default the broker resolved filled in.
struct CapacityRow {
  int64_t seq = 0;  // > 0, strictly increasing over the journal
  int32_t kind = 0;
  std::string actor;  // the account that made the call
  absl::Time at;      // when it was applied
  std::string payload;
};

struct AllocationRow {
  int64_t id = 0;  // > 0, unique
  std::string buyer_id;
  int32_t state = 0;      // suanli.v1.AllocationState, also inside payload
  std::string payload;    // serialized suanli.v1.Allocation
  absl::Time held_end;    // a held (binding-quote) allocation: the end of the interval held
  std::string offer_ids;  // the offer of each slice, in slice order, separated by commas
};

// GPUs a live allocation (held, reserved or active) takes out of the market on one node: `gpus`
// of the node's `node_gpus` over [from, until). For a held allocation the interval is the one
// held, [start, held_end); for a reserved or active one, [start, end). An ended allocation takes
// nothing and has no claims. The store refuses (INVALID_ARGUMENT, nothing stored) a batch after
// which some node would have, at some instant, more GPUs claimed than the smallest node_gpus
// among the claims on it at that instant: an oversold node cannot be stored.
struct ClaimRow {
  int64_t allocation_id = 0;  // an allocation written by the same batch
  std::string node_id;        // not empty; one claim per allocation and node
  int32_t node_gpus = 0;      // the GPUs the node has, > 0
  int32_t gpus = 0;           // taken on it, 1..node_gpus
  absl::Time from;            // finite
  absl::Time until;           // finite, after `from`
};

// The first answer to an Allocate with an idempotency key.
struct IdempotencyRow {
  std::string buyer_id;
  std::string key;            // unique per buyer
  std::string request;        // serialized suanli.v1.AllocateRequest as first asked
  int64_t allocation_id = 0;  // the allocation granted; 0 when it was rejected
  std::string rejection;      // serialized suanli.v1.Rejection when rejected
};

// One leg of a ledger entry: an amount posted to one account, in micro-units of the currency.
// Negative is a debit, positive a credit.
struct LedgerLeg {
  std::string account;  // not empty; unique within its entry
  int64_t amount_micros = 0;
};

// One double-entry ledger entry (broker/ledger.h says what the kinds and accounts mean). Entries
// are immutable: once stored, an entry is never changed or removed; a correction is a new entry.
// The store refuses (INVALID_ARGUMENT, nothing stored) an entry with no legs, legs that do not
// sum to exactly 0, an empty or repeated account, or an id that is not above 0 or is already
// stored; the database itself refuses an unbalanced or changed entry
// (migrations/003_ledger.sql).
struct LedgerEntryRow {
  int64_t id = 0;             // > 0, unique
  absl::Time at;              // when it was posted
  int64_t allocation_id = 0;  // the allocation it is for
  int32_t kind = 0;           // the broker's numbering (broker::EntryKind)
  std::vector<LedgerLeg> legs;
};

// The decisions the market counted in one minute, as an opaque blob the broker encodes
// (broker/market.h, DecisionCounts; the store only keeps it).
struct DecisionMinuteRow {
  int64_t minute = 0;  // unix seconds / 60; unique
  std::string counts;
};

// What one engine batch changed. Applied all together or not at all.
struct Batch {
  std::vector<AccountRow> accounts;         // inserted or replaced (by id)
  std::vector<ApiKeyRow> api_keys;          // inserted or replaced (by key_id)
  std::vector<CapacityRow> capacity;        // appended; seq above every stored one
  std::vector<AllocationRow> allocations;   // inserted or replaced (by id)
  std::vector<IdempotencyRow> idempotency;  // inserted; (buyer_id, key) not stored yet
  // The claims of the batch's allocations: each allocation written by the batch has exactly the
  // claims listed here for it afterwards (none listed: none stored, e.g. when it ended).
  std::vector<ClaimRow> claims;
  std::vector<LedgerEntryRow> ledger;               // appended; ids not stored yet
  std::vector<DecisionMinuteRow> decision_minutes;  // inserted or replaced (by minute)

  bool empty() const {
    return accounts.empty() && api_keys.empty() && capacity.empty() && allocations.empty() &&
           idempotency.empty() && claims.empty() && ledger.empty() && decision_minutes.empty();
  }
};

// Adds `later`'s rows to `into`, so that committing `into` stores what committing the two one
// after the other would: rows are appended in order (of two rows with one id the later wins, as
// in one batch), and an allocation that `later` writes has `later`'s claims only. The engine uses
// it to commit several decided batches in one transaction.
void Append(Batch* into, Batch&& later);

// Everything stored.
struct Contents {
  std::vector<AccountRow> accounts;                 // by id
  std::vector<ApiKeyRow> api_keys;                  // by key_id
  std::vector<CapacityRow> capacity;                // by seq
  std::vector<AllocationRow> allocations;           // by id
  std::vector<IdempotencyRow> idempotency;          // by (buyer_id, key)
  std::vector<ClaimRow> claims;                     // by (allocation_id, node_id)
  std::vector<LedgerEntryRow> ledger;               // by id, legs in the order they were written
  std::vector<DecisionMinuteRow> decision_minutes;  // by minute
};

class Store {
 public:
  virtual ~Store() = default;

  // Writes the batch in one transaction, durably: when it returns OK every row of it survives a
  // crash of the process or the machine; on error none of it is stored. INVALID_ARGUMENT (and
  // nothing stored) when the batch breaks a rule above (a capacity seq not above the stored
  // ones, an idempotency key already stored, a duplicate name, an API key of an account that is
  // neither stored nor earlier in the batch, a malformed claim or one of an allocation not in the
  // batch, a node oversold, an unbalanced or malformed ledger entry, a ledger id already stored).
  // UNAVAILABLE when the store cannot be reached or written; retrying may work (a backend that lost
  // its connection reconnects on the next call).
  virtual absl::Status Commit(const Batch& batch) = 0;

  // Everything stored, in the orders given in Contents.
  virtual absl::StatusOr<Contents> Load() = 0;

  // For people and logs: the backend and where its data lives, without secrets.
  virtual std::string Describe() const = 0;
};

// Opens (creating when missing, upgrading an older schema) the store a URL names:
//   sqlite:PATH                               an SQLite database file (its directory must exist);
//   postgresql://USER@HOST:PORT/DB[?PARAMS]   a PostgreSQL database (a libpq URI; postgres://
//                                             too); the database must exist, its tables are
//                                             created when missing.
absl::StatusOr<std::unique_ptr<Store>> OpenStore(absl::string_view url);

}  // namespace suanli::storage

#endif  // SUANLI_STORAGE_STORE_H_
