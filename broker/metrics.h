// The broker's Prometheus metrics (docs/METRICS.md lists every one) and the figures the ops
// dashboard shows. Three sources feed them:
//   - a gRPC server interceptor (InterceptorFactory) counts every call by method and status code,
//     times it, and counts Allocate outcomes and rejection reasons;
//   - Sample() reads the engine's counters, the market's totals and the catalog snapshot;
//   - a background thread (Start) samples every `interval` and keeps a history for the dashboard.
//
//   Metrics metrics(&engine, {});
//   builder.experimental().SetInterceptorCreators(metrics.InterceptorFactories());
//   metrics.Start();
//   ... metrics.Sample(); std::string text = metrics.Serialize(); ...
//   metrics.Stop();
//
// Thread-safe: every public method may be called from any thread. Stop() before the engine stops.
#ifndef SUANLI_BROKER_METRICS_H_
#define SUANLI_BROKER_METRICS_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "broker/engine.h"
#include "broker/market_view.h"
#include "grpcpp/support/server_interceptor.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace suanli::broker {

// The books' figures: the sampler sums the ledger at each sample (SetLedgerFigures), /metrics
// shows suanli_gmv_micros_total and suanli_commission_micros_total and the dashboard shows GMV.
struct LedgerFigures {
  int64_t gmv_micros = 0;         // charged to buyers since the market began
  int64_t commission_micros = 0;  // the broker's part of it
};

class Metrics {
 public:
  struct Options {
    absl::Duration interval = absl::Seconds(10);  // between background samples
    int history = 360;                            // samples kept (an hour at 10 s)
    int recent_allocations = 20;                  // shown on the dashboard
  };
  // One point of the utilization history.
  struct Point {
    absl::Time at;
    int64_t gpus = 0;
    int64_t sold_gpus = 0;
  };
  // What the dashboard shows; see DashboardJson.
  struct View {
    std::optional<MarketSample> market;  // empty until the first sample
    std::vector<CapacityGroup> by_model_region;
    std::vector<CapacityGroup> by_center;
    Engine::Stats engine;
    std::vector<Point> history;  // oldest first
    int64_t allocate_granted = 0;
    int64_t allocate_rejected = 0;              // RESOURCE_EXHAUSTED
    int64_t allocate_failed = 0;                // any other error
    std::map<std::string, int64_t> rejections;  // by reason name
    std::optional<LedgerFigures> ledger;
  };

  // `engine` outlives this object.
  Metrics(Engine* engine, Options options);
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // For ServerBuilder::experimental().SetInterceptorCreators.
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
  InterceptorFactories();

  // Starts / stops the background sampler (Stop is idempotent; the destructor calls it).
  void Start();
  void Stop();

  // Reads the engine, the market (one engine command) and the catalog now and updates the
  // gauges. Returns false when the engine did not answer (stopping).
  bool Sample();
  // The metrics in the Prometheus text format (0.0.4).
  std::string Serialize();
  View GetView();
  // The dashboard's data as JSON (docs/METRICS.md describes the fields).
  std::string DashboardJson();

  void SetLedgerFigures(const LedgerFigures& figures);

  // Called by the interceptor when a call ends. `status_details` is grpc::Status::error_details.
  void ObserveRpc(absl::string_view method, grpc::StatusCode code,
                  const std::string& status_details, absl::Duration took);

 private:
  bool SampleInto(bool record_history);
  void Loop();

  Engine* engine_;
  Options options_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* rpc_requests_;
  prometheus::Family<prometheus::Histogram>* rpc_duration_;
  prometheus::Family<prometheus::Counter>* allocations_;
  prometheus::Family<prometheus::Counter>* rejections_;
  prometheus::Counter* engine_batches_;
  prometheus::Counter* engine_commits_;
  prometheus::Counter* engine_commands_;
  prometheus::Counter* commit_failures_;
  prometheus::Gauge* gpus_;
  prometheus::Gauge* gpus_sold_;
  prometheus::Gauge* nodes_;
  prometheus::Gauge* allocations_live_;
  prometheus::Gauge* utilization_;
  prometheus::Family<prometheus::Gauge>* gpus_on_sale_;
  prometheus::Family<prometheus::Gauge>* gpus_free_;
  prometheus::Family<prometheus::Gauge>* center_gpus_;
  prometheus::Family<prometheus::Gauge>* center_gpus_sold_;
  prometheus::Family<prometheus::Counter>* gmv_;
  prometheus::Family<prometheus::Counter>* commission_;

  absl::Mutex mu_;
  View view_ ABSL_GUARDED_BY(mu_);
  std::deque<Point> history_ ABSL_GUARDED_BY(mu_);
  // Label sets of the by-group gauges set at the last sample (removed when they disappear).
  std::vector<prometheus::Gauge*> group_gauges_ ABSL_GUARDED_BY(mu_);
  Engine::Stats counted_ ABSL_GUARDED_BY(mu_);  // engine stats already added to the counters
  LedgerFigures ledger_counted_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace suanli::broker

#endif  // SUANLI_BROKER_METRICS_H_
