// Tests broker/engine.h: answers only after their batch and every earlier one are durable, the
// next batch is decided while one is being committed, and a failed commit fails the batches
// decided on top of it and rebuilds the market from the store.
#include "broker/engine.h"

#include <algorithm>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "broker/auth.h"
#include "broker/market.h"
#include "gtest/gtest.h"
#include "storage/sqlite/sqlite_store.h"
#include "storage/store.h"
#include "tests/storage/temp_dir.h"

namespace suanli::broker {
namespace {

// A real SQLite store whose commits can be held at a gate and made to fail, and which counts the
// commits that have returned OK.
class GatedStore : public storage::Store {
 public:
  explicit GatedStore(std::unique_ptr<storage::Store> inner) : inner_(std::move(inner)) {}

  absl::Status Commit(const storage::Batch& batch) override {
    absl::MutexLock lock(&mu_);
    ++entered_;
    auto open = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return !held_; };
    mu_.Await(absl::Condition(&open));
    if (fail_next_) {
      fail_next_ = false;
      return absl::UnavailableError("the test took the store away");
    }
    absl::Status s = inner_->Commit(batch);
    if (s.ok()) ++durable_;
    return s;
  }
  absl::StatusOr<storage::Contents> Load() override { return inner_->Load(); }
  std::string Describe() const override { return inner_->Describe(); }

  // Commits from now on wait at the gate until Open.
  void Hold() {
    absl::MutexLock lock(&mu_);
    held_ = true;
  }
  void Open(bool fail_first) {
    absl::MutexLock lock(&mu_);
    fail_next_ = fail_first;
    held_ = false;
  }
  // Waits until `n` commits have been entered (returned or waiting at the gate).
  bool AwaitEntered(int n) {
    absl::MutexLock lock(&mu_);
    auto reached = [this, n]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return entered_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), absl::Seconds(30));
  }
  int entered() {
    absl::MutexLock lock(&mu_);
    return entered_;
  }
  int durable() {
    absl::MutexLock lock(&mu_);
    return durable_;
  }

 private:
  std::unique_ptr<storage::Store> inner_;
  absl::Mutex mu_;
  bool held_ ABSL_GUARDED_BY(mu_) = false;
  bool fail_next_ ABSL_GUARDED_BY(mu_) = false;
  int entered_ ABSL_GUARDED_BY(mu_) = 0;
  int durable_ ABSL_GUARDED_BY(mu_) = 0;
};

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    path_ = dir_.path() + "/engine.db";
    absl::StatusOr<std::unique_ptr<storage::SqliteStore>> inner = storage::SqliteStore::Open(path_);
    ASSERT_TRUE(inner.ok()) << inner.status();
    auto gated = std::make_unique<GatedStore>(*std::move(inner));
    store_ = gated.get();
    engine_ = std::make_unique<Engine>(std::move(gated), &keys_);
    const NewKey admin = MakeKey();
    absl::StatusOr<std::string> made = engine_->Start(admin);
    ASSERT_TRUE(made.ok()) << made.status();
    absl::StatusOr<Principal> p = keys_.Authenticate("Bearer " + admin.key);
    ASSERT_TRUE(p.ok()) << p.status();
    admin_ = *p;
  }

  // Creates a buyer account named `name` through the engine; `decided` (when given) is notified
  // once the engine has applied the call, before its commit.
  absl::StatusOr<v1::CreateAccountResponse> CreateBuyer(const std::string& name,
                                                        absl::Notification* decided = nullptr) {
    v1::CreateAccountRequest r;
    r.set_role(v1::ROLE_BUYER);
    r.set_name(name);
    return engine_->Run<v1::CreateAccountResponse>(
        [&, decided](Market& m, absl::Time now, storage::Batch* b) {
          absl::StatusOr<v1::CreateAccountResponse> out = m.CreateAccount(admin_, r, now, b);
          if (decided != nullptr) decided->Notify();
          return out;
        });
  }

  std::vector<std::string> AccountNames() {
    absl::StatusOr<v1::ListAccountsResponse> list = engine_->Run<v1::ListAccountsResponse>(
        [&](Market& m, absl::Time, storage::Batch*) { return m.ListAccounts(admin_); });
    std::vector<std::string> names;
    if (list.ok()) {
      for (const v1::Account& a : list->accounts()) names.push_back(a.name());
    }
    return names;
  }

  // A CreateBuyer call running on a thread of its own.
  struct PendingCall {
    absl::StatusOr<v1::CreateAccountResponse> result;
    std::thread thread;
    const absl::StatusOr<v1::CreateAccountResponse>& Join() {
      thread.join();
      return result;
    }
  };
  std::unique_ptr<PendingCall> Begin(const std::string& name, absl::Notification* decided) {
    auto call = std::make_unique<PendingCall>();
    PendingCall* c = call.get();
    c->thread = std::thread([this, c, name, decided] { c->result = CreateBuyer(name, decided); });
    return call;
  }
  // Holds the store's gate and starts a call whose commit then waits at it.
  std::unique_ptr<PendingCall> BeginAtGate(const std::string& name) {
    store_->Hold();
    const int entered = store_->entered();
    std::unique_ptr<PendingCall> call = Begin(name, nullptr);
    EXPECT_TRUE(store_->AwaitEntered(entered + 1)) << name << " never reached the store";
    return call;
  }
  // Starts a call and returns once the engine has decided it (its commit may still be ahead).
  std::unique_ptr<PendingCall> BeginDecided(const std::string& name) {
    absl::Notification decided;
    std::unique_ptr<PendingCall> call = Begin(name, &decided);
    EXPECT_TRUE(decided.WaitForNotificationWithTimeout(absl::Seconds(30)))
        << name << " was not decided while an earlier batch was being committed";
    return call;
  }

  // The account names in the database file, read with a connection of its own (after Stop).
  std::vector<std::string> StoredNames() {
    absl::StatusOr<std::unique_ptr<storage::SqliteStore>> check = storage::SqliteStore::Open(path_);
    EXPECT_TRUE(check.ok()) << check.status();
    if (!check.ok()) return {};
    absl::StatusOr<storage::Contents> contents = (*check)->Load();
    EXPECT_TRUE(contents.ok()) << contents.status();
    std::vector<std::string> names;
    if (contents.ok()) {
      for (const storage::AccountRow& row : contents->accounts) names.push_back(row.name);
    }
    return names;
  }

  storage::TempDir dir_;
  std::string path_;
  KeyRing keys_;
  GatedStore* store_ = nullptr;
  std::unique_ptr<Engine> engine_;
  Principal admin_;
};

TEST_F(EngineTest, AnswersOnlyOnceTheBatchIsDurable) {
  const int before = store_->durable();
  absl::StatusOr<v1::CreateAccountResponse> made = CreateBuyer("buyer-a");
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_GT(store_->durable(), before);
}

TEST_F(EngineTest, DecidesTheNextBatchWhileOneIsBeingCommitted) {
  const int entered = store_->entered();
  std::unique_ptr<PendingCall> first = BeginAtGate("buyer-a");
  std::unique_ptr<PendingCall> second = BeginDecided("buyer-b");
  EXPECT_EQ(store_->entered(), entered + 1);  // the first batch's commit has not returned
  store_->Open(/*fail_first=*/false);
  ASSERT_TRUE(first->Join().ok()) << first->result.status();
  ASSERT_TRUE(second->Join().ok()) << second->result.status();
  EXPECT_GE(engine_->stats().overlapped, 1);
}

TEST_F(EngineTest, BatchesDecidedWhileTheWriterIsBusyShareOneCommit) {
  const int entered = store_->entered();
  const int64_t commits = engine_->stats().commits;
  std::unique_ptr<PendingCall> first = BeginAtGate("buyer-a");
  // Two more batches, decided one after the other while the first is at the gate.
  std::unique_ptr<PendingCall> second = BeginDecided("buyer-b");
  std::unique_ptr<PendingCall> third = BeginDecided("buyer-c");
  store_->Open(/*fail_first=*/false);
  ASSERT_TRUE(first->Join().ok()) << first->result.status();
  ASSERT_TRUE(second->Join().ok()) << second->result.status();
  ASSERT_TRUE(third->Join().ok()) << third->result.status();
  EXPECT_EQ(engine_->stats().commits - commits, 2);  // the first, then the other two together
  EXPECT_EQ(store_->entered(), entered + 2);
  std::vector<std::string> names = AccountNames();
  for (const char* name : {"buyer-a", "buyer-b", "buyer-c"}) {
    EXPECT_EQ(std::count(names.begin(), names.end(), name), 1) << name;
  }
}

TEST_F(EngineTest, ReadAfterAnUnfinishedCommitWaitsForIt) {
  const int durable = store_->durable();
  std::unique_ptr<PendingCall> first = BeginAtGate("buyer-a");
  // A read decided after the write sees it, so it may be answered only once the write is
  // durable, although it writes nothing itself.
  int durable_when_answered = -1;
  std::vector<std::string> names;
  std::thread read([&] {
    names = AccountNames();
    durable_when_answered = store_->durable();
  });
  store_->Open(/*fail_first=*/false);
  read.join();
  ASSERT_TRUE(first->Join().ok()) << first->result.status();
  EXPECT_EQ(std::count(names.begin(), names.end(), "buyer-a"), 1);
  EXPECT_GT(durable_when_answered, durable);
}

TEST_F(EngineTest, FailedCommitFailsTheBatchesDecidedOnItAndRebuilds) {
  std::unique_ptr<PendingCall> first = BeginAtGate("buyer-a");
  std::unique_ptr<PendingCall> second = BeginDecided("buyer-b");
  store_->Open(/*fail_first=*/true);  // the first batch's commit fails
  EXPECT_EQ(first->Join().status().code(), absl::StatusCode::kUnavailable)
      << first->result.status();
  // The second was decided on a market holding buyer-a: it must not be stored either.
  EXPECT_EQ(second->Join().status().code(), absl::StatusCode::kUnavailable)
      << second->result.status();

  // Once rebuilt, the market holds neither, and both names can be taken again.
  absl::StatusOr<v1::CreateAccountResponse> again;
  for (int i = 0; i < 300; ++i) {
    again = CreateBuyer("buyer-b");
    if (again.status().code() != absl::StatusCode::kUnavailable) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_TRUE(again.ok()) << again.status();
  std::vector<std::string> names = AccountNames();
  EXPECT_EQ(std::count(names.begin(), names.end(), "buyer-a"), 0);
  EXPECT_EQ(std::count(names.begin(), names.end(), "buyer-b"), 1);
  EXPECT_EQ(engine_->stats().commit_failures, 1);

  // And the store agrees: what was refused is not there.
  engine_->Stop();
  names = StoredNames();
  EXPECT_EQ(std::count(names.begin(), names.end(), "buyer-a"), 0);
  EXPECT_EQ(std::count(names.begin(), names.end(), "buyer-b"), 1);
}

TEST_F(EngineTest, StopCommitsWhatIsQueued) {
  std::unique_ptr<PendingCall> first = BeginAtGate("buyer-a");
  std::unique_ptr<PendingCall> second = BeginDecided("buyer-b");
  std::thread stopper([&] { engine_->Stop(); });
  store_->Open(/*fail_first=*/false);
  stopper.join();
  EXPECT_TRUE(first->Join().ok()) << first->result.status();
  EXPECT_TRUE(second->Join().ok()) << second->result.status();
  std::vector<std::string> names = StoredNames();
  EXPECT_EQ(std::count(names.begin(), names.end(), "buyer-a"), 1);
  EXPECT_EQ(std::count(names.begin(), names.end(), "buyer-b"), 1);
}

}  // namespace
}  // namespace suanli::broker
