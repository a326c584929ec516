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
  store_->Hold();
  const int entered = store_->entered();
  absl::StatusOr<v1::CreateAccountResponse> first;
  std::thread a([&] { first = CreateBuyer("buyer-a"); });
  ASSERT_TRUE(store_->AwaitEntered(entered + 1));  // the first batch waits at the gate

  absl::Notification second_decided;
  absl::StatusOr<v1::CreateAccountResponse> second;
  std::thread b([&] { second = CreateBuyer("buyer-b", &second_decided); });
  // Decided while the first batch's commit has not returned.
  EXPECT_TRUE(second_decided.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(store_->entered(), entered + 1);
  store_->Open(/*fail_first=*/false);
  a.join();
  b.join();
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_GE(engine_->stats().overlapped, 1);
}

TEST_F(EngineTest, BatchesDecidedWhileTheWriterIsBusyShareOneCommit) {
  store_->Hold();
  const int entered = store_->entered();
  const int64_t commits = engine_->stats().commits;
  absl::StatusOr<v1::CreateAccountResponse> first;
  std::thread a([&] { first = CreateBuyer("buyer-a"); });
  ASSERT_TRUE(store_->AwaitEntered(entered + 1));

  // Two more batches, decided one after the other while the first is at the gate.
  absl::Notification second_decided;
  absl::StatusOr<v1::CreateAccountResponse> second;
  std::thread b([&] { second = CreateBuyer("buyer-b", &second_decided); });
  ASSERT_TRUE(second_decided.WaitForNotificationWithTimeout(absl::Seconds(30)));
  absl::Notification third_decided;
  absl::StatusOr<v1::CreateAccountResponse> third;
  std::thread c([&] { third = CreateBuyer("buyer-c", &third_decided); });
  ASSERT_TRUE(third_decided.WaitForNotificationWithTimeout(absl::Seconds(30)));

  store_->Open(/*fail_first=*/false);
  a.join();
  b.join();
  c.join();
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(engine_->stats().commits - commits, 2);  // the first, then the other two together
  EXPECT_EQ(store_->entered(), entered + 2);
  std::vector<std::string> names = AccountNames();
  for (const char* name : {"buyer-a", "buyer-b", "buyer-c"}) {
    EXPECT_EQ(std::count(names.begin(), names.end(), name), 1) << name;
  }
}

TEST_F(EngineTest, ReadAfterAnUnfinishedCommitWaitsForIt) {
  store_->Hold();
  const int entered = store_->entered();
  const int durable = store_->durable();
  absl::StatusOr<v1::CreateAccountResponse> first;
  std::thread a([&] { first = CreateBuyer("buyer-a"); });
  ASSERT_TRUE(store_->AwaitEntered(entered + 1));

  // A read decided after the write sees it, so it may be answered only once the write is
  // durable, although it writes nothing itself.
  int durable_when_answered = -1;
  bool saw_write = false;
  std::thread b([&] {
    std::vector<std::string> names = AccountNames();
    durable_when_answered = store_->durable();
    for (const std::string& n : names) saw_write = saw_write || n == "buyer-a";
  });
  store_->Open(/*fail_first=*/false);
  a.join();
  b.join();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(saw_write);
  EXPECT_GT(durable_when_answered, durable);
}

TEST_F(EngineTest, FailedCommitFailsTheBatchesDecidedOnItAndRebuilds) {
  store_->Hold();
  const int entered = store_->entered();
  absl::StatusOr<v1::CreateAccountResponse> first;
  std::thread a([&] { first = CreateBuyer("buyer-a"); });
  ASSERT_TRUE(store_->AwaitEntered(entered + 1));
  absl::Notification second_decided;
  absl::StatusOr<v1::CreateAccountResponse> second;
  std::thread b([&] { second = CreateBuyer("buyer-b", &second_decided); });
  ASSERT_TRUE(second_decided.WaitForNotificationWithTimeout(absl::Seconds(30)));

  store_->Open(/*fail_first=*/true);  // the first batch's commit fails
  a.join();
  b.join();
  EXPECT_EQ(first.status().code(), absl::StatusCode::kUnavailable) << first.status();
  // The second was decided on a market holding buyer-a: it must not be stored either.
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();

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
  absl::StatusOr<std::unique_ptr<storage::SqliteStore>> check = storage::SqliteStore::Open(path_);
  ASSERT_TRUE(check.ok()) << check.status();
  absl::StatusOr<storage::Contents> contents = (*check)->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  int a_rows = 0;
  int b_rows = 0;
  for (const storage::AccountRow& row : contents->accounts) {
    a_rows += row.name == "buyer-a" ? 1 : 0;
    b_rows += row.name == "buyer-b" ? 1 : 0;
  }
  EXPECT_EQ(a_rows, 0);
  EXPECT_EQ(b_rows, 1);
}

TEST_F(EngineTest, StopCommitsWhatIsQueued) {
  store_->Hold();
  const int entered = store_->entered();
  absl::StatusOr<v1::CreateAccountResponse> first;
  std::thread a([&] { first = CreateBuyer("buyer-a"); });
  ASSERT_TRUE(store_->AwaitEntered(entered + 1));
  absl::Notification second_decided;
  absl::StatusOr<v1::CreateAccountResponse> second;
  std::thread b([&] { second = CreateBuyer("buyer-b", &second_decided); });
  ASSERT_TRUE(second_decided.WaitForNotificationWithTimeout(absl::Seconds(30)));
  std::thread stopper([&] { engine_->Stop(); });
  store_->Open(/*fail_first=*/false);
  stopper.join();
  a.join();
  b.join();
  EXPECT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(second.ok()) << second.status();
  absl::StatusOr<std::unique_ptr<storage::SqliteStore>> check = storage::SqliteStore::Open(path_);
  ASSERT_TRUE(check.ok()) << check.status();
  absl::StatusOr<storage::Contents> contents = (*check)->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  int stored = 0;
  for (const storage::AccountRow& row : contents->accounts) {
    stored += row.name == "buyer-a" || row.name == "buyer-b" ? 1 : 0;
  }
  EXPECT_EQ(stored, 2);
}

}  // namespace
}  // namespace suanli::broker
