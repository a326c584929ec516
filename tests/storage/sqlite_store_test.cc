// What only the SQLite backend (storage/sqlite/sqlite_store.h) does: paths, the file format
// other tools see, migrations, and locking. The Store contract is in store_contract_test.cc.
#include "storage/sqlite/sqlite_store.h"

#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <system_error>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/migrations/migrations.h"
#include "storage/store.h"
#include "tests/storage/raw_sqlite.h"
#include "tests/storage/temp_dir.h"

namespace suanli::storage {
namespace {

using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(dir_.path().empty()) << "cannot make a temp directory"; }

  std::string Path(const std::string& name) const { return dir_.path() + "/" + name; }

  TempDir dir_;
};

TEST_F(SqliteStoreTest, MissingDirectoryIsUnavailableAndNamed) {
  const std::string missing = Path("no/such");
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore("sqlite:" + missing + "/suanli.db");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kUnavailable) << store.status();
  EXPECT_THAT(std::string(store.status().message()),
              HasSubstr(absl::StrCat("directory ", missing, " does not exist; create it first")));
  std::error_code ec;
  EXPECT_FALSE(std::filesystem::exists(Path("no"), ec)) << "the store made a directory";
}

TEST_F(SqliteStoreTest, DirectoryThatIsAFileIsUnavailable) {
  std::ofstream(Path("file")) << "x";
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore("sqlite:" + Path("file/suanli.db"));
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kUnavailable) << store.status();
  EXPECT_THAT(std::string(store.status().message()), HasSubstr("is not a directory"));
}

TEST_F(SqliteStoreTest, PathNamingADirectoryIsInvalid) {
  for (const std::string& url : {"sqlite:" + dir_.path(), "sqlite:" + dir_.path() + "/"}) {
    SCOPED_TRACE(url);
    absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(url);
    ASSERT_FALSE(store.ok());
    EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument) << store.status();
    EXPECT_THAT(std::string(store.status().message()),
                HasSubstr(absl::StrCat("names a directory; name the database file in it, e.g. "
                                       "sqlite:",
                                       dir_.path(), "/suanli.db")));
  }
}

TEST_F(SqliteStoreTest, FileThatIsNotADatabaseIsDataLossAndLeftAlone) {
  const std::string text(8192, 'x');
  std::ofstream(Path("notes.txt")) << text;
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore("sqlite:" + Path("notes.txt"));
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss) << store.status();
  EXPECT_THAT(std::string(store.status().message()), HasSubstr(Path("notes.txt")));
  EXPECT_TRUE(ReadFile(Path("notes.txt")) == text) << "the file was changed";
}

TEST_F(SqliteStoreTest, DescribeNamesTheAbsolutePathAndSchema) {
  std::error_code ec;
  const std::filesystem::path relative =
      std::filesystem::relative(Path("suanli.db"), std::filesystem::current_path(), ec);
  ASSERT_FALSE(ec) << ec.message();
  ASSERT_TRUE(relative.is_relative());
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore("sqlite:" + relative.string());
  ASSERT_TRUE(store.ok()) << store.status();
  const std::string absolute =
      std::filesystem::absolute(Path("suanli.db"), ec).lexically_normal().string();
  EXPECT_EQ((*store)->Describe(),
            absl::StrCat("sqlite:", absolute, " (schema v", LatestSchemaVersion(), ")"));
}

// The file is what the README says: WAL, one schema_version row per migration, times as
// integer microseconds and payloads as blobs.
TEST_F(SqliteStoreTest, FileHoldsWhatOtherToolsExpect) {
  {
    absl::StatusOr<std::unique_ptr<Store>> store = OpenStore("sqlite:" + Path("suanli.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    Batch b;
    b.capacity.push_back(
        {1, 2, "op", absl::FromUnixMicros(1'800'000'000'123'456), std::string("p\0q", 3)});
    ASSERT_TRUE((*store)->Commit(b).ok());
  }
  RawDb raw(Path("suanli.db"));
  EXPECT_EQ(raw.Query("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(raw.Query("SELECT version || ' ' || name FROM schema_version ORDER BY version"),
            "1 001_initial|2 002_allocation_claims|3 003_ledger|4 004_decision_minutes|"
            "5 005_checks_per_statement|6 006_claims_by_node");
  EXPECT_EQ(raw.Query("SELECT typeof(at_us) || ' ' || at_us FROM capacity_journal"),
            "integer 1800000000123456");
  EXPECT_EQ(raw.Query("SELECT typeof(payload) || ' ' || length(payload) FROM capacity_journal"),
            "blob 3");
  EXPECT_EQ(raw.Query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"),
            "accounts|allocation_claims|allocations|api_keys|capacity_journal|decision_minutes|"
            "idempotency|"
            "ledger_legs|schema_version");
  EXPECT_EQ(raw.Query("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name"),
            "allocation_claims_refuse_oversold_insert_part|"
            "allocation_claims_refuse_oversold_insert_whole|"
            "allocation_claims_refuse_oversold_update_part|"
            "allocation_claims_refuse_oversold_update_whole|"
            "ledger_legs_balance|ledger_legs_no_delete|ledger_legs_no_update|ledger_legs_sealed");
  // Claims are kept in node order, for the oversell rule's lookups.
  EXPECT_EQ(raw.Query("SELECT sql LIKE '%WITHOUT ROWID' FROM sqlite_master "
                      "WHERE name = 'allocation_claims'"),
            "1");
}

// The oversell rule is the database's, so it also holds for rows other tools write: inserts and
// updates, of a whole node and of part of one. A row is not compared with itself.
TEST_F(SqliteStoreTest, OversellRuleGuardsWritesFromElsewhere) {
  {
    absl::StatusOr<std::unique_ptr<Store>> store = OpenStore("sqlite:" + Path("suanli.db"));
    ASSERT_TRUE(store.ok()) << store.status();
  }
  RawDb raw(Path("suanli.db"));
  ASSERT_EQ(raw.Exec("INSERT INTO allocations (id, buyer_id, state, payload, held_end_us, "
                     "offer_ids) VALUES (1, 'b', 2, x'', 0, ''), (2, 'b', 2, x'', 0, ''), "
                     "(3, 'b', 2, x'', 0, '');"
                     "INSERT INTO allocation_claims VALUES (1, 'n1', 8, 8, 0, 100);"
                     "INSERT INTO allocation_claims VALUES (2, 'n1', 8, 3, 100, 200);"),
            "");
  const std::string kOversold = "oversold";
  EXPECT_THAT(raw.Exec("INSERT INTO allocation_claims VALUES (3, 'n1', 8, 8, 199, 300)"),
              HasSubstr(kOversold));
  EXPECT_THAT(raw.Exec("INSERT INTO allocation_claims VALUES (3, 'n1', 8, 1, 99, 101)"),
              HasSubstr(kOversold));
  EXPECT_THAT(raw.Exec("UPDATE allocation_claims SET from_us = 99 WHERE allocation_id = 2"),
              HasSubstr(kOversold));
  EXPECT_THAT(raw.Exec("UPDATE allocation_claims SET until_us = 101 WHERE allocation_id = 1"),
              HasSubstr(kOversold));
  // Fits: an updated row is compared with the others only (2 becomes a whole-node claim that
  // starts where 1 ends; 1 shrinks).
  EXPECT_EQ(raw.Exec("UPDATE allocation_claims SET gpus = 8 WHERE allocation_id = 2"), "");
  EXPECT_EQ(raw.Exec("UPDATE allocation_claims SET until_us = 50 WHERE allocation_id = 1"), "");
  EXPECT_EQ(raw.Exec("UPDATE allocation_claims SET gpus = 5 WHERE allocation_id = 2"), "");
  EXPECT_EQ(raw.Exec("INSERT INTO allocation_claims VALUES (3, 'n1', 8, 3, 100, 300)"), "");
  EXPECT_EQ(raw.Query("SELECT allocation_id || ':' || gpus || '@' || from_us || '-' || until_us "
                      "FROM allocation_claims ORDER BY allocation_id"),
            "1:8@0-50|2:5@100-200|3:3@100-300");
}

// A database of the previous schema keeps its claims when they move to node order, and the
// rule still holds for them.
TEST_F(SqliteStoreTest, ClaimsKeepTheirRowsAcrossTheMoveToNodeOrder) {
  {
    RawDb raw(Path("v5.db"));
    ASSERT_EQ(raw.Exec(kSchemaVersionTableSql), "");
    for (const Migration& m : Migrations()) {
      if (m.version > 5) break;
      ASSERT_EQ(raw.Exec(m.sql), "") << m.name;
      ASSERT_EQ(raw.Exec(m.sqlite_sql), "") << m.name;
      ASSERT_EQ(raw.Exec(absl::StrCat("INSERT INTO schema_version VALUES (", m.version, ", '",
                                      m.name, "')")),
                "");
    }
    ASSERT_EQ(raw.Exec("INSERT INTO allocations VALUES (7, 'b1', 2, x'00', 5, 'o1');"
                       "INSERT INTO allocations VALUES (8, 'b1', 2, x'00', 5, 'o1');"
                       "INSERT INTO allocation_claims VALUES (7, 'n2', 8, 8, 0, 10);"
                       "INSERT INTO allocation_claims VALUES (7, 'n1', 8, 2, 0, 10);"
                       "INSERT INTO allocation_claims VALUES (8, 'n1', 8, 6, 5, 20);"),
              "");
  }
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore("sqlite:" + Path("v5.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  absl::StatusOr<Contents> contents = (*store)->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  std::string claims;
  for (const ClaimRow& c : contents->claims) {
    absl::StrAppend(&claims, c.allocation_id, ":", c.node_id, ":", c.gpus, "/", c.node_gpus, "@",
                    absl::ToUnixMicros(c.from), "-", absl::ToUnixMicros(c.until), " ");
  }
  EXPECT_EQ(claims, "7:n1:2/8@0-10 7:n2:8/8@0-10 8:n1:6/8@5-20 ");
  Batch b;
  b.allocations = {contents->allocations[1]};  // allocation 8, with one more claim
  b.claims = {{8, "n1", 8, 6, absl::FromUnixMicros(5), absl::FromUnixMicros(20)},
              {8, "n2", 8, 1, absl::FromUnixMicros(9), absl::FromUnixMicros(11)}};
  absl::Status s = (*store)->Commit(b);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("the node would be oversold"));
  b.claims[1].from = absl::FromUnixMicros(10);
  EXPECT_TRUE((*store)->Commit(b).ok());
}

// A database of an older build (schema v1) gets the migrations it lacks and keeps its rows.
TEST_F(SqliteStoreTest, OlderSchemaIsUpgradedKeepingItsRows) {
  {
    RawDb raw(Path("v1.db"));
    ASSERT_EQ(raw.Exec(kSchemaVersionTableSql), "");
    ASSERT_EQ(raw.Exec(Migrations()[0].sql), "");
    ASSERT_EQ(raw.Exec("INSERT INTO schema_version VALUES (1, '001_initial');"
                       "INSERT INTO allocations VALUES (7, 'b1', 2, x'00ff', 5, 'o1')"),
              "");
  }
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore("sqlite:" + Path("v1.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_THAT((*store)->Describe(), HasSubstr(absl::StrCat("(schema v", LatestSchemaVersion())));
  absl::StatusOr<Contents> contents = (*store)->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  ASSERT_EQ(contents->allocations.size(), 1u);
  EXPECT_EQ(contents->allocations[0].payload, std::string("\0\xff", 2));
  // The new rules hold for the old rows' allocations.
  Batch b;
  b.allocations = {contents->allocations[0]};
  b.claims = {{7, "n1", 4, 4, absl::FromUnixMicros(0), absl::FromUnixMicros(10)}};
  EXPECT_TRUE((*store)->Commit(b).ok());
  b.claims = {{7, "n1", 4, 4, absl::FromUnixMicros(0), absl::FromUnixMicros(10)},
              {7, "n2", 4, 4, absl::FromUnixMicros(0), absl::FromUnixMicros(10)}};
  b.allocations.push_back({8, "b1", 2, "", absl::UnixEpoch(), ""});
  b.claims.push_back({8, "n1", 4, 1, absl::FromUnixMicros(9), absl::FromUnixMicros(20)});
  absl::Status s = (*store)->Commit(b);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("claim of allocation 8 on node \"n1\": the node would be oversold"));
  RawDb raw(Path("v1.db"));
  EXPECT_EQ(raw.Query("SELECT version FROM schema_version ORDER BY version"), "1|2|3|4|5|6");
}

TEST_F(SqliteStoreTest, EmptyFileIsGivenTheLatestSchema) {
  std::ofstream(Path("empty.db")).flush();  // zero bytes: an empty SQLite database
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore("sqlite:" + Path("empty.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_THAT((*store)->Describe(), HasSubstr(absl::StrCat("(schema v", LatestSchemaVersion())));
  absl::StatusOr<Contents> contents = (*store)->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  EXPECT_TRUE(contents->capacity.empty());
}

// Migrations run in one transaction: when one fails, the database keeps none of them.
TEST_F(SqliteStoreTest, FailedMigrationLeavesNoTrace) {
  {
    RawDb raw(Path("other.db"));
    ASSERT_EQ(raw.Exec("CREATE TABLE idempotency (x INTEGER)"), "");
  }
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore("sqlite:" + Path("other.db"));
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition) << store.status();
  EXPECT_THAT(std::string(store.status().message()),
              HasSubstr("applying migration 001_initial: table idempotency already exists"));
  RawDb raw(Path("other.db"));
  EXPECT_EQ(raw.Query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"),
            "idempotency");
}

// The WAL is checkpointed while the store is open: by the store's checkpoint thread, since the
// store's commit hook replaces SQLite's own checkpoints (without the thread nothing would be,
// until a close). Seen from outside: the database file takes in what the WAL held.
TEST_F(SqliteStoreTest, WalIsCheckpointedWhileTheStoreIsOpen) {
  const std::string db = Path("suanli.db");
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore("sqlite:" + db);
  ASSERT_TRUE(store.ok()) << store.status();
  std::error_code ec;
  const uintmax_t empty_size = std::filesystem::file_size(db, ec);
  ASSERT_FALSE(ec) << ec.message();
  // 80 commits of 256 KiB: ~5,200 WAL pages, past the 1,000 that make a checkpoint due five
  // times over. What follows the last due checkpoint (under 1,000 pages, ~4 MiB) may stay in the
  // WAL, so the file takes in at least ~16 of the 20 MiB; 8 MiB leaves room for timing.
  constexpr int kCommits = 80;
  for (int i = 1; i <= kCommits; ++i) {
    Batch b;
    b.capacity.push_back({i, 2, "op", absl::UnixEpoch(), std::string(256 << 10, 'x')});
    absl::Status s = (*store)->Commit(b);
    ASSERT_TRUE(s.ok()) << s;
  }
  // The checkpoint runs on its own thread: wait for the file to take the rows in.
  uintmax_t size = 0;
  for (int i = 0; i < 300 && size < empty_size + (8u << 20); ++i) {
    size = std::filesystem::file_size(db, ec);
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_GE(size, empty_size + (8u << 20)) << "the database file never took in the WAL";
  absl::StatusOr<Contents> contents = (*store)->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  EXPECT_EQ(contents->capacity.size(), static_cast<size_t>(kCommits));
}

// Another connection holding the write lock past the busy timeout: Commit fails UNAVAILABLE
// (retrying may work) and stores nothing.
TEST_F(SqliteStoreTest, LockedDatabaseIsUnavailableAndCommitsNothing) {
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore("sqlite:" + Path("suanli.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  Batch b;
  b.accounts.push_back({"a1", 1, "alice", absl::UnixEpoch()});
  b.capacity.push_back({1, 2, "op", absl::UnixEpoch(), "p"});
  {
    RawDb other(Path("suanli.db"));
    ASSERT_EQ(other.Exec("BEGIN IMMEDIATE"), "");
    absl::Status s = (*store)->Commit(b);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("locked"));
    ASSERT_EQ(other.Exec("ROLLBACK"), "");
  }
  absl::StatusOr<Contents> contents = (*store)->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  EXPECT_TRUE(contents->accounts.empty() && contents->capacity.empty());
  // Once the lock is gone the same batch goes in.
  absl::Status s = (*store)->Commit(b);
  EXPECT_TRUE(s.ok()) << s;
}

}  // namespace
}  // namespace suanli::storage
