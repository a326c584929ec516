// A direct connection to an SQLite database file for tests that look inside one.
#ifndef SUANLI_TESTS_STORAGE_RAW_SQLITE_H_
#define SUANLI_TESTS_STORAGE_RAW_SQLITE_H_

#include <sqlite3.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "storage/sqlite/sqlite_config.h"

namespace suanli::storage {

// A direct connection to a database file, as the sqlite3 shell would have.
class RawDb {
 public:
  explicit RawDb(const std::string& path) {
    ConfigureSqlite();  // as the store would, when this is the process's first connection
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
        SQLITE_OK) {
      ADD_FAILURE() << "cannot open " << path << ": " << sqlite3_errmsg(db_);
    }
  }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;
  ~RawDb() { sqlite3_close(db_); }

  // Runs statements; returns SQLite's error message, or "" when they ran.
  std::string Exec(const std::string& sql) {
    return sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK
               ? ""
               : sqlite3_errmsg(db_);
  }

  // The first column of each row of a query, as text, joined with '|'.
  std::string Query(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK) {
      return absl::StrCat("error: ", sqlite3_errmsg(db_));
    }
    std::string out;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      const unsigned char* text = sqlite3_column_text(stmt, 0);
      absl::StrAppend(&out, out.empty() ? "" : "|",
                      text == nullptr ? "NULL" : reinterpret_cast<const char*>(text));
    }
    if (rc != SQLITE_DONE) out = absl::StrCat("error: ", sqlite3_errmsg(db_));
    sqlite3_finalize(stmt);
    return out;
  }

 private:
  sqlite3* db_ = nullptr;
};

}  // namespace suanli::storage

#endif  // SUANLI_TESTS_STORAGE_RAW_SQLITE_H_
