// The Store contract (storage/store.h), run against every backend, and OpenStore's handling of
// URLs. A backend joins the contract with a Backend factory and one INSTANTIATE_TEST_SUITE_P line
// at the end of this file. The PostgreSQL cases run against the server SUANLI_TEST_PG_URL names
// (tests/tools/with_postgres.sh sets it), each in a database of its own; without it they are
// skipped.
//
// Beyond store.h the contract pins down: times round-trip to the microsecond, including
// absl::InfiniteFuture() and absl::InfinitePast(); an API key must belong to a stored account.
#include <signal.h>
#include <sqlite3.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/migrations/migrations.h"
#include "storage/store.h"
#include "tests/storage/postgres_server.h"
#include "tests/storage/temp_dir.h"

namespace suanli::storage {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// How a backend takes part in the contract.
struct Backend {
  std::string name;
  // Why the backend cannot be tested in this run (its tests are then skipped), or "".
  std::function<std::string()> skip_reason;
  // The URL of a fresh, empty store. A backend that keeps files keeps them under `dir`, which
  // the test removes afterwards; anything else the store needs lives as long as `*keep`.
  std::function<std::string(const std::string& dir, std::shared_ptr<void>* keep)> fresh_url;
  // Records schema `version` as applied in the (closed) store at `url`, as a newer build would.
  std::function<void(const std::string& url, int64_t version)> mark_schema_version;
  // Runs `sql` (several statements, in one transaction of their own) on the closed store at
  // `url`, as a person with a database shell might; returns the error, or "" when it committed.
  std::function<std::string(const std::string& url, const std::string& sql)> raw_sql;
};

void PrintTo(const Backend& backend, std::ostream* os) { *os << backend.name; }

Backend SqliteBackend() {
  return {
      "Sqlite",
      [] { return std::string(); },
      [](const std::string& dir, std::shared_ptr<void>*) {
        return absl::StrCat("sqlite:", dir, "/suanli.db");
      },
      [](const std::string& url, int64_t version) {
        absl::string_view path = url;
        ASSERT_TRUE(absl::ConsumePrefix(&path, "sqlite:"));
        sqlite3* db = nullptr;
        ASSERT_EQ(sqlite3_open_v2(std::string(path).c_str(), &db, SQLITE_OPEN_READWRITE, nullptr),
                  SQLITE_OK);
        std::string sql = absl::StrCat("INSERT INTO schema_version (version, name) VALUES (",
                                       version, ", 'from the future')");
        int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr);
        EXPECT_EQ(rc, SQLITE_OK) << sqlite3_errmsg(db);
        sqlite3_close(db);
      },
      [](const std::string& url, const std::string& sql) {
        absl::string_view path = url;
        absl::ConsumePrefix(&path, "sqlite:");
        sqlite3* db = nullptr;
        const std::string file(path.data(), path.size());
        if (sqlite3_open_v2(file.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
          sqlite3_close(db);
          return std::string("cannot open");
        }
        sqlite3_exec(db, "PRAGMA foreign_keys = ON", nullptr, nullptr, nullptr);
        const std::string script = absl::StrCat("BEGIN; ", sql, " COMMIT;");
        std::string error;
        if (sqlite3_exec(db, script.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) {
          error = sqlite3_errmsg(db);
          if (error.empty()) error = "failed";
          sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
        }
        sqlite3_close(db);
        return error;
      },
  };
}

// A database of its own on the test server for each test, dropped afterwards.
Backend PostgresBackend() {
  return {
      "Postgres",
      PostgresSkipReason,
      [](const std::string&, std::shared_ptr<void>* keep) {
        auto db = std::make_shared<PostgresTestDatabase>();
        std::string url = db->url();
        *keep = std::move(db);
        return url;
      },
      [](const std::string& url, int64_t version) {
        PostgresExec(url, absl::StrCat("INSERT INTO schema_version (version, name) VALUES (",
                                       version, ", 'from the future')"));
      },
      [](const std::string& url, const std::string& sql) {
        try {
          PostgresExec(url, absl::StrCat("BEGIN; ", sql, " COMMIT;"));
        } catch (const pqxx::sql_error& e) {
          return std::string(e.what());
        }
        return std::string();
      },
  };
}

// Every byte value once, NUL first and last.
std::string AllBytes() {
  std::string s;
  for (int b = 0; b < 256; ++b) s.push_back(static_cast<char>(b));
  s.push_back('\0');
  return s;
}

// A blob of `size` bytes that differs for each `seed`, with NULs in it.
std::string Blob(int64_t seed, size_t size) {
  std::string s(size, '\0');
  uint64_t x = static_cast<uint64_t>(seed) * 0x9E3779B97F4A7C15ULL + 1;
  for (size_t i = 0; i < size; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s[i] = static_cast<char>(i % 7 == 0 ? 0 : x & 0xff);
  }
  return s;
}

absl::Time Micros(int64_t us) { return absl::FromUnixMicros(us); }

std::string Show(absl::Time t) {
  return absl::FormatTime(absl::RFC3339_full, t, absl::UTCTimeZone());
}
std::string Show(absl::string_view bytes) {
  return absl::StrCat("\"", absl::CHexEscape(bytes), "\"");
}

// One line per row with every field, so that comparing dumps compares everything.
std::string Dump(const AccountRow& r) {
  return absl::StrCat("account id=", Show(r.id), " role=", r.role, " name=", Show(r.name),
                      " created=", Show(r.created), "\n");
}
std::string Dump(const ApiKeyRow& r) {
  return absl::StrCat("api_key key_id=", Show(r.key_id), " account_id=", Show(r.account_id),
                      " secret_hash=", Show(r.secret_hash), " created=", Show(r.created),
                      " revoked=", r.revoked, "\n");
}
std::string Dump(const CapacityRow& r) {
  return absl::StrCat("capacity seq=", r.seq, " kind=", r.kind, " actor=", Show(r.actor),
                      " at=", Show(r.at), " payload=", Show(r.payload), "\n");
}
std::string Dump(const AllocationRow& r) {
  return absl::StrCat("allocation id=", r.id, " buyer_id=", Show(r.buyer_id), " state=", r.state,
                      " payload=", Show(r.payload), " held_end=", Show(r.held_end),
                      " offer_ids=", Show(r.offer_ids), "\n");
}
std::string Dump(const IdempotencyRow& r) {
  return absl::StrCat("idempotency buyer_id=", Show(r.buyer_id), " key=", Show(r.key),
                      " request=", Show(r.request), " allocation_id=", r.allocation_id,
                      " rejection=", Show(r.rejection), "\n");
}
std::string Dump(const ClaimRow& r) {
  return absl::StrCat("claim allocation_id=", r.allocation_id, " node_id=", Show(r.node_id),
                      " node_gpus=", r.node_gpus, " gpus=", r.gpus, " from=", Show(r.from),
                      " until=", Show(r.until), "\n");
}
std::string Dump(const LedgerEntryRow& r) {
  std::string out = absl::StrCat("ledger id=", r.id, " at=", Show(r.at),
                                 " allocation_id=", r.allocation_id, " kind=", r.kind);
  for (const LedgerLeg& leg : r.legs) {
    absl::StrAppend(&out, " ", Show(leg.account), "=", leg.amount_micros);
  }
  return out + "\n";
}
std::string Dump(const DecisionMinuteRow& r) {
  return absl::StrCat("decision_minute minute=", r.minute, " counts=", Show(r.counts), "\n");
}
template <typename Row>
std::string Dump(const std::vector<Row>& rows) {
  std::string out;
  for (const Row& row : rows) out += Dump(row);
  return out;
}
std::string Dump(const Contents& c) {
  return absl::StrCat(Dump(c.accounts), Dump(c.api_keys), Dump(c.capacity), Dump(c.allocations),
                      Dump(c.idempotency), Dump(c.claims), Dump(c.ledger),
                      Dump(c.decision_minutes));
}

AccountRow Account(std::string id, std::string name, int32_t role = 1) {
  return {std::move(id), role, std::move(name), Micros(1'800'000'000'000'001)};
}
ApiKeyRow ApiKey(std::string key_id, std::string account_id, bool revoked = false) {
  return {std::move(key_id), std::move(account_id), Blob(7, 32), Micros(1'800'000'000'000'002),
          revoked};
}
CapacityRow Capacity(int64_t seq) {
  return {seq, 3, "operator-1", Micros(1'800'000'000'000'000 + seq), Blob(seq, 40)};
}
AllocationRow Allocation(int64_t id, int32_t state = 2) {
  return {id, "buyer-1", state, Blob(id, 60), Micros(1'800'000'360'000'000), "o1,o2"};
}
IdempotencyRow Idempotency(std::string buyer_id, std::string key, int64_t allocation_id = 1) {
  return {std::move(buyer_id), std::move(key), Blob(allocation_id, 20), allocation_id, ""};
}
// Allocation `id` takes `gpus` of the 8 GPUs of `node` over [from_us, until_us).
ClaimRow Claim(int64_t id, std::string node, int32_t gpus, int64_t from_us, int64_t until_us,
               int32_t node_gpus = 8) {
  return {id, std::move(node), node_gpus, gpus, Micros(from_us), Micros(until_us)};
}

// A balanced entry: `buyer` pays `amount`, the operator gets it less 8%, the broker the 8%.
LedgerEntryRow Entry(int64_t id, int64_t amount, int64_t allocation_id = 1) {
  const int64_t commission = amount * 8 / 100;
  return {id,
          Micros(1'800'000'000'000'000 + id),
          allocation_id,
          1,
          {{"buyer:buyer-1", -amount},
           {"operator:op-1", amount - commission},
           {"commission:op-1", commission}}};
}

// Valid rows of every kind but capacity, named after `tag`, that a store holding only rows
// named after other tags accepts.
Batch OtherRows(absl::string_view tag, int64_t allocation_id) {
  Batch b;
  b.accounts.push_back(Account(absl::StrCat("acct-", tag), absl::StrCat("name-", tag)));
  b.api_keys.push_back(ApiKey(absl::StrCat("key-", tag), absl::StrCat("acct-", tag)));
  b.allocations.push_back(Allocation(allocation_id));
  b.idempotency.push_back(Idempotency("buyer-1", absl::StrCat("idem-", tag), allocation_id));
  return b;
}

class StoreContractTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    if (std::string why = GetParam().skip_reason(); !why.empty()) GTEST_SKIP() << why;
    ASSERT_FALSE(dir_.path().empty()) << "cannot make a temporary directory";
    url_ = GetParam().fresh_url(dir_.path(), &keep_);
    Reopen();
  }

  // Closes the store (if open) and opens it again from its URL.
  void Reopen() {
    store_.reset();
    absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(url_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  void MustCommit(const Batch& batch) {
    absl::Status s = store_->Commit(batch);
    ASSERT_TRUE(s.ok()) << s;
  }

  Contents MustLoad() {
    absl::StatusOr<Contents> contents = store_->Load();
    EXPECT_TRUE(contents.ok()) << contents.status();
    return contents.ok() ? *std::move(contents) : Contents();
  }

  // Commits `batch`, which must be rejected with INVALID_ARGUMENT and a message containing
  // `why`, leaving the store exactly as it was.
  void ExpectRejected(const Batch& batch, absl::string_view why) {
    const std::string before = Dump(MustLoad());
    absl::Status s = store_->Commit(batch);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(why));
    EXPECT_EQ(Dump(MustLoad()), before) << "a rejected batch left rows behind";
  }

  TempDir dir_;
  std::shared_ptr<void> keep_;  // declared before store_, so that it goes after it
  std::string url_;
  std::unique_ptr<Store> store_;
};

TEST_P(StoreContractTest, FreshStoreLoadsEmpty) {
  Contents c = MustLoad();
  EXPECT_EQ(Dump(c), "");
  MustCommit(Batch());
  EXPECT_EQ(Dump(MustLoad()), "");
}

TEST_P(StoreContractTest, EveryFieldOfEveryRowRoundTrips) {
  constexpr int32_t kMin32 = std::numeric_limits<int32_t>::min();
  constexpr int32_t kMax32 = std::numeric_limits<int32_t>::max();
  constexpr int64_t kMax64 = std::numeric_limits<int64_t>::max();
  Batch b;
  // Text with quotes, backslashes, braces, SQL and UTF-8; times with microseconds, before the
  // epoch and infinite.
  b.accounts.push_back({"acct-'; DROP TABLE accounts; --", kMax32, "O'Brien \"算力\"",
                        Micros(1'800'000'000'123'457)});
  b.accounts.push_back({"acct-2", kMin32, "", Micros(-1'234'567)});
  b.api_keys.push_back({"key-1", "acct-2", AllBytes(), Micros(1), true});
  b.api_keys.push_back({"key-2", "acct-'; DROP TABLE accounts; --", std::string(32, '\0'),
                        absl::InfinitePast(), false});
  b.capacity.push_back({1, kMin32, "acct-2", Micros(1'800'000'000'999'999), AllBytes()});
  b.capacity.push_back({kMax64, kMax32, "", absl::InfiniteFuture(), ""});
  b.allocations.push_back(
      {7, "acct-2", kMax32, AllBytes(), absl::InfiniteFuture(), "offer-1,offer-2,offer-1"});
  b.allocations.push_back({kMax64, "", kMin32, "", absl::UnixEpoch(), ""});
  b.idempotency.push_back({"acct-2", "key\twith\ttabs", AllBytes(), 7, ""});
  b.idempotency.push_back({"acct-2", R"(key\with {"braces"}, \" NULL)", "", 8, ""});
  b.idempotency.push_back({"acct-2", "rejected", Blob(1, 100), 0, AllBytes()});
  MustCommit(b);

  Contents c = MustLoad();
  Contents want;
  want.accounts = b.accounts;  // "acct-'" < "acct-2"
  want.api_keys = b.api_keys;
  want.capacity = b.capacity;
  want.allocations = b.allocations;
  want.idempotency = b.idempotency;  // "key\t..." < "key\\..." < "rejected"
  EXPECT_EQ(Dump(c), Dump(want));
  // The dump shows times to the nanosecond; check the ones it could hide.
  ASSERT_EQ(c.capacity.size(), 2u);
  EXPECT_EQ(c.capacity[0].at, Micros(1'800'000'000'999'999));
  EXPECT_EQ(c.capacity[1].at, absl::InfiniteFuture());
  ASSERT_EQ(c.api_keys.size(), 2u);
  EXPECT_EQ(c.api_keys[1].created, absl::InfinitePast());
}

TEST_P(StoreContractTest, LargeBlobsRoundTrip) {
  Batch b;
  b.capacity.push_back(Capacity(1));
  b.capacity[0].payload = Blob(42, 3 << 20);  // 3 MiB
  MustCommit(b);
  Contents c = MustLoad();
  ASSERT_EQ(c.capacity.size(), 1u);
  EXPECT_TRUE(c.capacity[0].payload == b.capacity[0].payload) << "3 MiB payload differs";
}

TEST_P(StoreContractTest, LoadOrdersEachKindByItsKey) {
  Batch b1;
  for (const char* id : {"b", "c", "a", "Z"}) {
    b1.accounts.push_back(Account(id, absl::StrCat("name-", id)));
  }
  for (const char* id : {"k2", "k10", "k1", "K9"}) b1.api_keys.push_back(ApiKey(id, "a"));
  b1.capacity = {Capacity(3), Capacity(7)};
  for (int64_t id : {100, 2, 30}) b1.allocations.push_back(Allocation(id));
  b1.idempotency = {Idempotency("b2", "k1"), Idempotency("b1", "k2"), Idempotency("b1", "k1"),
                    Idempotency("b1", "K1"), Idempotency("B3", "k1")};
  MustCommit(b1);
  Batch b2;
  b2.capacity = {Capacity(10), Capacity(11)};
  b2.allocations.push_back(Allocation(1));
  MustCommit(b2);

  Contents c = MustLoad();
  std::vector<std::string> accounts, keys, idempotency;
  std::vector<int64_t> seqs, allocations;
  for (const AccountRow& r : c.accounts) accounts.push_back(r.id);
  for (const ApiKeyRow& r : c.api_keys) keys.push_back(r.key_id);
  for (const CapacityRow& r : c.capacity) seqs.push_back(r.seq);
  for (const AllocationRow& r : c.allocations) allocations.push_back(r.id);
  for (const IdempotencyRow& r : c.idempotency) {
    idempotency.push_back(absl::StrCat(r.buyer_id, "/", r.key));
  }
  EXPECT_THAT(accounts, ::testing::ElementsAre("Z", "a", "b", "c"));  // bytewise
  EXPECT_THAT(keys, ::testing::ElementsAre("K9", "k1", "k10", "k2"));
  EXPECT_THAT(seqs, ::testing::ElementsAre(3, 7, 10, 11));
  EXPECT_THAT(allocations, ::testing::ElementsAre(1, 2, 30, 100));  // numbers, not text
  EXPECT_THAT(idempotency, ::testing::ElementsAre("B3/k1", "b1/K1", "b1/k1", "b1/k2", "b2/k1"));
}

TEST_P(StoreContractTest, AccountsAreReplacedById) {
  Batch b;
  b.accounts = {Account("a1", "alice", 1), Account("a2", "bob", 1)};
  MustCommit(b);
  AccountRow changed = {"a1", 3, "alicia", Micros(5)};
  Batch replace;
  replace.accounts = {changed};
  MustCommit(replace);
  // The old name is free again.
  Batch reuse;
  reuse.accounts = {Account("a3", "alice")};
  MustCommit(reuse);

  Contents want;
  want.accounts = {changed, b.accounts[1], reuse.accounts[0]};
  EXPECT_EQ(Dump(MustLoad()), Dump(want));
}

TEST_P(StoreContractTest, ApiKeysAreReplacedByKeyId) {
  Batch b;
  b.accounts = {Account("a1", "alice"), Account("a2", "bob")};
  b.api_keys = {ApiKey("k1", "a1"), ApiKey("k2", "a1")};
  MustCommit(b);
  ApiKeyRow revoked = {"k1", "a2", Blob(9, 32), Micros(9), true};
  Batch replace;
  replace.api_keys = {revoked};
  MustCommit(replace);

  Contents want;
  want.accounts = b.accounts;
  want.api_keys = {revoked, b.api_keys[1]};
  EXPECT_EQ(Dump(MustLoad()), Dump(want));
}

TEST_P(StoreContractTest, AllocationsAreReplacedById) {
  Batch b;
  b.allocations = {Allocation(1, 1), Allocation(2, 1)};
  MustCommit(b);
  AllocationRow ended = {2, "buyer-9", 5, Blob(99, 10), Micros(77), "o9"};
  Batch replace;
  replace.allocations = {ended};
  MustCommit(replace);

  Contents want;
  want.allocations = {b.allocations[0], ended};
  EXPECT_EQ(Dump(MustLoad()), Dump(want));
}

TEST_P(StoreContractTest, SameIdTwiceInOneBatchKeepsTheLast) {
  Batch b;
  b.accounts = {Account("a1", "first"), Account("a1", "second")};
  b.allocations = {Allocation(1, 1), Allocation(1, 4)};
  b.decision_minutes = {{7, "first"}, {8, "other"}, {7, "second"}};
  MustCommit(b);
  Contents want;
  want.accounts = {b.accounts[1]};
  want.allocations = {b.allocations[1]};
  want.decision_minutes = {b.decision_minutes[2], b.decision_minutes[1]};
  EXPECT_EQ(Dump(MustLoad()), Dump(want));
}

TEST_P(StoreContractTest, CapacitySeqNotAboveStoredOnesRejectsWholeBatch) {
  Batch first = OtherRows("first", 1);
  first.capacity = {Capacity(1), Capacity(2), Capacity(5)};
  MustCommit(first);

  struct Case {
    std::vector<int64_t> seqs;
    int64_t bad;
  };
  // Each batch starts with valid rows of every kind; its last seq breaks the rule.
  for (const Case& c : std::vector<Case>{{{5}, 5},
                                         {{6, 4}, 4},
                                         {{6, 6}, 6},
                                         {{8, 7}, 7},
                                         {{0}, 0},
                                         {{-3}, -3},
                                         {{7, 9, 10, 10}, 10}}) {
    SCOPED_TRACE(absl::StrCat("seqs ending in ", c.bad));
    Batch b = OtherRows("second", 2);
    for (int64_t seq : c.seqs) b.capacity.push_back(Capacity(seq));
    ExpectRejected(b, absl::StrCat("seq ", c.bad));
  }

  // The same rows with a good seq are accepted: the seq alone was the problem.
  Batch ok = OtherRows("second", 2);
  ok.capacity = {Capacity(6), Capacity(9)};
  MustCommit(ok);
  Contents c = MustLoad();
  std::vector<int64_t> seqs;
  for (const CapacityRow& r : c.capacity) seqs.push_back(r.seq);
  EXPECT_THAT(seqs, ::testing::ElementsAre(1, 2, 5, 6, 9));
  EXPECT_EQ(c.accounts.size(), 2u);
}

TEST_P(StoreContractTest, DuplicateIdempotencyKeyRejectsWholeBatch) {
  Batch first;
  first.idempotency = {Idempotency("buyer-1", "k1", 1)};
  MustCommit(first);

  Batch again = OtherRows("second", 2);
  again.capacity = {Capacity(1)};
  again.idempotency.push_back(Idempotency("buyer-1", "k1", 2));  // a different answer
  ExpectRejected(again, "already stored");

  Batch twice = OtherRows("second", 2);
  twice.idempotency.push_back(Idempotency("buyer-1", "k9", 3));
  twice.idempotency.push_back(Idempotency("buyer-1", "k9", 3));
  ExpectRejected(twice, "already stored");

  // A key is unique per buyer only.
  Batch other_buyer = OtherRows("second", 2);
  other_buyer.idempotency.push_back(Idempotency("buyer-2", "k1", 2));
  MustCommit(other_buyer);
  Contents c = MustLoad();
  ASSERT_EQ(c.idempotency.size(), 3u);  // buyer-1/idem-second, buyer-1/k1, buyer-2/k1
  EXPECT_EQ(Dump(c.idempotency[1]), Dump(first.idempotency[0]));  // the first answer stays
}

TEST_P(StoreContractTest, DuplicateAccountNameRejectsWholeBatch) {
  Batch first;
  first.accounts = {Account("a1", "alice")};
  MustCommit(first);

  Batch taken = OtherRows("second", 2);
  taken.capacity = {Capacity(1)};
  taken.accounts.push_back(Account("a2", "alice"));
  ExpectRejected(taken, "alice");

  Batch twice = OtherRows("second", 2);
  twice.accounts.push_back(Account("a3", "bob"));
  twice.accounts.push_back(Account("a4", "bob"));
  ExpectRejected(twice, "bob");

  Batch ok = OtherRows("second", 2);
  ok.accounts.push_back(Account("a2", "alice2"));
  MustCommit(ok);
  EXPECT_EQ(MustLoad().accounts.size(), 3u);
}

TEST_P(StoreContractTest, ApiKeyOfUnknownAccountRejectsWholeBatch) {
  Batch b = OtherRows("second", 2);
  b.api_keys.push_back(ApiKey("k-orphan", "nobody"));
  ExpectRejected(b, "nobody");
}

TEST_P(StoreContractTest, ReopenKeepsEverythingAndTheRules) {
  Batch b1 = OtherRows("one", 1);
  b1.capacity = {Capacity(1), Capacity(2)};
  MustCommit(b1);
  Batch b2 = OtherRows("two", 2);
  b2.capacity = {Capacity(3)};
  b2.allocations.push_back(Allocation(1, 5));  // replaces b1's
  MustCommit(b2);
  const std::string before = Dump(MustLoad());
  ASSERT_THAT(before, HasSubstr("acct-two"));

  Reopen();
  EXPECT_EQ(Dump(MustLoad()), before);

  Batch stale;
  stale.capacity = {Capacity(3)};
  ExpectRejected(stale, "seq 3");
  Batch replay;
  replay.idempotency = {Idempotency("buyer-1", "idem-one", 1)};
  ExpectRejected(replay, "already stored");
  Batch name;
  name.accounts = {Account("acct-three", "name-one")};
  ExpectRejected(name, "name-one");

  Batch b3;
  b3.capacity = {Capacity(4)};
  MustCommit(b3);
  Reopen();
  EXPECT_EQ(MustLoad().capacity.size(), 4u);
}

TEST_P(StoreContractTest, SchemaNewerThanThisBuildIsRefused) {
  Batch b = OtherRows("one", 1);
  MustCommit(b);
  store_.reset();
  const int64_t newer = LatestSchemaVersion() + 6;
  GetParam().mark_schema_version(url_, newer);

  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(url_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition) << store.status();
  EXPECT_THAT(std::string(store.status().message()),
              HasSubstr(absl::StrCat("database schema v", newer,
                                     " is newer than this suanlid "
                                     "(knows v",
                                     LatestSchemaVersion(), "); upgrade suanlid")));
}

TEST_P(StoreContractTest, ClaimsRoundTripAndAreReplacedWithTheirAllocation) {
  Batch b;
  b.allocations = {Allocation(2), Allocation(1)};
  b.claims = {Claim(2, "n-b", 3, 100, 200), Claim(1, "n-z", 8, 0, 1'000'000),
              Claim(2, "n-a", 1, 100, 200, 4)};
  MustCommit(b);
  Contents c = MustLoad();
  EXPECT_EQ(Dump(c.claims), Dump(std::vector<ClaimRow>{b.claims[1], b.claims[2], b.claims[0]}));

  // Writing an allocation again replaces its claims: here allocation 2 ended and claims nothing,
  // and allocation 1 was extended. Claims of allocations the batch does not write stay.
  Batch next;
  next.allocations = {Allocation(2, 5), Allocation(1), Allocation(3)};
  next.claims = {Claim(1, "n-z", 8, 0, 2'000'000)};
  MustCommit(next);
  Batch other;
  other.allocations = {Allocation(4)};
  other.claims = {Claim(4, "n-b", 8, 100, 200)};  // allocation 2's GPUs are free again
  MustCommit(other);
  EXPECT_EQ(Dump(MustLoad().claims), Dump(std::vector<ClaimRow>{next.claims[0], other.claims[0]}));
  Reopen();
  EXPECT_EQ(Dump(MustLoad().claims), Dump(std::vector<ClaimRow>{next.claims[0], other.claims[0]}));
}

// Two batches appended into one commit store what committing them one after the other does:
// rows replaced by id, an allocation's claims those of the later batch (here allocation 1 moves
// from node n-a to n-b, and allocation 2 ends), new ledger entries and keys after the first's.
TEST_P(StoreContractTest, AppendedBatchesStoreWhatTheSequenceStores) {
  auto first = [] {
    Batch b = OtherRows("first", 1);
    b.allocations.push_back(Allocation(2));
    b.capacity = {Capacity(1)};
    b.claims = {Claim(1, "n-a", 8, 100, 200), Claim(2, "n-c", 4, 100, 300)};
    b.ledger = {Entry(1, 1'000'000, 1)};
    b.decision_minutes = {{29'000'000, "first"}, {29'000'001, "kept"}};
    return b;
  };
  auto second = [] {
    Batch b;
    b.accounts = {Account("acct-first", "renamed")};
    b.api_keys = {ApiKey("key-first", "acct-first", /*revoked=*/true)};
    b.allocations = {Allocation(1, 3), Allocation(2, 5), Allocation(3)};
    b.capacity = {Capacity(2)};
    // n-a is free again once allocation 1 moved; allocation 3 takes all of it.
    b.claims = {Claim(1, "n-b", 8, 100, 200), Claim(3, "n-a", 8, 100, 200)};
    b.idempotency = {Idempotency("buyer-1", "idem-second", 3)};
    b.ledger = {Entry(2, 500'000, 3)};
    b.decision_minutes = {{29'000'000, "second"}, {29'000'002, "new"}};
    return b;
  };
  MustCommit(first());
  MustCommit(second());
  const std::string sequence = Dump(MustLoad());

  TempDir other_dir;
  std::shared_ptr<void> other_keep;
  absl::StatusOr<std::unique_ptr<Store>> other =
      OpenStore(GetParam().fresh_url(other_dir.path(), &other_keep));
  ASSERT_TRUE(other.ok()) << other.status();
  Batch merged = first();
  Append(&merged, second());
  ASSERT_TRUE((*other)->Commit(merged).ok());
  absl::StatusOr<Contents> loaded = (*other)->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(Dump(*loaded), sequence);
  EXPECT_THAT(sequence, HasSubstr("n-b"));
  EXPECT_THAT(sequence, HasSubstr("minute=29000000 counts=\"second\""));
  other->reset();
}

// No node is ever stored with more GPUs claimed at some instant than it has: across batches,
// inside one batch, at the edges of intervals (which are half-open), and against the smallest
// node_gpus a claim states.
TEST_P(StoreContractTest, OversoldNodeIsRejected) {
  Batch b;
  b.allocations = {Allocation(1), Allocation(2)};
  b.claims = {Claim(1, "n1", 6, 0, 100), Claim(2, "n1", 2, 50, 150)};  // 8 of 8 over [50, 100)
  MustCommit(b);

  struct Case {
    std::string name;
    std::vector<ClaimRow> claims;
  };
  for (const Case& c : std::vector<Case>{
           {"one GPU more inside", {Claim(3, "n1", 1, 99, 200)}},
           {"covers everything", {Claim(3, "n1", 1, -1000, 1000)}},
           {"starts before, ends inside", {Claim(3, "n1", 1, 10, 51)}},
           {"two in one batch", {Claim(3, "n1", 1, 150, 300), Claim(4, "n1", 8, 200, 250)}},
           {"the node has fewer GPUs", {Claim(3, "n1", 1, 0, 10, 6)}},
           {"the whole node while part of it is taken", {Claim(3, "n1", 8, 120, 130)}},
           {"the whole node one microsecond into a claim", {Claim(3, "n1", 8, 149, 400)}},
           {"the whole node, ending one microsecond late", {Claim(3, "n1", 8, -50, 1)}},
           {"the whole node twice in one batch",
            {Claim(3, "n3", 8, 0, 100), Claim(4, "n3", 8, 99, 200)}},
           {"the whole node from the instant part of it is taken",
            {Claim(3, "n3", 1, 0, 10), Claim(4, "n3", 8, 0, 100)}},
           {"the whole node of a smaller node",
            {Claim(3, "n1", 1, 155, 156), Claim(4, "n1", 6, 150, 160, 6)}},
       }) {
    SCOPED_TRACE(c.name);
    Batch bad = OtherRows("bad", 3);
    bad.allocations.push_back(Allocation(4));
    bad.claims = c.claims;
    ExpectRejected(bad, "oversold");
  }

  Batch edges;
  edges.allocations = {Allocation(3), Allocation(4), Allocation(5), Allocation(9), Allocation(7)};
  edges.claims = {Claim(3, "n1", 2, 100, 200),   // starts where allocation 1 ends
                  Claim(4, "n1", 6, 150, 300),   // where 2 ends
                  Claim(5, "n2", 8, 0, 100),     // another node, the whole of it
                  Claim(9, "n2", 8, -100, 0),    // the whole node until 5 starts
                  Claim(7, "n2", 8, 100, 200)};  // and again from 5's end
  MustCommit(edges);
  // An allocation that ends frees its GPUs in the same batch that sells them again.
  Batch resell;
  resell.allocations = {Allocation(1, 5), Allocation(6)};
  resell.claims = {Claim(6, "n1", 6, 0, 100)};
  MustCommit(resell);
  // The whole node, once nothing else is on it at those instants.
  Batch whole;
  whole.allocations = {Allocation(8)};
  whole.claims = {Claim(8, "n1", 8, 300, 400)};
  MustCommit(whole);
  EXPECT_EQ(MustLoad().claims.size(), 8u);
}

// The database checks each instant, not the interval as a whole: claims that add up to more than
// the node over the new claim's interval are fine when no instant has more, and a claim that says
// the node has more GPUs than an earlier one said is held to the smaller figure.
TEST_P(StoreContractTest, OversellIsJudgedInstantByInstant) {
  Batch b;
  b.allocations = {Allocation(1), Allocation(2), Allocation(3)};
  b.claims = {Claim(1, "n1", 6, 0, 50), Claim(2, "n1", 6, 50, 100),  // 12 over [0, 100), 6 at once
              Claim(3, "n2", 5, 0, 100, 6)};                         // n2 said to have 6
  MustCommit(b);
  Batch fits;
  fits.allocations = {Allocation(4)};
  fits.claims = {Claim(4, "n1", 2, 0, 100)};  // 14 over the interval, 8 at every instant
  MustCommit(fits);
  Batch bad = OtherRows("bad", 5);
  bad.allocations.push_back(Allocation(6));
  bad.claims = {Claim(6, "n2", 2, 0, 100, 8)};  // 7 at once: within 8, not within 6
  ExpectRejected(bad, "oversold");
  Batch worse = OtherRows("worse", 5);
  worse.allocations.push_back(Allocation(6));
  worse.claims = {Claim(6, "n1", 1, 49, 51)};  // 9 at 49 and at 50
  ExpectRejected(worse, "oversold");
  EXPECT_EQ(MustLoad().claims.size(), 4u);
}

TEST_P(StoreContractTest, MalformedClaimsAreRejected) {
  for (const auto& [claim, why] : std::vector<std::pair<ClaimRow, std::string>>{
           {Claim(9, "n1", 1, 0, 10), "does not write that allocation"},
           {Claim(1, "", 1, 0, 10), "names no node"},
           {Claim(1, "n1", 0, 0, 10), "gpus 0 is not in 1..8"},
           {Claim(1, "n1", 9, 0, 10), "gpus 9 is not in 1..8"},
           {Claim(1, "n1", 1, 0, 10, 0), "node_gpus 0"},
           {Claim(1, "n1", 1, 10, 10), "end after it starts"},
           {{1, "n1", 8, 1, absl::UnixEpoch(), absl::InfiniteFuture()}, "finite"},
       }) {
    SCOPED_TRACE(why);
    Batch b = OtherRows("x", 1);
    b.claims = {claim};
    ExpectRejected(b, why);
  }
  Batch twice = OtherRows("x", 1);
  twice.claims = {Claim(1, "n1", 1, 0, 10), Claim(1, "n1", 1, 20, 30)};
  ExpectRejected(twice, "second claim on that node");
}

// Thousands of rows of every kind in one batch (more than one statement's worth, for backends
// that group rows), with ids repeated far apart.
TEST_P(StoreContractTest, LargeBatchRoundTrips) {
  constexpr int64_t kRows = 2500;
  Batch b;
  for (int64_t i = 1; i <= kRows; ++i) {
    const std::string tag = absl::StrFormat("%05d", i);
    b.accounts.push_back(Account("a" + tag, "name-" + tag));
    b.api_keys.push_back(ApiKey("k" + tag, "a" + tag));
    b.capacity.push_back(Capacity(i));
    b.allocations.push_back(Allocation(i));
    b.idempotency.push_back(Idempotency("buyer-1", "idem-" + tag, i));
    b.claims.push_back(Claim(i, "node-" + tag, 1 + i % 8, i, i + 10));
  }
  // Replacements of early rows at the end: the last write of an id wins.
  b.accounts.push_back(Account("a00001", "renamed"));
  b.allocations.push_back(Allocation(1, 5));
  MustCommit(b);

  Contents c = MustLoad();
  ASSERT_EQ(c.accounts.size(), kRows);
  EXPECT_EQ(c.accounts[0].name, "renamed");
  EXPECT_EQ(c.api_keys.size(), kRows);
  EXPECT_EQ(c.capacity.size(), kRows);
  ASSERT_EQ(c.allocations.size(), kRows);
  EXPECT_EQ(c.allocations[0].state, 5);
  EXPECT_EQ(Dump(c.allocations[kRows - 1]), Dump(Allocation(kRows)));
  EXPECT_EQ(c.idempotency.size(), kRows);
  // An allocation's claims are all those the batch lists for it, however often it is written.
  ASSERT_EQ(c.claims.size(), kRows);
  EXPECT_EQ(Dump(c.claims[0]), Dump(b.claims[0]));
}

// Batch `i` of the crash test: one row of every kind named after i, and a replacement of the
// account "counter" whose creation time is i microseconds.
TEST_P(StoreContractTest, LedgerEntriesRoundTripInIdOrderAndSurviveReopen) {
  constexpr int64_t kMax64 = std::numeric_limits<int64_t>::max();
  Batch b;
  b.allocations = {Allocation(7)};
  b.ledger = {Entry(3, 1'000'001, 7),
              Entry(1, 5),
              {2,
               Micros(-1),
               7,
               3,
               {{"buyer:'; DROP TABLE ledger_legs; --", kMax64},
                {"operator:算力", -kMax64},
                {"commission:x", 0}}}};
  MustCommit(b);
  Batch next;
  next.ledger = {Entry(4, -1'000'001, 7)};  // a correction is a new entry
  MustCommit(next);
  const std::vector<LedgerEntryRow> want = {b.ledger[1], b.ledger[2], b.ledger[0], next.ledger[0]};
  EXPECT_EQ(Dump(MustLoad().ledger), Dump(want));
  Reopen();
  EXPECT_EQ(Dump(MustLoad().ledger), Dump(want));
}

// Decision counts per minute: any bytes round trip, loaded by minute; a minute written again is
// replaced (also within one batch: the later row wins); they survive a reopen.
TEST_P(StoreContractTest, DecisionMinutesRoundTripReplaceByMinuteAndSurviveReopen) {
  constexpr int64_t kMax64 = std::numeric_limits<int64_t>::max();
  const std::string binary("v1\0\xff\n\x01", 6);
  Batch b;
  b.decision_minutes = {{29'000'005, "five"}, {-3, binary}, {kMax64, ""}, {29'000'001, "one"}};
  MustCommit(b);
  std::vector<DecisionMinuteRow> want = {b.decision_minutes[1], b.decision_minutes[3],
                                         b.decision_minutes[0], b.decision_minutes[2]};
  EXPECT_EQ(Dump(MustLoad().decision_minutes), Dump(want));

  Batch next;
  next.decision_minutes = {
      {29'000'001, "one, later"}, {29'000'009, "first"}, {29'000'009, "second"}};
  MustCommit(next);
  want = {b.decision_minutes[1],
          {29'000'001, "one, later"},
          b.decision_minutes[0],
          {29'000'009, "second"},
          b.decision_minutes[2]};
  EXPECT_EQ(Dump(MustLoad().decision_minutes), Dump(want));
  Reopen();
  EXPECT_EQ(Dump(MustLoad().decision_minutes), Dump(want));
  // A batch of decision counts alone is not empty.
  Batch only;
  EXPECT_TRUE(only.empty());
  only.decision_minutes = {{1, "x"}};
  EXPECT_FALSE(only.empty());
}

TEST_P(StoreContractTest, UnbalancedOrMalformedLedgerEntriesRejectWholeBatch) {
  MustCommit(OtherRows("one", 1));
  MustCommit([] {
    Batch b;
    b.ledger = {Entry(1, 100)};
    return b;
  }());
  struct Case {
    std::string name;
    LedgerEntryRow entry;
    std::string why;
  };
  LedgerEntryRow unbalanced = Entry(2, 100);
  unbalanced.legs[1].amount_micros += 1;
  LedgerEntryRow no_legs = Entry(3, 100);
  no_legs.legs.clear();
  LedgerEntryRow no_account = Entry(4, 100);
  no_account.legs[2].account = "";
  LedgerEntryRow twice = Entry(5, 100);
  twice.legs[2].account = twice.legs[1].account;
  LedgerEntryRow overflow = {
      6, Micros(0), 1, 1, {{"a", std::numeric_limits<int64_t>::max()}, {"b", 1}, {"c", -2}}};
  const std::vector<Case> cases = {
      {"unbalanced", unbalanced, "does not balance: its legs sum to 1 micros"},
      {"no legs", no_legs, "has no legs"},
      {"no account", no_account, "has a leg without an account"},
      {"account twice", twice, "twice"},
      {"overflow", overflow, "overflows"},
      {"id 0", Entry(0, 5), "not above 0"},
      {"id stored", Entry(1, 5), "already stored"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Batch b = OtherRows("two", 2);
    b.ledger = {Entry(9, 10), c.entry};
    ExpectRejected(b, c.why);
  }
}

// The database itself keeps the books balanced and immutable, whoever writes to it.
TEST_P(StoreContractTest, DatabaseRefusesUnbalancedOrChangedLedgerRows) {
  Batch b;
  b.ledger = {Entry(1, 100)};
  MustCommit(b);
  const std::string before = Dump(MustLoad());
  store_.reset();
  const std::string cols =
      "INSERT INTO ledger_legs (entry_id, leg, last_leg, at_us, allocation_id, kind, account, "
      "amount_micros) VALUES ";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"unbalanced",
       absl::StrCat(cols, "(2, 0, 1, 0, 1, 1, 'a', -5), (2, 1, 1, 0, 1, 1, 'b', 4);")},
      {"incomplete", absl::StrCat(cols, "(3, 0, 1, 0, 1, 1, 'a', -5);")},
      {"added leg", absl::StrCat(cols, "(1, 3, 3, 0, 1, 1, 'z', 0);")},
      {"update", "UPDATE ledger_legs SET amount_micros = 0 WHERE entry_id = 1;"},
      {"delete", "DELETE FROM ledger_legs WHERE entry_id = 1;"},
  };
  for (const auto& [name, sql] : cases) {
    SCOPED_TRACE(name);
    EXPECT_NE(GetParam().raw_sql(url_, sql), "") << "the database took: " << sql;
  }
  // A balanced entry written by hand is fine.
  EXPECT_EQ(
      GetParam().raw_sql(
          url_, absl::StrCat(cols, "(8, 0, 1, 0, 1, 1, 'a', -5), (8, 1, 1, 0, 1, 1, 'b', 5);")),
      "");
  Reopen();
  Contents after = MustLoad();
  ASSERT_EQ(after.ledger.size(), 2u);
  after.ledger.pop_back();
  EXPECT_EQ(Dump(after), before);
}

Batch CrashBatch(int64_t i) {
  const std::string tag = absl::StrFormat("%06d", i);
  Batch b;
  b.accounts.push_back({"acct-" + tag, 1, "name-" + tag, Micros(i)});
  b.accounts.push_back({"counter", 2, "counter", Micros(i)});
  b.api_keys.push_back({"key-" + tag, "acct-" + tag, Blob(i, 32), Micros(i), i % 2 == 0});
  b.capacity.push_back({i, 1, "acct-" + tag, Micros(i), Blob(i, 2048)});
  b.allocations.push_back({i, "acct-" + tag, 2, Blob(-i, 2048), Micros(i), "o-" + tag});
  b.idempotency.push_back({"acct-" + tag, "k", Blob(i, 64), i, ""});
  // Claims that never overlap, so that the oversell check runs on every batch.
  b.claims.push_back({i, absl::StrCat("node-", i % 7), 8, static_cast<int32_t>(1 + i % 8),
                      Micros(i), Micros(i + 1)});
  return b;
}

// What the store holds after batches 1..n of the crash test.
Contents AfterCrashBatches(int64_t n) {
  Contents c;
  for (int64_t i = 1; i <= n; ++i) {
    Batch b = CrashBatch(i);
    c.accounts.push_back(b.accounts[0]);
    c.api_keys.push_back(b.api_keys[0]);
    c.capacity.push_back(b.capacity[0]);
    c.allocations.push_back(b.allocations[0]);
    c.idempotency.push_back(b.idempotency[0]);
    c.claims.push_back(b.claims[0]);
  }
  if (n > 0) c.accounts.push_back(CrashBatch(n).accounts[1]);
  return c;
}

// A child process commits batches 1, 2, ... and reports each on a pipe only after Commit
// returned OK; it is killed with SIGKILL at some point while it commits. Every reported batch
// must then be stored whole, at most one more (committed, not yet reported), and nothing of a
// later one.
TEST_P(StoreContractTest, KillDuringCommitsLosesNoAcknowledgedBatch) {
  constexpr int64_t kAcksBeforeKill = 300;
  constexpr int64_t kMaxBatches = 100'000;  // the child stops by itself if never killed
  store_.reset();                           // a connection must not cross fork()
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  ASSERT_NE(pid, -1);
  if (pid == 0) {
    close(fds[0]);
    absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(url_);
    if (!store.ok()) _exit(2);
    for (int64_t i = 1; i <= kMaxBatches; ++i) {
      if (!(*store)->Commit(CrashBatch(i)).ok()) _exit(3);
      if (write(fds[1], &i, sizeof i) != static_cast<ssize_t>(sizeof i)) _exit(4);
    }
    _exit(0);
  }
  close(fds[1]);

  // Reads one acknowledgement; false at the end of the pipe.
  auto read_ack = [&](int64_t* seq) {
    while (true) {
      ssize_t n = read(fds[0], seq, sizeof *seq);
      if (n == static_cast<ssize_t>(sizeof *seq)) return true;
      if (n < 0 && errno == EINTR) continue;
      return false;
    }
  };
  int64_t acked = 0;
  int64_t seq = 0;
  while (acked < kAcksBeforeKill && read_ack(&seq)) {
    EXPECT_EQ(seq, acked + 1);
    acked = seq;
  }
  kill(pid, SIGKILL);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  // Anything else means the child failed before it was killed.
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "child ended with status " << status << " after " << acked << " acknowledged batches";
  while (read_ack(&seq)) acked = seq;  // acknowledgements written before it died
  close(fds[0]);
  ASSERT_GE(acked, kAcksBeforeKill);

  Reopen();
  Contents c = MustLoad();
  const auto stored = static_cast<int64_t>(c.capacity.size());
  EXPECT_GE(stored, acked) << "an acknowledged batch was lost";
  EXPECT_LE(stored, acked + 1);
  // Batches 1..stored whole, row by row (a whole-store dump would be too long to read).
  Contents want = AfterCrashBatches(stored);
  ASSERT_EQ(c.accounts.size(), want.accounts.size());
  ASSERT_EQ(c.api_keys.size(), want.api_keys.size());
  ASSERT_EQ(c.allocations.size(), want.allocations.size());
  ASSERT_EQ(c.idempotency.size(), want.idempotency.size());
  ASSERT_EQ(c.claims.size(), want.claims.size());
  for (size_t i = 0; i < want.accounts.size(); ++i) {
    ASSERT_EQ(Dump(c.accounts[i]), Dump(want.accounts[i]));
  }
  for (size_t i = 0; i < want.capacity.size(); ++i) {
    ASSERT_EQ(Dump(c.capacity[i]), Dump(want.capacity[i]));
    ASSERT_EQ(Dump(c.api_keys[i]), Dump(want.api_keys[i]));
    ASSERT_EQ(Dump(c.allocations[i]), Dump(want.allocations[i]));
    ASSERT_EQ(Dump(c.idempotency[i]), Dump(want.idempotency[i]));
    ASSERT_EQ(Dump(c.claims[i]), Dump(want.claims[i]));
  }

  // The store goes on from where it stopped.
  MustCommit(CrashBatch(stored + 1));
  EXPECT_EQ(MustLoad().capacity.size(), static_cast<size_t>(stored + 1));
}

INSTANTIATE_TEST_SUITE_P(Sqlite, StoreContractTest, ::testing::Values(SqliteBackend()),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param.name;
                         });
INSTANTIATE_TEST_SUITE_P(Postgres, StoreContractTest, ::testing::Values(PostgresBackend()),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param.name;
                         });

// OpenStore's URL handling (the same for every build).

struct BadUrl {
  std::string url;
  std::string why;  // part of the message
};

TEST(OpenStoreTest, MalformedUrlsAreRejectedWithTheAcceptedForms) {
  for (const BadUrl& c : std::vector<BadUrl>{
           {"", "empty store URL"},
           {"var/suanli.db", "did you mean \"sqlite:var/suanli.db\"?"},
           {"SQLITE:/tmp/x.db", "scheme \"SQLITE:\" is not known"},
           {"mysql://root:hunter2@db/suanli", "scheme \"mysql:\" is not known"},
           {"postgresql:/suanli:hunter2@db/suanli", "scheme \"postgresql:\" is not known"},
       }) {
    SCOPED_TRACE(c.url);
    absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(c.url);
    ASSERT_FALSE(store.ok());
    EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument) << store.status();
    const std::string message(store.status().message());
    EXPECT_THAT(message, HasSubstr(c.why));
    EXPECT_THAT(message, HasSubstr("accepted forms: sqlite:PATH"));
    EXPECT_THAT(message, HasSubstr("postgresql://USER@HOST:PORT/DB"));
    EXPECT_THAT(message, Not(HasSubstr("hunter2"))) << "a password was repeated";
  }
}

// URLs libpq cannot parse: INVALID_ARGUMENT without contacting anything, and without repeating
// the password.
TEST(OpenStoreTest, MalformedPostgresUrlsAreRejected) {
  for (const std::string url : {
           "postgresql://suanli:hunter2@db:5432/suanli?hunter2=1",
           "postgres://suanli:hunter2@db:5432/suanli?sslmode=hunter2&x",
           "postgresql://suanli:hunter2@[db/suanli",
           "postgresql://suanli:hunter2@db:5432/suanli?password=%zzhunter2",
       }) {
    SCOPED_TRACE(url);
    absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(url);
    ASSERT_FALSE(store.ok());
    EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument) << store.status();
    const std::string message(store.status().message());
    EXPECT_THAT(message, HasSubstr("libpq cannot parse it"));
    EXPECT_THAT(message, Not(HasSubstr("hunter2"))) << "a password was repeated";
  }
}

// A server that cannot be reached: UNAVAILABLE (retrying may work), without the password.
TEST(OpenStoreTest, UnreachablePostgresIsUnavailable) {
  absl::StatusOr<std::unique_ptr<Store>> store =
      OpenStore("postgresql://suanli:hunter2@127.0.0.1:1/suanli");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kUnavailable) << store.status();
  const std::string message(store.status().message());
  EXPECT_THAT(message, HasSubstr("postgresql://suanli@127.0.0.1:1/suanli"));
  EXPECT_THAT(message, Not(HasSubstr("hunter2"))) << "a password was repeated";
}

TEST(OpenStoreTest, SqliteUrlsWithoutAPathAreRejected) {
  for (const BadUrl& c : std::vector<BadUrl>{
           {"sqlite:", "needs a file path"},
           {"sqlite://tmp/x.db", "no \"//\""},
           {"sqlite:///tmp/x.db", "no \"//\""},
       }) {
    SCOPED_TRACE(c.url);
    absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(c.url);
    ASSERT_FALSE(store.ok());
    EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument) << store.status();
    EXPECT_THAT(std::string(store.status().message()), HasSubstr(c.why));
    EXPECT_THAT(std::string(store.status().message()), HasSubstr("sqlite:/var/lib/suanli/"));
  }
}

}  // namespace
}  // namespace suanli::storage
