// The embedded SQLite backend of the Store (storage/store.h): one database file, opened by
// OpenStore("sqlite:PATH").
//
// Durability: the database runs in WAL mode with synchronous=FULL, so a Commit that returned OK
// has been fsync'ed and survives a crash of the process or a power loss. Each Commit is one
// BEGIN IMMEDIATE ... COMMIT transaction; on any error it is rolled back and nothing of the batch
// stays.
//
// Rules beyond store.h's: an API key's account_id must name a stored account (or one earlier in
// the same batch), else INVALID_ARGUMENT. Times are kept to the microsecond (finer parts are
// dropped, rounding down); absl::InfiniteFuture() and absl::InfinitePast() round-trip. The
// oversell rule of claims is a trigger in the database (see
// migrations/006_claims_by_node.sqlite.sql), so it holds for rows other tools write too.
//
// Checkpoints (copying the WAL back into the database file) run on a thread and a second
// connection of the store's own, so that no Commit waits for one; a 64 MiB page cache keeps
// the indexes that commits touch in memory (see sqlite_config.h).
//
// Thread safety: not thread-safe; one thread at a time (as the Store interface says). One
// process should write a database at a time (SQLite's locks make a second writer wait, up to a
// busy timeout, then fail with UNAVAILABLE; they do not make two brokers safe).
#ifndef SUANLI_STORAGE_SQLITE_SQLITE_STORE_H_
#define SUANLI_STORAGE_SQLITE_SQLITE_STORE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "storage/store.h"

struct sqlite3;

namespace suanli::storage {

class SqliteStore final : public Store {
 public:
  // Opens the database file at `path` (relative paths are taken from the working directory),
  // creating it when missing and applying the migrations it lacks in one transaction.
  // Errors: INVALID_ARGUMENT for an empty path or one naming a directory; UNAVAILABLE when the
  // file's directory does not exist or the file cannot be opened, locked or written;
  // FAILED_PRECONDITION when the database's schema is newer than this build knows; DATA_LOSS
  // when the file is not an SQLite database or is corrupt.
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(absl::string_view path);

  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;
  ~SqliteStore() override;

  absl::Status Commit(const Batch& batch) override;
  absl::StatusOr<Contents> Load() override;
  // "sqlite:/absolute/path (schema vN)".
  std::string Describe() const override;

 private:
  class Statements;    // the commit's prepared statements
  class Checkpointer;  // checkpoints the WAL off the committing thread
  SqliteStore(sqlite3* db, std::string name, int64_t schema_version);

  sqlite3* db_;             // owned; closed by the destructor
  std::string name_;        // "sqlite:" and the absolute path, for messages
  int64_t schema_version_;  // of the open database
  std::unique_ptr<Statements> statements_;
  std::unique_ptr<Checkpointer> checkpointer_;  // null when a second connection cannot open
};

}  // namespace suanli::storage

#endif  // SUANLI_STORAGE_SQLITE_SQLITE_STORE_H_
