// The PostgreSQL server the tests use: SUANLI_TEST_PG_URL, which tests/tools/with_postgres.sh
// sets (tests/run.sh runs the tests under it). Each test makes a database of its own there, so
// tests running at once never see each other's rows.
#ifndef SUANLI_TESTS_STORAGE_POSTGRES_SERVER_H_
#define SUANLI_TESTS_STORAGE_POSTGRES_SERVER_H_

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <exception>
#include <pqxx/pqxx>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace suanli::storage {

// Why the PostgreSQL tests are skipped in this run, or "" when they can run.
inline std::string PostgresSkipReason() {
  const char* url = std::getenv("SUANLI_TEST_PG_URL");
  if (url != nullptr && *url != '\0') return "";
  return "SUANLI_TEST_PG_URL is not set: run under tests/tools/with_postgres.sh (tests/run.sh "
         "does), e.g. tests/tools/with_postgres.sh build/bin/storage_store_contract_test";
}

// The server's URL (its database is where other databases are created and dropped from).
inline std::string PostgresAdminUrl() {
  const char* url = std::getenv("SUANLI_TEST_PG_URL");
  return url != nullptr ? url : "";
}

// `url` with its database replaced by `db` (a dbname parameter overrides the URL's path).
inline std::string PostgresUrlOf(absl::string_view url, absl::string_view db) {
  return absl::StrCat(url, url.find('?') == absl::string_view::npos ? "?" : "&", "dbname=", db);
}

// Runs `sql` (no values bound: tests only pass SQL they wrote) on the database of `url`, outside
// a transaction. Throws what libpqxx throws; a test that lets it escape fails.
inline pqxx::result PostgresExec(const std::string& url, const std::string& sql) {
  pqxx::connection conn(url);
  pqxx::nontransaction n(conn);
  n.exec("SET client_min_messages = warning");
  return n.exec(sql);
}

// A new, empty database on the test server; dropped (with any connection to it) when the object
// goes. url() is its URL.
class PostgresTestDatabase {
 public:
  PostgresTestDatabase() {
    static std::atomic<int> next{0};
    name_ = absl::StrCat("suanli_test_", getpid(), "_", next++);
    PostgresExec(PostgresAdminUrl(), absl::StrCat("DROP DATABASE IF EXISTS ", name_));
    // A linguistic collation (ICU's en-US: "a" < "Z"), so that tests prove the store orders
    // text bytewise whatever the database's collation; the server's own where ICU is missing.
    const std::string create =
        absl::StrCat("CREATE DATABASE ", name_, " ENCODING 'UTF8' TEMPLATE template0");
    try {
      PostgresExec(PostgresAdminUrl(),
                   absl::StrCat(create, " LOCALE 'C' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"));
    } catch (const pqxx::sql_error&) {
      PostgresExec(PostgresAdminUrl(), create);
    }
    url_ = PostgresUrlOf(PostgresAdminUrl(), name_);
  }
  PostgresTestDatabase(const PostgresTestDatabase&) = delete;
  PostgresTestDatabase& operator=(const PostgresTestDatabase&) = delete;
  ~PostgresTestDatabase() {
    // Dropping is tidiness (the test server goes away with its directory): a failure to drop
    // is not the test's, and a destructor must not throw.
    try {
      PostgresExec(PostgresAdminUrl(),
                   absl::StrCat("DROP DATABASE IF EXISTS ", name_, " WITH (FORCE)"));
    } catch (const std::exception&) {  // NOLINT(bugprone-empty-catch)
    }
  }

  const std::string& name() const { return name_; }
  const std::string& url() const { return url_; }

 private:
  std::string name_;
  std::string url_;
};

}  // namespace suanli::storage

#endif  // SUANLI_TESTS_STORAGE_POSTGRES_SERVER_H_
