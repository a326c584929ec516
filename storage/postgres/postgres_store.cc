#include "storage/postgres/postgres_store.h"

#include <libpq-fe.h>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <pqxx/pqxx>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "storage/claim_rules.h"
#include "storage/migrations/migrations.h"
#include "storage/time_encoding.h"

namespace suanli::storage {

struct PostgresStore::Session {
  explicit Session(const std::string& conninfo) : conn(conninfo) {}
  pqxx::connection conn;
};

namespace {

// Connection parameters the store sets unless the URL does: give up connecting after 10 s, and
// notice a dead server within about a minute on an idle or a busy connection. The session's
// synchronous_commit=on also travels in `options`, so that a connection libpqxx 6 reopens by
// itself (its "reactivation", which skips Connect's session setup) is durable too.
constexpr std::pair<const char*, const char*> kConnectionDefaults[] = {
    {"connect_timeout", "10"},
    {"keepalives", "1"},
    {"keepalives_idle", "30"},
    {"keepalives_interval", "10"},
    {"keepalives_count", "3"},
    {"tcp_user_timeout", "60000"},
    {"client_encoding", "UTF8"},
    {"application_name", "suanlid"},
    {"options", "'-c synchronous_commit=on -c client_min_messages=warning'"},
};

// Serializes migrations of one database (advisory locks are per database).
constexpr int64_t kMigrationLock = 0x7375616e6c6901;  // "suanli" 1

// An INSERT statement holds at most this many rows, and is sent once its values pass
// kMaxStatementBytes (a batch may hold thousands of rows and megabytes of payloads).
constexpr size_t kMaxStatementRows = 1000;
constexpr size_t kMaxStatementBytes = size_t{8} << 20;

// How long Resolve waits for the server to finish a transaction whose COMMIT it lost.
constexpr absl::Duration kResolveFor = absl::Seconds(2);

// ---- Exceptions to statuses: Guard is the only place that catches.

// What the store is doing, for the status of an exception thrown meanwhile.
struct Step {
  explicit Step(std::string what) : what(std::move(what)) {}
  // A step whose constraint violations of SQLSTATE `state` are explained by `words`.
  Step(std::string what, const char* state, const char* words)
      : what(std::move(what)), violation_state(state), violation_words(words) {}

  std::string what;  // e.g. "writing accounts"
  // Bad values are then stored data (DATA_LOSS), not the batch's (INVALID_ARGUMENT).
  bool reading = false;
  // SQL that does not fit the database is then FAILED_PRECONDITION, not INTERNAL.
  bool migrating = false;
  const char* violation_state = "";
  const char* violation_words = "";
};

// A step that reads stored data.
Step Reading(std::string what) {
  Step step(std::move(what));
  step.reading = true;
  return step;
}

// The result of a Guard: the body's status, or the one its exception maps to.
struct Outcome {
  enum class Connection {
    kUsable,   // as far as this call knows
    kLost,     // broken or being closed by the server: drop it
    kInDoubt,  // broke during COMMIT, which may or may not have happened
  };
  Outcome(absl::Status status, Connection connection)
      : status(std::move(status)), connection(connection) {}
  absl::Status status;
  Connection connection;
};

// libpq's multi-line message as one line: severity prefixes and CONTEXT lines dropped, the rest
// (the message, DETAIL and HINT) joined with "; ".
std::string OneLine(absl::string_view message) {
  std::vector<std::string> parts;
  for (absl::string_view line : absl::StrSplit(message, '\n', absl::SkipWhitespace())) {
    line = absl::StripAsciiWhitespace(line);
    for (absl::string_view prefix : {"ERROR:", "FATAL:", "PANIC:"}) {
      if (absl::ConsumePrefix(&line, prefix)) line = absl::StripLeadingAsciiWhitespace(line);
    }
    if (absl::StartsWith(line, "CONTEXT:")) continue;
    std::string tidy(line);
    absl::RemoveExtraAsciiWhitespace(&tidy);
    if (!tidy.empty()) parts.push_back(std::move(tidy));
  }
  return absl::StrJoin(parts, "; ");
}

// The caller's next step decides the code: retrying may help (UNAVAILABLE), the batch is bad
// (INVALID_ARGUMENT), the data is bad (DATA_LOSS), the database must be fixed first
// (FAILED_PRECONDITION), or this code is wrong (INTERNAL).
absl::StatusCode CodeForState(absl::string_view state, const Step& step) {
  const absl::string_view cls = state.substr(0, 2);
  if (cls == "23") return absl::StatusCode::kInvalidArgument;  // integrity constraint
  if (cls == "22") {  // data exception: a value that does not fit
    return step.reading ? absl::StatusCode::kDataLoss : absl::StatusCode::kInvalidArgument;
  }
  if (cls == "08" || cls == "53" || cls == "57" || cls == "40" || state == "25006" ||
      state == "55P03") {
    // Connection, resources (disk full, memory, connections), shutdown or cancel, serialization
    // or deadlock, a read-only standby, a lock not available.
    return absl::StatusCode::kUnavailable;
  }
  if (state == "XX001" || state == "XX002") return absl::StatusCode::kDataLoss;  // corrupt
  if (state == "42501") return absl::StatusCode::kFailedPrecondition;  // permission denied
  if (cls == "42" && step.migrating) return absl::StatusCode::kFailedPrecondition;
  return absl::StatusCode::kInternal;
}

// Runs `body`, which returns an absl::Status and may throw what libpqxx throws, and returns its
// status or the one its exception maps to, "<store>: <step.what>: <what went wrong>".
template <typename Body>
Outcome Guard(absl::string_view store, const Step& step, Body&& body) noexcept {
  auto status = [&](absl::StatusCode code, absl::string_view why) {
    return absl::Status(code, absl::StrCat(store, ": ", step.what, ": ", why));
  };
  try {
    return {body(), Outcome::Connection::kUsable};
  } catch (const pqxx::in_doubt_error& e) {
    return {status(absl::StatusCode::kUnavailable,
                   absl::StrCat("the connection broke during COMMIT (", OneLine(e.what()), ")")),
            Outcome::Connection::kInDoubt};
  } catch (const pqxx::broken_connection& e) {
    return {status(absl::StatusCode::kUnavailable,
                   absl::StrCat("connection to the server lost or refused: ", OneLine(e.what()))),
            Outcome::Connection::kLost};
  } catch (const pqxx::sql_error& e) {
    const std::string& state = e.sqlstate();
    std::string why = OneLine(e.what());
    const absl::StatusCode code = CodeForState(state, step);
    if (code == absl::StatusCode::kInvalidArgument && state == step.violation_state) {
      why = absl::StrCat(step.violation_words, " (", why, ")");
    } else if (code == absl::StatusCode::kFailedPrecondition && step.migrating) {
      why =
          absl::StrCat(why, " (is this a database of suanlid's, and may the role create tables?)");
    }
    // Connection errors, and the server shutting down or ending this session.
    const bool lost = absl::StartsWith(state, "08") || absl::StartsWith(state, "57P");
    return {status(code, absl::StrCat(why, state.empty() ? "" : " [SQLSTATE " + state + "]")),
            lost ? Outcome::Connection::kLost : Outcome::Connection::kUsable};
  } catch (const pqxx::conversion_error& e) {
    return {status(step.reading ? absl::StatusCode::kDataLoss : absl::StatusCode::kInternal,
                   absl::StrCat("a value does not convert: ", OneLine(e.what()))),
            Outcome::Connection::kUsable};
  } catch (const pqxx::range_error& e) {
    return {status(step.reading ? absl::StatusCode::kDataLoss : absl::StatusCode::kInternal,
                   absl::StrCat("unexpected result: ", OneLine(e.what()))),
            Outcome::Connection::kUsable};
  } catch (const std::bad_alloc&) {
    return {status(absl::StatusCode::kUnavailable, "out of memory"), Outcome::Connection::kUsable};
  } catch (const std::exception& e) {
    return {status(absl::StatusCode::kInternal, OneLine(e.what())), Outcome::Connection::kUsable};
  } catch (...) {
    return {status(absl::StatusCode::kInternal, "an unknown exception"),
            Outcome::Connection::kUsable};
  }
}

// ---- URLs.

// Percent-encodes all but RFC 3986's unreserved characters and '/' (for socket directories).
std::string UrlPart(absl::string_view s) {
  std::string out;
  for (char c : s) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '/') {
      out.push_back(c);
    } else {
      absl::StrAppend(&out, "%", absl::BytesToHexString(absl::string_view(&c, 1)));
    }
  }
  return out;
}

// "postgresql://USER@HOST:PORT/DB", or "postgresql://USER@/DB?host=DIR&port=PORT" for a unix
// socket; parts that are empty are left out.
std::string DisplayUrl(absl::string_view user, absl::string_view host, absl::string_view port,
                       absl::string_view db) {
  std::string out = "postgresql://";
  if (!user.empty()) absl::StrAppend(&out, UrlPart(user), "@");
  const bool socket = absl::StartsWith(host, "/") || absl::StartsWith(host, "@");
  if (!socket) {
    absl::StrAppend(&out, UrlPart(host));
    if (!port.empty()) absl::StrAppend(&out, ":", UrlPart(port));
  }
  absl::StrAppend(&out, "/", UrlPart(db));
  if (socket) {
    absl::StrAppend(&out, "?host=", UrlPart(host));
    if (!port.empty()) absl::StrAppend(&out, "&port=", UrlPart(port));
  }
  return out;
}

// A value quoted for a libpq keyword=value connection string.
std::string ConninfoValue(absl::string_view v) {
  std::string out = "'";
  for (char c : v) {
    if (c == '\\' || c == '\'') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('\'');
  return out;
}

struct ParsedUrl {
  std::string conninfo;  // keyword=value pairs: the URL's and kConnectionDefaults
  std::string name;      // for messages, from the URL alone
};

// The URL as libpq parses it. INVALID_ARGUMENT when it cannot; libpq's words are repeated only
// up to the first quote, as what it quotes may be part of a password.
absl::StatusOr<ParsedUrl> ParseUrl(absl::string_view url) {
  const std::string text(url);
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(text.c_str(), &error);
  if (options == nullptr) {
    std::string why = error != nullptr ? error : "out of memory";
    if (error != nullptr) PQfreemem(error);
    why = OneLine(why.substr(0, why.find('"')));
    return absl::InvalidArgumentError(absl::StrCat(
        "store URL postgresql://...: libpq cannot parse it (", why,
        "); the form is postgresql://USER@HOST:PORT/DB, password in PGPASSWORD or ~/.pgpass"));
  }
  absl::flat_hash_map<std::string, std::string> values;
  std::vector<std::string> pairs;
  for (const PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    values[o->keyword] = o->val;
    pairs.push_back(absl::StrCat(o->keyword, "=", ConninfoValue(o->val)));
  }
  PQconninfoFree(options);
  for (const auto& [keyword, value] : kConnectionDefaults) {
    if (!values.contains(keyword)) pairs.push_back(absl::StrCat(keyword, "=", value));
  }
  ParsedUrl parsed;
  parsed.conninfo = absl::StrJoin(pairs, " ");
  parsed.name = DisplayUrl(values["user"], values["host"], values["port"], values["dbname"]);
  return parsed;
}

// ---- Values. Every value goes to the server as a text parameter.

std::string Int(int64_t v) { return absl::StrCat(v); }
std::string Time(absl::Time t) { return absl::StrCat(ToMicros(t)); }
// bytea's hex input format.
std::string Bytes(absl::string_view b) { return absl::StrCat("\\x", absl::BytesToHexString(b)); }

// A user-supplied string, quoted and escaped for a message.
std::string Quote(absl::string_view s) { return absl::StrCat("\"", absl::CHexEscape(s), "\""); }

// INVALID_ARGUMENT when a text field of the batch holds a NUL byte: PostgreSQL's TEXT cannot
// store one, and libpq would cut the value short at it.
absl::Status CheckNoNul(absl::string_view store, const Batch& batch) {
  absl::Status status;
  auto check = [&](absl::string_view field, absl::string_view value) {
    if (status.ok() && absl::StrContains(value, '\0')) {
      status = absl::InvalidArgumentError(
          absl::StrCat(store, ": ", field, " ", Quote(value),
                       " holds a NUL byte, which PostgreSQL text cannot store"));
    }
  };
  for (const AccountRow& r : batch.accounts) {
    check("account id", r.id);
    check("account name", r.name);
  }
  for (const ApiKeyRow& r : batch.api_keys) {
    check("API key id", r.key_id);
    check("API key account_id", r.account_id);
  }
  for (const CapacityRow& r : batch.capacity) check("capacity actor", r.actor);
  for (const AllocationRow& r : batch.allocations) {
    check("allocation buyer_id", r.buyer_id);
    check("allocation offer_ids", r.offer_ids);
  }
  for (const IdempotencyRow& r : batch.idempotency) {
    check("idempotency buyer_id", r.buyer_id);
    check("idempotency key", r.key);
  }
  for (const ClaimRow& r : batch.claims) check("claim node_id", r.node_id);
  for (const LedgerEntryRow& e : batch.ledger) {
    for (const LedgerLeg& leg : e.legs) check("ledger account", leg.account);
  }
  return status;
}

// ---- Writing.

// An INSERT of many rows, `head` SELECT * FROM unnest(one array per column) `tail`, each array
// cast to its column's type (`types`, one per column); prepared once per connection under `name`.
struct InsertSql {
  InsertSql(const char* name, const char* head, const std::vector<const char*>& types,
            const char* tail)
      : name(name), columns(types.size()), text(absl::StrCat(head, " SELECT * FROM unnest(")) {
    for (size_t col = 0; col < types.size(); ++col) {
      absl::StrAppend(&text, col == 0 ? "$" : ", $", col + 1, "::", types[col], "[]");
    }
    absl::StrAppend(&text, ") ", tail);
  }

  const char* name;
  size_t columns;
  std::string text;
};

const InsertSql kAccounts = {
    "suanli_insert_accounts",
    "INSERT INTO accounts (id, role, name, created_us)",
    {"text", "integer", "text", "bigint"},
    "ON CONFLICT (id) DO UPDATE SET "
    "role = excluded.role, name = excluded.name, created_us = excluded.created_us"};
const InsertSql kApiKeys = {
    "suanli_insert_api_keys",
    "INSERT INTO api_keys (key_id, account_id, secret_hash, created_us, revoked)",
    {"text", "text", "bytea", "bigint", "smallint"},
    "ON CONFLICT (key_id) DO UPDATE SET "
    "account_id = excluded.account_id, secret_hash = excluded.secret_hash, "
    "created_us = excluded.created_us, revoked = excluded.revoked"};
const InsertSql kCapacity = {"suanli_insert_capacity",
                             "INSERT INTO capacity_journal (seq, kind, actor, at_us, payload)",
                             {"bigint", "integer", "text", "bigint", "bytea"},
                             ""};
const InsertSql kAllocations = {
    "suanli_insert_allocations",
    "INSERT INTO allocations (id, buyer_id, state, payload, held_end_us, offer_ids)",
    {"bigint", "text", "integer", "bytea", "bigint", "text"},
    "ON CONFLICT (id) DO UPDATE SET "
    "buyer_id = excluded.buyer_id, state = excluded.state, payload = excluded.payload, "
    "held_end_us = excluded.held_end_us, offer_ids = excluded.offer_ids"};
const InsertSql kClaims = {
    "suanli_insert_claims",
    "INSERT INTO allocation_claims (allocation_id, node_id, node_gpus, gpus, from_us, until_us)",
    {"bigint", "text", "integer", "integer", "bigint", "bigint"},
    ""};
const InsertSql kIdempotency = {
    "suanli_insert_idempotency",
    "INSERT INTO idempotency (buyer_id, idem_key, request, allocation_id, rejection)",
    {"text", "text", "bytea", "bigint", "bytea"},
    ""};

const InsertSql kLedgerLegs = {
    "suanli_insert_ledger_legs",
    "INSERT INTO ledger_legs (entry_id, leg, last_leg, at_us, allocation_id, kind, account, "
    "amount_micros)",
    {"bigint", "integer", "integer", "bigint", "bigint", "integer", "text", "bigint"},
    ""};

const InsertSql kDecisionMinutes = {"suanli_insert_decision_minutes",
                                    "INSERT INTO decision_minutes (minute, counts)",
                                    {"bigint", "bytea"},
                                    "ON CONFLICT (minute) DO UPDATE SET counts = excluded.counts"};

// Appends `value` to the text of a PostgreSQL array literal, as one quoted element.
void AppendElement(std::string* array, absl::string_view value) {
  array->push_back(array->empty() ? '{' : ',');
  array->push_back('"');
  for (const char c : value) {
    if (c == '"' || c == '\\') array->push_back('\\');
    array->push_back(c);
  }
  array->push_back('"');
}

// Sends rows in INSERT statements of up to kMaxStatementRows rows, each column as one array
// parameter: INSERT ... SELECT * FROM unnest($1::type[], $2::type[], ...). The statement's text is
// the same for any number of rows, so it is prepared once per connection (libpqxx sends it with
// its first use): the server parses it once, and plans it no more after its first few executions.
// One statement may not upsert a key twice (PostgreSQL refuses), so a row whose key is already in
// the pending statement sends that statement first: the rows are written in their order, as one at
// a time.
class RowWriter {
 public:
  RowWriter(pqxx::work& w, const InsertSql& sql) : w_(w), name_(sql.name), columns_(sql.columns) {
    w.conn().prepare(name_, sql.text);  // once the connection has it, only a lookup
  }

  // Adds a row of values in the order of the InsertSql's types; `key`, when not empty, identifies
  // the row for an upsert.
  void Add(const std::vector<std::string>& values, std::string key = "") {
    if (!key.empty() && !keys_.insert(key).second) {
      Flush();
      keys_.insert(std::move(key));
    }
    for (size_t col = 0; col < columns_.size(); ++col) {
      bytes_ += values[col].size();
      AppendElement(&columns_[col], values[col]);
    }
    if (++rows_ >= kMaxStatementRows || bytes_ >= kMaxStatementBytes) Flush();
  }

  // Sends the pending rows, if any.
  void Flush() {
    if (rows_ == 0) return;
    for (std::string& column : columns_) column.push_back('}');
    w_.exec_prepared(name_, pqxx::prepare::make_dynamic_params(columns_));
    for (std::string& column : columns_) column.clear();
    keys_.clear();
    rows_ = 0;
    bytes_ = 0;
  }

 private:
  pqxx::work& w_;
  std::string name_;
  std::vector<std::string> columns_;  // one array literal per column, closed by Flush
  absl::flat_hash_set<std::string> keys_;
  size_t rows_ = 0;
  size_t bytes_ = 0;
};

// Writes every row of the batch inside `w`; returns INVALID_ARGUMENT for a broken rule it finds
// itself, and lets libpqxx's exceptions through (Guard maps them, with `step` saying where).
absl::Status WriteRows(absl::string_view store, pqxx::work& w, const Batch& batch, Step& step) {
  if (!batch.accounts.empty()) {
    step = Step("writing accounts", "23505", "an account name is taken by another account");
    RowWriter out(w, kAccounts);
    for (const AccountRow& r : batch.accounts) {
      out.Add({r.id, Int(r.role), r.name, Time(r.created)}, r.id);
    }
    out.Flush();
  }

  if (!batch.api_keys.empty()) {
    step = Step("writing API keys", "23503", "an API key's account is not stored");
    RowWriter out(w, kApiKeys);
    for (const ApiKeyRow& r : batch.api_keys) {
      out.Add(
          {r.key_id, r.account_id, Bytes(r.secret_hash), Time(r.created), Int(r.revoked ? 1 : 0)},
          r.key_id);
    }
    out.Flush();
  }

  if (!batch.capacity.empty()) {
    step = Step("reading the last capacity seq");
    int64_t last = w.exec1("SELECT COALESCE(MAX(seq), 0) FROM capacity_journal")[0].as<int64_t>();
    for (const CapacityRow& r : batch.capacity) {
      if (r.seq <= last) {
        return absl::InvalidArgumentError(
            absl::StrCat(store, ": capacity seq ", r.seq, " is not above seq ", last,
                         " (every seq must be above the stored ones and the batch's earlier "
                         "ones, and above 0)"));
      }
      last = r.seq;
    }
    step = Step("writing the capacity journal");
    RowWriter out(w, kCapacity);
    for (const CapacityRow& r : batch.capacity) {
      out.Add({Int(r.seq), Int(r.kind), r.actor, Time(r.at), Bytes(r.payload)});
    }
    out.Flush();
  }

  if (!batch.allocations.empty()) {
    step = Step("writing allocations", "23514", "an allocation id must be above 0");
    RowWriter out(w, kAllocations);
    std::vector<std::string> ids;
    for (const AllocationRow& r : batch.allocations) {
      out.Add(
          {Int(r.id), r.buyer_id, Int(r.state), Bytes(r.payload), Time(r.held_end), r.offer_ids},
          Int(r.id));
      ids.push_back(Int(r.id));
    }
    out.Flush();
    step = Step("removing the claims the batch replaces");
    w.exec_params("DELETE FROM allocation_claims WHERE allocation_id = ANY ($1::bigint[])",
                  absl::StrCat("{", absl::StrJoin(ids, ","), "}"));
  }

  if (!batch.claims.empty()) {
    step = Step("writing claims", "23514", "a node would be oversold");  // checked per statement
    RowWriter out(w, kClaims);
    for (const ClaimRow& r : batch.claims) {
      out.Add({Int(r.allocation_id), r.node_id, Int(r.node_gpus), Int(r.gpus), Time(r.from),
               Time(r.until)});
    }
    out.Flush();
  }

  if (!batch.idempotency.empty()) {
    step = Step("writing idempotency keys", "23505",
                "an idempotency key is already stored for this buyer");
    RowWriter out(w, kIdempotency);
    for (const IdempotencyRow& r : batch.idempotency) {
      out.Add({r.buyer_id, r.key, Bytes(r.request), Int(r.allocation_id), Bytes(r.rejection)});
    }
    out.Flush();
  }

  if (!batch.ledger.empty()) {
    step = Step("writing ledger entries", "23505", "a ledger entry id is already stored");
    RowWriter out(w, kLedgerLegs);
    for (const LedgerEntryRow& e : batch.ledger) {
      const int64_t last = static_cast<int64_t>(e.legs.size()) - 1;
      for (size_t i = 0; i < e.legs.size(); ++i) {
        out.Add({Int(e.id), Int(static_cast<int64_t>(i)), Int(last), Time(e.at),
                 Int(e.allocation_id), Int(e.kind), e.legs[i].account,
                 Int(e.legs[i].amount_micros)});
      }
    }
    out.Flush();
  }

  if (!batch.decision_minutes.empty()) {
    step = Step("writing decision counts");
    RowWriter out(w, kDecisionMinutes);
    for (const DecisionMinuteRow& r : batch.decision_minutes) {
      out.Add({Int(r.minute), Bytes(r.counts)}, Int(r.minute));
    }
    out.Flush();
  }
  return absl::OkStatus();
}

// ---- Reading.

constexpr char kSelectAccounts[] =
    "SELECT id, role, name, created_us FROM accounts ORDER BY id COLLATE \"C\"";
constexpr char kSelectApiKeys[] =
    "SELECT key_id, account_id, secret_hash, created_us, revoked FROM api_keys "
    "ORDER BY key_id COLLATE \"C\"";
constexpr char kSelectCapacity[] =
    "SELECT seq, kind, actor, at_us, payload FROM capacity_journal ORDER BY seq";
constexpr char kSelectAllocations[] =
    "SELECT id, buyer_id, state, payload, held_end_us, offer_ids FROM allocations ORDER BY id";
constexpr char kSelectIdempotency[] =
    "SELECT buyer_id, idem_key, request, allocation_id, rejection FROM idempotency "
    "ORDER BY buyer_id COLLATE \"C\", idem_key COLLATE \"C\"";
constexpr char kSelectClaims[] =
    "SELECT allocation_id, node_id, node_gpus, gpus, from_us, until_us FROM allocation_claims "
    "ORDER BY allocation_id, node_id COLLATE \"C\"";
constexpr char kSelectLedger[] =
    "SELECT entry_id, at_us, allocation_id, kind, account, amount_micros FROM ledger_legs "
    "ORDER BY entry_id, leg";
constexpr char kSelectDecisionMinutes[] =
    "SELECT minute, counts FROM decision_minutes ORDER BY minute";

// Column readers; a value that does not fit throws pqxx::conversion_error (DATA_LOSS).
std::string Text(const pqxx::field& f) { return f.as<std::string>(); }
std::string Blob(const pqxx::field& f) { return pqxx::binarystring(f).str(); }
absl::Time TimeOf(const pqxx::field& f) { return FromMicros(f.as<int64_t>()); }

// Reads every table inside `r`; DATA_LOSS for a value that is not what its column should hold.
absl::Status ReadAll(pqxx::transaction_base& r, Contents& out, Step& step) {
  step = Reading("reading accounts");
  for (const pqxx::row& row : r.exec(kSelectAccounts)) {
    out.accounts.push_back({Text(row[0]), row[1].as<int32_t>(), Text(row[2]), TimeOf(row[3])});
  }
  step = Reading("reading API keys");
  for (const pqxx::row& row : r.exec(kSelectApiKeys)) {
    const int32_t revoked = row[4].as<int32_t>();
    if (revoked != 0 && revoked != 1) {
      return absl::DataLossError(
          absl::StrCat("API key ", Quote(Text(row[0])), ": revoked = ", revoked, " is not 0 or 1"));
    }
    out.api_keys.push_back(
        {Text(row[0]), Text(row[1]), Blob(row[2]), TimeOf(row[3]), revoked == 1});
  }
  step = Reading("reading the capacity journal");
  for (const pqxx::row& row : r.exec(kSelectCapacity)) {
    out.capacity.push_back(
        {row[0].as<int64_t>(), row[1].as<int32_t>(), Text(row[2]), TimeOf(row[3]), Blob(row[4])});
  }
  step = Reading("reading allocations");
  for (const pqxx::row& row : r.exec(kSelectAllocations)) {
    out.allocations.push_back({row[0].as<int64_t>(), Text(row[1]), row[2].as<int32_t>(),
                               Blob(row[3]), TimeOf(row[4]), Text(row[5])});
  }
  step = Reading("reading idempotency keys");
  for (const pqxx::row& row : r.exec(kSelectIdempotency)) {
    out.idempotency.push_back(
        {Text(row[0]), Text(row[1]), Blob(row[2]), row[3].as<int64_t>(), Blob(row[4])});
  }
  step = Reading("reading claims");
  for (const pqxx::row& row : r.exec(kSelectClaims)) {
    out.claims.push_back({row[0].as<int64_t>(), Text(row[1]), row[2].as<int32_t>(),
                          row[3].as<int32_t>(), TimeOf(row[4]), TimeOf(row[5])});
  }
  step = Reading("reading the ledger");
  for (const pqxx::row& row : r.exec(kSelectLedger)) {
    const int64_t id = row[0].as<int64_t>();
    if (out.ledger.empty() || out.ledger.back().id != id) {
      out.ledger.push_back({id, TimeOf(row[1]), row[2].as<int64_t>(), row[3].as<int32_t>(), {}});
    }
    out.ledger.back().legs.push_back({Text(row[4]), row[5].as<int64_t>()});
  }
  step = Reading("reading decision counts");
  for (const pqxx::row& row : r.exec(kSelectDecisionMinutes)) {
    out.decision_minutes.push_back({row[0].as<int64_t>(), Blob(row[1])});
  }
  return absl::OkStatus();
}

// The schema version recorded in the database, 0 when schema_version is empty.
int64_t StoredVersion(pqxx::transaction_base& t) {
  return t.exec1("SELECT COALESCE(MAX(version), 0) FROM schema_version")[0].as<int64_t>();
}

absl::Status NewerSchema(absl::string_view store, int64_t version) {
  return absl::FailedPreconditionError(absl::StrCat(store, ": database schema v", version,
                                                    " is newer than this suanlid (knows v",
                                                    LatestSchemaVersion(), "); upgrade suanlid"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostgresStore>> PostgresStore::Open(absl::string_view url) {
  absl::StatusOr<ParsedUrl> parsed = ParseUrl(url);
  if (!parsed.ok()) return parsed.status();
  std::unique_ptr<PostgresStore> store(
      new PostgresStore(std::move(parsed->conninfo), std::move(parsed->name)));
  if (absl::Status s = store->Connect(); !s.ok()) return s;
  if (absl::Status s = store->Migrate(); !s.ok()) return s;
  return store;
}

PostgresStore::PostgresStore(std::string conninfo, std::string name)
    : conninfo_(std::move(conninfo)), name_(std::move(name)) {}

PostgresStore::~PostgresStore() = default;

void PostgresStore::DropIfBroken(bool lost) {
  if (session_ != nullptr && (lost || !session_->conn.is_open())) session_.reset();
}

absl::Status PostgresStore::Connect() {
  DropIfBroken(false);
  if (session_ != nullptr) return absl::OkStatus();
  const bool reconnecting = schema_version_ != 0;
  std::unique_ptr<Session> session;
  Step step("connecting");
  Outcome outcome = Guard(name_, step, [&]() -> absl::Status {
    session = std::make_unique<Session>(conninfo_);
    pqxx::connection& conn = session->conn;
    if (!reconnecting) {
      // The names libpq resolved (defaults and environment included), never the password.
      auto text = [](const char* s) { return s != nullptr ? s : ""; };
      name_ = DisplayUrl(text(conn.username()), text(conn.hostname()), text(conn.port()),
                         text(conn.dbname()));
    }
    step.what = "setting up the session";
    pqxx::nontransaction n(conn);
    // Notices (e.g. "relation already exists, skipping") are not errors; keep them quiet.
    n.exec("SET client_min_messages = warning");
    // Acknowledged means durable: a role or database configured with synchronous_commit=off
    // would break that, so this session turns it on.
    if (n.exec1("SHOW synchronous_commit")[0].as<std::string>() == "off") {
      n.exec("SET synchronous_commit = on");
    }
    if (reconnecting) {
      step.what = "checking the schema version";
      const int64_t version = StoredVersion(n);
      if (version > LatestSchemaVersion()) return NewerSchema(name_, version);
      if (version != schema_version_) {
        return absl::FailedPreconditionError(
            absl::StrCat(name_, ": the database's schema changed from v", schema_version_, " to v",
                         version, " while this suanlid ran; restart it"));
      }
    }
    return absl::OkStatus();
  });
  if (!outcome.status.ok()) return outcome.status;
  session_ = std::move(session);
  return absl::OkStatus();
}

absl::Status PostgresStore::Migrate() {
  Step step("starting the schema check");
  step.migrating = true;
  int64_t reached = 0;
  Outcome outcome = Guard(name_, step, [&]() -> absl::Status {
    pqxx::work w(session_->conn);
    w.exec_params("SELECT pg_advisory_xact_lock($1)", kMigrationLock);
    step.what = "creating table schema_version";
    w.exec(kSchemaVersionTableSql);
    step.what = "reading the schema version";
    const int64_t current = StoredVersion(w);
    if (current > LatestSchemaVersion()) return NewerSchema(name_, current);
    if (current == 0) {
      // The shared SQL says BLOB, which PostgreSQL calls BYTEA.
      step.what = "creating domain blob";
      w.exec("CREATE DOMAIN blob AS BYTEA");
    }
    for (const Migration& m : Migrations()) {
      if (m.version <= current) continue;
      step.what = absl::StrCat("applying migration ", m.name);
      w.exec(m.sql);
      if (*m.postgres_sql != '\0') {
        step.what = absl::StrCat("applying migration ", m.name, ".postgres");
        w.exec(m.postgres_sql);
      }
      w.exec_params("INSERT INTO schema_version (version, name) VALUES ($1, $2)", m.version,
                    std::string(m.name));
    }
    step.what = "committing the schema";
    w.commit();
    reached = LatestSchemaVersion();
    return absl::OkStatus();
  });
  DropIfBroken(outcome.connection != Outcome::Connection::kUsable);
  if (!outcome.status.ok()) return outcome.status;
  schema_version_ = reached;
  return absl::OkStatus();
}

absl::Status PostgresStore::Commit(const Batch& batch) {
  if (batch.empty()) return absl::OkStatus();
  if (absl::Status s = CheckClaims(name_, batch); !s.ok()) return s;
  if (absl::Status s = CheckLedger(name_, batch); !s.ok()) return s;
  if (absl::Status s = CheckNoNul(name_, batch); !s.ok()) return s;
  if (absl::Status s = Connect(); !s.ok()) return s;
  int64_t txid = 0;
  Step step("starting a commit");
  Outcome outcome = Guard(name_, step, [&]() -> absl::Status {
    pqxx::work w(session_->conn);
    // The transaction's id, to ask the server about it should the connection break in COMMIT.
    txid = w.exec1("SELECT txid_current()")[0].as<int64_t>();
    if (absl::Status s = WriteRows(name_, w, batch, step); !s.ok()) return s;  // rolled back
    step = Step("committing");  // the deferred checks (ledger balance, foreign keys) run now
    w.commit();
    return absl::OkStatus();
  });
  DropIfBroken(outcome.connection != Outcome::Connection::kUsable);
  if (outcome.connection == Outcome::Connection::kInDoubt) return Resolve(txid, outcome.status);
  return outcome.status;
}

absl::Status PostgresStore::Resolve(int64_t txid, const absl::Status& lost) {
  const absl::Time deadline = absl::Now() + kResolveFor;
  absl::Status last;
  while (true) {
    std::string state;
    last = Connect();
    if (last.ok()) {
      Step step("asking whether the lost COMMIT happened");
      Outcome asked = Guard(name_, step, [&]() -> absl::Status {
        pqxx::nontransaction n(session_->conn);
        pqxx::row row = n.exec_params1("SELECT txid_status($1)", txid);
        state = row[0].is_null() ? "" : row[0].as<std::string>();
        return absl::OkStatus();
      });
      DropIfBroken(asked.connection != Outcome::Connection::kUsable);
      last = asked.status;
    }
    if (state == "committed") return absl::OkStatus();
    if (state == "aborted") {
      return absl::UnavailableError(absl::StrCat(lost.message(), "; it did not commit"));
    }
    if (absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::UnavailableError(
      absl::StrCat(lost.message(), "; whether the batch was stored is unknown (",
                   last.ok() ? "still in progress" : last.message(), ")"));
}

absl::StatusOr<Contents> PostgresStore::Load() {
  if (absl::Status s = Connect(); !s.ok()) return s;
  Contents contents;
  Step step("starting a load");
  Outcome outcome = Guard(name_, step, [&]() -> absl::Status {
    // One snapshot for every table.
    pqxx::transaction<pqxx::repeatable_read, pqxx::read_only> r(session_->conn);
    if (absl::Status s = ReadAll(r, contents, step); !s.ok()) {
      return absl::DataLossError(absl::StrCat(name_, ": ", s.message()));
    }
    r.commit();
    return absl::OkStatus();
  });
  DropIfBroken(outcome.connection != Outcome::Connection::kUsable);
  if (!outcome.status.ok()) return outcome.status;
  return contents;
}

std::string PostgresStore::Describe() const {
  return absl::StrCat(name_, " (schema v", schema_version_, ")");
}

}  // namespace suanli::storage
