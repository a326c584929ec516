#include "storage/sqlite/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "storage/claim_rules.h"
#include "storage/migrations/migrations.h"
#include "storage/sqlite/sqlite_config.h"
#include "storage/time_encoding.h"

namespace suanli::storage {
namespace {

// How long a statement waits for another connection's lock before failing with UNAVAILABLE.
constexpr int kBusyTimeoutMs = 5000;

// The caller's next step decides the code: retrying may help (UNAVAILABLE), the data is bad
// (DATA_LOSS), the batch is bad (INVALID_ARGUMENT), or this code is wrong (INTERNAL).
absl::StatusCode CodeFor(int rc) {
  switch (rc & 0xff) {  // the primary code of an extended one
    case SQLITE_CONSTRAINT:
    case SQLITE_TOOBIG:
      return absl::StatusCode::kInvalidArgument;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PROTOCOL:
    case SQLITE_NOMEM:
    case SQLITE_PERM:
    case SQLITE_NOLFS:
    case SQLITE_INTERRUPT:
      return absl::StatusCode::kUnavailable;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::StatusCode::kDataLoss;
    default:
      return absl::StatusCode::kInternal;
  }
}

// A user-supplied string, quoted and escaped for a message.
std::string Quote(absl::string_view s) { return absl::StrCat("\"", absl::CHexEscape(s), "\""); }

// An open database with the name used in messages ("sqlite:/abs/path").
struct Db {
  sqlite3* db;
  absl::string_view name;

  // The status for `rc` returned by a call on db: "<name>: <what>: <SQLite's message>".
  absl::Status Error(int rc, absl::string_view what) const {
    return absl::Status(CodeFor(rc), absl::StrCat(name, ": ", what, ": ", sqlite3_errmsg(db)));
  }

  // Runs SQL that binds no values (schema, pragmas, transaction control).
  absl::Status Exec(const char* sql, absl::string_view what) const {
    int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
    return rc == SQLITE_OK ? absl::OkStatus() : Error(rc, what);
  }

  // Ends the open transaction, if any, dropping its changes. Errors are ignored: the caller is
  // already returning one, and SQLite rolls back an unfinished transaction when it closes.
  void RollbackIfActive() const {
    if (sqlite3_get_autocommit(db) == 0) sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
  }
};

struct StatementDeleter {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};

// One prepared statement. Bound strings must outlive the next Step or Reset.
class Statement {
 public:
  // `flags`: SQLITE_PREPARE_* (sqlite3_prepare_v3).
  static absl::StatusOr<Statement> Prepare(const Db& db, const char* sql, unsigned flags = 0) {
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v3(db.db, sql, -1, flags, &stmt, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(stmt);
      return db.Error(rc, absl::StrCat("preparing \"", sql, "\""));
    }
    return Statement(stmt);
  }

  // Binders take the parameter's 1-based index. A failed bind is returned by the next Step.
  void BindInt(int i, int64_t value) { Keep(sqlite3_bind_int64(stmt_.get(), i, value)); }
  void BindTime(int i, absl::Time t) { BindInt(i, ToMicros(t)); }
  void BindText(int i, absl::string_view s) {
    Keep(sqlite3_bind_text64(stmt_.get(), i, s.empty() ? "" : s.data(), s.size(), SQLITE_STATIC,
                             SQLITE_UTF8));
  }
  void BindBlob(int i, absl::string_view s) {
    // A null pointer would bind NULL, not an empty blob.
    Keep(sqlite3_bind_blob64(stmt_.get(), i, s.empty() ? "" : s.data(), s.size(), SQLITE_STATIC));
  }

  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return bind_rc_ != SQLITE_OK ? bind_rc_ : sqlite3_step(stmt_.get()); }

  // Makes the statement ready to run again with new bindings.
  void Reset() {
    sqlite3_reset(stmt_.get());
    sqlite3_clear_bindings(stmt_.get());
    bind_rc_ = SQLITE_OK;
  }

  sqlite3_stmt* get() const { return stmt_.get(); }

 private:
  explicit Statement(sqlite3_stmt* stmt) : stmt_(stmt) {}
  void Keep(int rc) {
    if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  }

  std::unique_ptr<sqlite3_stmt, StatementDeleter> stmt_;
  int bind_rc_ = SQLITE_OK;
};

// The statements of commits, prepared once per connection and reused (preparing them, and with
// them the triggers each insert runs, took ~5% of a commit's time). Keyed by the SQL constant's
// address.
class StatementCache {
 public:
  absl::StatusOr<Statement*> Get(const Db& db, const char* sql) {
    auto it = prepared_.find(sql);
    if (it != prepared_.end()) return &it->second;
    absl::StatusOr<Statement> stmt = Statement::Prepare(db, sql, SQLITE_PREPARE_PERSISTENT);
    if (!stmt.ok()) return stmt.status();
    return &prepared_.emplace(sql, *std::move(stmt)).first->second;
  }

 private:
  absl::flat_hash_map<const char*, Statement> prepared_;
};

// Reads the columns of the current row of a statement, remembering the first value that does
// not fit its field (a DATA_LOSS).
class RowReader {
 public:
  explicit RowReader(sqlite3_stmt* stmt) : stmt_(stmt) {}

  int64_t Int(int col) {
    if (sqlite3_column_type(stmt_, col) != SQLITE_INTEGER) {
      Fail(col, "is not an integer");
      return 0;
    }
    return sqlite3_column_int64(stmt_, col);
  }
  int32_t Int32(int col) {
    int64_t v = Int(col);
    if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max()) {
      Fail(col, absl::StrCat("= ", v, " does not fit 32 bits"));
      return 0;
    }
    return static_cast<int32_t>(v);
  }
  bool Bool(int col) {
    int64_t v = Int(col);
    if (v != 0 && v != 1) Fail(col, absl::StrCat("= ", v, " is not 0 or 1"));
    return v == 1;
  }
  absl::Time Time(int col) { return FromMicros(Int(col)); }
  // A TEXT or BLOB column's bytes, as stored.
  std::string Bytes(int col) {
    int type = sqlite3_column_type(stmt_, col);
    if (type != SQLITE_TEXT && type != SQLITE_BLOB) {
      Fail(col, "is not text or a blob");
      return "";
    }
    const void* data = sqlite3_column_blob(stmt_, col);
    int size = sqlite3_column_bytes(stmt_, col);
    return data == nullptr ? std::string() : std::string(static_cast<const char*>(data), size);
  }

  // OK, or DATA_LOSS naming the first bad column.
  const absl::Status& status() const { return status_; }

 private:
  void Fail(int col, absl::string_view problem) {
    if (!status_.ok()) return;
    status_ = absl::DataLossError(absl::StrCat("column ", sqlite3_column_name(stmt_, col), " ",
                                               problem, " (", sqlite3_sql(stmt_), ")"));
  }

  sqlite3_stmt* stmt_;
  absl::Status status_;
};

// Words for one kind of constraint violation, which a person can act on better than SQLite's.
struct Violation {
  int code = 0;  // an extended code, e.g. SQLITE_CONSTRAINT_UNIQUE; 0 matches none
  absl::string_view message;
};

// Runs a prepared statement that returns no rows, then resets it. `what` names the row in the
// message of an error. When the error is `violation.code`, its message replaces SQLite's words
// (which follow in parentheses).
absl::Status RunOnce(const Db& db, Statement& stmt, absl::string_view what,
                     const Violation& violation = {}) {
  int rc = stmt.Step();
  absl::Status status;
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
    if (violation.code != 0 && rc == violation.code) {
      status = absl::InvalidArgumentError(absl::StrCat(db.name, ": ", what, ": ", violation.message,
                                                       " (", sqlite3_errmsg(db.db), ")"));
    } else {
      status = db.Error(rc, what);
    }
  }
  stmt.Reset();
  return status;
}

constexpr char kUpsertAccount[] =
    "INSERT INTO accounts (id, role, name, created_us) VALUES (?1, ?2, ?3, ?4) "
    "ON CONFLICT (id) DO UPDATE SET "
    "role = excluded.role, name = excluded.name, created_us = excluded.created_us";
constexpr char kUpsertApiKey[] =
    "INSERT INTO api_keys (key_id, account_id, secret_hash, created_us, revoked) "
    "VALUES (?1, ?2, ?3, ?4, ?5) "
    "ON CONFLICT (key_id) DO UPDATE SET "
    "account_id = excluded.account_id, secret_hash = excluded.secret_hash, "
    "created_us = excluded.created_us, revoked = excluded.revoked";
constexpr char kLastSeq[] = "SELECT COALESCE(MAX(seq), 0) FROM capacity_journal";
constexpr char kInsertCapacity[] =
    "INSERT INTO capacity_journal (seq, kind, actor, at_us, payload) VALUES (?1, ?2, ?3, ?4, ?5)";
constexpr char kUpsertAllocation[] =
    "INSERT INTO allocations (id, buyer_id, state, payload, held_end_us, offer_ids) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
    "ON CONFLICT (id) DO UPDATE SET "
    "buyer_id = excluded.buyer_id, state = excluded.state, payload = excluded.payload, "
    "held_end_us = excluded.held_end_us, offer_ids = excluded.offer_ids";
constexpr char kDeleteClaims[] = "DELETE FROM allocation_claims WHERE allocation_id = ?1";
constexpr char kInsertClaim[] =
    "INSERT INTO allocation_claims (allocation_id, node_id, node_gpus, gpus, from_us, until_us) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
constexpr char kInsertIdempotency[] =
    "INSERT INTO idempotency (buyer_id, idem_key, request, allocation_id, rejection) "
    "VALUES (?1, ?2, ?3, ?4, ?5)";

constexpr char kInsertLedgerLeg[] =
    "INSERT INTO ledger_legs (entry_id, leg, last_leg, at_us, allocation_id, kind, account, "
    "amount_micros) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

constexpr char kUpsertDecisionMinute[] =
    "INSERT INTO decision_minutes (minute, counts) VALUES (?1, ?2) "
    "ON CONFLICT (minute) DO UPDATE SET counts = excluded.counts";

constexpr char kSelectAccounts[] = "SELECT id, role, name, created_us FROM accounts ORDER BY id";
constexpr char kSelectApiKeys[] =
    "SELECT key_id, account_id, secret_hash, created_us, revoked FROM api_keys ORDER BY key_id";
constexpr char kSelectCapacity[] =
    "SELECT seq, kind, actor, at_us, payload FROM capacity_journal ORDER BY seq";
constexpr char kSelectAllocations[] =
    "SELECT id, buyer_id, state, payload, held_end_us, offer_ids FROM allocations ORDER BY id";
constexpr char kSelectIdempotency[] =
    "SELECT buyer_id, idem_key, request, allocation_id, rejection FROM idempotency "
    "ORDER BY buyer_id, idem_key";
constexpr char kSelectClaims[] =
    "SELECT allocation_id, node_id, node_gpus, gpus, from_us, until_us FROM allocation_claims "
    "ORDER BY allocation_id, node_id";
constexpr char kSelectLedger[] =
    "SELECT entry_id, leg, at_us, allocation_id, kind, account, amount_micros FROM ledger_legs "
    "ORDER BY entry_id, leg";
constexpr char kSelectDecisionMinutes[] =
    "SELECT minute, counts FROM decision_minutes ORDER BY minute";

// Writes every row of the batch inside the caller's transaction; stops at the first error.
absl::Status WriteRows(const Db& db, StatementCache& cache, const Batch& batch) {
  if (absl::Status s = CheckClaims(db.name, batch); !s.ok()) return s;
  if (absl::Status s = CheckLedger(db.name, batch); !s.ok()) return s;
  if (!batch.accounts.empty()) {
    absl::StatusOr<Statement*> stmt_or = cache.Get(db, kUpsertAccount);
    if (!stmt_or.ok()) return stmt_or.status();
    Statement* stmt = *stmt_or;
    for (const AccountRow& row : batch.accounts) {
      stmt->BindText(1, row.id);
      stmt->BindInt(2, row.role);
      stmt->BindText(3, row.name);
      stmt->BindTime(4, row.created);
      const std::string taken =
          absl::StrCat("the name ", Quote(row.name), " is taken by another account");
      absl::Status s = RunOnce(db, *stmt, absl::StrCat("account ", Quote(row.id)),
                               {SQLITE_CONSTRAINT_UNIQUE, taken});
      if (!s.ok()) return s;
    }
  }

  if (!batch.api_keys.empty()) {
    absl::StatusOr<Statement*> stmt_or = cache.Get(db, kUpsertApiKey);
    if (!stmt_or.ok()) return stmt_or.status();
    Statement* stmt = *stmt_or;
    for (const ApiKeyRow& row : batch.api_keys) {
      stmt->BindText(1, row.key_id);
      stmt->BindText(2, row.account_id);
      stmt->BindBlob(3, row.secret_hash);
      stmt->BindTime(4, row.created);
      stmt->BindInt(5, row.revoked ? 1 : 0);
      const std::string unknown =
          absl::StrCat("its account ", Quote(row.account_id), " is not stored");
      absl::Status s = RunOnce(db, *stmt, absl::StrCat("API key ", Quote(row.key_id)),
                               {SQLITE_CONSTRAINT_FOREIGNKEY, unknown});
      if (!s.ok()) return s;
    }
  }

  if (!batch.capacity.empty()) {
    absl::StatusOr<Statement*> last_seq_or = cache.Get(db, kLastSeq);
    if (!last_seq_or.ok()) return last_seq_or.status();
    Statement* last_seq = *last_seq_or;
    int rc = last_seq->Step();
    if (rc != SQLITE_ROW) {
      absl::Status error = db.Error(rc, "reading the last capacity seq");
      last_seq->Reset();
      return error;
    }
    int64_t last = sqlite3_column_int64(last_seq->get(), 0);
    last_seq->Reset();

    absl::StatusOr<Statement*> stmt_or = cache.Get(db, kInsertCapacity);
    if (!stmt_or.ok()) return stmt_or.status();
    Statement* stmt = *stmt_or;
    for (const CapacityRow& row : batch.capacity) {
      if (row.seq <= last) {
        return absl::InvalidArgumentError(
            absl::StrCat(db.name, ": capacity seq ", row.seq, " is not above seq ", last,
                         " (every seq must be above the stored ones and the batch's earlier "
                         "ones, and above 0)"));
      }
      stmt->BindInt(1, row.seq);
      stmt->BindInt(2, row.kind);
      stmt->BindText(3, row.actor);
      stmt->BindTime(4, row.at);
      stmt->BindBlob(5, row.payload);
      absl::Status s = RunOnce(db, *stmt, absl::StrCat("capacity seq ", row.seq));
      if (!s.ok()) return s;
      last = row.seq;
    }
  }

  if (!batch.allocations.empty()) {
    absl::StatusOr<Statement*> stmt_or = cache.Get(db, kUpsertAllocation);
    if (!stmt_or.ok()) return stmt_or.status();
    Statement* stmt = *stmt_or;
    for (const AllocationRow& row : batch.allocations) {
      stmt->BindInt(1, row.id);
      stmt->BindText(2, row.buyer_id);
      stmt->BindInt(3, row.state);
      stmt->BindBlob(4, row.payload);
      stmt->BindTime(5, row.held_end);
      stmt->BindText(6, row.offer_ids);
      absl::Status s = RunOnce(db, *stmt, absl::StrCat("allocation ", row.id),
                               {SQLITE_CONSTRAINT_CHECK, "an allocation id must be above 0"});
      if (!s.ok()) return s;
    }

    // Every claim the batch replaces goes before any is inserted: the oversell trigger runs
    // after each row, and then sees only a subset of the final claims.
    absl::StatusOr<Statement*> drop_or = cache.Get(db, kDeleteClaims);
    if (!drop_or.ok()) return drop_or.status();
    Statement* drop = *drop_or;
    absl::flat_hash_set<int64_t> dropped;
    for (const AllocationRow& row : batch.allocations) {
      if (!dropped.insert(row.id).second) continue;
      drop->BindInt(1, row.id);
      absl::Status s = RunOnce(db, *drop, absl::StrCat("claims of allocation ", row.id));
      if (!s.ok()) return s;
    }
  }

  if (!batch.claims.empty()) {
    absl::StatusOr<Statement*> stmt_or = cache.Get(db, kInsertClaim);
    if (!stmt_or.ok()) return stmt_or.status();
    Statement* stmt = *stmt_or;
    for (const ClaimRow& row : batch.claims) {
      stmt->BindInt(1, row.allocation_id);
      stmt->BindText(2, row.node_id);
      stmt->BindInt(3, row.node_gpus);
      stmt->BindInt(4, row.gpus);
      stmt->BindTime(5, row.from);
      stmt->BindTime(6, row.until);
      absl::Status s = RunOnce(
          db, *stmt,
          absl::StrCat("claim of allocation ", row.allocation_id, " on node ", Quote(row.node_id)),
          {SQLITE_CONSTRAINT_TRIGGER, "the node would be oversold"});
      if (!s.ok()) return s;
    }
  }

  if (!batch.idempotency.empty()) {
    absl::StatusOr<Statement*> stmt_or = cache.Get(db, kInsertIdempotency);
    if (!stmt_or.ok()) return stmt_or.status();
    Statement* stmt = *stmt_or;
    for (const IdempotencyRow& row : batch.idempotency) {
      stmt->BindText(1, row.buyer_id);
      stmt->BindText(2, row.key);
      stmt->BindBlob(3, row.request);
      stmt->BindInt(4, row.allocation_id);
      stmt->BindBlob(5, row.rejection);
      absl::Status s = RunOnce(
          db, *stmt,
          absl::StrCat("idempotency key ", Quote(row.key), " of buyer ", Quote(row.buyer_id)),
          {SQLITE_CONSTRAINT_PRIMARYKEY, "the key is already stored for this buyer"});
      if (!s.ok()) return s;
    }
  }

  if (!batch.ledger.empty()) {
    absl::StatusOr<Statement*> stmt_or = cache.Get(db, kInsertLedgerLeg);
    if (!stmt_or.ok()) return stmt_or.status();
    Statement* stmt = *stmt_or;
    for (const LedgerEntryRow& e : batch.ledger) {
      const int64_t last = static_cast<int64_t>(e.legs.size()) - 1;
      for (size_t i = 0; i < e.legs.size(); ++i) {
        stmt->BindInt(1, e.id);
        stmt->BindInt(2, static_cast<int64_t>(i));
        stmt->BindInt(3, last);
        stmt->BindTime(4, e.at);
        stmt->BindInt(5, e.allocation_id);
        stmt->BindInt(6, e.kind);
        stmt->BindText(7, e.legs[i].account);
        stmt->BindInt(8, e.legs[i].amount_micros);
        absl::Status s =
            RunOnce(db, *stmt, absl::StrCat("ledger entry ", e.id),
                    {SQLITE_CONSTRAINT_TRIGGER, "it is already stored, or it does not balance"});
        if (!s.ok()) return s;
      }
    }
  }

  if (!batch.decision_minutes.empty()) {
    // Upserted in order: of two rows with one minute the later wins.
    absl::StatusOr<Statement*> stmt_or = cache.Get(db, kUpsertDecisionMinute);
    if (!stmt_or.ok()) return stmt_or.status();
    Statement* stmt = *stmt_or;
    for (const DecisionMinuteRow& row : batch.decision_minutes) {
      stmt->BindInt(1, row.minute);
      stmt->BindBlob(2, row.counts);
      absl::Status s = RunOnce(db, *stmt, absl::StrCat("decision counts of minute ", row.minute));
      if (!s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

// Runs `sql` (a SELECT or a PRAGMA) and hands each row to `read`.
template <typename ReadRow>
absl::Status ForEachRow(const Db& db, const char* sql, ReadRow read) {
  absl::StatusOr<Statement> stmt = Statement::Prepare(db, sql);
  if (!stmt.ok()) return stmt.status();
  while (true) {
    int rc = stmt->Step();
    if (rc == SQLITE_DONE) return absl::OkStatus();
    if (rc != SQLITE_ROW) return db.Error(rc, absl::StrCat("reading (", sql, ")"));
    RowReader row(stmt->get());
    read(row);
    if (!row.status().ok()) {
      return absl::DataLossError(absl::StrCat(db.name, ": ", row.status().message()));
    }
  }
}

absl::Status ReadAll(const Db& db, Contents& out) {
  absl::Status s = ForEachRow(db, kSelectAccounts, [&](RowReader& r) {
    AccountRow& row = out.accounts.emplace_back();
    row.id = r.Bytes(0);
    row.role = r.Int32(1);
    row.name = r.Bytes(2);
    row.created = r.Time(3);
  });
  if (!s.ok()) return s;
  s = ForEachRow(db, kSelectApiKeys, [&](RowReader& r) {
    ApiKeyRow& row = out.api_keys.emplace_back();
    row.key_id = r.Bytes(0);
    row.account_id = r.Bytes(1);
    row.secret_hash = r.Bytes(2);
    row.created = r.Time(3);
    row.revoked = r.Bool(4);
  });
  if (!s.ok()) return s;
  s = ForEachRow(db, kSelectCapacity, [&](RowReader& r) {
    CapacityRow& row = out.capacity.emplace_back();
    row.seq = r.Int(0);
    row.kind = r.Int32(1);
    row.actor = r.Bytes(2);
    row.at = r.Time(3);
    row.payload = r.Bytes(4);
  });
  if (!s.ok()) return s;
  s = ForEachRow(db, kSelectAllocations, [&](RowReader& r) {
    AllocationRow& row = out.allocations.emplace_back();
    row.id = r.Int(0);
    row.buyer_id = r.Bytes(1);
    row.state = r.Int32(2);
    row.payload = r.Bytes(3);
    row.held_end = r.Time(4);
    row.offer_ids = r.Bytes(5);
  });
  if (!s.ok()) return s;
  s = ForEachRow(db, kSelectIdempotency, [&](RowReader& r) {
    IdempotencyRow& row = out.idempotency.emplace_back();
    row.buyer_id = r.Bytes(0);
    row.key = r.Bytes(1);
    row.request = r.Bytes(2);
    row.allocation_id = r.Int(3);
    row.rejection = r.Bytes(4);
  });
  if (!s.ok()) return s;
  s = ForEachRow(db, kSelectClaims, [&](RowReader& r) {
    ClaimRow& row = out.claims.emplace_back();
    row.allocation_id = r.Int(0);
    row.node_id = r.Bytes(1);
    row.node_gpus = r.Int32(2);
    row.gpus = r.Int32(3);
    row.from = r.Time(4);
    row.until = r.Time(5);
  });
  if (!s.ok()) return s;
  s = ForEachRow(db, kSelectLedger, [&](RowReader& r) {
    const int64_t id = r.Int(0);
    if (out.ledger.empty() || out.ledger.back().id != id) {
      LedgerEntryRow& e = out.ledger.emplace_back();
      e.id = id;
      e.at = r.Time(2);
      e.allocation_id = r.Int(3);
      e.kind = r.Int32(4);
    }
    out.ledger.back().legs.push_back({r.Bytes(5), r.Int(6)});
  });
  if (!s.ok()) return s;
  return ForEachRow(db, kSelectDecisionMinutes, [&](RowReader& r) {
    DecisionMinuteRow& row = out.decision_minutes.emplace_back();
    row.minute = r.Int(0);
    row.counts = r.Bytes(1);
  });
}

// Brings the schema to LatestSchemaVersion() in one transaction; returns the version reached.
absl::StatusOr<int64_t> Migrate(const Db& db) {
  absl::Status s = db.Exec("BEGIN IMMEDIATE", "starting the schema check");
  if (!s.ok()) return s;
  absl::StatusOr<int64_t> version = [&]() -> absl::StatusOr<int64_t> {
    absl::Status step = db.Exec(kSchemaVersionTableSql, "creating table schema_version");
    if (!step.ok()) return step;
    int64_t current = 0;
    step = ForEachRow(db, "SELECT COALESCE(MAX(version), 0) FROM schema_version",
                      [&](RowReader& r) { current = r.Int(0); });
    if (!step.ok()) return step;
    const int64_t latest = LatestSchemaVersion();
    if (current > latest) {
      return absl::FailedPreconditionError(absl::StrCat(db.name, ": database schema v", current,
                                                        " is newer than this suanlid (knows v",
                                                        latest, "); upgrade suanlid"));
    }
    absl::StatusOr<Statement> record =
        Statement::Prepare(db, "INSERT INTO schema_version (version, name) VALUES (?1, ?2)");
    if (!record.ok()) return record.status();
    for (const Migration& m : Migrations()) {
      if (m.version <= current) continue;
      step = db.Exec(m.sql, absl::StrCat("applying migration ", m.name));
      if (step.ok() && *m.sqlite_sql != '\0') {
        step = db.Exec(m.sqlite_sql, absl::StrCat("applying migration ", m.name, ".sqlite"));
      }
      if (step.code() == absl::StatusCode::kInternal) {
        // The SQL did not fit the database: e.g. a table of that name exists already.
        return absl::FailedPreconditionError(
            absl::StrCat(step.message(), " (is this a database of suanlid's?)"));
      }
      if (!step.ok()) return step;
      record->BindInt(1, m.version);
      record->BindText(2, m.name);
      step = RunOnce(db, *record, absl::StrCat("recording migration ", m.name));
      if (!step.ok()) return step;
    }
    step = db.Exec("COMMIT", "committing the schema");
    if (!step.ok()) return step;
    return latest;
  }();
  if (!version.ok()) db.RollbackIfActive();
  return version;
}

// Makes a new database file's directory entry durable (SQLite syncs the directory for its
// journals, not for the database file it creates).
absl::Status SyncDirectory(const std::filesystem::path& dir, absl::string_view name) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) != 0) {
    std::string error = std::error_code(errno, std::generic_category()).message();
    if (fd >= 0) close(fd);
    return absl::UnavailableError(
        absl::StrCat(name, ": syncing directory ", dir.string(), ": ", error));
  }
  close(fd);
  return absl::OkStatus();
}

}  // namespace

// Copies the WAL back into the database file (a PASSIVE checkpoint: it never blocks the writer)
// once a commit leaves kDuePages or more in the WAL, on its own thread and connection, so that
// no commit waits for a checkpoint. Should it fall behind, the committing connection checkpoints
// itself past kInlinePages, so that the WAL stays bounded.
class SqliteStore::Checkpointer {
 public:
  static constexpr int kDuePages = 1000;
  static constexpr int kInlinePages = 20'000;

  explicit Checkpointer(sqlite3* db) : db_(db), thread_([this] { Run(); }) {}
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;
  ~Checkpointer() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
    sqlite3_close_v2(db_);
  }

  // sqlite3_wal_hook's callback, after each commit of the store's connection.
  static int OnCommit(void* self, sqlite3* db, const char* /*schema*/, int pages) {
    if (pages >= kInlinePages) {
      sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    } else if (pages >= kDuePages) {
      auto* c = static_cast<Checkpointer*>(self);
      absl::MutexLock lock(&c->mu_);
      c->due_ = true;
    }
    return SQLITE_OK;
  }

 private:
  void Run() {
    for (;;) {
      {
        absl::MutexLock lock(&mu_);
        auto wake = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return due_ || stop_; };
        mu_.Await(absl::Condition(&wake));
        if (stop_) return;
        due_ = false;
      }
      // Failures (e.g. busy) are retried at the next commit that finds the WAL long.
      sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    }
  }

  sqlite3* db_;  // owned
  absl::Mutex mu_;
  bool due_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: started once the rest is ready
};

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(absl::string_view path) {
  ConfigureSqlite();
  if (path.empty()) {
    return absl::InvalidArgumentError(
        "sqlite: needs a file path, e.g. sqlite:/var/lib/suanli/suanli.db");
  }
  std::error_code ec;
  const std::filesystem::path given(path.begin(), path.end());
  std::filesystem::path file = std::filesystem::absolute(given, ec).lexically_normal();
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("sqlite:", path, ": cannot make the path absolute: ", ec.message()));
  }
  const std::string name = absl::StrCat("sqlite:", file.string());
  if (!file.has_filename() || std::filesystem::is_directory(file, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": names a directory; name the database file in it, e.g. sqlite:",
                     (file / "suanli.db").lexically_normal().string()));
  }
  const std::filesystem::path dir = file.parent_path();
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::UnavailableError(absl::StrCat(name, ": directory ", dir.string(),
                                               std::filesystem::exists(dir, ec)
                                                   ? " is not a directory"
                                                   : " does not exist; create it first"));
  }

  sqlite3* raw = nullptr;
  int rc =
      sqlite3_open_v2(file.c_str(), &raw,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  // Owns the connection until the store does.
  std::unique_ptr<sqlite3, int (*)(sqlite3*)> owned(raw, &sqlite3_close_v2);
  const Db db{raw, name};
  if (rc != SQLITE_OK) {
    if (raw == nullptr) return absl::UnavailableError(absl::StrCat(name, ": out of memory"));
    return db.Error(rc, "opening");
  }
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, kBusyTimeoutMs);
  if (sqlite3_db_readonly(raw, "main") == 1) {
    return absl::UnavailableError(
        absl::StrCat(name, ": the file is read-only to this process; check its permissions"));
  }

  // journal_mode=WAL answers with the mode it ended in; WAL is refused e.g. where shared memory
  // is unavailable. The first statement also finds out whether the file is a database at all.
  std::string journal_mode;
  absl::Status s =
      ForEachRow(db, "PRAGMA journal_mode = WAL", [&](RowReader& r) { journal_mode = r.Bytes(0); });
  if (!s.ok()) {
    if (s.code() == absl::StatusCode::kDataLoss) {
      return absl::DataLossError(
          absl::StrCat(s.message(), " (is this an SQLite database of suanlid?)"));
    }
    return s;
  }
  if (journal_mode != "wal") {
    return absl::UnavailableError(absl::StrCat(
        name, ": cannot use WAL journaling (journal mode stays ", Quote(journal_mode), ")"));
  }
  s = db.Exec("PRAGMA synchronous = FULL", "setting synchronous=FULL");
  if (!s.ok()) return s;
  s = db.Exec("PRAGMA foreign_keys = ON", "enabling foreign keys");
  if (!s.ok()) return s;
  // Commits touch index pages all over the claims and allocations tables: keep up to 64 MiB of
  // pages in memory instead of SQLite's 2 MiB, so that they are not read back from the file on
  // every commit.
  s = db.Exec("PRAGMA cache_size = -65536", "setting the page cache size");
  if (!s.ok()) return s;

  absl::StatusOr<int64_t> version = Migrate(db);
  if (!version.ok()) return version.status();
  s = SyncDirectory(dir, name);
  if (!s.ok()) return s;

  auto store = std::unique_ptr<SqliteStore>(new SqliteStore(owned.release(), name, *version));
  // Checkpoints on a connection and a thread of their own; without one, SQLite's own (inside
  // the COMMIT that passes 1,000 WAL pages).
  sqlite3* second = nullptr;
  if (sqlite3_open_v2(file.c_str(), &second, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                      nullptr) == SQLITE_OK &&
      sqlite3_exec(second, "PRAGMA synchronous = FULL", nullptr, nullptr, nullptr) == SQLITE_OK) {
    sqlite3_busy_timeout(second, kBusyTimeoutMs);
    store->checkpointer_ = std::make_unique<Checkpointer>(second);
    sqlite3_wal_hook(store->db_, &Checkpointer::OnCommit, store->checkpointer_.get());
  } else {
    sqlite3_close_v2(second);
  }
  return store;
}

class SqliteStore::Statements : public StatementCache {};

SqliteStore::SqliteStore(sqlite3* db, std::string name, int64_t schema_version)
    : db_(db),
      name_(std::move(name)),
      schema_version_(schema_version),
      statements_(std::make_unique<Statements>()) {}

SqliteStore::~SqliteStore() {
  statements_.reset();  // finalized before the connection closes
  sqlite3_close_v2(db_);
  checkpointer_.reset();  // after the connection whose hook points to it
}

absl::Status SqliteStore::Commit(const Batch& batch) {
  if (batch.empty()) return absl::OkStatus();
  const Db db{db_, name_};
  absl::Status s = db.Exec("BEGIN IMMEDIATE", "starting a commit");
  if (!s.ok()) return s;
  s = WriteRows(db, *statements_, batch);
  if (s.ok()) s = db.Exec("COMMIT", "committing");
  if (!s.ok()) db.RollbackIfActive();
  return s;
}

absl::StatusOr<Contents> SqliteStore::Load() {
  const Db db{db_, name_};
  // One read transaction, so that the five tables are read at one point in time.
  absl::Status s = db.Exec("BEGIN", "starting a load");
  if (!s.ok()) return s;
  Contents contents;
  s = ReadAll(db, contents);
  if (s.ok()) s = db.Exec("COMMIT", "ending a load");
  if (!s.ok()) {
    db.RollbackIfActive();
    return s;
  }
  return contents;
}

std::string SqliteStore::Describe() const {
  return absl::StrCat(name_, " (schema v", schema_version_, ")");
}

}  // namespace suanli::storage
