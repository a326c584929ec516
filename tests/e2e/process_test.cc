// suanlid as a process: kill -9 under load loses nothing acknowledged and never oversells;
// SIGTERM stops it gracefully; TLS on the gRPC port.
#include <atomic>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/harness.h"
#include "tests/storage/postgres_server.h"

namespace suanli::e2e {
namespace {

constexpr int64_t kPrice = 20'000'000;

// One client's view of a run: every allocation it was told about, as last told.
struct Acked {
  std::mutex mu;
  std::map<std::string, v1::Allocation> allocations;  // by id
  std::map<std::string, std::string> key_to_id;       // idempotency key -> id
  // Each buyer's allocations that are still live as far as it knows, oldest first (by API key,
  // so that the workers of later rounds can release what earlier ones allocated).
  std::map<std::string, std::deque<std::string>> live;
  // What failed calls said, for the message of a failing test: count and last message by code.
  std::map<absl::StatusCode, std::pair<int, std::string>> failures;
};

// "UNAVAILABLE x12 (last: ...), ..." for a failing test's message; clears the record.
std::string TakeFailures(Acked& acked) {
  std::lock_guard<std::mutex> lock(acked.mu);
  std::string out;
  for (const auto& [code, seen] : acked.failures) {
    absl::StrAppend(&out, out.empty() ? "" : "; ", absl::StatusCodeToString(code), " x", seen.first,
                    " (last: ", seen.second, ")");
  }
  acked.failures.clear();
  return out.empty() ? "none" : out;
}

std::unique_ptr<Client> ConnectOnce(int port, const std::string& key) {
  ClientOptions o;
  o.target = absl::StrCat("127.0.0.1:", port);
  o.api_key = key;
  o.timeout = absl::Seconds(5);
  o.max_attempts = 1;  // see every failure: the broker is being killed
  absl::StatusOr<std::unique_ptr<Client>> c = Client::Connect(o);
  return c.ok() ? *std::move(c) : nullptr;
}

// Allocates, extends and releases until `stop`, recording what was acknowledged. Acknowledged
// allocations hold their GPUs for hours and only some are released at once, so the load would
// sell the market out after several hundred acknowledgements (two outage rounds can make that
// many) and every later Allocate would be RESOURCE_EXHAUSTED, however well the broker works: so
// a worker told the market is full releases its buyer's oldest live allocation first.
void Load(int port, const std::string& key, int worker, std::atomic<bool>* stop, Acked* acked,
          std::atomic<int>* acks) {
  std::unique_ptr<Client> c = ConnectOnce(port, key);
  std::mt19937 rng(static_cast<uint32_t>(worker));
  // Releases `id`: recorded when acknowledged; kept as live when the answer is lost (a retried
  // release of an ended allocation returns it as it is).
  auto release = [&](const std::string& id) {
    v1::ReleaseAllocationRequest rel;
    rel.set_allocation_id(id);
    absl::StatusOr<v1::Allocation> done = c->ReleaseAllocation(rel);
    std::lock_guard<std::mutex> lock(acked->mu);
    if (done.ok()) {
      acked->allocations[done->id()] = *done;
    } else if (done.status().code() == absl::StatusCode::kUnavailable ||
               done.status().code() == absl::StatusCode::kDeadlineExceeded) {
      acked->live[key].push_front(id);
    }
  };
  int n = 0;
  while (!stop->load()) {
    const std::string idem = absl::StrCat("w", worker, "-", n++);
    v1::AllocateRequest r;
    r.mutable_request()->set_gpus(1 + static_cast<int>(rng() % 8));
    r.mutable_request()->set_max_price_micros_per_gpu_hour(kPrice);
    *r.mutable_request()->mutable_duration() = Dur(absl::Hours(1 + rng() % 4));
    r.mutable_request()->set_idempotency_key(idem);
    absl::StatusOr<v1::Allocation> a = c->Allocate(r);
    if (a.ok()) {
      std::lock_guard<std::mutex> lock(acked->mu);
      acked->allocations[a->id()] = *a;
      acked->key_to_id[idem] = a->id();
      ++*acks;
    }
    if (a.ok() && rng() % 3 == 0) {
      release(a->id());
    } else if (a.ok()) {
      {
        std::lock_guard<std::mutex> lock(acked->mu);
        acked->live[key].push_back(a->id());
      }
      if (rng() % 3 == 0) {
        v1::ExtendAllocationRequest ext;
        ext.set_allocation_id(a->id());
        *ext.mutable_new_end() = Ts(absl::FromUnixSeconds(a->end().seconds()) + absl::Hours(1));
        absl::StatusOr<v1::Allocation> longer = c->ExtendAllocation(ext);
        if (longer.ok()) {
          std::lock_guard<std::mutex> lock(acked->mu);
          acked->allocations[longer->id()] = *longer;
        }
      }
    }
    if (!a.ok()) {
      std::lock_guard<std::mutex> lock(acked->mu);
      auto& seen = acked->failures[a.status().code()];
      ++seen.first;
      seen.second = absl::StrCat(a.status().message());
    }
    if (!a.ok() && a.status().code() == absl::StatusCode::kResourceExhausted) {
      std::string oldest;
      {
        std::lock_guard<std::mutex> lock(acked->mu);
        std::deque<std::string>& mine = acked->live[key];
        if (!mine.empty()) {
          oldest = mine.front();
          mine.pop_front();
        }
      }
      if (!oldest.empty()) release(oldest);
    }
    if (!a.ok() && a.status().code() == absl::StatusCode::kUnavailable) {
      absl::SleepFor(absl::Milliseconds(5));
    }
  }
}

// Every acknowledged allocation is there as last acknowledged (or changed since only by a call
// sent before the crash whose answer was lost), and no idempotency key made two allocations.
void CheckAcknowledged(int port, const std::vector<std::string>& keys, Acked& acked) {
  // Every acknowledged allocation is there as last acknowledged (or ended since by its clock),
  // and a key never made two allocations.
  std::map<std::string, std::string> owner;  // allocation id -> buyer key
  for (size_t i = 0; i < keys.size(); ++i) {
    std::unique_ptr<Client> b = Connect(port, keys[i]);
    v1::ListAllocationsRequest l;
    l.set_include_ended(true);
    l.mutable_page()->set_page_size(1000);
    for (;;) {
      absl::StatusOr<v1::ListAllocationsResponse> page = b->ListAllocations(l);
      ASSERT_TRUE(page.ok()) << page.status();
      for (const v1::Allocation& a : page->allocations()) owner[a.id()] = keys[i];
      if (page->next_page_token().empty()) break;
      l.mutable_page()->set_page_token(page->next_page_token());
    }
  }
  std::set<std::string> keys_seen;
  int checked = 0;
  for (const auto& [id, a] : acked.allocations) {
    ASSERT_TRUE(owner.count(id)) << "acknowledged allocation " << id << " was lost";
    std::unique_ptr<Client> b = Connect(port, owner[id]);
    v1::GetAllocationRequest g;
    g.set_allocation_id(id);
    absl::StatusOr<v1::Allocation> got = b->GetAllocation(g);
    ASSERT_TRUE(got.ok()) << got.status();
    std::string got_slices, acked_slices;
    for (const v1::Slice& sl : got->slices()) got_slices += sl.SerializeAsString();
    for (const v1::Slice& sl : a.slices()) acked_slices += sl.SerializeAsString();
    EXPECT_EQ(got_slices, acked_slices) << id;
    EXPECT_EQ(got->start().SerializeAsString(), a.start().SerializeAsString()) << id;
    if (a.state() == v1::ALLOCATION_STATE_ENDED) {
      EXPECT_EQ(got->SerializeAsString(), a.SerializeAsString()) << id;
    } else if (got->state() == v1::ALLOCATION_STATE_ENDED) {
      // Only a release sent before the kill (its answer lost) may have ended it.
      EXPECT_EQ(got->end_reason(), v1::END_REASON_RELEASED) << id;
    } else {
      // An extension sent before the kill may have landed; nothing else moves the end.
      EXPECT_GE(got->end().seconds(), a.end().seconds()) << id;
    }
    ++checked;
  }
  EXPECT_GT(checked, 0);
  // A key never allocated twice: retried keys return the acknowledged allocation.
  for (const auto& [idem, id] : acked.key_to_id) {
    const std::string worker = idem.substr(1, idem.find('-') - 1);
    const int w = std::stoi(worker) % 100;
    std::unique_ptr<Client> b = Connect(port, keys[static_cast<size_t>(w)]);
    v1::AllocateRequest r;
    // Not the same request: the retry must be refused as a reused key, never granted anew.
    r.mutable_request()->set_gpus(999);
    r.mutable_request()->set_max_price_micros_per_gpu_hour(kPrice);
    *r.mutable_request()->mutable_duration() = Dur(absl::Hours(1));
    r.mutable_request()->set_idempotency_key(idem);
    EXPECT_EQ(b->Allocate(r).status().code(), absl::StatusCode::kFailedPrecondition) << idem;
    if (keys_seen.size() > 50) break;
    keys_seen.insert(idem);
  }
}

// The books after a crash: every entry balances, and what buyers were debited is exactly the
// final price of every allocation sold (never-redeemed holds cost nothing).
int64_t LedgerProblems(const broker::Market& m) {
  int64_t problems = 0, debited = 0;
  for (const storage::LedgerEntryRow& entry : m.Ledger()) {
    int64_t sum = 0;
    for (const storage::LedgerLeg& leg : entry.legs) {
      sum += leg.amount_micros;
      if (absl::StartsWith(leg.account, "buyer:")) debited -= leg.amount_micros;
    }
    if (sum != 0) ++problems;
  }
  broker::Principal admin;
  admin.role = v1::ROLE_ADMIN;
  v1::ListSoldAllocationsRequest r;
  *r.mutable_since() = Ts(absl::UnixEpoch());
  r.mutable_page()->set_page_size(1000);
  int64_t priced = 0;
  for (;;) {
    absl::StatusOr<v1::ListSoldAllocationsResponse> page =
        m.ListSoldAllocations(admin, r, absl::Now());
    if (!page.ok()) return problems + 1;
    for (const v1::Allocation& a : page->allocations()) priced += a.total_price_micros();
    if (page->next_page_token().empty()) break;
    r.mutable_page()->set_page_token(page->next_page_token());
  }
  EXPECT_EQ(debited, priced) << "buyers were debited other than the allocations' prices";
  return problems + (debited == priced ? 0 : 1);
}

// The crash and outage tests run on each store: SQLite, and PostgreSQL when the test server of
// tests/tools/with_postgres.sh is there (tests/run.sh runs them under it).
class StoreProcess : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "postgres") {
      const std::string why = storage::PostgresSkipReason();
      if (!why.empty()) GTEST_SKIP() << why;
      pg_ = std::make_unique<storage::PostgresTestDatabase>();
    }
  }
  // A failing test keeps suanlid's log, which TempDir would delete: its tail is printed and the
  // whole log is copied to /tmp/outage-logs/ (or $SUANLI_TEST_LOG_DIR), with the PostgreSQL
  // server's log when the test used it; with SUANLI_TEST_KEEP_LOGS=1 passing tests' logs too.
  void TearDown() override {
    const std::string log = dir_.File("suanlid.log");
    const char* always = std::getenv("SUANLI_TEST_KEEP_LOGS");  // =1: keep passing runs' too
    const bool keep = HasFailure() || (always != nullptr && std::string(always) == "1");
    if (!keep || access(log.c_str(), R_OK) != 0) return;
    const char* env = std::getenv("SUANLI_TEST_LOG_DIR");
    const std::string keep_dir = env != nullptr ? env : "/tmp/outage-logs";
    const ::testing::TestInfo* t = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = absl::StrCat(t->test_suite_name(), ".", t->name());
    absl::StrReplaceAll({{"/", "_"}}, &name);
    const std::string kept = absl::StrCat(
        keep_dir, "/", name, "-",
        absl::FormatTime("%Y%m%dT%H%M%S", absl::Now(), absl::UTCTimeZone()), "-", getpid(), ".log");
    const int copied =
        system(absl::StrCat("mkdir -p '", keep_dir, "' && cp '", log, "' '", kept, "'").c_str());
    const char* pg_dir = std::getenv("SUANLI_TEST_PG_DIR");
    if (pg_ != nullptr && pg_dir != nullptr) {
      (void)!system(absl::StrCat("cp '", pg_dir, "/server.log' '", absl::StripSuffix(kept, ".log"),
                                 ".postgres.log' 2>/dev/null")
                        .c_str());
    }
    if (!HasFailure()) return;
    std::cerr << "--- the last 60 lines of suanlid's log"
              << (copied == 0 ? absl::StrCat(" (all of it in ", kept, ")") : "") << ":\n";
    (void)!system(absl::StrCat("tail -n 60 '", log, "' >&2").c_str());
  }
  std::string StoreUrl() const {
    return pg_ != nullptr ? pg_->url() : absl::StrCat("sqlite:", dir_.File("suanli.db"));
  }
  broker::BrokerOptions InProcess() const {
    broker::BrokerOptions o = OptionsIn(dir_);
    o.store_url = StoreUrl();
    return o;
  }

  TempDir dir_;
  std::unique_ptr<storage::PostgresTestDatabase> pg_;
};

INSTANTIATE_TEST_SUITE_P(Stores, StoreProcess, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

TEST_P(StoreProcess, KillNineUnderLoadLosesNothingAcknowledged) {
  TempDir& dir = dir_;
  BrokerProcess p(dir, FreePort(), {}, StoreUrl());
  p.Start();
  std::unique_ptr<Client> admin = Connect(p.port(), ReadAll(dir.File("admin.key")));
  std::unique_ptr<Client> op = Connect(p.port(), NewAccount(*admin, v1::ROLE_OPERATOR, "op"));
  SmallMarket(*op, "c1", 256, kPrice / 2);  // 2,048 GPUs
  constexpr int kWorkers = 8;
  std::vector<std::string> keys;
  keys.reserve(kWorkers);
  for (int i = 0; i < kWorkers; ++i) {
    keys.push_back(NewAccount(*admin, v1::ROLE_BUYER, absl::StrCat("buyer-", i)));
  }
  Acked acked;
  std::mt19937 rng(7);
  constexpr int kKills = 5;
  for (int round = 0; round < kKills; ++round) {
    std::atomic<bool> stop{false};
    std::atomic<int> acks{0};
    std::vector<std::thread> workers;
    workers.reserve(kWorkers);
    for (int i = 0; i < kWorkers; ++i) {
      workers.emplace_back(Load, p.port(), keys[static_cast<size_t>(i)], round * 100 + i, &stop,
                           &acked, &acks);
    }
    // Kill at a random moment once some work was acknowledged.
    const int target = 20 + static_cast<int>(rng() % 200);
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (acks.load() < target && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
    const int status = p.Kill(SIGKILL);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    stop = true;
    for (std::thread& t : workers) t.join();
    ASSERT_GE(acks.load(), 1) << "round " << round << " acknowledged nothing";
    p.Start();
  }

  CheckAcknowledged(p.port(), keys, acked);
  p.Kill(SIGTERM);

  // Never oversold: the core's audit over the recovered state.
  absl::StatusOr<std::unique_ptr<broker::Broker>> b = broker::Broker::Start(InProcess());
  ASSERT_TRUE(b.ok()) << b.status();
  absl::StatusOr<int64_t> violations = (*b)->engine().Run<int64_t>(
      [](broker::Market& m, absl::Time, storage::Batch*) -> absl::StatusOr<int64_t> {
        return m.Audit().violations + LedgerProblems(m);
      });
  ASSERT_TRUE(violations.ok());
  EXPECT_EQ(*violations, 0);
}

TEST_P(StoreProcess, DatabaseOutageUnderLoadLosesNothingAndRecovers) {
  if (GetParam() != "postgres") GTEST_SKIP() << "an embedded store has no server to lose";
  BrokerProcess p(dir_, FreePort(), {}, StoreUrl());
  p.Start();
  std::unique_ptr<Client> admin = Connect(p.port(), ReadAll(dir_.File("admin.key")));
  std::unique_ptr<Client> op = Connect(p.port(), NewAccount(*admin, v1::ROLE_OPERATOR, "op"));
  SmallMarket(*op, "c1", 256, kPrice / 2);
  constexpr int kWorkers = 8;
  std::vector<std::string> keys;
  keys.reserve(kWorkers);
  for (int i = 0; i < kWorkers; ++i) {
    keys.push_back(NewAccount(*admin, v1::ROLE_BUYER, absl::StrCat("buyer-", i)));
  }
  Acked acked;
  // Three outages by default: the database is cut off twice, then the whole server crashes and
  // restarts (the last round). SUANLI_TEST_PG_OUTAGES=N runs N rounds instead (1 to 9), and
  // SUANLI_TEST_PG_RESTART=0 cuts the database in the last round too. The restart needs the
  // server of tests/tools/with_postgres.sh (SUANLI_TEST_PG_DIR); elsewhere every round is a cut.
  const char* outages = std::getenv("SUANLI_TEST_PG_OUTAGES");
  int rounds = 3;
  if (outages != nullptr && *outages >= '1' && *outages <= '9' && outages[1] == '\0') {
    rounds = *outages - '0';
  }
  const char* restart = std::getenv("SUANLI_TEST_PG_RESTART");
  const char* pg_dir = std::getenv("SUANLI_TEST_PG_DIR");
  const bool restart_last =
      rounds > 1 && pg_dir != nullptr && (restart == nullptr || std::string(restart) != "0");
  for (int round = 0; round < rounds; ++round) {
    std::atomic<bool> stop{false};
    std::atomic<int> acks{0};
    std::vector<std::thread> workers;
    workers.reserve(kWorkers);
    for (int i = 0; i < kWorkers; ++i) {
      workers.emplace_back(Load, p.port(), keys[static_cast<size_t>(i)], round * 100 + i, &stop,
                           &acked, &acks);
    }
    const absl::Time warmup = absl::Now() + absl::Seconds(30);
    while (acks.load() < 50 && absl::Now() < warmup) absl::SleepFor(absl::Milliseconds(1));
    if (acks.load() < 50) {
      stop = true;
      for (std::thread& t : workers) t.join();
      FAIL() << "round " << round << ": only " << acks.load()
             << " acknowledgements in 30 s before the outage; the clients' failed calls: "
             << TakeFailures(acked);
    }
    const std::string db = pg_->name();
    int during = 0;
    if (round != rounds - 1 || !restart_last) {
      // The database goes away under load: every connection to it is cut and new ones refused.
      storage::PostgresExec(storage::PostgresAdminUrl(),
                            absl::StrCat("ALTER DATABASE ", db, " ALLOW_CONNECTIONS false"));
      storage::PostgresExec(storage::PostgresAdminUrl(),
                            absl::StrCat("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                         "WHERE datname = '",
                                         db, "' AND pid <> pg_backend_pid()"));
      absl::SleepFor(absl::Seconds(2));
      during = acks.load();
      // A client's call while the database is away: UNAVAILABLE, nothing allocated...
      v1::AllocateRequest retried = Gang(8, absl::Hours(1), kPrice);
      retried.mutable_request()->set_gpus_per_node(0);
      retried.mutable_request()->set_locality(v1::LOCALITY_ANY);
      retried.mutable_request()->set_idempotency_key("retried-through-the-outage");
      EXPECT_EQ(ConnectOnce(p.port(), keys[0])->Allocate(retried).status().code(),
                absl::StatusCode::kUnavailable);
      absl::SleepFor(absl::Milliseconds(500));
      EXPECT_EQ(acks.load(), during) << "acknowledged while the database was away";
      storage::PostgresExec(storage::PostgresAdminUrl(),
                            absl::StrCat("ALTER DATABASE ", db, " ALLOW_CONNECTIONS true"));
      // ...and its retries with the same key succeed once it is back, allocating once (in later
      // rounds they return the allocation of the first). (The broker retries the store with
      // backoff up to 2 s; the SDK retries UNAVAILABLE.)
      ClientOptions patient;
      patient.target = absl::StrCat("127.0.0.1:", p.port());
      patient.api_key = keys[0];
      patient.max_attempts = 30;
      std::unique_ptr<Client> retrier = *Client::Connect(patient);
      absl::StatusOr<v1::Allocation> first = retrier->Allocate(retried);
      EXPECT_TRUE(first.ok()) << first.status();
      absl::StatusOr<v1::Allocation> again = retrier->Allocate(retried);
      EXPECT_TRUE(again.ok()) << again.status();
      if (first.ok() && again.ok()) {
        EXPECT_EQ(again->id(), first->id());
      }
    } else {
      // The database server crashes under load (immediate shutdown: crash recovery at start)
      // and comes back. This test binary runs alone (RUN_SERIAL), so no other test loses it.
      const std::string ctl = absl::StrCat(
          geteuid() == 0 ? "runuser -u postgres -- " : "", "/usr/lib/postgresql/15/bin/pg_ctl -D ",
          pg_dir, "/data -l ", pg_dir, "/server.log -m immediate -w -t 60 restart </dev/null >",
          pg_dir, "/restart.log 2>&1");
      auto started = [] {
        return storage::PostgresExec(storage::PostgresAdminUrl(),
                                     "SELECT pg_postmaster_start_time()::text")[0][0]
            .as<std::string>();
      };
      const std::string before = started();
      ASSERT_EQ(system(ctl.c_str()), 0) << "pg_ctl restart failed: " << ctl;
      EXPECT_NE(started(), before) << "the server did not restart";
      during = acks.load();
    }
    // It comes back by itself: calls succeed again without a restart of the broker.
    const absl::Time back = absl::Now();
    TakeFailures(acked);  // from here on: what the clients see once the database is back
    const absl::Time deadline = back + absl::Seconds(30);
    while (acks.load() < during + 50 && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    EXPECT_GE(acks.load(), during + 50)
        << "round " << round << ": the broker did not resume after the database came back at "
        << absl::FormatTime("%H:%M:%E3S", back, absl::UTCTimeZone()) << " UTC (only "
        << acks.load() - during
        << " allocations acknowledged in 30 s); the clients' failed calls: " << TakeFailures(acked);
    stop = true;
    for (std::thread& t : workers) t.join();
  }
  CheckAcknowledged(p.port(), keys, acked);
  p.Kill(SIGTERM);
  absl::StatusOr<std::unique_ptr<broker::Broker>> b = broker::Broker::Start(InProcess());
  ASSERT_TRUE(b.ok()) << b.status();
  absl::StatusOr<int64_t> violations = (*b)->engine().Run<int64_t>(
      [](broker::Market& m, absl::Time, storage::Batch*) -> absl::StatusOr<int64_t> {
        return m.Audit().violations + LedgerProblems(m);
      });
  ASSERT_TRUE(violations.ok());
  EXPECT_EQ(*violations, 0);
}

TEST(Process, SigtermFinishesCallsInFlightAndExitsCleanly) {
  TempDir dir;
  BrokerProcess p(dir, FreePort());
  p.Start();
  std::unique_ptr<Client> admin = Connect(p.port(), ReadAll(dir.File("admin.key")));
  std::unique_ptr<Client> op = Connect(p.port(), NewAccount(*admin, v1::ROLE_OPERATOR, "op"));
  SmallMarket(*op, "c1", 128, kPrice / 2);
  const std::string key = NewAccount(*admin, v1::ROLE_BUYER, "buyer");
  Acked acked;
  std::atomic<bool> stop{false};
  std::atomic<int> acks{0};
  std::vector<std::thread> workers;
  workers.reserve(4);
  for (int i = 0; i < 4; ++i) workers.emplace_back(Load, p.port(), key, i, &stop, &acked, &acks);
  while (acks.load() < 50) absl::SleepFor(absl::Milliseconds(1));
  const int status = p.Kill(SIGTERM);
  stop = true;
  for (std::thread& t : workers) t.join();
  ASSERT_TRUE(WIFEXITED(status)) << "suanlid did not exit by itself on SIGTERM";
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_THAT(ReadAll(dir.File("suanlid.log")), ::testing::HasSubstr("stopped"));

  p.Start();
  std::unique_ptr<Client> b = Connect(p.port(), key);
  for (const auto& [id, a] : acked.allocations) {
    v1::GetAllocationRequest g;
    g.set_allocation_id(id);
    absl::StatusOr<v1::Allocation> got = b->GetAllocation(g);
    ASSERT_TRUE(got.ok()) << id << ": " << got.status();
    EXPECT_EQ(got->slices_size(), a.slices_size());
  }
}

TEST(Process, TlsServesOnlyClientsThatTrustItsCertificate) {
  TempDir dir;
  const std::string cert = dir.File("cert.pem"), key = dir.File("key.pem");
  const std::string cmd = absl::StrCat(
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext "
      "subjectAltName=IP:127.0.0.1,DNS:localhost -keyout ",
      key, " -out ", cert, " >/dev/null 2>&1");
  ASSERT_EQ(system(cmd.c_str()), 0) << "openssl could not make a certificate";
  broker::BrokerOptions o = OptionsIn(dir);
  o.tls_cert_file = cert;
  o.tls_key_file = key;
  absl::StatusOr<std::unique_ptr<broker::Broker>> b = broker::Broker::Start(o);
  ASSERT_TRUE(b.ok()) << b.status();
  const std::string admin_key = ReadAll(dir.File("admin.key"));
  std::unique_ptr<Client> trusted = Connect((*b)->port(), admin_key, cert);
  absl::StatusOr<v1::PingResponse> ping = trusted->Ping();
  ASSERT_TRUE(ping.ok()) << ping.status();
  EXPECT_EQ(ping->role(), "admin");
  // Plaintext against the TLS port fails.
  ClientOptions plain;
  plain.target = absl::StrCat("127.0.0.1:", (*b)->port());
  plain.api_key = admin_key;
  plain.timeout = absl::Seconds(2);
  plain.max_attempts = 1;
  absl::StatusOr<std::unique_ptr<Client>> c = Client::Connect(plain);
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE((*c)->Ping().ok());
  // A client that trusts another CA fails too.
  const std::string other = dir.File("other.pem");
  ASSERT_EQ(system(absl::StrCat("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "
                                "/CN=other -keyout ",
                                dir.File("other.key"), " -out ", other, " >/dev/null 2>&1")
                       .c_str()),
            0);
  ClientOptions wrong = plain;
  wrong.ca_file = other;
  c = Client::Connect(wrong);
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE((*c)->Ping().ok());
}

}  // namespace
}  // namespace suanli::e2e
