// storage/sqlite/sqlite_config.h: the configuration is in effect when made before SQLite starts
// (memory statistics off, the layer over SQLite's page cache in place), and databases written
// through it (b-tree rebalances that park pages at the locking page's number, rollbacks, a reopen)
// stay intact.
#include "storage/sqlite/sqlite_config.h"

#include <sqlite3.h>

#include <cstdint>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/storage/raw_sqlite.h"
#include "tests/storage/temp_dir.h"

namespace suanli::storage {
namespace {

// Made before any connection of this process: it takes effect, and stays.
TEST(SqliteConfig, TakesEffectBeforeSqliteStartsAndStays) {
  EXPECT_TRUE(ConfigureSqlite());
  EXPECT_TRUE(ConfigureSqlite());
}

// Random keys into an indexed table, in many transactions with a large cache: index pages split
// and rebalance (parking pages at the locking page's number), some transactions and savepoints
// roll back, and the database checks out and holds exactly the committed rows, also after a
// reopen.
TEST(SqliteConfig, DatabasesWrittenThroughThePageCacheLayerStayIntact) {
  ASSERT_TRUE(ConfigureSqlite());
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string path = dir.path() + "/t.db";
  const int64_t parked_before = SqlitePagesParked();
  int64_t committed = 0;
  {
    RawDb db(path);
    ASSERT_EQ(db.Exec("PRAGMA journal_mode = WAL; PRAGMA cache_size = -65536;"
                      "CREATE TABLE t (k TEXT NOT NULL, v BLOB NOT NULL);"
                      "CREATE INDEX t_by_k ON t (k);"),
              "");
    std::mt19937_64 rng(7);
    for (int tx = 0; tx < 300; ++tx) {
      ASSERT_EQ(db.Exec("BEGIN"), "");
      int64_t rows = 0;
      for (int i = 0; i < 100; ++i) {
        ASSERT_EQ(db.Exec(absl::StrCat("INSERT INTO t VALUES ('k", rng() % 1000000, "', zeroblob(",
                                       20 + rng() % 200, "))")),
                  "");
        ++rows;
      }
      if (tx % 10 == 3) {  // part of a transaction undone
        ASSERT_EQ(db.Exec("SAVEPOINT s"), "");
        for (int i = 0; i < 200; ++i) {
          ASSERT_EQ(db.Exec(absl::StrCat("INSERT INTO t VALUES ('k", rng() % 1000000, "', x'00')")),
                    "");
        }
        ASSERT_EQ(db.Exec("ROLLBACK TO s; RELEASE s"), "");
      }
      if (tx % 7 == 5) {  // a whole transaction undone
        ASSERT_EQ(db.Exec("ROLLBACK"), "");
        continue;
      }
      ASSERT_EQ(db.Exec("COMMIT"), "");
      committed += rows;
    }
    EXPECT_EQ(db.Query("PRAGMA integrity_check"), "ok");
    EXPECT_EQ(db.Query("SELECT count(*) FROM t"), absl::StrCat(committed));
  }
  EXPECT_GT(SqlitePagesParked(), parked_before) << "no rebalance parked a page: nothing tested";
  RawDb again(path);
  EXPECT_EQ(again.Query("PRAGMA integrity_check"), "ok");
  EXPECT_EQ(again.Query("SELECT count(*) FROM t INDEXED BY t_by_k WHERE k >= ''"),
            absl::StrCat(committed));
  // With the connection's cache full of pages, SQLite would count megabytes if it counted.
  EXPECT_EQ(sqlite3_memory_used(), 0) << "memory statistics are on";
}

}  // namespace
}  // namespace suanli::storage
