// The `suanli` binary against a live broker: the operator -> buyer flow a person would type, JSON
// output on every command, and exit codes with messages on stderr.
#include <sys/wait.h>

#include <cstdio>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/e2e/harness.h"

namespace suanli::e2e {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct Result {
  int code = -1;
  std::string out, err;
};

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<broker::Broker>> b = broker::Broker::Start(OptionsIn(dir_));
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = *std::move(b);
    admin_key_ = ReadAll(dir_.File("admin.key"));
  }

  // Runs `suanli ARGS` with the given key; stdin is empty.
  Result Suanli(const std::string& key, const std::vector<std::string>& args) {
    std::string cmd = absl::StrCat("'", BinPath("suanli"), "' --server=127.0.0.1:", broker_->port(),
                                   " --key='", key, "'");
    for (const std::string& a : args) absl::StrAppend(&cmd, " '", a, "'");
    absl::StrAppend(&cmd, " </dev/null 2>'", dir_.File("stderr"), "'");
    Result r;
    FILE* p = popen(cmd.c_str(), "r");
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
    const int status = pclose(p);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.err = ReadAll(dir_.File("stderr"));
    return r;
  }

  // The api key a table-output `account create` printed.
  static std::string KeyIn(const std::string& out) {
    const size_t at = out.find("sk_");
    return at == std::string::npos ? "" : out.substr(at, 3 + 16 + 1 + 64);
  }

  TempDir dir_;
  std::unique_ptr<broker::Broker> broker_;
  std::string admin_key_;
};

TEST_F(CliTest, OperatorAndBuyerFlowAsAPersonTypesIt) {
  Result op = Suanli(admin_key_, {"account", "create", "--role=operator", "--name=op1"});
  ASSERT_EQ(op.code, 0) << op.err;
  const std::string op_key = KeyIn(op.out);
  ASSERT_FALSE(op_key.empty()) << op.out;
  Result buyer = Suanli(admin_key_, {"account", "create", "--role=buyer", "--name=b1"});
  ASSERT_EQ(buyer.code, 0) << buyer.err;
  const std::string buyer_key = KeyIn(buyer.out);

  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"center", "register", "--id=sh-1", "--name=Shanghai One", "--region=cn-east-2",
            "--type=carrier"},
           {"domain", "add", "--center=sh-1", "--id=ib0", "--fabric=infiniband", "--gbps=400"},
           {"node", "add", "--center=sh-1", "--domain=ib0", "--model=H800-SXM5-80G",
            "--gpus-per-node=8", "--count=6"},
           {"offer", "create", "--center=sh-1", "--domain=ib0", "--until=+240h",
            "--price=25.50"}}) {
    Result r = Suanli(op_key, args);
    ASSERT_EQ(r.code, 0) << absl::StrJoin(args, " ") << ": " << r.err;
  }
  // The catalog shows it (the snapshot is refreshed within milliseconds).
  Result cat;
  for (int i = 0; i < 100; ++i) {
    cat = Suanli(buyer_key, {"catalog", "model=H800-SXM5-80G", "free_gpus>=48"});
    if (cat.out.find("sh-1") != std::string::npos) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ(cat.code, 0) << cat.err;
  EXPECT_THAT(cat.out, HasSubstr("sh-1"));
  EXPECT_THAT(cat.out, HasSubstr("25.50"));

  Result a = Suanli(buyer_key, {"allocate", "--model=H800-SXM5-80G", "--gpus=16",
                                "--gpus-per-node=8", "--locality=domain", "--max-price=30",
                                "--duration=4h", "--idempotency-key=job-1", "--output=json"});
  ASSERT_EQ(a.code, 0) << a.err;
  v1::Allocation alloc;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(a.out, &alloc).ok()) << a.out;
  EXPECT_EQ(alloc.slices_size(), 2);
  EXPECT_EQ(alloc.total_price_micros(), 16 * 25'500'000LL * 4);
  // The same key again: the same allocation.
  Result again = Suanli(buyer_key, {"allocate", "--model=H800-SXM5-80G", "--gpus=16",
                                    "--gpus-per-node=8", "--locality=domain", "--max-price=30",
                                    "--duration=4h", "--idempotency-key=job-1", "--output=json"});
  ASSERT_EQ(again.code, 0) << again.err;
  v1::Allocation same;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(again.out, &same).ok());
  EXPECT_EQ(same.id(), alloc.id());

  Result get = Suanli(buyer_key, {"allocation", "get", alloc.id()});
  ASSERT_EQ(get.code, 0) << get.err;
  EXPECT_THAT(get.out, HasSubstr("active"));
  Result list = Suanli(buyer_key, {"allocation", "list", "--output=json"});
  ASSERT_EQ(list.code, 0) << list.err;
  v1::ListAllocationsResponse listed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(list.out, &listed).ok()) << list.out;
  EXPECT_EQ(listed.allocations_size(), 1);

  Result ext = Suanli(buyer_key, {"extend", alloc.id(), "--by=2h", "--output=json"});
  ASSERT_EQ(ext.code, 0) << ext.err;
  v1::Allocation longer;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(ext.out, &longer).ok());
  EXPECT_EQ(longer.end().seconds() - alloc.end().seconds(), 7200);

  // A binding quote, redeemed.
  Result q = Suanli(buyer_key, {"quote", "--model=H800-SXM5-80G", "--gpus=8", "--max-price=30",
                                "--duration=1h", "--hold=30s", "--output=json"});
  ASSERT_EQ(q.code, 0) << q.err;
  v1::QuoteResponse quote;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(q.out, &quote).ok()) << q.out;
  ASSERT_TRUE(quote.available());
  EXPECT_EQ(quote.allocation().state(), v1::ALLOCATION_STATE_HELD);
  Result redeem =
      Suanli(buyer_key, {"allocate", absl::StrCat("--quote=", quote.allocation().id())});
  ASSERT_EQ(redeem.code, 0) << redeem.err;
  EXPECT_THAT(redeem.out, HasSubstr("active"));

  Result sold = Suanli(op_key, {"sold", "list"});
  ASSERT_EQ(sold.code, 0) << sold.err;
  EXPECT_THAT(sold.out, HasSubstr(alloc.id()));

  Result rel = Suanli(buyer_key, {"release", alloc.id()});
  ASSERT_EQ(rel.code, 0) << rel.err;
  EXPECT_THAT(rel.out, HasSubstr("released"));

  Result cap = Suanli(op_key, {"capacity", "list", "--output=json"});
  ASSERT_EQ(cap.code, 0) << cap.err;
  v1::ListCapacityResponse capacity;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(cap.out, &capacity).ok()) << cap.out;
  EXPECT_EQ(capacity.nodes_size(), 6);
}

TEST_F(CliTest, ErrorsExitNonZeroWithAMessageOnStderr) {
  const std::string buyer_key =
      KeyIn(Suanli(admin_key_, {"account", "create", "--role=buyer", "--name=b1"}).out);
  ASSERT_FALSE(buyer_key.empty());
  // Nothing on sale: a rejection, exit 3, and what would work.
  Result none = Suanli(buyer_key, {"allocate", "--gpus=8", "--max-price=30", "--duration=1h"});
  EXPECT_EQ(none.code, 3);
  EXPECT_THAT(none.err, HasSubstr("RESOURCE_EXHAUSTED"));
  EXPECT_TRUE(none.out.empty());
  // The broker refuses: exit 1.
  Result denied =
      Suanli(buyer_key, {"center", "register", "--id=x", "--region=r", "--type=carrier"});
  EXPECT_EQ(denied.code, 1);
  EXPECT_THAT(denied.err, HasSubstr("PERMISSION_DENIED"));
  Result unauth = Suanli("sk_bad", {"ping"});
  EXPECT_EQ(unauth.code, 1);
  EXPECT_THAT(unauth.err, HasSubstr("UNAUTHENTICATED"));
  Result bad_query = Suanli(buyer_key, {"catalog", "price<=x"});
  EXPECT_EQ(bad_query.code, 1);
  EXPECT_THAT(bad_query.err, HasSubstr("column"));
  // Usage errors: exit 2, before any call.
  Result usage = Suanli(buyer_key, {"allocate", "--gpus=eight"});
  EXPECT_EQ(usage.code, 2);
  EXPECT_FALSE(usage.err.empty());
  Result unknown = Suanli(buyer_key, {"frobnicate"});
  EXPECT_EQ(unknown.code, 2);
  Result money =
      Suanli(buyer_key, {"allocate", "--gpus=8", "--max-price=1.0000001", "--duration=1h"});
  EXPECT_EQ(money.code, 2);
}

// Statements, invoices and the ops report as a person and a program read them: JSON equal to the
// SDK's answer, CSV with plain micro-units, tables with the totals, and the usual exit codes.
TEST_F(CliTest, StatementsInvoicesAndReportsInEveryFormat) {
  std::unique_ptr<Client> admin = Connect(broker_->port(), admin_key_);
  const std::string op_key = NewAccount(*admin, v1::ROLE_OPERATOR, "op1");
  const std::string buyer_key = NewAccount(*admin, v1::ROLE_BUYER, "b1");
  std::unique_ptr<Client> op = Connect(broker_->port(), op_key);
  std::unique_ptr<Client> buyer = Connect(broker_->port(), buyer_key);
  SmallMarket(*op, "c-1", 2, 25'500'000);
  absl::StatusOr<v1::Allocation> a = buyer->Allocate(Gang(8, absl::Hours(2), 30'000'000));
  ASSERT_TRUE(a.ok()) << a.status();
  const std::string op_id = op->Ping()->account_id();
  const std::string buyer_id = buyer->Ping()->account_id();
  const std::string from = absl::StrCat(
      "--from=",
      absl::FormatTime(absl::RFC3339_sec, absl::Now() - absl::Hours(1), absl::UTCTimeZone()));
  const std::string to = "--to=+1h";
  constexpr int64_t kGross = 8 * 25'500'000LL * 2;  // 408.00
  constexpr int64_t kCommission = kGross * 800 / 10'000;

  // statement: JSON is the Statement; CSV one row per line; the table ends with the totals.
  Result json = Suanli(op_key, {"statement", from, to, "--output=json"});
  ASSERT_EQ(json.code, 0) << json.err;
  v1::Statement statement;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json.out, &statement).ok()) << json.out;
  EXPECT_EQ(statement.operator_id(), op_id);
  ASSERT_EQ(statement.lines_size(), 1);
  EXPECT_EQ(statement.lines(0).allocation_id(), a->id());
  EXPECT_EQ(statement.gross_micros(), kGross);
  EXPECT_EQ(statement.net_micros(), kGross - kCommission);
  Result csv = Suanli(op_key, {"statement", from, to, "--output=csv"});
  ASSERT_EQ(csv.code, 0) << csv.err;
  std::vector<std::string> rows = absl::StrSplit(csv.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(rows.size(), 2u) << csv.out;
  EXPECT_EQ(rows[0],
            "entry_id,posted,allocation_id,buyer_id,kind,gpus,gpu_hours,gross_micros,"
            "commission_micros,net_micros");
  EXPECT_THAT(rows[1],
              HasSubstr(absl::StrCat(",", a->id(), ",", buyer_id, ",sale,8,16.000000,", kGross, ",",
                                     kCommission, ",", kGross - kCommission)));
  Result table = Suanli(op_key, {"statement", from, to});
  ASSERT_EQ(table.code, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr("net payable      375.36"));
  EXPECT_THAT(table.out, HasSubstr("commission       32.64"));
  // An admin names the operator.
  Result by_admin = Suanli(admin_key_, {"statement", "--operator=" + op_id, from, to});
  ASSERT_EQ(by_admin.code, 0) << by_admin.err;
  EXPECT_THAT(by_admin.out, HasSubstr("408.00"));

  // invoice.
  Result inv = Suanli(buyer_key, {"invoice", from, to, "--output=json"});
  ASSERT_EQ(inv.code, 0) << inv.err;
  v1::Invoice invoice;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(inv.out, &invoice).ok()) << inv.out;
  EXPECT_EQ(invoice.buyer_id(), buyer_id);
  EXPECT_EQ(invoice.total_due_micros(), kGross);
  ASSERT_EQ(invoice.allocations_size(), 1);
  EXPECT_EQ(invoice.allocations(0).entries_size(), 1);
  Result inv_csv = Suanli(buyer_key, {"invoice", from, to, "--output=csv"});
  ASSERT_EQ(inv_csv.code, 0) << inv_csv.err;
  rows = absl::StrSplit(inv_csv.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(rows.size(), 2u) << inv_csv.out;
  EXPECT_EQ(rows[0], "allocation_id,gpus,models,start,end,entry_id,posted,kind,amount_micros");
  EXPECT_TRUE(absl::EndsWith(rows[1], absl::StrCat(",sale,", kGross))) << rows[1];
  Result inv_table = Suanli(buyer_key, {"invoice", from, to});
  ASSERT_EQ(inv_table.code, 0) << inv_table.err;
  EXPECT_THAT(inv_table.out, HasSubstr("total due        408.00"));

  // ops report: the figures and the settlement in one JSON document, three CSV tables, a table.
  Result report = Suanli(admin_key_, {"ops", "report", from, to, "--output=json"});
  ASSERT_EQ(report.code, 0) << report.err;
  google::protobuf::Struct doc;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(report.out, &doc).ok()) << report.out;
  ASSERT_TRUE(doc.fields().contains("stats"));
  ASSERT_TRUE(doc.fields().contains("settlement"));
  std::string settlement_json;
  ASSERT_TRUE(
      google::protobuf::util::MessageToJsonString(doc.fields().at("settlement"), &settlement_json)
          .ok());
  v1::GetSettlementReportResponse settlement;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(settlement_json, &settlement).ok());
  ASSERT_EQ(settlement.statements_size(), 1);
  EXPECT_EQ(settlement.statements(0).operator_id(), op_id);
  ASSERT_EQ(settlement.invoices_size(), 1);
  EXPECT_EQ(settlement.due_micros(), kGross);
  EXPECT_EQ(settlement.net_micros() + settlement.commission_micros(), settlement.due_micros());
  std::string stats_json;
  ASSERT_TRUE(
      google::protobuf::util::MessageToJsonString(doc.fields().at("stats"), &stats_json).ok());
  v1::GetMarketStatsResponse stats;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(stats_json, &stats).ok());
  ASSERT_EQ(stats.rows_size(), 1);
  EXPECT_EQ(stats.rows(0).gmv_micros(), kGross);
  EXPECT_EQ(stats.decisions_timed(), 1);
  Result report_csv = Suanli(admin_key_, {"ops", "report", from, to, "--output=csv"});
  ASSERT_EQ(report_csv.code, 0) << report_csv.err;
  EXPECT_THAT(report_csv.out, HasSubstr("group,offered_gpu_hours,"));
  EXPECT_THAT(report_csv.out,
              HasSubstr(absl::StrCat("\n\noperator_id,operator_name,lines,gpu_hours,gross_micros,"
                                     "commission_micros,net_micros,opening_balance_micros,"
                                     "closing_balance_micros\n",
                                     op_id, ",op1,1,16.000000,", kGross, ",", kCommission)));
  EXPECT_THAT(report_csv.out,
              HasSubstr(absl::StrCat("\n\nbuyer_id,buyer_name,allocations,entries,"
                                     "total_due_micros,opening_balance_micros,"
                                     "closing_balance_micros\n",
                                     buyer_id, ",b1,1,1,", kGross, ",0,", kGross, "\n")));
  Result report_table = Suanli(admin_key_, {"ops", "report", from, to, "--by=center"});
  ASSERT_EQ(report_table.code, 0) << report_table.err;
  EXPECT_THAT(report_table.out, HasSubstr("Statements (operators)"));
  EXPECT_THAT(report_table.out, HasSubstr("Invoices (buyers)"));
  EXPECT_THAT(report_table.out, HasSubstr("c-1"));
  EXPECT_THAT(report_table.out, HasSubstr("decision latency: p50"));
  // An operator's report: its own statement, no invoices.
  Result op_report = Suanli(op_key, {"ops", "report", from, to});
  ASSERT_EQ(op_report.code, 0) << op_report.err;
  EXPECT_THAT(op_report.out, HasSubstr(op_id));
  EXPECT_THAT(op_report.out, Not(HasSubstr(buyer_id)));
  EXPECT_EQ(Suanli(admin_key_, {"ops", "stats"}).code, 0);

  // Exit codes: the broker refuses (1), usage errors (2), help (0).
  Result other = Suanli(buyer_key, {"invoice", "--buyer=" + op_id, from, to});
  EXPECT_EQ(other.code, 1);
  EXPECT_THAT(other.err, HasSubstr("PERMISSION_DENIED"));
  Result buyer_statement = Suanli(buyer_key, {"statement", from, to});
  EXPECT_EQ(buyer_statement.code, 1);
  EXPECT_THAT(buyer_statement.err, HasSubstr("PERMISSION_DENIED"));
  Result unknown = Suanli(admin_key_, {"statement", "--operator=op-404", from, to});
  EXPECT_EQ(unknown.code, 1);
  EXPECT_THAT(unknown.err, HasSubstr("NOT_FOUND"));
  Result no_from = Suanli(op_key, {"statement", to});
  EXPECT_EQ(no_from.code, 2);
  EXPECT_THAT(no_from.err, HasSubstr("--from is required"));
  EXPECT_EQ(Suanli(op_key, {"statement", "--from=yesterday", to}).code, 2);
  EXPECT_EQ(Suanli(op_key, {"statement", "--from=+2h", to}).code, 2);  // from after to
  EXPECT_EQ(Suanli(admin_key_, {"ops", "report", to}).code, 2);
  EXPECT_EQ(Suanli(buyer_key, {"allocation", "list", "--output=csv"}).code, 2);
  Result help = Suanli(admin_key_, {"ops", "report", "--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_THAT(help.out, HasSubstr("--from=TIME"));
  EXPECT_THAT(help.out, HasSubstr("invoice summary per buyer"));
}

}  // namespace
}  // namespace suanli::e2e
