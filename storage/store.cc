#include "storage/store.h"

#include <algorithm>
#include <iterator>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "storage/postgres/postgres_store.h"
#include "storage/sqlite/sqlite_store.h"

namespace suanli::storage {
namespace {

constexpr char kAcceptedForms[] =
    "accepted forms: sqlite:PATH, an SQLite database file whose directory exists (e.g. "
    "sqlite:/var/lib/suanli/suanli.db or sqlite:var/suanli.db, relative to the working "
    "directory); postgresql://USER@HOST:PORT/DB (or postgres://...), a PostgreSQL database, "
    "with the password in PGPASSWORD or ~/.pgpass";

}  // namespace

namespace {

template <typename Row>
void MoveAll(std::vector<Row>* into, std::vector<Row>* later) {
  if (into->empty()) {
    into->swap(*later);
    return;
  }
  into->insert(into->end(), std::make_move_iterator(later->begin()),
               std::make_move_iterator(later->end()));
}

}  // namespace

void Append(Batch* into, Batch&& later) {
  if (!later.allocations.empty() && !into->claims.empty()) {
    absl::flat_hash_set<int64_t> rewritten;
    for (const AllocationRow& row : later.allocations) rewritten.insert(row.id);
    std::vector<ClaimRow>& claims = into->claims;
    claims.erase(
        std::remove_if(claims.begin(), claims.end(),
                       [&](const ClaimRow& c) { return rewritten.contains(c.allocation_id); }),
        claims.end());
  }
  MoveAll(&into->accounts, &later.accounts);
  MoveAll(&into->api_keys, &later.api_keys);
  MoveAll(&into->capacity, &later.capacity);
  MoveAll(&into->allocations, &later.allocations);
  MoveAll(&into->idempotency, &later.idempotency);
  MoveAll(&into->claims, &later.claims);
  MoveAll(&into->ledger, &later.ledger);
  MoveAll(&into->decision_minutes, &later.decision_minutes);
}

absl::StatusOr<std::unique_ptr<Store>> OpenStore(absl::string_view url) {
  if (absl::ConsumePrefix(&url, "sqlite:")) {
    if (absl::StartsWith(url, "//")) {
      return absl::InvalidArgumentError(
          absl::StrCat("store URL \"sqlite:", url,
                       "\": sqlite: takes a file path directly, with no \"//\" (e.g. "
                       "sqlite:/var/lib/suanli/suanli.db)"));
    }
    absl::StatusOr<std::unique_ptr<SqliteStore>> store = SqliteStore::Open(url);
    if (!store.ok()) return store.status();
    return std::unique_ptr<Store>(std::move(*store));
  }
  if (absl::StartsWith(url, "postgresql://") || absl::StartsWith(url, "postgres://")) {
    absl::StatusOr<std::unique_ptr<PostgresStore>> store = PostgresStore::Open(url);
    if (!store.ok()) return store.status();
    return std::unique_ptr<Store>(std::move(*store));
  }
  if (url.empty())
    return absl::InvalidArgumentError(absl::StrCat("empty store URL; ", kAcceptedForms));
  const size_t colon = url.find(':');
  if (colon == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("store URL \"", url,
                                                   "\" has no scheme (did you mean \"sqlite:", url,
                                                   "\"?); ", kAcceptedForms));
  }
  // Only the scheme is repeated: the rest may hold a password.
  return absl::InvalidArgumentError(absl::StrCat("store URL scheme \"", url.substr(0, colon),
                                                 ":\" is not known; ", kAcceptedForms));
}

}  // namespace suanli::storage
