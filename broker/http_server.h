// The broker's HTTP port (suanlid --http=HOST:PORT): plain HTTP/1.1 for operators and Prometheus.
//   GET /                    the ops dashboard (one self-contained page, embedded in the binary)
//   GET /api/dashboard.json  the dashboard's data (Metrics::DashboardJson), sampled per request
//   GET /metrics             Prometheus text format 0.0.4, gauges sampled per scrape
//   GET /healthz             "ok" while the broker serves
// No authentication: bind it to loopback or a private network only.
//
//   absl::StatusOr<std::unique_ptr<HttpServer>> http = HttpServer::Start("127.0.0.1:0", &metrics);
//   ... (*http)->port() ...
//   (*http)->Stop();
#ifndef SUANLI_BROKER_HTTP_SERVER_H_
#define SUANLI_BROKER_HTTP_SERVER_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "broker/metrics.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace suanli::broker {

// The dashboard page (generated from broker/dashboard/index.html at build time).
extern const char kDashboardHtml[];

class HttpServer {
 public:
  // Listens on `listen` ("HOST:PORT", port 0 picks a free one) and serves on its own threads.
  // INVALID_ARGUMENT for a malformed address, UNAVAILABLE when it cannot be bound. `metrics`
  // outlives the server.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const std::string& listen,
                                                           Metrics* metrics);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }
  // Stops accepting, finishes requests in flight, joins the threads. Idempotent.
  void Stop();

 private:
  HttpServer();

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace suanli::broker

#endif  // SUANLI_BROKER_HTTP_SERVER_H_
