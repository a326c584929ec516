// What only the PostgreSQL backend (storage/postgres/postgres_store.h) does: losing and regaining
// its connection, hiding passwords, schema upgrades and refusals, text PostgreSQL cannot hold,
// and the oversell trigger guarding writes that do not come through the store. The Store
// contract (store_contract_test.cc) runs against PostgreSQL too.
//
// Runs against the server SUANLI_TEST_PG_URL names, each test in a database of its own:
//   tests/tools/with_postgres.sh build/bin/storage_postgres_store_test
// Without SUANLI_TEST_PG_URL every test is skipped.
#include "storage/postgres/postgres_store.h"

#include <cstdint>
#include <memory>
#include <pqxx/pqxx>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/migrations/migrations.h"
#include "storage/store.h"
#include "tests/storage/postgres_server.h"

// libpqxx 6.4 leaks libpq's result when a connection breaks during a statement (its exec
// throws "Could not obtain client encoding" before it owns the PGresult; fixed in libpqxx 7,
// jtv/libpqxx#500). These tests break connections on purpose, so LeakSanitizer is told to
// ignore leaks from inside libpqxx; leaks anywhere else still fail the run.
extern "C" const char* __lsan_default_suppressions() {  // NOLINT(bugprone-reserved-identifier)
  return "leak:libpqxx-6.4.so\n";
}

namespace suanli::storage {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// The first column of each row of `sql` on the database of `url`, joined with '|'.
std::string Query(const std::string& url, const std::string& sql) {
  std::vector<std::string> values;
  for (const pqxx::row& row : PostgresExec(url, sql)) {
    values.push_back(row[0].is_null() ? "NULL" : row[0].c_str());
  }
  return absl::StrJoin(values, "|");
}

// A batch with one row of every kind, named after `tag`, allocation `id` and capacity seq `id`.
Batch Rows(const std::string& tag, int64_t id) {
  const absl::Time t = absl::FromUnixMicros(1'800'000'000'000'000 + id);
  Batch b;
  b.accounts.push_back({"acct-" + tag, 1, "name-" + tag, t});
  b.api_keys.push_back({"key-" + tag, "acct-" + tag, std::string(32, 'h'), t, false});
  b.capacity.push_back({id, 1, "acct-" + tag, t, "payload-" + tag});
  b.allocations.push_back({id, "acct-" + tag, 2, "alloc-" + tag, t, "o1"});
  b.idempotency.push_back({"acct-" + tag, "k", "req", id, ""});
  b.claims.push_back({id, "node-" + tag, 8, 8, t, t + absl::Hours(1)});
  return b;
}

class PostgresStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = PostgresSkipReason(); !why.empty()) GTEST_SKIP() << why;
    db_ = std::make_unique<PostgresTestDatabase>();
  }

  std::unique_ptr<Store> MustOpen(const std::string& url) {
    absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(url);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  // Ends every connection to the test database but the caller's (the store's), waiting until
  // they are gone; returns how many there were.
  int TerminateConnections() {
    return static_cast<int>(
        PostgresExec(PostgresAdminUrl(), absl::StrCat("SELECT pg_terminate_backend(pid, 10000) "
                                                      "FROM pg_stat_activity WHERE datname = '",
                                                      db_->name(), "'"))
            .size());
  }

  // The number of rows of `table` in the test database.
  std::string Count(const std::string& table) {
    return Query(db_->url(), absl::StrCat("SELECT count(*) FROM ", table));
  }

  std::unique_ptr<PostgresTestDatabase> db_;
};

// The server ends the store's connection between two commits: the next Commit is UNAVAILABLE
// and stores nothing; the one after reconnects and goes in.
TEST_F(PostgresStoreTest, ConnectionLostBetweenCommitsIsUnavailableThenReconnects) {
  std::unique_ptr<Store> store = MustOpen(db_->url());
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Commit(Rows("one", 1)).ok());
  ASSERT_EQ(TerminateConnections(), 1);

  absl::Status s = store->Commit(Rows("two", 2));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(db_->name()));
  EXPECT_EQ(Count("accounts"), "1");

  s = store->Commit(Rows("two", 2));
  EXPECT_TRUE(s.ok()) << s;
  absl::StatusOr<Contents> c = store->Load();
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->accounts.size(), 2u);
  EXPECT_EQ(c->claims.size(), 2u);
}

// The connection dies in the middle of a batch, after some of its rows were written: nothing of
// the batch is stored, and Load (which the broker calls after a failed commit) reconnects.
TEST_F(PostgresStoreTest, ConnectionLostInsideACommitLeavesNothing) {
  std::unique_ptr<Store> store = MustOpen(db_->url());
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Commit(Rows("one", 1)).ok());

  // Another session locks allocations, so the commit writes accounts, keys and the journal,
  // then waits for the lock; the server then ends the waiting connection.
  pqxx::connection locker(db_->url());
  pqxx::work lock(locker);
  lock.exec("LOCK TABLE allocations IN ACCESS EXCLUSIVE MODE");
  absl::Status committed;
  std::thread commit([&] { committed = store->Commit(Rows("two", 2)); });
  const std::string waiting =
      absl::StrCat("SELECT pid FROM pg_stat_activity WHERE datname = '", db_->name(),
                   "' AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()");
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  std::string pid;
  while ((pid = Query(db_->url(), waiting)).empty() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_FALSE(pid.empty()) << "the commit never waited for the lock";
  PostgresExec(db_->url(), absl::StrCat("SELECT pg_terminate_backend(", pid, ", 10000)"));
  commit.join();
  lock.abort();

  EXPECT_EQ(committed.code(), absl::StatusCode::kUnavailable) << committed;
  EXPECT_EQ(Count("accounts"), "1");
  EXPECT_EQ(Count("capacity_journal"), "1");
  absl::StatusOr<Contents> c = store->Load();
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->accounts.size(), 1u);
  EXPECT_EQ(c->capacity.size(), 1u);
  absl::Status s = store->Commit(Rows("two", 2));
  EXPECT_TRUE(s.ok()) << s;
}

// The connection dies during COMMIT itself (a deferred trigger the test adds makes COMMIT wait):
// the store cannot know from the broken connection whether the batch committed, asks the server
// on a new one, and reports that it did not; nothing of it is stored.
TEST_F(PostgresStoreTest, ConnectionLostDuringCommitIsResolvedWithTheServer) {
  std::unique_ptr<Store> store = MustOpen(db_->url());
  ASSERT_NE(store, nullptr);
  PostgresExec(db_->url(),
               "CREATE FUNCTION wait_for_test() RETURNS trigger LANGUAGE plpgsql AS "
               "$$ BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NULL; END $$;"
               "CREATE CONSTRAINT TRIGGER wait_for_test AFTER INSERT ON accounts "
               "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION wait_for_test()");
  pqxx::connection locker(db_->url());
  pqxx::work lock(locker);
  lock.exec("SELECT pg_advisory_xact_lock(4242)");

  absl::Status committed;
  std::thread commit([&] { committed = store->Commit(Rows("one", 1)); });
  const std::string in_commit =
      absl::StrCat("SELECT pid FROM pg_stat_activity WHERE datname = '", db_->name(),
                   "' AND wait_event_type = 'Lock' AND query = 'COMMIT'");
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  std::string pid;
  while ((pid = Query(db_->url(), in_commit)).empty() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_FALSE(pid.empty()) << "the commit never waited in COMMIT";
  PostgresExec(db_->url(), absl::StrCat("SELECT pg_terminate_backend(", pid, ", 10000)"));
  commit.join();
  lock.abort();

  EXPECT_EQ(committed.code(), absl::StatusCode::kUnavailable) << committed;
  EXPECT_THAT(std::string(committed.message()), HasSubstr("during COMMIT"));
  EXPECT_THAT(std::string(committed.message()), HasSubstr("it did not commit"));
  EXPECT_EQ(Count("accounts"), "0");
  absl::Status s = store->Commit(Rows("one", 1));
  EXPECT_TRUE(s.ok()) << s;
}

// While the database refuses connections every call is UNAVAILABLE; once it accepts them again
// the store carries on by itself.
TEST_F(PostgresStoreTest, UnreachableDatabaseIsUnavailableUntilItIsBack) {
  std::unique_ptr<Store> store = MustOpen(db_->url());
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Commit(Rows("one", 1)).ok());
  PostgresExec(PostgresAdminUrl(),
               absl::StrCat("ALTER DATABASE ", db_->name(), " ALLOW_CONNECTIONS false"));
  TerminateConnections();

  for (int i = 0; i < 3; ++i) {
    absl::Status s = store->Commit(Rows("two", 2));
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    absl::StatusOr<Contents> c = store->Load();
    EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable) << c.status();
  }
  EXPECT_THAT(std::string(store->Load().status().message()),
              HasSubstr("is not currently accepting connections"));

  PostgresExec(PostgresAdminUrl(),
               absl::StrCat("ALTER DATABASE ", db_->name(), " ALLOW_CONNECTIONS true"));
  absl::Status s = store->Commit(Rows("two", 2));
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(Count("accounts"), "2");
}

// A password in the URL (in the user part or as a parameter) is used but never shown.
TEST_F(PostgresStoreTest, DescribeHidesThePassword) {
  std::string url = db_->url();
  const size_t scheme = url.find("://");
  ASSERT_NE(scheme, std::string::npos);
  const size_t at = url.find('@', scheme);
  if (at != std::string::npos && url.find(':', scheme + 3) > at) url.insert(at, ":hunter2");
  for (const std::string& with_password : {url, absl::StrCat(db_->url(), "&password=hunter2")}) {
    SCOPED_TRACE(with_password);
    std::unique_ptr<Store> store = MustOpen(with_password);
    ASSERT_NE(store, nullptr);
    const std::string described = store->Describe();
    EXPECT_THAT(described, StartsWith("postgresql://"));
    EXPECT_THAT(described, HasSubstr(db_->name()));
    EXPECT_THAT(described, HasSubstr(absl::StrCat("(schema v", LatestSchemaVersion(), ")")));
    EXPECT_THAT(described, Not(HasSubstr("hunter2")));
    EXPECT_THAT(described, Not(HasSubstr("password")));
  }
}

// The schema changes under a running store (a newer suanlid migrated the database): after its
// connection is lost, the store refuses to go on.
TEST_F(PostgresStoreTest, NewerSchemaIsRefusedAlsoOnReconnect) {
  std::unique_ptr<Store> store = MustOpen(db_->url());
  ASSERT_NE(store, nullptr);
  const int64_t newer = LatestSchemaVersion() + 1;
  PostgresExec(db_->url(), absl::StrCat("INSERT INTO schema_version VALUES (", newer, ", 'new')"));
  TerminateConnections();
  EXPECT_EQ(store->Commit(Rows("one", 1)).code(), absl::StatusCode::kUnavailable);
  absl::Status s = store->Commit(Rows("one", 1));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(std::string(s.message()),
              HasSubstr(absl::StrCat("database schema v", newer, " is newer than this suanlid")));
  EXPECT_EQ(Count("accounts"), "0");

  absl::StatusOr<std::unique_ptr<Store>> again = OpenStore(db_->url());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition) << again.status();
}

// A database of an older build (schema v1) gets the migrations it lacks and keeps its rows.
TEST_F(PostgresStoreTest, OlderSchemaIsUpgradedKeepingItsRows) {
  PostgresExec(db_->url(),
               absl::StrCat("BEGIN; CREATE DOMAIN blob AS BYTEA; ", kSchemaVersionTableSql, "; ",
                            Migrations()[0].sql,
                            "; INSERT INTO schema_version VALUES (1, '001_initial');"
                            "INSERT INTO allocations VALUES (7, 'b1', 2, '\\x00ff', 5, 'o1');"
                            "COMMIT"));
  std::unique_ptr<Store> store = MustOpen(db_->url());
  ASSERT_NE(store, nullptr);
  EXPECT_THAT(store->Describe(), HasSubstr(absl::StrCat("(schema v", LatestSchemaVersion())));
  EXPECT_EQ(Query(db_->url(), "SELECT version FROM schema_version ORDER BY version"),
            "1|2|3|4|5|6");
  absl::StatusOr<Contents> c = store->Load();
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->allocations.size(), 1u);
  EXPECT_EQ(c->allocations[0].payload, std::string("\0\xff", 2));
  EXPECT_EQ(
      Query(db_->url(), "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY tgname"),
      "allocation_claims_refuse_oversold|allocation_claims_refuse_oversold_update|"
      "ledger_legs_balance|ledger_legs_immutable");
}

// Tables that are not suanlid's: FAILED_PRECONDITION, and nothing is created.
TEST_F(PostgresStoreTest, ForeignTablesAreRefusedAndLeftAlone) {
  PostgresExec(db_->url(), "CREATE TABLE accounts (x INTEGER)");
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(db_->url());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition) << store.status();
  EXPECT_THAT(std::string(store.status().message()),
              HasSubstr("applying migration 001_initial: relation \"accounts\" already exists"));
  EXPECT_THAT(std::string(store.status().message()), HasSubstr("is this a database of suanlid's"));
  EXPECT_EQ(Query(db_->url(), "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"),
            "accounts");
  EXPECT_EQ(Query(db_->url(), "SELECT count(*) FROM pg_type WHERE typname = 'blob'"), "0");
}

// Two brokers opening an empty database at once: one migrates, the other waits and finds the
// schema in place.
TEST_F(PostgresStoreTest, ConcurrentOpensMigrateOnce) {
  absl::Status first, second;
  std::thread a([&] { first = OpenStore(db_->url()).status(); });
  std::thread b([&] { second = OpenStore(db_->url()).status(); });
  a.join();
  b.join();
  EXPECT_TRUE(first.ok()) << first;
  EXPECT_TRUE(second.ok()) << second;
  EXPECT_EQ(Query(db_->url(), "SELECT version FROM schema_version ORDER BY version"),
            "1|2|3|4|5|6");
}

// PostgreSQL text holds neither NUL bytes nor invalid UTF-8: such a batch is INVALID_ARGUMENT
// and leaves nothing.
TEST_F(PostgresStoreTest, TextPostgresCannotHoldIsRejected) {
  std::unique_ptr<Store> store = MustOpen(db_->url());
  ASSERT_NE(store, nullptr);
  for (const auto& [name, why] : std::vector<std::pair<std::string, std::string>>{
           {std::string("a\0b", 3), "holds a NUL byte"},
           {"caf\xe9", "invalid byte sequence for encoding \"UTF8\""},
       }) {
    Batch b = Rows("one", 1);
    b.accounts[0].name = name;
    absl::Status s = store->Commit(b);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(why));
    EXPECT_EQ(Count("accounts"), "0");
  }
  // Any other UTF-8 is kept as it is.
  Batch b = Rows("one", 1);
  b.accounts[0].name = "算力 \xF0\x9F\x9A\x80";
  ASSERT_TRUE(store->Commit(b).ok());
  absl::StatusOr<Contents> c = store->Load();
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->accounts[0].name, b.accounts[0].name);
}

// The oversell rule is the database's, not only the store's: a write that does not come through
// the store cannot oversell a node either.
TEST_F(PostgresStoreTest, OversellTriggerGuardsWritesFromElsewhere) {
  std::unique_ptr<Store> store = MustOpen(db_->url());
  ASSERT_NE(store, nullptr);
  Batch b = Rows("one", 1);
  b.claims[0].node_id = "n1";  // all 8 GPUs of n1 for an hour
  ASSERT_TRUE(store->Commit(b).ok());

  pqxx::connection conn(db_->url());
  pqxx::work w(conn);
  w.exec("INSERT INTO allocations VALUES (2, 'b', 2, '', 0, '')");
  try {
    // Refused when the statement ends (the check runs per statement, see migration 005).
    w.exec(absl::StrCat("INSERT INTO allocation_claims VALUES (2, 'n1', 8, 1, ",
                        absl::ToUnixMicros(b.claims[0].until) - 1, ", ",
                        absl::ToUnixMicros(b.claims[0].until) + 5, ")"));
    w.commit();
    ADD_FAILURE() << "an oversold node was stored";
  } catch (const pqxx::sql_error& e) {
    EXPECT_EQ(e.sqlstate(), "23514");
    EXPECT_THAT(std::string(e.what()), HasSubstr("oversold: node n1 would have 9 GPUs claimed"));
  }
  EXPECT_EQ(Count("allocation_claims"), "1");
}

// The check runs once per statement over every row it wrote: claims that fit one by one but not
// together are refused, in one INSERT and through an UPDATE.
TEST_F(PostgresStoreTest, OversellTriggerSeesEveryRowOfAStatement) {
  std::unique_ptr<Store> store = MustOpen(db_->url());
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Commit(Rows("one", 1)).ok());
  PostgresExec(db_->url(),
               "INSERT INTO allocations VALUES (2, 'b', 2, '', 0, ''), (3, 'b', 2, '', 0, '')");
  auto refused = [&](const std::string& sql, const std::string& what) {
    pqxx::connection conn(db_->url());
    pqxx::work w(conn);
    try {
      w.exec(sql);
      w.commit();
      ADD_FAILURE() << what << ": an oversold node was stored";
    } catch (const pqxx::sql_error& e) {
      EXPECT_EQ(e.sqlstate(), "23514") << what;
      EXPECT_THAT(std::string(e.what()), HasSubstr("oversold: node n2 would have 10 GPUs")) << what;
    }
  };
  // 5 + 5 GPUs of 8 from instant 150 to 200.
  refused(
      "INSERT INTO allocation_claims VALUES (2, 'n2', 8, 5, 100, 200), (3, 'n2', 8, 5, 150, 300)",
      "one INSERT");
  refused(
      "INSERT INTO allocation_claims VALUES (2, 'n2', 8, 5, 100, 200), (3, 'n9', 8, 5, 150, 300); "
      "UPDATE allocation_claims SET node_id = 'n2' WHERE allocation_id = 3",
      "an UPDATE");
  EXPECT_EQ(Count("allocation_claims"), "1");
}

// The ledger's rules hold for writes that do not come through the store, with the balance
// checked on each entry's last leg only.
TEST_F(PostgresStoreTest, LedgerRulesGuardWritesFromElsewhere) {
  std::unique_ptr<Store> store = MustOpen(db_->url());
  ASSERT_NE(store, nullptr);
  auto legs = [](absl::string_view rows) {
    return absl::StrCat(
        "INSERT INTO ledger_legs (entry_id, leg, last_leg, at_us, allocation_id, kind, account, "
        "amount_micros) VALUES ",
        rows);
  };
  auto run = [&](const std::string& sql) -> std::string {
    pqxx::connection conn(db_->url());
    pqxx::work w(conn);
    try {
      w.exec(sql);
      w.commit();
      return "stored";
    } catch (const pqxx::sql_error& e) {
      return e.sqlstate();
    }
  };
  ASSERT_EQ(run(legs("(1, 0, 1, 0, 1, 1, 'buyer:a', -5), (1, 1, 1, 0, 1, 1, 'operator:o', 5)")),
            "stored");
  EXPECT_EQ(run(legs("(2, 0, 1, 0, 1, 1, 'buyer:a', -5), (2, 1, 1, 0, 1, 1, 'operator:o', 4)")),
            "23000")
      << "unbalanced";
  EXPECT_EQ(run(legs("(3, 0, 2, 0, 1, 1, 'buyer:a', -5), (3, 2, 2, 0, 1, 1, 'operator:o', 5)")),
            "23000")
      << "a leg missing";
  EXPECT_EQ(run(legs("(4, 0, 1, 0, 1, 1, 'buyer:a', 0)")), "23503") << "no last leg";
  EXPECT_EQ(run(legs("(1, 2, 2, 0, 1, 1, 'fee:x', 0)")), "23000") << "a leg added to entry 1";
  EXPECT_EQ(run(legs("(1, 1, 1, 0, 1, 1, 'fee:x', 0)")), "23505") << "a leg replaced in entry 1";
  EXPECT_EQ(Count("ledger_legs"), "2");
}

}  // namespace
}  // namespace suanli::storage
