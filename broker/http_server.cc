#include "broker/http_server.h"

#include <sys/socket.h>

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "httplib.h"

namespace suanli::broker {

HttpServer::HttpServer() : server_(std::make_unique<httplib::Server>()) {}

HttpServer::~HttpServer() { Stop(); }

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& listen,
                                                              Metrics* metrics) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--http must be HOST:PORT (e.g. 127.0.0.1:7701), not '", listen, "'"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::unique_ptr<HttpServer> s(new HttpServer());
  httplib::Server& srv = *s->server_;
  srv.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_header("Cache-Control", "no-store");
    res.set_content(kDashboardHtml, "text/html; charset=utf-8");
  });
  srv.Get("/api/dashboard.json", [metrics](const httplib::Request&, httplib::Response& res) {
    metrics->Sample();
    res.set_header("Cache-Control", "no-store");
    res.set_content(metrics->DashboardJson(), "application/json");
  });
  srv.Get("/metrics", [metrics](const httplib::Request&, httplib::Response& res) {
    metrics->Sample();
    res.set_content(metrics->Serialize(), "text/plain; version=0.0.4; charset=utf-8");
  });
  srv.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  // SO_REUSEADDR only: httplib's default also sets SO_REUSEPORT, which would let a second broker
  // share (and silently split) a port that is in use.
  srv.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  if (port == 0) {
    s->port_ = srv.bind_to_any_port(host);
  } else {
    s->port_ = srv.bind_to_port(host, port) ? port : -1;
  }
  if (s->port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for HTTP on ", listen,
                     " (in use, or not an address of this machine?); choose another --http"));
  }
  s->thread_ = std::thread([srv = s->server_.get()] { srv->listen_after_bind(); });
  // httplib's stop() does nothing before the loop runs; wait for it so that Stop() always works.
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (!srv.is_running() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
  return s;
}

void HttpServer::Stop() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace suanli::broker
