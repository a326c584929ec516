// suanlid as a library: the store, the engine and the gRPC server together, so that the daemon's
// main and the end-to-end tests start exactly the same thing.
//
//   BrokerOptions o;
//   o.listen = "127.0.0.1:0";
//   o.store_url = "sqlite:/tmp/x/suanli.db";
//   o.admin_key_file = "/tmp/x/admin.key";
//   absl::StatusOr<std::unique_ptr<Broker>> b = Broker::Start(o);
//   ... (*b)->port() ...
//   (*b)->Shutdown();
#ifndef SUANLI_BROKER_SERVER_H_
#define SUANLI_BROKER_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "broker/auth.h"
#include "broker/engine.h"
#include "broker/http_server.h"
#include "broker/metrics.h"
#include "grpcpp/grpcpp.h"

namespace suanli::broker {

struct BrokerOptions {
  std::string listen = "127.0.0.1:7700";  // HOST:PORT; port 0 picks a free one
  std::string store_url = "sqlite:var/suanli.db";
  // Holds the admin API key. Made (mode 0600) with a new key when missing.
  std::string admin_key_file = "var/admin.key";
  // PEM files; TLS on the gRPC port when both are given.
  std::string tls_cert_file;
  std::string tls_key_file;
  // HOST:PORT of the HTTP port (/metrics, the ops dashboard at /, /api/dashboard.json, /healthz;
  // see http_server.h); "" (the default): no HTTP port. Port 0 picks a free one.
  std::string http_listen;
  Engine::Options engine;
  Metrics::Options metrics;
};

class Broker {
 public:
  // Opens the store, rebuilds the market, and starts serving. INVALID_ARGUMENT for bad options,
  // UNAVAILABLE when the port cannot be bound, and the store's errors.
  static absl::StatusOr<std::unique_ptr<Broker>> Start(const BrokerOptions& options);
  ~Broker();

  int port() const { return port_; }
  // The HTTP port, or 0 when BrokerOptions::http_listen was "".
  int http_port() const { return http_ != nullptr ? http_->port() : 0; }
  // A new admin key made at this start (also written to the key file), or "".
  const std::string& new_admin_key() const { return new_admin_key_; }
  Engine& engine() { return *engine_; }
  Metrics& metrics() { return *metrics_; }

  // Graceful stop: stops the HTTP port and the metrics sampler, ends watch streams, stops accepting
  // calls, lets calls in flight finish (cancelling them after `grace`), commits what the engine has
  // queued, closes the store.
  void Shutdown(absl::Duration grace = absl::Seconds(10));

 private:
  Broker() = default;

  KeyRing keys_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Metrics> metrics_;  // after engine_: goes first
  std::unique_ptr<HttpServer> http_;
  std::vector<std::unique_ptr<grpc::Service>> services_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string new_admin_key_;
  bool stopped_ = false;
};

}  // namespace suanli::broker

#endif  // SUANLI_BROKER_SERVER_H_
