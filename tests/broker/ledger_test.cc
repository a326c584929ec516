// The books (broker/ledger.h): exact splits, balanced entries, and randomized lifecycles whose
// entries always add up to the books of the allocation's final charge.
#include "broker/ledger.h"

#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace suanli::broker {
namespace {

int64_t SumOf(const std::vector<int64_t>& v) {
  int64_t s = 0;
  for (int64_t x : v) s += x;
  return s;
}

TEST(ApportionTest, SplitsExactlyWithTheRemainderToTheLargest) {
  EXPECT_EQ(Apportion(100, {1, 1, 1}), (std::vector<int64_t>{34, 33, 33}));
  EXPECT_EQ(Apportion(100, {1, 2, 1}), (std::vector<int64_t>{25, 50, 25}));
  EXPECT_EQ(Apportion(10, {1, 3}), (std::vector<int64_t>{2, 8}));
  EXPECT_EQ(Apportion(7, {0, 0}), (std::vector<int64_t>{7, 0}));
  EXPECT_TRUE(Apportion(7, {}).empty());
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(SumOf(Apportion(kMax, {kMax, kMax - 1, 3})), kMax);
}

TEST(BooksTest, BuyerPaysOperatorsEarnBrokerTakesFlooredCommission) {
  // 1,000,001 micros over two operators with rates 3:1, at 8%.
  const Books b = BooksOf("b1", 1'000'001, {{"op-a", 300}, {"op-b", 100}}, 800);
  // op-a: floor(750000.75) + remainder 1 = 750001; op-b: 250000.
  // commission: floor(750001 * 0.08) = 60000, floor(250000 * 0.08) = 20000.
  const Books want = {{"buyer:b1", -1'000'001},
                      {"commission:op-a", 60'000},
                      {"commission:op-b", 20'000},
                      {"operator:op-a", 690'001},
                      {"operator:op-b", 230'000}};
  EXPECT_EQ(b, want);
  EXPECT_TRUE(CheckBalanced(b).ok());
  EXPECT_EQ(Sum(b).gmv_micros, 1'000'001);
  EXPECT_EQ(Sum(b).commission_micros, 80'000);
}

TEST(BooksTest, SlicesOfOneOperatorAreOneLegAndZeroIsNoBooks) {
  EXPECT_EQ(BooksOf("b", 1000, {{"op", 1}, {"op", 5}}, 0),
            (Books{{"buyer:b", -1000}, {"operator:op", 1000}}));
  EXPECT_TRUE(BooksOf("b", 0, {{"op", 1}}, 800).empty());
  EXPECT_EQ(BooksOf("b", 1000, {{"op", 1}}, 10'000),
            (Books{{"buyer:b", -1000}, {"commission:op", 1000}}));
}

TEST(DeltaTest, EqualBooksPostNothingAndDifferencesBalance) {
  const Books a = BooksOf("b", 999, {{"x", 2}, {"y", 1}}, 800);
  EXPECT_FALSE(Delta(a, a).has_value());
  const Books c = BooksOf("b", 400, {{"x", 2}, {"y", 1}}, 800);
  std::optional<Books> refund = Delta(a, c);
  ASSERT_TRUE(refund.has_value());
  EXPECT_TRUE(CheckBalanced(*refund).ok());
  EXPECT_EQ(refund->at("buyer:b"), 599);  // the buyer gets the unused part back
  EXPECT_EQ(KindOf(0, 999), EntryKind::kSale);
  EXPECT_EQ(KindOf(999, 1200), EntryKind::kExtension);
  EXPECT_EQ(KindOf(999, 400), EntryKind::kRefund);
}

TEST(CheckBalancedTest, RefusesEmptyUnbalancedAndOverflowing) {
  EXPECT_FALSE(CheckBalanced({}).ok());
  EXPECT_FALSE(CheckBalanced({{"a", 1}, {"b", -2}}).ok());
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  EXPECT_FALSE(CheckBalanced({{"a", kMax}, {"b", 1}, {"c", -1}}).ok());
}

// Random allocations live random lives: sold, extended a few times, maybe released early (even to
// nothing), interleaved with each other. Every entry balances; each allocation's entries add up
// to the books of its final charge; the market's GMV and commission recomputed from the raw
// events (the final charges) equal what the ledger says.
TEST(LedgerPropertyTest, RandomLifecyclesBalanceToTheMicro) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  const int bps = static_cast<int>(pick(0, 10'000));
  struct Alloc {
    std::string buyer;
    std::vector<OperatorRate> rates;
    int64_t charge = 0;
    Books posted;  // the sum of its entries
  };
  std::vector<Alloc> allocs(200);
  for (Alloc& a : allocs) {
    a.buyer = absl::StrCat("buyer-", pick(1, 5));
    const int64_t slices = pick(1, 6);
    for (int64_t i = 0; i < slices; ++i) {
      a.rates.push_back({absl::StrCat("op-", pick(1, 4)), pick(0, 5) * pick(1, 9'000'000)});
    }
  }
  Books ledger;  // every leg ever posted, by account
  int64_t entries = 0;
  for (int step = 0; step < 5000; ++step) {
    Alloc& a = allocs[static_cast<size_t>(pick(0, 199))];
    const int64_t before = a.charge;
    switch (pick(0, 2)) {
      case 0:  // sold or extended
        a.charge += pick(1, 50'000'000'000);
        break;
      case 1:  // released early: charged for part of it
        a.charge = pick(0, a.charge);
        break;
      default:  // the clock moved; nothing changes
        break;
    }
    std::optional<Books> legs = Delta(a.posted, BooksOf(a.buyer, a.charge, a.rates, bps));
    if (a.charge == before) {
      EXPECT_FALSE(legs.has_value());
      continue;
    }
    ASSERT_TRUE(legs.has_value());
    ASSERT_TRUE(CheckBalanced(*legs).ok()) << CheckBalanced(*legs);
    ++entries;
    for (const auto& [account, amount] : *legs) {
      a.posted[account] += amount;
      ledger[account] += amount;
    }
  }
  ASSERT_GT(entries, 0);
  int64_t gmv = 0;
  int64_t commission = 0;
  Books expected_ledger;
  for (const Alloc& a : allocs) {
    Books want = BooksOf(a.buyer, a.charge, a.rates, bps);
    Books got = a.posted;
    for (auto it = got.begin(); it != got.end();) {
      it = it->second == 0 ? got.erase(it) : std::next(it);
    }
    EXPECT_EQ(got, want);
    gmv += a.charge;
    for (const auto& [account, amount] : want) {
      expected_ledger[account] += amount;
      if (OperatorOf(account).empty()) continue;
      if (account.rfind(kCommissionPrefix, 0) == 0) commission += amount;
    }
    // Commission is the floor of each operator's share, never more than the rate allows.
    EXPECT_LE(Sum(want).commission_micros * 10'000, int64_t{bps} * a.charge + 10'000);
  }
  int64_t total = 0;
  for (const auto& [account, amount] : ledger) total += amount;
  EXPECT_EQ(total, 0);
  EXPECT_EQ(Sum(ledger).gmv_micros, gmv);
  EXPECT_EQ(Sum(ledger).commission_micros, commission);
  EXPECT_EQ(Sum(ledger).gmv_micros, Sum(ledger).commission_micros + Sum(ledger).operators_micros);
  for (auto it = ledger.begin(); it != ledger.end();) {
    it = it->second == 0 ? ledger.erase(it) : std::next(it);
  }
  for (auto it = expected_ledger.begin(); it != expected_ledger.end();) {
    it = it->second == 0 ? expected_ledger.erase(it) : std::next(it);
  }
  EXPECT_EQ(ledger, expected_ledger);
}

}  // namespace
}  // namespace suanli::broker
