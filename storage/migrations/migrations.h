// The store's schema as a list of migrations, shared by every backend. Migration N is the file
// migrations/NNN_name.sql, compiled into the binary at build time (see storage/CMakeLists.txt),
// and, where SQL differs between backends, NNN_name.sqlite.sql and NNN_name.postgres.sql, which
// only that backend runs, right after the shared file and in the same transaction. A database at
// schema vK has had migrations 1..K applied, and records each in the table
// kSchemaVersionTableSql creates.
//
// To change the schema, add the next file (e.g. 003_offer_index.sql); never edit an applied one.
#ifndef SUANLI_STORAGE_MIGRATIONS_MIGRATIONS_H_
#define SUANLI_STORAGE_MIGRATIONS_MIGRATIONS_H_

#include <cstdint>

#include "absl/types/span.h"

namespace suanli::storage {

struct Migration {
  int64_t version = 0;            // 1, 2, ...: the file's number
  const char* name = nullptr;     // the file's name without ".sql", e.g. "001_initial"
  const char* sql = nullptr;      // the file's text: one or more statements separated by ';'
  const char* sqlite_sql = "";    // NNN_name.sqlite.sql, or "" when there is none
  const char* postgres_sql = "";  // NNN_name.postgres.sql, or "" when there is none
};

// Every migration this build knows, in version order, versions 1..N without gaps.
absl::Span<const Migration> Migrations();

// The schema version this build writes: the last migration's.
int64_t LatestSchemaVersion();

// Creates the table that records applied migrations when it is missing (portable SQL). The
// database's schema version is the largest `version` in it; none means v0 (an empty database).
inline constexpr const char kSchemaVersionTableSql[] =
    "CREATE TABLE IF NOT EXISTS schema_version ("
    "version BIGINT NOT NULL PRIMARY KEY CHECK (version > 0), "
    "name TEXT NOT NULL)";

}  // namespace suanli::storage

#endif  // SUANLI_STORAGE_MIGRATIONS_MIGRATIONS_H_
