// Statements, invoices and the settlement report end to end, through the SDK: a known market of
// two operators and two buyers (sales, an extension, an early release), then each operator's
// statement and each buyer's invoice hold exactly the entries and amounts that market implies,
// the report balances to 0, every tenant reads only its own books, the answers survive a restart,
// and GetMarketStats reports the decisions' latency.
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "tests/e2e/harness.h"

namespace suanli::e2e {
namespace {

constexpr int64_t kPriceA = 25'500'000;  // op-a: 25.50 per GPU-hour
constexpr int64_t kPriceB = 20'000'000;  // op-b: 20.00 per GPU-hour
constexpr int64_t kUnit = 1'000'000;

int64_t CommissionOf(int64_t gross) { return gross * 800 / 10'000; }  // 8%, floored

class SettlementTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Start();
    op_a_key_ = NewAccount(*admin_, v1::ROLE_OPERATOR, "op-a");
    op_b_key_ = NewAccount(*admin_, v1::ROLE_OPERATOR, "op-b");
    buyer_a_key_ = NewAccount(*admin_, v1::ROLE_BUYER, "buyer-a");
    buyer_b_key_ = NewAccount(*admin_, v1::ROLE_BUYER, "buyer-b");
    Reconnect();
    op_a_id_ = op_a_->Ping()->account_id();
    op_b_id_ = op_b_->Ping()->account_id();
    buyer_a_id_ = buyer_a_->Ping()->account_id();
    buyer_b_id_ = buyer_b_->Ping()->account_id();
    SmallMarket(*op_a_, "c-a", 4, kPriceA);  // 32 GPUs at 25.50
    SmallMarket(*op_b_, "c-b", 4, kPriceB);  // 32 GPUs at 20.00
  }
  void Start() {
    absl::StatusOr<std::unique_ptr<broker::Broker>> b = broker::Broker::Start(OptionsIn(dir_));
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = *std::move(b);
    admin_ = Connect(broker_->port(), ReadAll(dir_.File("admin.key")));
  }
  void Reconnect() {
    op_a_ = Connect(broker_->port(), op_a_key_);
    op_b_ = Connect(broker_->port(), op_b_key_);
    buyer_a_ = Connect(broker_->port(), buyer_a_key_);
    buyer_b_ = Connect(broker_->port(), buyer_b_key_);
  }
  void Restart() {
    broker_->Shutdown();
    broker_.reset();
    Start();
    Reconnect();
  }

  v1::GetStatementRequest StatementRequest(const std::string& op) const {
    v1::GetStatementRequest r;
    r.set_operator_id(op);
    *r.mutable_from() = Ts(from_);
    *r.mutable_to() = Ts(to_);
    return r;
  }
  v1::GetInvoiceRequest InvoiceRequest(const std::string& buyer) const {
    v1::GetInvoiceRequest r;
    r.set_buyer_id(buyer);
    *r.mutable_from() = Ts(from_);
    *r.mutable_to() = Ts(to_);
    return r;
  }

  TempDir dir_;
  std::unique_ptr<broker::Broker> broker_;
  std::unique_ptr<Client> admin_, op_a_, op_b_, buyer_a_, buyer_b_;
  std::string op_a_key_, op_b_key_, buyer_a_key_, buyer_b_key_;
  std::string op_a_id_, op_b_id_, buyer_a_id_, buyer_b_id_;
  const absl::Time from_ = absl::Now() - absl::Minutes(1);
  absl::Time to_ = absl::Now() + absl::Hours(1);
};

TEST_F(SettlementTest, StatementsAndInvoicesFollowTheMarketAndBalance) {
  // buyer-a: 16 GPUs for 2 h on op-b (the cheaper), extended by 1 h.
  absl::StatusOr<v1::Allocation> a1 = buyer_a_->Allocate(Gang(16, absl::Hours(2), 30 * kUnit));
  ASSERT_TRUE(a1.ok()) << a1.status();
  ASSERT_EQ(a1->slices(0).center_id(), "c-b");
  v1::ExtendAllocationRequest e;
  e.set_allocation_id(a1->id());
  *e.mutable_by() = Dur(absl::Hours(1));
  ASSERT_TRUE(buyer_a_->ExtendAllocation(e).ok());
  // buyer-b: 24 GPUs for 4 h, which only op-a has room for, released at once; then 8 GPUs for
  // 1 h on op-b.
  absl::StatusOr<v1::Allocation> a2 = buyer_b_->Allocate(Gang(24, absl::Hours(4), 30 * kUnit));
  ASSERT_TRUE(a2.ok()) << a2.status();
  ASSERT_EQ(a2->slices(0).center_id(), "c-a");
  v1::ReleaseAllocationRequest rel;
  rel.set_allocation_id(a2->id());
  absl::StatusOr<v1::Allocation> released = buyer_b_->ReleaseAllocation(rel);
  ASSERT_TRUE(released.ok()) << released.status();
  const int64_t c2 = released->total_price_micros();  // what the released one cost
  absl::StatusOr<v1::Allocation> a3 = buyer_b_->Allocate(Gang(8, absl::Hours(1), 30 * kUnit));
  ASSERT_TRUE(a3.ok()) << a3.status();
  ASSERT_EQ(a3->slices(0).center_id(), "c-b");
  to_ = absl::Now() + absl::Hours(1);

  // Latency of the three decisions (stored per minute, so also after the restart below).
  v1::GetMarketStatsRequest stats_request;
  *stats_request.mutable_from() = Ts(from_);
  *stats_request.mutable_to() = Ts(to_);
  absl::StatusOr<v1::GetMarketStatsResponse> stats = admin_->GetMarketStats(stats_request);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->decisions_timed(), 3);
  EXPECT_GT(stats->decision_p50_us(), 0);
  EXPECT_LE(stats->decision_p50_us(), stats->decision_p99_us());
  EXPECT_LE(stats->decision_p99_us(), stats->decision_p999_us());
  absl::StatusOr<v1::GetMarketStatsResponse> op_stats = op_a_->GetMarketStats(stats_request);
  ASSERT_TRUE(op_stats.ok()) << op_stats.status();
  EXPECT_EQ(op_stats->decisions_timed(), 0);  // market-wide: admins only

  std::map<std::string, std::string> before_restart;
  for (int pass = 0; pass < 2; ++pass) {
    SCOPED_TRACE(pass == 0 ? "before restart" : "after restart");
    // op-b: two sales and an extension, at 20.00.
    absl::StatusOr<v1::Statement> sb = op_b_->GetStatement(StatementRequest(""));
    ASSERT_TRUE(sb.ok()) << sb.status();
    EXPECT_EQ(sb->operator_id(), op_b_id_);
    EXPECT_EQ(sb->operator_name(), "op-b");
    ASSERT_EQ(sb->lines_size(), 3);
    const int64_t sale1 = 16 * kPriceB * 2;
    const int64_t ext1 = 16 * kPriceB;
    const int64_t sale3 = 8 * kPriceB;
    const std::vector<
        std::tuple<std::string, std::string, v1::LedgerEntryKind, int, double, int64_t>>
        want = {{a1->id(), buyer_a_id_, v1::LEDGER_ENTRY_KIND_SALE, 16, 32.0, sale1},
                {a1->id(), buyer_a_id_, v1::LEDGER_ENTRY_KIND_EXTENSION, 16, 16.0, ext1},
                {a3->id(), buyer_b_id_, v1::LEDGER_ENTRY_KIND_SALE, 8, 8.0, sale3}};
    for (int i = 0; i < 3; ++i) {
      SCOPED_TRACE(i);
      const v1::StatementLine& l = sb->lines(i);
      EXPECT_EQ(l.allocation_id(), std::get<0>(want[i]));
      EXPECT_EQ(l.buyer_id(), std::get<1>(want[i]));
      EXPECT_EQ(l.kind(), std::get<2>(want[i]));
      EXPECT_EQ(l.gpus(), std::get<3>(want[i]));
      EXPECT_NEAR(l.gpu_hours(), std::get<4>(want[i]), 1e-9);
      EXPECT_EQ(l.gross_micros(), std::get<5>(want[i]));
      EXPECT_EQ(l.commission_micros(), CommissionOf(std::get<5>(want[i])));
      EXPECT_EQ(l.net_micros(), l.gross_micros() - l.commission_micros());
    }
    EXPECT_EQ(sb->gross_micros(), 1120 * kUnit);
    EXPECT_EQ(sb->commission_micros(), 89'600'000);  // 51.20 + 25.60 + 12.80
    EXPECT_EQ(sb->net_micros(), 1030'400'000);
    EXPECT_NEAR(sb->gpu_hours(), 56.0, 1e-9);
    EXPECT_EQ(sb->opening_balance_micros(), 0);
    EXPECT_EQ(sb->closing_balance_micros(), sb->net_micros());

    // op-a: the released allocation's sale and refund, netting to what it cost.
    absl::StatusOr<v1::Statement> sa = admin_->GetStatement(StatementRequest(op_a_id_));
    ASSERT_TRUE(sa.ok()) << sa.status();
    ASSERT_EQ(sa->lines_size(), 2);
    EXPECT_EQ(sa->lines(0).kind(), v1::LEDGER_ENTRY_KIND_SALE);
    EXPECT_EQ(sa->lines(0).gross_micros(), 24 * kPriceA * 4);
    EXPECT_NEAR(sa->lines(0).gpu_hours(), 96.0, 1e-9);
    EXPECT_EQ(sa->lines(1).kind(), v1::LEDGER_ENTRY_KIND_REFUND);
    EXPECT_LT(sa->lines(1).gross_micros(), 0);
    EXPECT_EQ(sa->gross_micros(), c2);
    EXPECT_EQ(sa->commission_micros(), CommissionOf(c2));
    EXPECT_EQ(sa->net_micros(), c2 - CommissionOf(c2));
    const double used_hours =
        absl::ToDoubleHours(FromProtoTime(released->end()) - FromProtoTime(released->start()));
    EXPECT_NEAR(sa->gpu_hours(), 24 * used_hours, 1e-6);

    // The buyers' invoices.
    absl::StatusOr<v1::Invoice> ia = buyer_a_->GetInvoice(InvoiceRequest(""));
    ASSERT_TRUE(ia.ok()) << ia.status();
    EXPECT_EQ(ia->buyer_id(), buyer_a_id_);
    EXPECT_EQ(ia->buyer_name(), "buyer-a");
    ASSERT_EQ(ia->allocations_size(), 1);
    EXPECT_EQ(ia->allocations(0).allocation_id(), a1->id());
    EXPECT_EQ(ia->allocations(0).gpus(), 16);
    ASSERT_EQ(ia->allocations(0).entries_size(), 2);
    EXPECT_EQ(ia->allocations(0).entries(0).amount_micros(), sale1);
    EXPECT_EQ(ia->allocations(0).entries(1).amount_micros(), ext1);
    EXPECT_EQ(ia->total_due_micros(), 960 * kUnit);
    absl::StatusOr<v1::Invoice> ib = admin_->GetInvoice(InvoiceRequest(buyer_b_id_));
    ASSERT_TRUE(ib.ok()) << ib.status();
    ASSERT_EQ(ib->allocations_size(), 2);
    EXPECT_EQ(ib->allocations(0).allocation_id(), a2->id());
    EXPECT_EQ(ib->allocations(0).total_micros(), c2);
    EXPECT_EQ(ib->allocations(1).total_micros(), sale3);
    EXPECT_EQ(ib->entry_count(), 3);
    EXPECT_EQ(ib->total_due_micros(), c2 + sale3);

    // The report: every operator and buyer, and operators' net + commission = buyers' due.
    v1::GetSettlementReportRequest rr;
    *rr.mutable_from() = Ts(from_);
    *rr.mutable_to() = Ts(to_);
    absl::StatusOr<v1::GetSettlementReportResponse> report = admin_->GetSettlementReport(rr);
    ASSERT_TRUE(report.ok()) << report.status();
    ASSERT_EQ(report->statements_size(), 2);
    ASSERT_EQ(report->invoices_size(), 2);
    EXPECT_EQ(report->due_micros(), ia->total_due_micros() + ib->total_due_micros());
    EXPECT_EQ(report->gross_micros(), sa->gross_micros() + sb->gross_micros());
    EXPECT_EQ(report->net_micros() + report->commission_micros() - report->due_micros(), 0);
    // The statements of an earlier period are empty.
    v1::GetStatementRequest earlier = StatementRequest("");
    *earlier.mutable_from() = Ts(from_ - absl::Hours(2));
    *earlier.mutable_to() = Ts(from_);
    absl::StatusOr<v1::Statement> empty = op_b_->GetStatement(earlier);
    ASSERT_TRUE(empty.ok()) << empty.status();
    EXPECT_EQ(empty->lines_size(), 0);
    EXPECT_EQ(empty->net_micros(), 0);

    // The books are the same after a restart (the ledger is what is stored).
    const std::map<std::string, std::string> current = {{"sa", sa->SerializeAsString()},
                                                        {"sb", sb->SerializeAsString()},
                                                        {"ia", ia->SerializeAsString()},
                                                        {"ib", ib->SerializeAsString()},
                                                        {"report", report->SerializeAsString()}};
    if (pass == 0) {
      before_restart = current;
      Restart();
      // Decision latencies are stored per minute: the same after the restart.
      absl::StatusOr<v1::GetMarketStatsResponse> restored = admin_->GetMarketStats(stats_request);
      ASSERT_TRUE(restored.ok()) << restored.status();
      EXPECT_EQ(restored->decisions_timed(), stats->decisions_timed());
      EXPECT_EQ(restored->decision_p50_us(), stats->decision_p50_us());
      EXPECT_EQ(restored->decision_p99_us(), stats->decision_p99_us());
      EXPECT_EQ(restored->decision_p999_us(), stats->decision_p999_us());
    } else {
      EXPECT_EQ(current, before_restart);
    }
  }
}

TEST_F(SettlementTest, EachTenantReadsOnlyItsOwnBooks) {
  ASSERT_TRUE(buyer_a_->Allocate(Gang(8, absl::Hours(1), 30 * kUnit)).ok());
  // Operators: their own statement; another's is PERMISSION_DENIED; no invoices.
  EXPECT_TRUE(op_a_->GetStatement(StatementRequest("")).ok());
  EXPECT_TRUE(op_a_->GetStatement(StatementRequest(op_a_id_)).ok());
  EXPECT_EQ(op_a_->GetStatement(StatementRequest(op_b_id_)).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(op_a_->GetInvoice(InvoiceRequest("")).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(op_a_->GetInvoice(InvoiceRequest(buyer_a_id_)).status().code(),
            absl::StatusCode::kPermissionDenied);
  // Buyers: their own invoice; another's is PERMISSION_DENIED; no statements.
  EXPECT_TRUE(buyer_b_->GetInvoice(InvoiceRequest("")).ok());
  EXPECT_EQ(buyer_b_->GetInvoice(InvoiceRequest(buyer_a_id_)).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(buyer_b_->GetStatement(StatementRequest(op_b_id_)).status().code(),
            absl::StatusCode::kPermissionDenied);
  v1::GetSettlementReportRequest rr;
  *rr.mutable_from() = Ts(from_);
  *rr.mutable_to() = Ts(to_);
  EXPECT_EQ(buyer_b_->GetSettlementReport(rr).status().code(), absl::StatusCode::kPermissionDenied);
  // An operator's report holds its own statement and nobody's invoice.
  absl::StatusOr<v1::GetSettlementReportResponse> own = op_b_->GetSettlementReport(rr);
  ASSERT_TRUE(own.ok()) << own.status();
  ASSERT_EQ(own->statements_size(), 1);
  EXPECT_EQ(own->statements(0).operator_id(), op_b_id_);
  EXPECT_GT(own->statements(0).gross_micros(), 0);
  EXPECT_EQ(own->invoices_size(), 0);
  // Admins read anyone's; an unknown account is NOT_FOUND; a bad period INVALID_ARGUMENT.
  EXPECT_TRUE(admin_->GetStatement(StatementRequest(op_b_id_)).ok());
  EXPECT_TRUE(admin_->GetInvoice(InvoiceRequest(buyer_a_id_)).ok());
  EXPECT_EQ(admin_->GetStatement(StatementRequest("op-404")).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(admin_->GetInvoice(InvoiceRequest(op_a_id_)).status().code(),
            absl::StatusCode::kNotFound);
  v1::GetInvoiceRequest backwards = InvoiceRequest("");
  *backwards.mutable_from() = Ts(to_);
  *backwards.mutable_to() = Ts(from_);
  EXPECT_EQ(buyer_a_->GetInvoice(backwards).status().code(), absl::StatusCode::kInvalidArgument);
  // A key that is not valid reads nothing.
  std::unique_ptr<Client> nobody = Connect(broker_->port(), "sk_nobody_secret");
  EXPECT_EQ(nobody->GetInvoice(InvoiceRequest("")).status().code(),
            absl::StatusCode::kUnauthenticated);
}

}  // namespace
}  // namespace suanli::e2e
