// The market's books read back (broker/statements.cc): random lifecycles run through a Market
// (allocations, holds, redeems, extensions, early releases, expiries), then every operator's
// statement and every buyer's invoice over random periods equal the ledger's sums to the
// micro-unit, the report agrees with them and balances to 0, each tenant reads only its own
// books, and the decision latency percentiles cover the decisions of the range asked.
#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "broker/market.h"
#include "broker/validate.h"
#include "gtest/gtest.h"

namespace suanli::broker {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

class StatementsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = std::random_device{}();
    rng_.seed(seed_);
    market_ = std::make_unique<Market>(&keys_, MarketOptions{static_cast<int>(Pick(0, 2000))});
    for (int i = 1; i <= 3; ++i) operators_.push_back(NewAccount(v1::ROLE_OPERATOR, i));
    for (int i = 1; i <= 4; ++i) buyers_.push_back(NewAccount(v1::ROLE_BUYER, i));
    for (size_t o = 0; o < operators_.size(); ++o) AddCenter(o);
  }

  int64_t Pick(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
  }

  std::string NewAccount(v1::Role role, int i) {
    v1::CreateAccountRequest r;
    r.set_role(role);
    r.set_name(absl::StrCat(role == v1::ROLE_OPERATOR ? "op" : "buyer", "-name-", i));
    storage::Batch b;
    absl::StatusOr<v1::CreateAccountResponse> a = market_->CreateAccount(admin_, r, now_, &b);
    EXPECT_TRUE(a.ok()) << a.status();
    if (!a.ok()) return "";
    names_[a->account().id()] = r.name();
    return a->account().id();
  }

  // A center of 4 nodes of 8 H100s on sale for 60 days at a price of its own.
  void AddCenter(size_t o) {
    const Principal p{operators_[o], v1::ROLE_OPERATOR};
    const std::string center = absl::StrCat("c", o);
    storage::Batch b;
    v1::RegisterCenterRequest rc;
    rc.mutable_center()->set_id(center);
    rc.mutable_center()->set_name(center);
    rc.mutable_center()->set_region("cn-east-2");
    rc.mutable_center()->set_type(v1::CENTER_TYPE_CARRIER);
    ASSERT_TRUE(market_->RegisterCenter(p, rc, now_, &b).ok());
    v1::AddDomainRequest ad;
    ad.mutable_domain()->set_center_id(center);
    ad.mutable_domain()->set_id("ib0");
    ad.mutable_domain()->set_fabric(v1::FABRIC_INFINIBAND);
    ASSERT_TRUE(market_->AddDomain(p, ad, now_, &b).ok());
    v1::AddNodesRequest an;
    for (int i = 0; i < 4; ++i) {
      v1::Node* n = an.add_nodes();
      n->set_id(absl::StrCat(center, "-n", i));
      n->set_center_id(center);
      n->set_domain_id("ib0");
      n->set_model("H100-SXM5-80G");
      n->set_gpus(8);
    }
    ASSERT_TRUE(market_->AddNodes(p, an, now_, &b).ok());
    v1::CreateOfferRequest co;
    co.mutable_offer()->set_id(absl::StrCat(center, "-offer"));
    co.mutable_offer()->set_center_id(center);
    co.mutable_offer()->set_domain_id("ib0");
    *co.mutable_offer()->mutable_until() = ToProto(now_ + absl::Hours(24 * 60));
    co.mutable_offer()->set_price_micros_per_gpu_hour(Pick(1'000'000, 40'000'000));
    absl::StatusOr<v1::Offer> offer = market_->CreateOffer(p, co, now_, &b);
    ASSERT_TRUE(offer.ok()) << offer.status();
  }

  v1::AllocationRequest Request() {
    v1::AllocationRequest r;
    r.set_gpus(static_cast<int32_t>(Pick(1, 20)));
    r.set_max_price_micros_per_gpu_hour(50'000'000);
    *r.mutable_duration() = ToProto(absl::Minutes(Pick(10, 600)));
    if (Pick(0, 3) == 0) *r.mutable_start() = ToProto(now_ + absl::Minutes(Pick(1, 300)));
    return r;
  }

  // Random lifecycles over about `steps` random moves of the clock.
  void Run(int steps) {
    for (int step = 0; step < steps; ++step) {
      now_ += absl::Seconds(Pick(0, 1800));
      storage::Batch b;
      market_->Advance(now_, &b);
      const Principal buyer{buyers_[static_cast<size_t>(Pick(0, 3))], v1::ROLE_BUYER};
      std::vector<v1::Allocation> live = market_->AllocationsOf(buyer, false);
      const int64_t action = Pick(0, 9);
      if (action <= 3 || live.empty()) {
        v1::AllocateRequest r;
        *r.mutable_request() = Request();
        const absl::Status s = market_->Allocate(buyer, r, now_, &b).status();
        ASSERT_TRUE(s.ok() || s.code() == absl::StatusCode::kResourceExhausted) << s;
        ++decisions_;
      } else if (action == 4) {
        v1::QuoteRequest q;
        *q.mutable_request() = Request();
        *q.mutable_hold() = ToProto(absl::Minutes(Pick(1, 30)));
        const absl::Status s = market_->Quote(buyer, q, now_, &b).status();
        ASSERT_TRUE(s.ok()) << s;
        ++decisions_;
      } else {
        const v1::Allocation& a =
            live[static_cast<size_t>(Pick(0, static_cast<int64_t>(live.size()) - 1))];
        if (a.state() == v1::ALLOCATION_STATE_HELD && action <= 6) {
          v1::AllocateRequest r;
          r.set_quote_id(a.id());
          (void)market_->Allocate(buyer, r, now_, &b);
        } else if (action <= 7) {
          v1::ExtendAllocationRequest e;
          e.set_allocation_id(a.id());
          *e.mutable_by() = ToProto(absl::Minutes(Pick(10, 240)));
          (void)market_->ExtendAllocation(buyer, e, now_, &b);
        } else {
          v1::ReleaseAllocationRequest rel;
          rel.set_allocation_id(a.id());
          (void)market_->ReleaseAllocation(buyer, rel, now_, &b);
        }
      }
    }
  }

  // The ledger's sum of `account`'s legs posted in [from, to).
  int64_t Sum(const std::string& account, absl::Time from, absl::Time to) const {
    int64_t s = 0;
    for (const storage::LedgerEntryRow& e : market_->Ledger()) {
      if (e.at < from || e.at >= to) continue;
      for (const storage::LedgerLeg& leg : e.legs) {
        if (leg.account == account) s += leg.amount_micros;
      }
    }
    return s;
  }

  v1::Statement StatementAs(const Principal& p, const std::string& op, absl::Time from,
                            absl::Time to) {
    v1::GetStatementRequest r;
    r.set_operator_id(op);
    *r.mutable_from() = ToProto(from);
    *r.mutable_to() = ToProto(to);
    absl::StatusOr<v1::Statement> s = market_->OperatorStatement(p, r, now_);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : v1::Statement();
  }

  v1::Invoice InvoiceAs(const Principal& p, const std::string& buyer, absl::Time from,
                        absl::Time to) {
    v1::GetInvoiceRequest r;
    r.set_buyer_id(buyer);
    *r.mutable_from() = ToProto(from);
    *r.mutable_to() = ToProto(to);
    absl::StatusOr<v1::Invoice> i = market_->BuyerInvoice(p, r, now_);
    EXPECT_TRUE(i.ok()) << i.status();
    return i.ok() ? *i : v1::Invoice();
  }

  uint32_t seed_ = 0;
  std::mt19937_64 rng_;
  KeyRing keys_;
  std::unique_ptr<Market> market_;
  const Principal admin_{"admin-0", v1::ROLE_ADMIN};
  absl::Time now_ = kT0;
  std::vector<std::string> operators_;
  std::vector<std::string> buyers_;
  std::map<std::string, std::string> names_;  // account id -> name
  int64_t decisions_ = 0;                     // Allocate requests and holds decided
};

TEST_F(StatementsTest, StatementsAndInvoicesEqualTheLedgerAndBalance) {
  SCOPED_TRACE(testing::Message() << "seed " << seed_);
  Run(400);
  // Let everything end: expiries post no entries, but the books must still add up.
  now_ += absl::Hours(24 * 30);
  storage::Batch b;
  market_->Advance(now_, &b);
  ASSERT_GT(market_->Ledger().size(), 10u);
  const absl::Time first = market_->Ledger().front().at;
  const absl::Time last = now_ + absl::Seconds(1);
  for (int round = 0; round < 12; ++round) {
    const absl::Time from =
        round == 0 ? first : first + absl::Seconds(Pick(-3600, absl::ToInt64Seconds(last - first)));
    const absl::Time to =
        round == 0 ? last : from + absl::Seconds(Pick(1, absl::ToInt64Seconds(last - from) + 60));
    SCOPED_TRACE(testing::Message() << "period " << from << " .. " << to);
    int64_t operators_side = 0;
    std::map<std::string, v1::Statement> statements;
    for (const std::string& op : operators_) {
      const v1::Statement s = StatementAs(admin_, op, from, to);
      EXPECT_EQ(s.operator_name(), names_.at(op));
      EXPECT_EQ(s.net_micros(), Sum("operator:" + op, from, to));
      EXPECT_EQ(s.commission_micros(), Sum("commission:" + op, from, to));
      EXPECT_EQ(s.gross_micros(), s.net_micros() + s.commission_micros());
      EXPECT_EQ(s.opening_balance_micros(), Sum("operator:" + op, absl::InfinitePast(), from));
      EXPECT_EQ(s.closing_balance_micros(), Sum("operator:" + op, absl::InfinitePast(), to));
      int64_t gross = 0;
      for (const v1::StatementLine& l : s.lines()) {
        gross += l.gross_micros();
        EXPECT_GT(l.gpus(), 0);
        // A line bills hours in the direction of its money.
        EXPECT_EQ(l.gpu_hours() > 0, l.gross_micros() > 0) << l.entry_id();
        EXPECT_TRUE(std::find(buyers_.begin(), buyers_.end(), l.buyer_id()) != buyers_.end());
      }
      EXPECT_EQ(gross, s.gross_micros());
      EXPECT_EQ(s.line_count(), s.lines_size());
      // An operator reads the same statement of its own.
      const v1::Statement own = StatementAs({op, v1::ROLE_OPERATOR}, "", from, to);
      EXPECT_EQ(own.SerializeAsString(), s.SerializeAsString());
      operators_side += s.net_micros() + s.commission_micros();
      statements[op] = s;
    }
    int64_t buyers_side = 0;
    std::map<std::string, v1::Invoice> invoices;
    for (const std::string& buyer : buyers_) {
      const v1::Invoice i = InvoiceAs(admin_, buyer, from, to);
      EXPECT_EQ(i.total_due_micros(), -Sum("buyer:" + buyer, from, to));
      EXPECT_EQ(i.opening_balance_micros(), -Sum("buyer:" + buyer, absl::InfinitePast(), from));
      int64_t total = 0;
      for (const v1::InvoiceAllocation& a : i.allocations()) {
        int64_t entries = 0;
        for (const v1::InvoiceEntry& e : a.entries()) entries += e.amount_micros();
        EXPECT_EQ(entries, a.total_micros());
        total += a.total_micros();
        // The allocation is the buyer's.
        v1::GetAllocationRequest get;
        get.set_allocation_id(a.allocation_id());
        absl::StatusOr<v1::Allocation> alloc = market_->GetAllocation({buyer, v1::ROLE_BUYER}, get);
        ASSERT_TRUE(alloc.ok()) << alloc.status();
        EXPECT_GT(a.gpus(), 0);
      }
      EXPECT_EQ(total, i.total_due_micros());
      const v1::Invoice own = InvoiceAs({buyer, v1::ROLE_BUYER}, "", from, to);
      EXPECT_EQ(own.SerializeAsString(), i.SerializeAsString());
      buyers_side += i.total_due_micros();
      invoices[buyer] = i;
    }
    // Every operator's statement + commission and the buyers' invoices balance to 0.
    EXPECT_EQ(operators_side - buyers_side, 0);

    // The report (admin) holds the same figures, summed.
    v1::GetSettlementReportRequest rr;
    *rr.mutable_from() = ToProto(from);
    *rr.mutable_to() = ToProto(to);
    absl::StatusOr<v1::GetSettlementReportResponse> report =
        market_->SettlementReport(admin_, rr, now_);
    ASSERT_TRUE(report.ok()) << report.status();
    for (const v1::Statement& s : report->statements()) {
      EXPECT_EQ(s.lines_size(), 0);
      const v1::Statement& full = statements.at(s.operator_id());
      EXPECT_EQ(s.gross_micros(), full.gross_micros());
      EXPECT_EQ(s.net_micros(), full.net_micros());
      EXPECT_EQ(s.line_count(), full.line_count());
      EXPECT_EQ(s.closing_balance_micros(), full.closing_balance_micros());
      EXPECT_EQ(s.operator_name(), full.operator_name());
    }
    for (const v1::Invoice& i : report->invoices()) {
      EXPECT_EQ(i.allocations_size(), 0);
      EXPECT_EQ(i.total_due_micros(), invoices.at(i.buyer_id()).total_due_micros());
      EXPECT_EQ(i.allocation_count(), invoices.at(i.buyer_id()).allocation_count());
    }
    EXPECT_EQ(report->net_micros() + report->commission_micros(), operators_side);
    EXPECT_EQ(report->due_micros(), buyers_side);
    EXPECT_EQ(report->gross_micros(), report->due_micros());
  }
  // Over everything, the buyers paid exactly the final prices of what they were sold.
  int64_t prices = 0;
  for (const std::string& buyer : buyers_) {
    for (const v1::Allocation& a : market_->AllocationsOf({buyer, v1::ROLE_BUYER}, true)) {
      if (a.state() != v1::ALLOCATION_STATE_HELD) prices += a.total_price_micros();
    }
  }
  int64_t due = 0;
  for (const std::string& buyer : buyers_) {
    due += InvoiceAs(admin_, buyer, first, last).total_due_micros();
  }
  EXPECT_EQ(due, prices);
}

TEST_F(StatementsTest, EachTenantReadsOnlyItsOwnBooks) {
  SCOPED_TRACE(testing::Message() << "seed " << seed_);
  Run(60);
  const Principal op{operators_[0], v1::ROLE_OPERATOR};
  const Principal buyer{buyers_[0], v1::ROLE_BUYER};
  v1::GetStatementRequest other_statement;
  other_statement.set_operator_id(operators_[1]);
  EXPECT_EQ(market_->OperatorStatement(op, other_statement, now_).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(market_->OperatorStatement(buyer, {}, now_).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(market_->OperatorStatement(buyer, other_statement, now_).status().code(),
            absl::StatusCode::kPermissionDenied);
  v1::GetInvoiceRequest other_invoice;
  other_invoice.set_buyer_id(buyers_[1]);
  EXPECT_EQ(market_->BuyerInvoice(buyer, other_invoice, now_).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(market_->BuyerInvoice(op, {}, now_).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(market_->OperatorStatement(op, {}, now_).ok());
  EXPECT_TRUE(market_->BuyerInvoice(buyer, {}, now_).ok());
  // Admins read anyone's, but only of accounts that exist in that role.
  EXPECT_TRUE(market_->OperatorStatement(admin_, other_statement, now_).ok());
  EXPECT_TRUE(market_->BuyerInvoice(admin_, other_invoice, now_).ok());
  v1::GetStatementRequest unknown;
  unknown.set_operator_id("op-404");
  EXPECT_EQ(market_->OperatorStatement(admin_, unknown, now_).status().code(),
            absl::StatusCode::kNotFound);
  v1::GetStatementRequest of_a_buyer;
  of_a_buyer.set_operator_id(buyers_[0]);
  EXPECT_EQ(market_->OperatorStatement(admin_, of_a_buyer, now_).status().code(),
            absl::StatusCode::kNotFound);
  v1::GetStatementRequest backwards;
  *backwards.mutable_from() = ToProto(now_);
  *backwards.mutable_to() = ToProto(now_ - absl::Hours(1));
  EXPECT_EQ(market_->OperatorStatement(op, backwards, now_).status().code(),
            absl::StatusCode::kInvalidArgument);
  // The report: buyers none, an operator its own statement only.
  v1::GetSettlementReportRequest rr;
  *rr.mutable_from() = ToProto(kT0);
  *rr.mutable_to() = ToProto(now_ + absl::Hours(1));
  EXPECT_EQ(market_->SettlementReport(buyer, rr, now_).status().code(),
            absl::StatusCode::kPermissionDenied);
  absl::StatusOr<v1::GetSettlementReportResponse> mine = market_->SettlementReport(op, rr, now_);
  ASSERT_TRUE(mine.ok()) << mine.status();
  ASSERT_EQ(mine->statements_size(), 1);
  EXPECT_EQ(mine->statements(0).operator_id(), operators_[0]);
  EXPECT_EQ(mine->invoices_size(), 0);
  EXPECT_EQ(mine->due_micros(), 0);
}

TEST_F(StatementsTest, DecisionLatencyCoversTheDecisionsOfTheRange) {
  SCOPED_TRACE(testing::Message() << "seed " << seed_);
  const absl::Time start = now_;
  Run(100);
  ASSERT_GT(decisions_, 0);
  v1::GetMarketStatsRequest r;
  *r.mutable_from() = ToProto(start);
  *r.mutable_to() = ToProto(now_ + absl::Minutes(1));
  absl::StatusOr<v1::GetMarketStatsResponse> all = market_->MarketStats(admin_, r, now_);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->decisions_timed(), decisions_);
  EXPECT_EQ(all->rows(0).requests(), decisions_);
  // Every decision takes some time; the percentiles are ordered.
  EXPECT_GT(all->decision_p50_us(), 0);
  EXPECT_LE(all->decision_p50_us(), all->decision_p99_us());
  EXPECT_LE(all->decision_p99_us(), all->decision_p999_us());
  // Grouped figures report the same latency.
  r.set_group_by(v1::GROUP_BY_CENTER);
  absl::StatusOr<v1::GetMarketStatsResponse> grouped = market_->MarketStats(admin_, r, now_);
  ASSERT_TRUE(grouped.ok());
  EXPECT_EQ(grouped->decisions_timed(), decisions_);
  EXPECT_EQ(grouped->decision_p99_us(), all->decision_p99_us());
  // A range before any decision: none, and 0, not a made-up figure.
  v1::GetMarketStatsRequest before;
  *before.mutable_from() = ToProto(start - absl::Hours(2));
  *before.mutable_to() = ToProto(start - absl::Hours(1));
  absl::StatusOr<v1::GetMarketStatsResponse> none = market_->MarketStats(admin_, before, now_);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->decisions_timed(), 0);
  EXPECT_EQ(none->decision_p50_us(), 0);
  EXPECT_EQ(none->decision_p999_us(), 0);
  // The first half of the run holds fewer decisions than the whole.
  v1::GetMarketStatsRequest half;
  *half.mutable_from() = ToProto(start);
  *half.mutable_to() = ToProto(start + (now_ - start) / 2);
  absl::StatusOr<v1::GetMarketStatsResponse> part = market_->MarketStats(admin_, half, now_);
  ASSERT_TRUE(part.ok());
  EXPECT_LE(part->decisions_timed(), decisions_);
  EXPECT_EQ(part->decisions_timed(), part->rows(0).requests());
  // Operators do not see market-wide figures.
  absl::StatusOr<v1::GetMarketStatsResponse> op =
      market_->MarketStats({operators_[0], v1::ROLE_OPERATOR}, r, now_);
  ASSERT_TRUE(op.ok());
  EXPECT_EQ(op->decisions_timed(), 0);
  EXPECT_EQ(op->decision_p50_us(), 0);
}

}  // namespace
}  // namespace suanli::broker
