// Statements and invoices from the ledger (broker/settlement.h): a hand-made ledger with known
// answers, and randomized ledgers whose statements and invoices must equal the ledger's sums to
// the micro-unit and balance to 0 over any period.
#include "broker/settlement.h"

#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "broker/ledger.h"
#include "gtest/gtest.h"
#include "scheduler/types.h"

namespace suanli::broker {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

storage::LedgerEntryRow Entry(int64_t id, absl::Time at, int64_t allocation, EntryKind kind,
                              std::vector<storage::LedgerLeg> legs) {
  storage::LedgerEntryRow e;
  e.id = id;
  e.at = at;
  e.allocation_id = allocation;
  e.kind = static_cast<int32_t>(kind);
  e.legs = std::move(legs);
  return e;
}

std::vector<const storage::LedgerEntryRow*> Pointers(
    const std::vector<storage::LedgerEntryRow>& entries) {
  std::vector<const storage::LedgerEntryRow*> out;
  out.reserve(entries.size());
  for (const storage::LedgerEntryRow& e : entries) out.push_back(&e);
  return out;
}

class HandMadeLedgerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Allocation 1 of b1 on op1: 8 GPUs at 125 micros/GPU-h (rate 1000/h).
    a1_.buyer_id = "b1";
    a1_.gpus = 8;
    a1_.models = {"H100-SXM5-80G"};
    a1_.start = kT0;
    a1_.end = kT0 + absl::Hours(3);
    a1_.operators["op1"] = {8, 1000};
    // Allocation 2 of b2: 16 GPUs on op1 (rate 2000/h) and 8 on op2 (rate 1000/h).
    a2_.buyer_id = "b2";
    a2_.gpus = 24;
    a2_.models = {"H100-SXM5-80G", "H800-SXM5-80G"};
    a2_.start = kT0 + absl::Hours(1);
    a2_.end = kT0 + absl::Hours(2);
    a2_.operators["op1"] = {16, 2000};
    a2_.operators["op2"] = {8, 1000};
    ledger_ = {
        // Before the period: a1 sold for 1 h.
        Entry(1, kT0, 1, EntryKind::kSale,
              {{"buyer:b1", -1000}, {"commission:op1", 80}, {"operator:op1", 920}}),
        // In the period: a2 sold for 1 h, then 0.2 h refunded.
        Entry(2, kT0 + absl::Hours(1), 2, EntryKind::kSale,
              {{"buyer:b2", -3000},
               {"commission:op1", 160},
               {"commission:op2", 80},
               {"operator:op1", 1840},
               {"operator:op2", 920}}),
        Entry(3, kT0 + absl::Hours(1) + absl::Minutes(30), 2, EntryKind::kRefund,
              {{"buyer:b2", 600},
               {"commission:op1", -32},
               {"commission:op2", -16},
               {"operator:op1", -368},
               {"operator:op2", -184}}),
        // In the period: a1 extended by 1 h at a 100% commission (no operator leg).
        Entry(4, kT0 + absl::Hours(1) + absl::Minutes(40), 1, EntryKind::kExtension,
              {{"buyer:b1", -1000}, {"commission:op1", 1000}}),
        // At `to`: not in the period.
        Entry(5, kT0 + absl::Hours(2), 1, EntryKind::kExtension,
              {{"buyer:b1", -1000}, {"commission:op1", 80}, {"operator:op1", 920}}),
    };
    facts_ = [this](int64_t id) -> const AllocationFacts* {
      return id == 1 ? &a1_ : id == 2 ? &a2_ : nullptr;
    };
  }

  const absl::Time from_ = kT0 + absl::Minutes(30);
  const absl::Time to_ = kT0 + absl::Hours(2);
  AllocationFacts a1_, a2_;
  std::vector<storage::LedgerEntryRow> ledger_;
  FactsOf facts_;
};

TEST_F(HandMadeLedgerTest, StatementListsTheOperatorsPartOfEachEntryOfThePeriod) {
  const v1::Statement s = StatementOf("op1", Pointers(ledger_), from_, to_, facts_, true);
  EXPECT_EQ(s.operator_id(), "op1");
  EXPECT_EQ(s.from().seconds(), absl::ToUnixSeconds(from_));
  EXPECT_EQ(s.to().seconds(), absl::ToUnixSeconds(to_));
  ASSERT_EQ(s.lines_size(), 3);
  EXPECT_EQ(s.line_count(), 3);

  const v1::StatementLine& sale = s.lines(0);
  EXPECT_EQ(sale.entry_id(), 2);
  EXPECT_EQ(sale.posted().seconds(), absl::ToUnixSeconds(kT0 + absl::Hours(1)));
  EXPECT_EQ(sale.allocation_id(), "2");
  EXPECT_EQ(sale.buyer_id(), "b2");
  EXPECT_EQ(sale.kind(), v1::LEDGER_ENTRY_KIND_SALE);
  EXPECT_EQ(sale.gpus(), 16);
  EXPECT_DOUBLE_EQ(sale.gpu_hours(), 16.0);  // 2000 micros at 2000/h: 1 h on 16 GPUs
  EXPECT_EQ(sale.gross_micros(), 2000);
  EXPECT_EQ(sale.commission_micros(), 160);
  EXPECT_EQ(sale.net_micros(), 1840);

  const v1::StatementLine& refund = s.lines(1);
  EXPECT_EQ(refund.kind(), v1::LEDGER_ENTRY_KIND_REFUND);
  EXPECT_DOUBLE_EQ(refund.gpu_hours(), -3.2);
  EXPECT_EQ(refund.gross_micros(), -400);
  EXPECT_EQ(refund.commission_micros(), -32);
  EXPECT_EQ(refund.net_micros(), -368);

  const v1::StatementLine& extension = s.lines(2);
  EXPECT_EQ(extension.allocation_id(), "1");
  EXPECT_EQ(extension.buyer_id(), "b1");
  EXPECT_EQ(extension.kind(), v1::LEDGER_ENTRY_KIND_EXTENSION);
  EXPECT_EQ(extension.gpus(), 8);
  EXPECT_DOUBLE_EQ(extension.gpu_hours(), 8.0);
  EXPECT_EQ(extension.gross_micros(), 1000);
  EXPECT_EQ(extension.commission_micros(), 1000);
  EXPECT_EQ(extension.net_micros(), 0);

  EXPECT_EQ(s.gross_micros(), 2600);
  EXPECT_EQ(s.commission_micros(), 1128);
  EXPECT_EQ(s.net_micros(), 1472);
  EXPECT_DOUBLE_EQ(s.gpu_hours(), 20.8);
  EXPECT_EQ(s.opening_balance_micros(), 920);
  EXPECT_EQ(s.closing_balance_micros(), 920 + 1472);
}

TEST_F(HandMadeLedgerTest, SummaryKeepsTheTotalsWithoutLines) {
  const v1::Statement full = StatementOf("op2", Pointers(ledger_), from_, to_, facts_, true);
  const v1::Statement summary = StatementOf("op2", Pointers(ledger_), from_, to_, facts_, false);
  EXPECT_EQ(full.lines_size(), 2);
  EXPECT_EQ(summary.lines_size(), 0);
  EXPECT_EQ(summary.line_count(), 2);
  EXPECT_EQ(summary.gross_micros(), 800);
  EXPECT_EQ(summary.commission_micros(), 64);
  EXPECT_EQ(summary.net_micros(), 736);
  EXPECT_DOUBLE_EQ(summary.gpu_hours(), 6.4);  // 8 GPUs for 0.8 h
  EXPECT_EQ(summary.gross_micros(), full.gross_micros());
  EXPECT_EQ(summary.opening_balance_micros(), 0);
}

TEST_F(HandMadeLedgerTest, InvoiceGroupsTheBuyersEntriesByAllocation) {
  const v1::Invoice b2 = InvoiceOf("b2", Pointers(ledger_), from_, to_, facts_, true);
  EXPECT_EQ(b2.buyer_id(), "b2");
  ASSERT_EQ(b2.allocations_size(), 1);
  const v1::InvoiceAllocation& a = b2.allocations(0);
  EXPECT_EQ(a.allocation_id(), "2");
  EXPECT_EQ(a.gpus(), 24);
  EXPECT_EQ(std::vector<std::string>(a.models().begin(), a.models().end()), a2_.models);
  EXPECT_EQ(a.start().seconds(), absl::ToUnixSeconds(a2_.start));
  EXPECT_EQ(a.end().seconds(), absl::ToUnixSeconds(a2_.end));
  ASSERT_EQ(a.entries_size(), 2);
  EXPECT_EQ(a.entries(0).entry_id(), 2);
  EXPECT_EQ(a.entries(0).kind(), v1::LEDGER_ENTRY_KIND_SALE);
  EXPECT_EQ(a.entries(0).amount_micros(), 3000);
  EXPECT_EQ(a.entries(1).kind(), v1::LEDGER_ENTRY_KIND_REFUND);
  EXPECT_EQ(a.entries(1).amount_micros(), -600);
  EXPECT_EQ(a.total_micros(), 2400);
  EXPECT_EQ(b2.allocation_count(), 1);
  EXPECT_EQ(b2.entry_count(), 2);
  EXPECT_EQ(b2.total_due_micros(), 2400);
  EXPECT_EQ(b2.opening_balance_micros(), 0);
  EXPECT_EQ(b2.closing_balance_micros(), 2400);

  // b1: the sale before the period opens the balance; the entry at `to` is the next period's.
  const v1::Invoice b1 = InvoiceOf("b1", Pointers(ledger_), from_, to_, facts_, false);
  EXPECT_EQ(b1.allocations_size(), 0);
  EXPECT_EQ(b1.allocation_count(), 1);
  EXPECT_EQ(b1.entry_count(), 1);
  EXPECT_EQ(b1.total_due_micros(), 1000);
  EXPECT_EQ(b1.opening_balance_micros(), 1000);
  EXPECT_EQ(b1.closing_balance_micros(), 2000);
}

TEST_F(HandMadeLedgerTest, OperatorsNetAndCommissionEqualWhatBuyersOwe) {
  const auto all = Pointers(ledger_);
  int64_t operators = 0;
  for (const char* op : {"op1", "op2"}) {
    const v1::Statement s = StatementOf(op, all, from_, to_, facts_, false);
    operators += s.net_micros() + s.commission_micros();
  }
  int64_t buyers = 0;
  for (const char* b : {"b1", "b2"})
    buyers += InvoiceOf(b, all, from_, to_, facts_, false).total_due_micros();
  EXPECT_EQ(operators, 3400);
  EXPECT_EQ(operators - buyers, 0);
}

TEST_F(HandMadeLedgerTest, UnknownAllocationsKeepTheirAmounts) {
  const FactsOf none = [](int64_t) -> const AllocationFacts* { return nullptr; };
  const v1::Statement s = StatementOf("op1", Pointers(ledger_), from_, to_, none, true);
  ASSERT_EQ(s.lines_size(), 3);
  EXPECT_EQ(s.lines(0).buyer_id(), "b2");  // from the entry's buyer leg
  EXPECT_EQ(s.lines(0).gpus(), 0);
  EXPECT_EQ(s.lines(0).gpu_hours(), 0);
  EXPECT_EQ(s.net_micros(), 1472);
  const v1::Invoice i = InvoiceOf("b2", Pointers(ledger_), from_, to_, nullptr, true);
  EXPECT_EQ(i.total_due_micros(), 2400);
  EXPECT_EQ(i.allocations(0).gpus(), 0);
}

TEST(LedgerEntryKindTest, StoredKindsMapOneToOne) {
  EXPECT_EQ(LedgerEntryKindOf(1), v1::LEDGER_ENTRY_KIND_SALE);
  EXPECT_EQ(LedgerEntryKindOf(2), v1::LEDGER_ENTRY_KIND_EXTENSION);
  EXPECT_EQ(LedgerEntryKindOf(3), v1::LEDGER_ENTRY_KIND_REFUND);
  EXPECT_EQ(LedgerEntryKindOf(4), v1::LEDGER_ENTRY_KIND_CORRECTION);
  EXPECT_EQ(LedgerEntryKindOf(99), v1::LEDGER_ENTRY_KIND_UNSPECIFIED);
}

// Randomized lifecycles posted the way the market posts them (BooksOf, Delta), at random times;
// then for random periods every statement and invoice equals the ledger's sums for its accounts,
// operators' net + commission - buyers' due is 0, adjacent periods add up, and each allocation's
// statement GPU-hours over all time equal its GPUs times its billed hours.
TEST(SettlementPropertyTest, RandomLedgersSettleToTheMicro) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  const int bps = static_cast<int>(pick(0, 10'000));
  const std::vector<std::string> operators = {"op-1", "op-2", "op-3"};
  const std::vector<std::string> buyers = {"buyer-1", "buyer-2", "buyer-3", "buyer-4"};
  struct Alloc {
    AllocationFacts facts;
    std::vector<OperatorRate> rates;
    int64_t micros_of_hours = 0;  // billed duration in microseconds
    int64_t charge = 0;
    Books posted;
  };
  std::map<int64_t, Alloc> allocs;
  for (int64_t id = 1; id <= 60; ++id) {
    Alloc& a = allocs[id];
    a.facts.buyer_id = buyers[static_cast<size_t>(pick(0, 3))];
    for (int64_t i = pick(1, 4); i > 0; --i) {
      const std::string& op = operators[static_cast<size_t>(pick(0, 2))];
      const auto gpus = static_cast<int32_t>(pick(1, 8));
      const int64_t price = pick(1, 40'000'000);
      a.rates.push_back({op, gpus * price});
      a.facts.gpus += gpus;
      a.facts.operators[op].gpus += gpus;
      a.facts.operators[op].rate_micros_per_hour += gpus * price;
    }
  }
  std::vector<storage::LedgerEntryRow> ledger;
  absl::Time now = kT0;
  for (int step = 0; step < 3000; ++step) {
    now += absl::Seconds(pick(0, 600));
    const int64_t id = pick(1, 60);
    Alloc& a = allocs[id];
    int64_t rate = 0;
    for (const OperatorRate& r : a.rates) rate += r.rate_micros_per_hour;
    // Sold or extended by up to 10 h, or released early back to part of its duration.
    a.micros_of_hours =
        pick(0, 1) == 0 ? a.micros_of_hours + pick(1, 36'000'000'000) : pick(0, a.micros_of_hours);
    const int64_t before = a.charge;
    a.charge = scheduler::PriceFor(rate, absl::Microseconds(a.micros_of_hours));
    std::optional<Books> legs = Delta(a.posted, BooksOf(a.facts.buyer_id, a.charge, a.rates, bps));
    if (!legs.has_value()) continue;
    storage::LedgerEntryRow e;
    e.id = static_cast<int64_t>(ledger.size()) + 1;
    e.at = now;
    e.allocation_id = id;
    e.kind = static_cast<int32_t>(KindOf(before, a.charge));
    for (const auto& [account, amount] : *legs) {
      e.legs.push_back({account, amount});
      a.posted[account] += amount;
    }
    ledger.push_back(std::move(e));
  }
  ASSERT_FALSE(ledger.empty());
  const FactsOf facts = [&](int64_t id) -> const AllocationFacts* {
    auto it = allocs.find(id);
    return it == allocs.end() ? nullptr : &it->second.facts;
  };
  const auto all = Pointers(ledger);
  // The ledger's own sums over [from, to) for one account.
  auto sum = [&](const std::string& account, absl::Time from, absl::Time to) {
    int64_t s = 0;
    for (const storage::LedgerEntryRow& e : ledger) {
      if (e.at < from || e.at >= to) continue;
      for (const storage::LedgerLeg& leg : e.legs) {
        if (leg.account == account) s += leg.amount_micros;
      }
    }
    return s;
  };
  const absl::Time first = ledger.front().at;
  const absl::Time last = ledger.back().at + absl::Seconds(1);
  for (int round = 0; round < 20; ++round) {
    absl::Time from = first + absl::Seconds(pick(-600, absl::ToInt64Seconds(last - first)));
    absl::Time to = from + absl::Seconds(pick(1, absl::ToInt64Seconds(last - first) + 600));
    absl::Time middle = from + (to - from) / 2;
    SCOPED_TRACE(testing::Message() << "period " << from << " .. " << to);
    int64_t operators_side = 0;
    int64_t buyers_side = 0;
    for (const std::string& op : operators) {
      const v1::Statement s = StatementOf(op, all, from, to, facts, true);
      EXPECT_EQ(s.net_micros(), sum("operator:" + op, from, to));
      EXPECT_EQ(s.commission_micros(), sum("commission:" + op, from, to));
      EXPECT_EQ(s.gross_micros(), s.net_micros() + s.commission_micros());
      EXPECT_EQ(s.opening_balance_micros(), sum("operator:" + op, absl::InfinitePast(), from));
      EXPECT_EQ(s.closing_balance_micros(), sum("operator:" + op, absl::InfinitePast(), to));
      int64_t lines = 0;
      for (const v1::StatementLine& l : s.lines()) {
        EXPECT_EQ(l.gross_micros(), l.net_micros() + l.commission_micros());
        lines += l.net_micros();
      }
      EXPECT_EQ(lines, s.net_micros());
      // Two halves of the period add up to it.
      const v1::Statement a = StatementOf(op, all, from, middle, facts, false);
      const v1::Statement b = StatementOf(op, all, middle, to, facts, false);
      EXPECT_EQ(a.gross_micros() + b.gross_micros(), s.gross_micros());
      EXPECT_EQ(a.line_count() + b.line_count(), s.line_count());
      EXPECT_EQ(a.closing_balance_micros(), b.opening_balance_micros());
      operators_side += s.net_micros() + s.commission_micros();
    }
    for (const std::string& buyer : buyers) {
      const v1::Invoice i = InvoiceOf(buyer, all, from, to, facts, true);
      EXPECT_EQ(i.total_due_micros(), -sum("buyer:" + buyer, from, to));
      EXPECT_EQ(i.opening_balance_micros(), -sum("buyer:" + buyer, absl::InfinitePast(), from));
      int64_t allocations = 0;
      int64_t entries = 0;
      for (const v1::InvoiceAllocation& a : i.allocations()) {
        int64_t total = 0;
        for (const v1::InvoiceEntry& e : a.entries()) total += e.amount_micros();
        EXPECT_EQ(total, a.total_micros());
        EXPECT_EQ(facts(std::stoll(a.allocation_id()))->buyer_id, buyer);
        allocations += a.total_micros();
        entries += a.entries_size();
      }
      EXPECT_EQ(allocations, i.total_due_micros());
      EXPECT_EQ(entries, i.entry_count());
      EXPECT_EQ(i.allocation_count(), i.allocations_size());
      buyers_side += i.total_due_micros();
    }
    EXPECT_EQ(operators_side - buyers_side, 0);
  }
  // Over all time, an allocation's lines bill its GPUs for its billed hours (to the rounding of
  // prices and shares to a micro-unit).
  std::map<std::pair<std::string, std::string>, double> hours;  // (operator, allocation)
  for (const std::string& op : operators) {
    const v1::Statement s = StatementOf(op, all, first, last, facts, true);
    for (const v1::StatementLine& l : s.lines()) {
      hours[{op, l.allocation_id()}] += l.gpu_hours();
    }
  }
  for (const auto& [key, got] : hours) {
    const Alloc& a = allocs.at(std::stoll(key.second));
    const AllocationFacts::Part& part = a.facts.operators.at(key.first);
    const double want = part.gpus * static_cast<double>(a.micros_of_hours) / 3.6e9;
    // Each entry may be a micro-unit off the exact price; that is 1/rate hours per GPU.
    const double slack = part.gpus * 8.0 / static_cast<double>(part.rate_micros_per_hour) + 1e-9;
    EXPECT_NEAR(got, want, slack) << key.first << " allocation " << key.second;
  }
}

}  // namespace
}  // namespace suanli::broker
