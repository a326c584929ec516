// The HTTP port of suanlid: /metrics in the Prometheus text format (every metric of
// docs/METRICS.md present, with the figures of a known market), /api/dashboard.json, /healthz and
// the dashboard page.
#include <map>
#include <memory>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/e2e/harness.h"

namespace suanli::e2e {
namespace {

constexpr char kModel[] = "H100-SXM5-80G";
constexpr char kRegion[] = "cn-east-2";

// Every metric docs/METRICS.md documents, by the name of its family.
const char* const kDocumented[] = {
    "suanli_rpc_requests_total",
    "suanli_rpc_duration_seconds",
    "suanli_allocate_requests_total",
    "suanli_allocate_rejections_total",
    "suanli_engine_batches_total",
    "suanli_engine_commits_total",
    "suanli_engine_commands_total",
    "suanli_store_commit_failures_total",
    "suanli_gpus",
    "suanli_gpus_sold",
    "suanli_nodes",
    "suanli_allocations_live",
    "suanli_utilization_ratio",
    "suanli_gpus_on_sale",
    "suanli_gpus_free",
    "suanli_center_gpus_on_sale",
    "suanli_center_gpus_sold",
};
// Documented too, but fed by the ledger: present once Metrics::SetLedgerFigures was called.
const char* const kLedger[] = {"suanli_gmv_micros_total", "suanli_commission_micros_total"};

// A parsed text-format exposition: the families named by TYPE lines, and each sample's value by
// its series ("name{a=\"x\",b=\"y\"}" exactly as written).
struct Exposition {
  std::map<std::string, std::string> types;
  std::map<std::string, double> samples;

  double Get(const std::string& series) const {
    auto it = samples.find(series);
    return it == samples.end() ? -1 : it->second;
  }
};

Exposition Parse(const std::string& text) {
  Exposition e;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (absl::ConsumePrefix(&line, "# TYPE ")) {
      std::vector<std::string> parts = absl::StrSplit(line, ' ');
      EXPECT_EQ(parts.size(), 2u) << line;
      if (parts.size() == 2) e.types[parts[0]] = parts[1];
      continue;
    }
    if (absl::StartsWith(line, "#")) continue;
    const size_t space = line.rfind(' ');
    EXPECT_NE(space, absl::string_view::npos) << line;
    if (space == absl::string_view::npos) continue;
    double v = 0;
    EXPECT_TRUE(absl::SimpleAtod(line.substr(space + 1), &v)) << line;
    const absl::string_view series = line.substr(0, space);
    e.samples[{series.data(), series.size()}] = v;
  }
  return e;
}

class MetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    broker::BrokerOptions o = OptionsIn(dir_);
    o.http_listen = "127.0.0.1:0";
    absl::StatusOr<std::unique_ptr<broker::Broker>> b = broker::Broker::Start(o);
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = *std::move(b);
    ASSERT_GT(broker_->http_port(), 0);
    http_ = std::make_unique<httplib::Client>("127.0.0.1", broker_->http_port());
    admin_ = Connect(broker_->port(), ReadAll(dir_.File("admin.key")));
    op_ = Connect(broker_->port(), NewAccount(*admin_, v1::ROLE_OPERATOR, "op-a"));
    buyer_ = Connect(broker_->port(), NewAccount(*admin_, v1::ROLE_BUYER, "buyer-a"));
    // 48 H100s in cn-east-2: alpha 4 nodes at 2.00 per GPU-hour, beta 2 nodes at 3.00.
    SmallMarket(*op_, "alpha", 4, 2'000'000);
    SmallMarket(*op_, "beta", 2, 3'000'000);
    // One grant (16 GPUs, the cheapest: alpha) and two rejections.
    absl::StatusOr<v1::Allocation> a = buyer_->Allocate(Gang(16, absl::Hours(1), 2'500'000));
    ASSERT_TRUE(a.ok()) << a.status();
    allocation_id_ = a->id();
    absl::StatusOr<v1::Allocation> cheap = buyer_->Allocate(Gang(8, absl::Hours(1), 1'000'000));
    ASSERT_EQ(cheap.status().code(), absl::StatusCode::kResourceExhausted) << cheap.status();
    absl::StatusOr<v1::Allocation> big = buyer_->Allocate(Gang(40, absl::Hours(1), 9'000'000));
    ASSERT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted) << big.status();
    ASSERT_TRUE(admin_->Ping().ok());
    ASSERT_TRUE(admin_->Ping().ok());
  }
  void TearDown() override {
    http_.reset();
    if (broker_ != nullptr) broker_->Shutdown();
  }

  std::string Get(const std::string& path, const std::string& content_type_prefix) {
    httplib::Result r = http_->Get(path);
    EXPECT_TRUE(r) << path << ": " << httplib::to_string(r.error());
    if (!r) return "";
    EXPECT_EQ(r->status, 200) << path;
    EXPECT_TRUE(absl::StartsWith(r->get_header_value("Content-Type"), content_type_prefix))
        << path << ": " << r->get_header_value("Content-Type");
    return r->body;
  }

  // The metrics once the catalog shows the grant (the catalog snapshot trails by <= 20 ms).
  Exposition Metrics() {
    Exposition e;
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    do {
      e = Parse(Get("/metrics", "text/plain; version=0.0.4"));
      if (e.Get(R"(suanli_center_gpus_sold{center="alpha",region="cn-east-2"})") == 16) break;
      absl::SleepFor(absl::Milliseconds(20));
    } while (absl::Now() < deadline);
    return e;
  }

  TempDir dir_;
  std::unique_ptr<broker::Broker> broker_;
  std::unique_ptr<httplib::Client> http_;
  std::unique_ptr<Client> admin_, op_, buyer_;
  std::string allocation_id_;
};

TEST_F(MetricsTest, EveryDocumentedMetricIsExposed) {
  const Exposition e = Metrics();
  for (const char* name : kDocumented) {
    EXPECT_TRUE(e.types.count(name)) << name << " has no TYPE line";
  }
  for (const char* name : kLedger) EXPECT_EQ(e.types.at(name), "counter") << name;
  EXPECT_EQ(e.types.at("suanli_rpc_duration_seconds"), "histogram");
  EXPECT_EQ(e.types.at("suanli_rpc_requests_total"), "counter");
  EXPECT_EQ(e.types.at("suanli_gpus"), "gauge");
}

TEST_F(MetricsTest, MarketGaugesMatchTheMarket) {
  const Exposition e = Metrics();
  EXPECT_EQ(e.Get("suanli_gpus"), 48);
  EXPECT_EQ(e.Get("suanli_gpus_sold"), 16);
  EXPECT_EQ(e.Get("suanli_nodes"), 6);
  EXPECT_EQ(e.Get("suanli_allocations_live"), 1);
  EXPECT_NEAR(e.Get("suanli_utilization_ratio"), 16.0 / 48, 1e-6);
  const std::string mr = absl::StrCat("{model=\"", kModel, "\",region=\"", kRegion, "\"}");
  EXPECT_EQ(e.Get("suanli_gpus_on_sale" + mr), 48);
  EXPECT_EQ(e.Get("suanli_gpus_free" + mr), 32);
  EXPECT_EQ(e.Get(R"(suanli_center_gpus_on_sale{center="alpha",region="cn-east-2"})"), 32);
  EXPECT_EQ(e.Get(R"(suanli_center_gpus_sold{center="alpha",region="cn-east-2"})"), 16);
  EXPECT_EQ(e.Get(R"(suanli_center_gpus_on_sale{center="beta",region="cn-east-2"})"), 16);
  EXPECT_EQ(e.Get(R"(suanli_center_gpus_sold{center="beta",region="cn-east-2"})"), 0);
}

TEST_F(MetricsTest, CallsAreCountedByMethodCodeAndOutcome) {
  const Exposition e = Metrics();
  const std::string allocate = "suanli.v1.MarketService/Allocate";
  EXPECT_EQ(e.Get(absl::StrCat("suanli_rpc_requests_total{code=\"OK\",method=\"", allocate, "\"}")),
            1);
  EXPECT_EQ(e.Get(absl::StrCat("suanli_rpc_requests_total{code=\"RESOURCE_EXHAUSTED\",method=\"",
                               allocate, "\"}")),
            2);
  EXPECT_EQ(e.Get(R"(suanli_rpc_requests_total{code="OK",method="suanli.v1.MarketService/Ping"})"),
            2);
  EXPECT_EQ(
      e.Get(
          R"(suanli_rpc_requests_total{code="OK",method="suanli.v1.AdminService/CreateAccount"})"),
      2);
  EXPECT_EQ(e.Get(absl::StrCat("suanli_rpc_duration_seconds_count{method=\"", allocate, "\"}")), 3);
  EXPECT_EQ(e.Get(absl::StrCat("suanli_rpc_duration_seconds_bucket{method=\"", allocate,
                               "\",le=\"+Inf\"}")),
            3);
  EXPECT_GT(e.Get(absl::StrCat("suanli_rpc_duration_seconds_sum{method=\"", allocate, "\"}")), 0);
  EXPECT_EQ(e.Get(R"(suanli_allocate_requests_total{outcome="granted"})"), 1);
  EXPECT_EQ(e.Get(R"(suanli_allocate_requests_total{outcome="rejected"})"), 2);
  EXPECT_EQ(e.Get(R"(suanli_allocate_requests_total{outcome="failed"})"), 0);
  EXPECT_EQ(
      e.Get(R"(suanli_allocate_rejections_total{reason="REJECT_REASON_PRICE_ABOVE_CEILING"})"), 1);
  double reasons = 0;
  for (const auto& [series, v] : e.samples) {
    if (absl::StartsWith(series, "suanli_allocate_rejections_total{")) reasons += v;
  }
  EXPECT_EQ(reasons, 2);
  EXPECT_GT(e.Get("suanli_engine_batches_total"), 0);
  EXPECT_GT(e.Get("suanli_engine_commits_total"), 0);
  EXPECT_LE(e.Get("suanli_engine_commits_total"), e.Get("suanli_engine_batches_total"));
  EXPECT_GE(e.Get("suanli_engine_commands_total"), 3);
  EXPECT_EQ(e.Get("suanli_store_commit_failures_total"), 0);
}

TEST_F(MetricsTest, GmvAndCommissionComeFromTheLedger) {
  const Exposition e = Metrics();
  for (const char* name : kLedger) EXPECT_EQ(e.types.at(name), "counter") << name;
  // The one grant: 16 GPUs for an hour at 2.00; the broker's commission is 8% of it.
  EXPECT_EQ(e.Get("suanli_gmv_micros_total"), 32'000'000);
  EXPECT_EQ(e.Get("suanli_commission_micros_total"), 2'560'000);
}

TEST_F(MetricsTest, DashboardJsonShowsTheMarket) {
  Metrics();  // the catalog shows the grant
  google::protobuf::Struct d;
  const std::string json = Get("/api/dashboard.json", "application/json");
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json, &d).ok()) << json;
  const auto& f = d.fields();
  const auto& totals = f.at("totals").struct_value().fields();
  EXPECT_EQ(totals.at("gpus").number_value(), 48);
  EXPECT_EQ(totals.at("gpus_sold").number_value(), 16);
  EXPECT_EQ(totals.at("nodes").number_value(), 6);
  EXPECT_EQ(totals.at("allocations_live").number_value(), 1);
  EXPECT_EQ(totals.at("gpus_on_sale").number_value(), 48);
  EXPECT_EQ(totals.at("gpus_free").number_value(), 32);
  EXPECT_NEAR(totals.at("utilization").number_value(), 16.0 / 48, 1e-6);

  const auto& capacity = f.at("capacity").list_value();
  ASSERT_EQ(capacity.values_size(), 1);
  const auto& c0 = capacity.values(0).struct_value().fields();
  EXPECT_EQ(c0.at("model").string_value(), kModel);
  EXPECT_EQ(c0.at("region").string_value(), kRegion);
  EXPECT_EQ(c0.at("gpus").number_value(), 48);
  EXPECT_EQ(c0.at("free").number_value(), 32);

  const auto& centers = f.at("centers").list_value();
  ASSERT_EQ(centers.values_size(), 2);
  const auto& alpha = centers.values(0).struct_value().fields();
  const auto& beta = centers.values(1).struct_value().fields();
  EXPECT_EQ(alpha.at("id").string_value(), "alpha");
  EXPECT_EQ(alpha.at("gpus").number_value(), 32);
  EXPECT_EQ(alpha.at("sold").number_value(), 16);
  EXPECT_NEAR(alpha.at("utilization").number_value(), 0.5, 1e-6);
  EXPECT_EQ(beta.at("id").string_value(), "beta");
  EXPECT_EQ(beta.at("gpus").number_value(), 16);
  EXPECT_EQ(beta.at("sold").number_value(), 0);

  const auto& requests = f.at("requests").struct_value().fields();
  EXPECT_EQ(requests.at("granted").number_value(), 1);
  EXPECT_EQ(requests.at("rejected").number_value(), 2);
  EXPECT_NEAR(requests.at("fill_rate").number_value(), 1.0 / 3, 1e-6);
  EXPECT_EQ(requests.at("rejections")
                .struct_value()
                .fields()
                .at("REJECT_REASON_PRICE_ABOVE_CEILING")
                .number_value(),
            1);

  const auto& recent = f.at("recent").list_value();
  ASSERT_EQ(recent.values_size(), 1);
  const auto& r0 = recent.values(0).struct_value().fields();
  EXPECT_EQ(r0.at("id").string_value(), allocation_id_);
  EXPECT_EQ(r0.at("gpus").number_value(), 16);
  EXPECT_EQ(r0.at("centers").list_value().values(0).string_value(), "alpha");
  // 16 GPUs for an hour at 2.00.
  EXPECT_EQ(r0.at("price_micros").number_value(), 32'000'000);

  // The background sampler records a point at start.
  EXPECT_GE(f.at("history").list_value().values_size(), 1);
  EXPECT_EQ(f.at("engine").struct_value().fields().at("commit_failures").number_value(), 0);
  ASSERT_EQ(f.at("ledger").kind_case(), google::protobuf::Value::kStructValue);
  EXPECT_EQ(f.at("ledger").struct_value().fields().at("gmv_micros").number_value(), 32'000'000);
}

TEST_F(MetricsTest, ServesTheDashboardPageAndHealth) {
  const std::string page = Get("/", "text/html");
  EXPECT_NE(page.find("<title>Suanli market</title>"), std::string::npos);
  EXPECT_NE(page.find("api/dashboard.json"), std::string::npos);
  EXPECT_EQ(page.find("http://"), std::string::npos) << "the page must not load anything remote";
  EXPECT_EQ(page.find("https://"), std::string::npos) << "the page must not load anything remote";
  EXPECT_EQ(Get("/healthz", "text/plain"), "ok\n");
  httplib::Result missing = http_->Get("/nope");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
}

TEST(MetricsStartTest, AnAddressInUseFailsTheStart) {
  TempDir dir;
  broker::BrokerOptions o = OptionsIn(dir);
  o.http_listen = "127.0.0.1:0";
  absl::StatusOr<std::unique_ptr<broker::Broker>> first = broker::Broker::Start(o);
  ASSERT_TRUE(first.ok()) << first.status();
  TempDir dir2;
  broker::BrokerOptions o2 = OptionsIn(dir2);
  o2.http_listen = absl::StrCat("127.0.0.1:", (*first)->http_port());
  absl::StatusOr<std::unique_ptr<broker::Broker>> second = broker::Broker::Start(o2);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
  o2.http_listen = "no-port";
  second = broker::Broker::Start(o2);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kInvalidArgument) << second.status();
}

}  // namespace
}  // namespace suanli::e2e
