// The books and the figures end to end: a known market run through the broker (sale, extension,
// early release, a lapsed hold), then the ledger balances to the micro-unit, each allocation's
// entries add up to its final price, and GetMarketStats reports the figures the market implies,
// also after a restart (decision counts and latencies included: they are stored per minute).
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "storage/store.h"
#include "tests/e2e/harness.h"

namespace suanli::e2e {
namespace {

constexpr int64_t kPrice = 25'500'000;  // 25.50 per GPU-hour

class StatsTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(); }
  void Start() {
    absl::StatusOr<std::unique_ptr<broker::Broker>> b = broker::Broker::Start(OptionsIn(dir_));
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = *std::move(b);
    admin_ = Connect(broker_->port(), ReadAll(dir_.File("admin.key")));
  }
  std::vector<storage::LedgerEntryRow> Ledger() {
    absl::StatusOr<std::vector<storage::LedgerEntryRow>> l =
        broker_->engine().Run<std::vector<storage::LedgerEntryRow>>(
            [](broker::Market& m, absl::Time,
               storage::Batch*) -> absl::StatusOr<std::vector<storage::LedgerEntryRow>> {
              return m.Ledger();
            });
    EXPECT_TRUE(l.ok());
    return l.ok() ? *l : std::vector<storage::LedgerEntryRow>();
  }

  TempDir dir_;
  std::unique_ptr<broker::Broker> broker_;
  std::unique_ptr<Client> admin_;
};

TEST_F(StatsTest, LedgerBalancesAndFiguresFollowTheMarket) {
  const std::string op_key = NewAccount(*admin_, v1::ROLE_OPERATOR, "op-a");
  const std::string buyer_key = NewAccount(*admin_, v1::ROLE_BUYER, "buyer-a");
  std::unique_ptr<Client> op = Connect(broker_->port(), op_key);
  std::unique_ptr<Client> buyer = Connect(broker_->port(), buyer_key);
  SmallMarket(*op, "c-a", 4, kPrice);  // 32 GPUs

  // A sale of 16 GPUs for 2 h, extended by 1 h; a sale of 8 GPUs released at once; a hold that
  // lapses; a rejection.
  absl::StatusOr<v1::Allocation> a = buyer->Allocate(Gang(16, absl::Hours(2), 30'000'000));
  ASSERT_TRUE(a.ok()) << a.status();
  v1::ExtendAllocationRequest e;
  e.set_allocation_id(a->id());
  *e.mutable_by() = Dur(absl::Hours(1));
  absl::StatusOr<v1::Allocation> ext = buyer->ExtendAllocation(e);
  ASSERT_TRUE(ext.ok()) << ext.status();
  absl::StatusOr<v1::Allocation> b = buyer->Allocate(Gang(8, absl::Hours(4), 30'000'000));
  ASSERT_TRUE(b.ok()) << b.status();
  v1::ReleaseAllocationRequest rel;
  rel.set_allocation_id(b->id());
  absl::StatusOr<v1::Allocation> released = buyer->ReleaseAllocation(rel);
  ASSERT_TRUE(released.ok()) << released.status();
  v1::QuoteRequest q;
  *q.mutable_request() = Gang(8, absl::Hours(1), 30'000'000).request();
  *q.mutable_hold() = Dur(absl::Milliseconds(200));
  absl::StatusOr<v1::QuoteResponse> held = buyer->Quote(q);
  ASSERT_TRUE(held.ok() && held->available());
  EXPECT_EQ(buyer->Allocate(Gang(64, absl::Hours(1), 30'000'000)).status().code(),
            absl::StatusCode::kResourceExhausted);
  absl::SleepFor(absl::Milliseconds(400));  // the hold lapses

  const int64_t charged = ext->total_price_micros() + released->total_price_micros();
  EXPECT_EQ(ext->total_price_micros(), 16 * kPrice * 3);
  for (int pass = 0; pass < 2; ++pass) {
    SCOPED_TRACE(pass == 0 ? "before restart" : "after restart");
    // The books: every entry balances, and each allocation's entries add up to its price.
    std::map<std::string, int64_t> by_account;
    int64_t sum = 0;
    for (const storage::LedgerEntryRow& entry : Ledger()) {
      int64_t legs = 0;
      for (const auto& leg : entry.legs) {
        legs += leg.amount_micros;
        by_account[leg.account] += leg.amount_micros;
      }
      EXPECT_EQ(legs, 0) << "entry " << entry.id;
      sum += legs;
    }
    EXPECT_EQ(sum, 0);
    EXPECT_EQ(by_account["buyer:" + a->buyer_id()], -charged);
    const int64_t commission = by_account["commission:" + op->Ping()->account_id()];
    EXPECT_EQ(by_account["operator:" + op->Ping()->account_id()] + commission, charged);
    // 8% of each sale's operator share, floored per entry: within a micro-unit per entry.
    EXPECT_NEAR(static_cast<double>(commission), charged * 0.08, 4.0);

    v1::GetMarketStatsRequest r;
    *r.mutable_from() = Ts(absl::Now() - absl::Hours(1));
    *r.mutable_to() = Ts(absl::Now() + absl::Hours(4));
    absl::StatusOr<v1::GetMarketStatsResponse> stats = admin_->GetMarketStats(r);
    ASSERT_TRUE(stats.ok()) << stats.status();
    ASSERT_EQ(stats->rows_size(), 1);
    const v1::MarketStatsRow& row = stats->rows(0);
    EXPECT_EQ(row.gmv_micros(), charged);
    EXPECT_EQ(row.commission_micros(), commission);
    // 16 GPUs for 3 h are sold inside the range (the released one sold next to nothing).
    EXPECT_NEAR(row.sold_gpu_hours(), 48.0, 0.1);
    EXPECT_GT(row.offered_gpu_hours(), row.sold_gpu_hours());
    EXPECT_EQ(row.grants(), 3);    // two sales and the hold
    EXPECT_EQ(row.requests(), 4);  // and the rejection
    EXPECT_EQ(stats->decisions_timed(), 4);
    // Operators see their own figures; buyers none.
    absl::StatusOr<v1::GetMarketStatsResponse> own =
        Connect(broker_->port(), op_key)->GetMarketStats(r);
    ASSERT_TRUE(own.ok()) << own.status();
    EXPECT_EQ(Connect(broker_->port(), buyer_key)->GetMarketStats(r).status().code(),
              absl::StatusCode::kPermissionDenied);
    if (pass == 0) {
      broker_->Shutdown();
      broker_.reset();
      Start();
      op = Connect(broker_->port(), op_key);
    }
  }
}

// A node taken off the market still counts as offered in the periods it was on sale in (also
// after a restart, which rebuilds the market from the capacity journal); after its removal it
// counts no more.
TEST_F(StatsTest, RemovedNodeStillCountsAsOfferedBeforeItsRemoval) {
  const std::string op_key = NewAccount(*admin_, v1::ROLE_OPERATOR, "op-r");
  std::unique_ptr<Client> op = Connect(broker_->port(), op_key);
  const absl::Time t0 = absl::Now();
  SmallMarket(*op, "c-r", 4, kPrice);  // 32 GPUs
  // Periods are asked in whole seconds (Ts): end the first one a whole second after the offer
  // began, and remove the node after that.
  const absl::Time t1 = absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now()) + 2);
  while (absl::Now() <= t1) absl::SleepFor(absl::Milliseconds(50));
  auto offered = [&](absl::Time from, absl::Time to) {
    v1::GetMarketStatsRequest r;
    *r.mutable_from() = Ts(from);
    *r.mutable_to() = Ts(to);
    absl::StatusOr<v1::GetMarketStatsResponse> stats = admin_->GetMarketStats(r);
    EXPECT_TRUE(stats.ok()) << stats.status();
    return stats.ok() && stats->rows_size() == 1 ? stats->rows(0).offered_gpu_hours() : -1.0;
  };
  const double before = offered(t0 - absl::Hours(1), t1);
  ASSERT_GT(before, 0);
  v1::RemoveNodeRequest rm;
  rm.set_node_id("c-r-n0");
  ASSERT_TRUE(op->RemoveNode(rm).ok());
  const absl::Time removed = absl::Now();
  for (int pass = 0; pass < 2; ++pass) {
    SCOPED_TRACE(pass == 0 ? "before restart" : "after restart");
    EXPECT_NEAR(offered(t0 - absl::Hours(1), t1), before, 1e-9);
    // Four hours after the removal: the three nodes left, 24 GPUs.
    EXPECT_NEAR(offered(removed, removed + absl::Hours(4)), 24 * 4.0, 0.01);
    if (pass == 0) {
      broker_->Shutdown();
      broker_.reset();
      Start();
    }
  }
}

// The decision figures (requests, grants, rejections by reason, latency percentiles) are stored
// per minute with each batch: a broker restarted on the same store reports the same ones over the
// same range, and goes on counting on top of them.
TEST_F(StatsTest, DecisionFiguresSurviveARestart) {
  const std::string op_key = NewAccount(*admin_, v1::ROLE_OPERATOR, "op-d");
  const std::string buyer_key = NewAccount(*admin_, v1::ROLE_BUYER, "buyer-d");
  std::unique_ptr<Client> op = Connect(broker_->port(), op_key);
  std::unique_ptr<Client> buyer = Connect(broker_->port(), buyer_key);
  SmallMarket(*op, "c-d", 4, kPrice);  // 32 GPUs

  int64_t granted = 0;
  int64_t refused = 0;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<v1::Allocation> a = buyer->Allocate(Gang(8, absl::Hours(1), 30'000'000));
    ASSERT_TRUE(a.ok()) << a.status();
    ++granted;
  }
  // Too many GPUs, twice; a ceiling below the ask, once.
  for (int i = 0; i < 2; ++i) {
    EXPECT_FALSE(buyer->Allocate(Gang(64, absl::Hours(1), 30'000'000)).ok());
    ++refused;
  }
  EXPECT_FALSE(buyer->Allocate(Gang(8, absl::Hours(1), 1'000'000)).ok());
  ++refused;

  v1::GetMarketStatsRequest r;
  *r.mutable_from() = Ts(absl::Now() - absl::Hours(1));
  *r.mutable_to() = Ts(absl::Now() + absl::Hours(1));
  absl::StatusOr<v1::GetMarketStatsResponse> before = admin_->GetMarketStats(r);
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_EQ(before->rows_size(), 1);
  const v1::MarketStatsRow& row = before->rows(0);
  EXPECT_EQ(row.requests(), granted + refused);
  EXPECT_EQ(row.grants(), granted);
  int64_t rejections = 0;
  for (const auto& [reason, n] : row.rejections_by_reason()) rejections += n;
  EXPECT_EQ(rejections, refused);
  EXPECT_GE(row.rejections_by_reason_size(), 2);  // capacity and price
  EXPECT_EQ(before->decisions_timed(), granted + refused);
  EXPECT_GT(before->decision_p999_us(), 0.0);

  broker_->Shutdown();
  broker_.reset();
  Start();
  absl::StatusOr<v1::GetMarketStatsResponse> after = admin_->GetMarketStats(r);
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_EQ(after->rows_size(), 1);
  EXPECT_EQ(after->rows(0).requests(), row.requests());
  EXPECT_EQ(after->rows(0).grants(), row.grants());
  EXPECT_EQ((std::map<std::string, int64_t>(after->rows(0).rejections_by_reason().begin(),
                                            after->rows(0).rejections_by_reason().end())),
            (std::map<std::string, int64_t>(row.rejections_by_reason().begin(),
                                            row.rejections_by_reason().end())));
  EXPECT_EQ(after->decisions_timed(), before->decisions_timed());
  EXPECT_EQ(after->decision_p50_us(), before->decision_p50_us());
  EXPECT_EQ(after->decision_p99_us(), before->decision_p99_us());
  EXPECT_EQ(after->decision_p999_us(), before->decision_p999_us());

  // Counting goes on on top of what was stored.
  buyer = Connect(broker_->port(), buyer_key);
  EXPECT_FALSE(buyer->Allocate(Gang(64, absl::Hours(1), 30'000'000)).ok());
  absl::StatusOr<v1::GetMarketStatsResponse> more = admin_->GetMarketStats(r);
  ASSERT_TRUE(more.ok()) << more.status();
  EXPECT_EQ(more->rows(0).requests(), row.requests() + 1);
  EXPECT_EQ(more->decisions_timed(), before->decisions_timed() + 1);
}

// A stored minute whose counts do not decode stops the start with DATA_LOSS naming the minute.
TEST_F(StatsTest, UndecodableDecisionCountsAreDataLoss) {
  broker_->Shutdown();
  broker_.reset();
  const std::string good = "suanli-decisions 1\nrequests 1\ngrants 1\nlatency 5 5\nbucket 5 1\n";
  for (const std::string& bad : std::vector<std::string>{
           "", "suanli-decisions 2\nrequests 1\ngrants 1\n",  // a newer format
           "suanli-decisions 1\nrequests -1\ngrants 0\n",
           "suanli-decisions 1\nrequests 1\ngrants 1\nlatency 5 5\nbucket 9 1\n",  // min, max
           "suanli-decisions 1\nrequests 1\ngrants 1\nbucket 5 1\n",  // no latency record
           "suanli-decisions 1\nrequests 1\ngrants 1\nlatency 5 5\nbucket 5 1",  // cut short
           "suanli-decisions 1\nrequests 1\ngrants 1\nwhat 1\n"}) {
    SCOPED_TRACE(bad);
    {
      absl::StatusOr<std::unique_ptr<storage::Store>> store =
          storage::OpenStore(OptionsIn(dir_).store_url);
      ASSERT_TRUE(store.ok()) << store.status();
      storage::Batch b;
      b.decision_minutes = {{29'000'000, good}, {29'000'001, bad}};
      ASSERT_TRUE((*store)->Commit(b).ok());
    }
    absl::StatusOr<std::unique_ptr<broker::Broker>> b = broker::Broker::Start(OptionsIn(dir_));
    ASSERT_FALSE(b.ok());
    EXPECT_EQ(b.status().code(), absl::StatusCode::kDataLoss) << b.status();
    EXPECT_NE(b.status().message().find("minute 29000001"), absl::string_view::npos) << b.status();
  }
  // Once the minute is readable again, the broker starts and counts both minutes.
  {
    absl::StatusOr<std::unique_ptr<storage::Store>> store =
        storage::OpenStore(OptionsIn(dir_).store_url);
    ASSERT_TRUE(store.ok()) << store.status();
    storage::Batch b;
    b.decision_minutes = {{29'000'001, good}};
    ASSERT_TRUE((*store)->Commit(b).ok());
  }
  Start();
  v1::GetMarketStatsRequest r;
  *r.mutable_from() = Ts(absl::FromUnixSeconds(int64_t{29'000'000} * 60));
  *r.mutable_to() = Ts(absl::FromUnixSeconds(int64_t{29'000'002} * 60));
  absl::StatusOr<v1::GetMarketStatsResponse> stats = admin_->GetMarketStats(r);
  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_EQ(stats->rows_size(), 1);
  EXPECT_EQ(stats->rows(0).requests(), 2);
  EXPECT_EQ(stats->decisions_timed(), 2);
  EXPECT_EQ(stats->decision_p50_us(), 0.005);
}

}  // namespace
}  // namespace suanli::e2e
