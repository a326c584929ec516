#include "broker/metrics.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "broker/log.h"
#include "google/rpc/status.pb.h"
#include "prometheus/text_serializer.h"
#include "suanli/v1/common.pb.h"

namespace suanli::broker {
namespace {

constexpr char kAllocateMethod[] = "/suanli.v1.MarketService/Allocate";

std::string CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    default:
      return absl::StrCat(static_cast<int>(code));
  }
}

// The rejection reason inside a RESOURCE_EXHAUSTED status's details (see services.cc ToGrpc).
std::string RejectionReason(const std::string& details) {
  google::rpc::Status status;
  if (details.empty() || !status.ParseFromString(details)) return "UNKNOWN";
  for (const google::protobuf::Any& any : status.details()) {
    v1::Rejection rejection;
    if (any.type_url() == kRejectionTypeUrl && any.UnpackTo(&rejection)) {
      return v1::RejectReason_Name(rejection.reason());
    }
  }
  return "UNKNOWN";
}

// Counts and times one call.
class RpcInterceptor : public grpc::experimental::Interceptor {
 public:
  RpcInterceptor(Metrics* metrics, std::string method)
      : metrics_(metrics), method_(std::move(method)), start_(absl::Now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      metrics_->ObserveRpc(method_, status.error_code(), status.error_details(),
                           absl::Now() - start_);
    }
    methods->Proceed();
  }

 private:
  Metrics* metrics_;
  std::string method_;
  absl::Time start_;
};

class RpcInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcInterceptorFactory(Metrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RpcInterceptor(metrics_, info->method() != nullptr ? info->method() : "");
  }

 private:
  Metrics* metrics_;
};

std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", static_cast<int>(c));
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

double Ratio(int64_t part, int64_t whole) {
  return whole > 0 ? static_cast<double>(part) / static_cast<double>(whole) : 0.0;
}

std::string Num(double d) { return absl::StrFormat("%.6g", d); }

}  // namespace

Metrics::Metrics(Engine* engine, Options options)
    : engine_(engine), options_(options), registry_(std::make_shared<prometheus::Registry>()) {
  prometheus::Registry& r = *registry_;
  rpc_requests_ = &prometheus::BuildCounter()
                       .Name("suanli_rpc_requests_total")
                       .Help("gRPC calls finished, by full method name and status code.")
                       .Register(r);
  rpc_duration_ = &prometheus::BuildHistogram()
                       .Name("suanli_rpc_duration_seconds")
                       .Help("Time from a call's arrival to its status, by full method name.")
                       .Register(r);
  allocations_ = &prometheus::BuildCounter()
                      .Name("suanli_allocate_requests_total")
                      .Help(
                          "Allocate calls by outcome: granted, rejected (no capacity fits), "
                          "failed (any other error).")
                      .Register(r);
  rejections_ = &prometheus::BuildCounter()
                     .Name("suanli_allocate_rejections_total")
                     .Help("Rejected Allocate calls by suanli.v1.RejectReason.")
                     .Register(r);
  for (const char* outcome : {"granted", "rejected", "failed"}) {
    allocations_->Add({{"outcome", outcome}});
  }
  for (const v1::RejectReason reason :
       {v1::REJECT_REASON_NO_MATCHING_CAPACITY, v1::REJECT_REASON_PRICE_ABOVE_CEILING,
        v1::REJECT_REASON_INSUFFICIENT_CAPACITY}) {
    rejections_->Add({{"reason", v1::RejectReason_Name(reason)}});
  }
  engine_batches_ = &prometheus::BuildCounter()
                         .Name("suanli_engine_batches_total")
                         .Help("Batches the engine decided and committed (or tried to).")
                         .Register(r)
                         .Add({});
  engine_commits_ = &prometheus::BuildCounter()
                         .Name("suanli_engine_commits_total")
                         .Help(
                             "Store transactions the engine's writer ran; fewer than batches "
                             "when batches decided during a commit were merged.")
                         .Register(r)
                         .Add({});
  engine_commands_ = &prometheus::BuildCounter()
                          .Name("suanli_engine_commands_total")
                          .Help("Commands (calls that change or read the market) the engine ran.")
                          .Register(r)
                          .Add({});
  commit_failures_ =
      &prometheus::BuildCounter()
           .Name("suanli_store_commit_failures_total")
           .Help("Batches whose store commit failed (their callers got UNAVAILABLE).")
           .Register(r)
           .Add({});
  auto gauge = [&r](const char* name, const char* help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Register(r);
  };
  gpus_ = &gauge("suanli_gpus", "GPUs on registered nodes.")->Add({});
  gpus_sold_ = &gauge("suanli_gpus_sold", "GPUs held by live allocations running now.")->Add({});
  nodes_ = &gauge("suanli_nodes", "Registered nodes.")->Add({});
  allocations_live_ =
      &gauge("suanli_allocations_live", "Allocations held, reserved or active.")->Add({});
  utilization_ = &gauge("suanli_utilization_ratio", "suanli_gpus_sold / suanli_gpus.")->Add({});
  gpus_on_sale_ =
      gauge("suanli_gpus_on_sale",
            "GPUs on sale now (healthy nodes under a live offer), by model and region.");
  gpus_free_ = gauge("suanli_gpus_free", "GPUs on sale and free now, by model and region.");
  center_gpus_ = gauge("suanli_center_gpus_on_sale", "GPUs on sale now, by center and region.");
  center_gpus_sold_ =
      gauge("suanli_center_gpus_sold", "GPUs on sale and sold now, by center and region.");
  gmv_ = &prometheus::BuildCounter()
              .Name("suanli_gmv_micros_total")
              .Help("Gross merchandise value charged to buyers, micro-units (from the ledger).")
              .Register(r);
  commission_ = &prometheus::BuildCounter()
                     .Name("suanli_commission_micros_total")
                     .Help("The broker's commission, micro-units (from the ledger).")
                     .Register(r);
}

Metrics::~Metrics() { Stop(); }

std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
Metrics::InterceptorFactories() {
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> out;
  out.push_back(std::make_unique<RpcInterceptorFactory>(this));
  return out;
}

void Metrics::ObserveRpc(absl::string_view method, grpc::StatusCode code,
                         const std::string& status_details, absl::Duration took) {
  const std::string m(absl::StripPrefix(method, "/"));
  rpc_requests_->Add({{"method", m}, {"code", CodeName(code)}}).Increment();
  static const auto* const kBuckets = new prometheus::Histogram::BucketBoundaries{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  rpc_duration_->Add({{"method", m}}, *kBuckets).Observe(absl::ToDoubleSeconds(took));
  if (method != kAllocateMethod) return;
  if (code == grpc::StatusCode::OK) {
    allocations_->Add({{"outcome", "granted"}}).Increment();
  } else if (code == grpc::StatusCode::RESOURCE_EXHAUSTED) {
    allocations_->Add({{"outcome", "rejected"}}).Increment();
    rejections_->Add({{"reason", RejectionReason(status_details)}}).Increment();
  } else {
    allocations_->Add({{"outcome", "failed"}}).Increment();
  }
}

void Metrics::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void Metrics::Stop() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void Metrics::Loop() {
  while (true) {
    SampleInto(/*record_history=*/true);
    absl::MutexLock l(&mu_);
    const absl::Condition stopped(
        +[](bool* s) { return *s; }, &stop_);
    if (mu_.AwaitWithTimeout(stopped, options_.interval)) return;
  }
}

bool Metrics::Sample() { return SampleInto(/*record_history=*/false); }

bool Metrics::SampleInto(bool record_history) {
  const int recent = options_.recent_allocations;
  absl::StatusOr<MarketSample> market =
      engine_->Run<MarketSample>([recent](Market& m, absl::Time now, storage::Batch*) {
        return SampleMarket(m, now, recent);
      });
  if (market.ok()) SetLedgerFigures({market->gmv_micros, market->commission_micros});
  const Engine::Stats stats = engine_->stats();
  std::shared_ptr<const CatalogSnapshot> catalog = engine_->Catalog();
  std::vector<CapacityGroup> by_model = CapacityByModelRegion(*catalog);
  std::vector<CapacityGroup> by_center = CapacityByCenter(*catalog);

  absl::MutexLock l(&mu_);
  engine_batches_->Increment(
      static_cast<double>(std::max<int64_t>(stats.batches - counted_.batches, 0)));
  engine_commands_->Increment(
      static_cast<double>(std::max<int64_t>(stats.commands - counted_.commands, 0)));
  engine_commits_->Increment(
      static_cast<double>(std::max<int64_t>(stats.commits - counted_.commits, 0)));
  commit_failures_->Increment(
      static_cast<double>(std::max<int64_t>(stats.commit_failures - counted_.commit_failures, 0)));
  counted_ = stats;
  view_.engine = stats;
  if (!market.ok()) return false;

  const scheduler::MarketTotals& t = market->totals;
  gpus_->Set(static_cast<double>(t.gpus));
  gpus_sold_->Set(static_cast<double>(t.sold_gpus_now));
  nodes_->Set(static_cast<double>(t.nodes));
  allocations_live_->Set(static_cast<double>(t.live_allocations));
  utilization_->Set(Ratio(t.sold_gpus_now, t.gpus));
  // Label sets come and go with the catalog: drop the last sample's, add this one's.
  for (prometheus::Gauge* g : group_gauges_) {
    gpus_on_sale_->Remove(g);
    gpus_free_->Remove(g);
    center_gpus_->Remove(g);
    center_gpus_sold_->Remove(g);
  }
  group_gauges_.clear();
  auto set = [this](prometheus::Family<prometheus::Gauge>* f, const prometheus::Labels& labels,
                    int64_t v) {
    prometheus::Gauge& g = f->Add(labels);
    g.Set(static_cast<double>(v));
    group_gauges_.push_back(&g);
  };
  for (const CapacityGroup& g : by_model) {
    const prometheus::Labels labels = {{"model", g.model}, {"region", g.region}};
    set(gpus_on_sale_, labels, g.gpus);
    set(gpus_free_, labels, g.free_gpus);
  }
  for (const CapacityGroup& g : by_center) {
    const prometheus::Labels labels = {{"center", g.center_id}, {"region", g.region}};
    set(center_gpus_, labels, g.gpus);
    set(center_gpus_sold_, labels, g.gpus - g.free_gpus);
  }
  if (record_history) {
    history_.push_back({market->at, t.gpus, t.sold_gpus_now});
    while (static_cast<int>(history_.size()) > std::max(options_.history, 1)) history_.pop_front();
  }
  view_.market = *std::move(market);
  view_.by_model_region = std::move(by_model);
  view_.by_center = std::move(by_center);
  return true;
}

void Metrics::SetLedgerFigures(const LedgerFigures& figures) {
  absl::MutexLock l(&mu_);
  gmv_->Add({}).Increment(
      static_cast<double>(std::max<int64_t>(figures.gmv_micros - ledger_counted_.gmv_micros, 0)));
  commission_->Add({}).Increment(static_cast<double>(
      std::max<int64_t>(figures.commission_micros - ledger_counted_.commission_micros, 0)));
  ledger_counted_ = figures;
  view_.ledger = figures;
}

std::string Metrics::Serialize() {
  absl::MutexLock l(&mu_);
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

Metrics::View Metrics::GetView() {
  absl::MutexLock l(&mu_);
  View v = view_;
  v.history.assign(history_.begin(), history_.end());
  const auto value = [](prometheus::Family<prometheus::Counter>* f, const prometheus::Labels& l) {
    return static_cast<int64_t>(f->Add(l).Value());
  };
  v.allocate_granted = value(allocations_, {{"outcome", "granted"}});
  v.allocate_rejected = value(allocations_, {{"outcome", "rejected"}});
  v.allocate_failed = value(allocations_, {{"outcome", "failed"}});
  for (const prometheus::MetricFamily& f : rejections_->Collect()) {
    for (const prometheus::ClientMetric& m : f.metric) {
      for (const prometheus::ClientMetric::Label& label : m.label) {
        if (label.name == "reason")
          v.rejections[label.value] = static_cast<int64_t>(m.counter.value);
      }
    }
  }
  return v;
}

std::string Metrics::DashboardJson() {
  const View v = GetView();
  std::string j = "{";
  const MarketSample empty;
  const MarketSample& m = v.market.has_value() ? *v.market : empty;
  const scheduler::MarketTotals& t = m.totals;
  int64_t on_sale = 0;
  int64_t free = 0;
  for (const CapacityGroup& g : v.by_model_region) {
    on_sale += g.gpus;
    free += g.free_gpus;
  }
  absl::StrAppend(&j, "\"at\":", v.market.has_value() ? absl::ToUnixSeconds(m.at) : 0,
                  ",\"totals\":{\"gpus\":", t.gpus, ",\"gpus_sold\":", t.sold_gpus_now,
                  ",\"nodes\":", t.nodes, ",\"allocations_live\":", t.live_allocations,
                  ",\"utilization\":", Num(Ratio(t.sold_gpus_now, t.gpus)),
                  ",\"gpus_on_sale\":", on_sale, ",\"gpus_free\":", free, "}");
  absl::StrAppend(&j, ",\"capacity\":[");
  for (size_t i = 0; i < v.by_model_region.size(); ++i) {
    const CapacityGroup& g = v.by_model_region[i];
    absl::StrAppend(&j, i > 0 ? "," : "", "{\"model\":", JsonString(g.model),
                    ",\"region\":", JsonString(g.region), ",\"gpus\":", g.gpus,
                    ",\"free\":", g.free_gpus, "}");
  }
  absl::StrAppend(&j, "],\"centers\":[");
  for (size_t i = 0; i < v.by_center.size(); ++i) {
    const CapacityGroup& g = v.by_center[i];
    absl::StrAppend(&j, i > 0 ? "," : "", "{\"id\":", JsonString(g.center_id),
                    ",\"name\":", JsonString(g.center_name), ",\"region\":", JsonString(g.region),
                    ",\"gpus\":", g.gpus, ",\"sold\":", g.gpus - g.free_gpus,
                    ",\"utilization\":", Num(Ratio(g.gpus - g.free_gpus, g.gpus)), "}");
  }
  const int64_t decided = v.allocate_granted + v.allocate_rejected;
  absl::StrAppend(&j, "],\"requests\":{\"granted\":", v.allocate_granted,
                  ",\"rejected\":", v.allocate_rejected, ",\"failed\":", v.allocate_failed,
                  ",\"fill_rate\":", decided > 0 ? Num(Ratio(v.allocate_granted, decided)) : "null",
                  ",\"rejections\":{");
  bool first = true;
  for (const auto& [reason, n] : v.rejections) {
    absl::StrAppend(&j, first ? "" : ",", JsonString(reason), ":", n);
    first = false;
  }
  absl::StrAppend(&j, "}},\"history\":[");
  for (size_t i = 0; i < v.history.size(); ++i) {
    const Point& p = v.history[i];
    absl::StrAppend(&j, i > 0 ? "," : "", "{\"t\":", absl::ToUnixSeconds(p.at),
                    ",\"gpus\":", p.gpus, ",\"sold\":", p.sold_gpus,
                    ",\"utilization\":", Num(Ratio(p.sold_gpus, p.gpus)), "}");
  }
  absl::StrAppend(&j, "],\"recent\":[");
  for (size_t i = 0; i < m.recent.size(); ++i) {
    const v1::Allocation& a = m.recent[i];
    int64_t gpus = 0;
    std::vector<std::string> centers;
    for (const v1::Slice& s : a.slices()) {
      gpus += s.gpus();
      if (std::find(centers.begin(), centers.end(), s.center_id()) == centers.end()) {
        centers.push_back(s.center_id());
      }
    }
    std::string cs;
    for (const std::string& c : centers) absl::StrAppend(&cs, cs.empty() ? "" : ",", JsonString(c));
    absl::StrAppend(&j, i > 0 ? "," : "", "{\"id\":", JsonString(a.id()),
                    ",\"buyer\":", JsonString(a.buyer_id()), ",\"gpus\":", gpus,
                    ",\"state\":", JsonString(v1::AllocationState_Name(a.state())),
                    ",\"start\":", a.start().seconds(), ",\"end\":", a.end().seconds(),
                    ",\"price_micros\":", a.total_price_micros(), ",\"centers\":[", cs, "]}");
  }
  absl::StrAppend(&j, "],\"engine\":{\"batches\":", v.engine.batches,
                  ",\"commands\":", v.engine.commands,
                  ",\"commit_failures\":", v.engine.commit_failures, "}");
  if (v.ledger.has_value()) {
    absl::StrAppend(&j, ",\"ledger\":{\"gmv_micros\":", v.ledger->gmv_micros,
                    ",\"commission_micros\":", v.ledger->commission_micros, "}");
  } else {
    absl::StrAppend(&j, ",\"ledger\":null");
  }
  return j + "}";
}

}  // namespace suanli::broker
