#include "storage/store.h"

#include <memory>
#include <string>
#include <utility>

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
