// The PostgreSQL backend of the Store (storage/store.h), opened by
// OpenStore("postgresql://USER@HOST:PORT/DB") or "postgres://...": a libpq connection URI, passed
// to libpq as given (query parameters included, e.g. ?sslmode=verify-full or, for a unix socket,
// postgresql://suanli@/suanli?host=/run/postgresql). The password comes from PGPASSWORD or
// ~/.pgpass (PGPASSFILE) as libpq finds it; a password in the URL works but is never shown.
// Unless the URL sets them, the connection uses connect_timeout=10, keepalives (idle 30 s,
// interval 10 s, 3 probes), tcp_user_timeout=60000, client_encoding=UTF8 and
// application_name=suanlid, so that a dead server is noticed within about a minute.
//
// Durability: each Commit is one transaction, acknowledged when PostgreSQL has made it durable
// (synchronous_commit is on; a session that would run with it off turns it on). A Commit that
// fails leaves nothing of the batch: when the connection breaks during COMMIT itself, the store
// asks the server, on a new connection, whether the transaction committed, and returns OK if it
// did; if that cannot be found out, UNAVAILABLE says so (Load then shows whether it was stored).
//
// Connection loss: any call that finds the connection broken returns UNAVAILABLE and drops it;
// the next call connects again (and checks the schema is still the one it opened), so a caller
// that retries resumes once the server is back.
//
// Rules beyond store.h's: text fields must be valid UTF-8 without NUL bytes (PostgreSQL's TEXT
// cannot hold other bytes), else INVALID_ARGUMENT; an API key's account must be stored or earlier
// in the batch. Times are kept to the microsecond as in the SQLite backend. Text keys are ordered
// bytewise (COLLATE "C"), whatever the database's collation.
//
// Schema: the shared migrations (storage/migrations), with `CREATE DOMAIN blob AS BYTEA` before
// the first and each migration's NNN_name.postgres.sql after it, in one transaction that holds an
// advisory lock, so that two brokers starting at once do not both migrate. The role needs to be
// able to create tables in the first schema of its search_path (by default: own the database or
// the schema public).
//
// Thread safety: not thread-safe; one thread at a time (as the Store interface says), except
// Describe, which only reads what Open set. One broker should write a database at a time.
#ifndef SUANLI_STORAGE_POSTGRES_POSTGRES_STORE_H_
#define SUANLI_STORAGE_POSTGRES_POSTGRES_STORE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "storage/store.h"

namespace suanli::storage {

class PostgresStore final : public Store {
 public:
  // Connects to the database `url` names and brings its schema up to date (creating the tables
  // when there are none). Errors: INVALID_ARGUMENT for a URL libpq cannot parse; UNAVAILABLE
  // when the server cannot be reached or refuses the connection (wrong password, no such
  // database); FAILED_PRECONDITION when the schema is newer than this build knows, or the
  // database holds tables that are not suanlid's, or the role may not create tables.
  static absl::StatusOr<std::unique_ptr<PostgresStore>> Open(absl::string_view url);

  PostgresStore(const PostgresStore&) = delete;
  PostgresStore& operator=(const PostgresStore&) = delete;
  ~PostgresStore() override;

  absl::Status Commit(const Batch& batch) override;
  absl::StatusOr<Contents> Load() override;
  // "postgresql://USER@HOST:PORT/DB (schema vN)", or "postgresql://USER@/DB?host=DIR&port=PORT
  // (schema vN)" for a unix socket: never a password or other URL parameters.
  std::string Describe() const override;

 private:
  struct Session;  // an open connection

  PostgresStore(std::string conninfo, std::string name);

  // Makes session_ when there is none. On a reconnection also checks that the schema is still
  // schema_version_ (FAILED_PRECONDITION otherwise).
  absl::Status Connect();
  // Brings the schema to the latest version and sets schema_version_.
  absl::Status Migrate();
  // After the connection broke during the COMMIT of transaction `txid`: OK if it committed,
  // else `lost` (UNAVAILABLE) saying what is known.
  absl::Status Resolve(int64_t txid, const absl::Status& lost);
  // Drops session_ when `lost` (a call found the connection broken) or its connection is closed.
  void DropIfBroken(bool lost);

  const std::string conninfo_;        // what libpq connects with; may hold a password: never shown
  std::string name_;                  // the URL without secrets, for messages
  int64_t schema_version_ = 0;        // of the database, set by Open
  std::unique_ptr<Session> session_;  // null while disconnected
};

}  // namespace suanli::storage

#endif  // SUANLI_STORAGE_POSTGRES_POSTGRES_STORE_H_
