#include "broker/server.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "broker/log.h"
#include "broker/services.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "storage/store.h"

namespace suanli::broker {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read the ", what, " file '", path, "': ", std::strerror(errno)));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Writes a secret file that only its owner can read; fails when it exists.
absl::Status WriteSecretFile(const std::string& path, const std::string& content) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create '", path, "': ", std::strerror(errno)));
  }
  const std::string line = content + "\n";
  const bool ok =
      write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && fsync(fd) == 0;
  close(fd);
  if (!ok) return absl::FailedPreconditionError(absl::StrCat("cannot write '", path, "'"));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Broker>> Broker::Start(const BrokerOptions& options) {
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("TLS needs both --tls-cert and --tls-key");
  }
  std::optional<NewKey> admin_key;
  if (access(options.admin_key_file.c_str(), F_OK) == 0) {
    absl::StatusOr<std::string> text = ReadFile(options.admin_key_file, "admin key");
    if (!text.ok()) return text.status();
    absl::StatusOr<NewKey> k = ParseKey(absl::StripAsciiWhitespace(*text));
    if (!k.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the admin key file '", options.admin_key_file,
                       "' does not hold a key: ", k.status().message()));
    }
    admin_key = *k;
  }
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!options.tls_cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadFile(options.tls_cert_file, "TLS certificate");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadFile(options.tls_key_file, "TLS key");
    if (!key.ok()) return key.status();
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    creds = grpc::SslServerCredentials(ssl);
  }

  absl::StatusOr<std::unique_ptr<storage::Store>> store = storage::OpenStore(options.store_url);
  if (!store.ok()) return store.status();
  std::unique_ptr<Broker> b(new Broker());
  const std::string described = (*store)->Describe();
  b->engine_ = std::make_unique<Engine>(*std::move(store), &b->keys_, options.engine);
  const absl::Time t0 = absl::Now();
  absl::StatusOr<std::string> made = b->engine_->Start(admin_key);
  if (!made.ok()) return made.status();
  Log(absl::StrCat("store ", described, " loaded in ", absl::FormatDuration(absl::Now() - t0)));
  if (!made->empty()) {
    if (absl::Status s = WriteSecretFile(options.admin_key_file, *made); !s.ok()) {
      b->engine_->Stop();
      return absl::FailedPreconditionError(
          absl::StrCat("a new admin key was made but could not be saved: ", s.message(),
                       "; start again to have another made"));
    }
    b->new_admin_key_ = *made;
    Log(absl::StrCat("made a new admin API key and wrote it to ", options.admin_key_file,
                     " (mode 0600); use it with: suanli --key=$(cat ", options.admin_key_file,
                     ") ..."));
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  b->metrics_ = std::make_unique<Metrics>(b->engine_.get(), options.metrics);
  grpc::ServerBuilder builder;
  // Keep polling threads around instead of creating and joining one per call (measured:
  // ~1,400 thread creations/s under load without this; docs/BENCHMARKS.md).
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, 2);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 256);
  builder.experimental().SetInterceptorCreators(b->metrics_->InterceptorFactories());
  builder.AddListeningPort(options.listen, creds, &b->port_);
  auto market = std::make_unique<MarketServiceImpl>(b->engine_.get(), &b->keys_);
  auto op = std::make_unique<OperatorServiceImpl>(b->engine_.get(), &b->keys_);
  auto admin = std::make_unique<AdminServiceImpl>(b->engine_.get(), &b->keys_);
  auto ops = std::make_unique<OpsServiceImpl>(b->engine_.get(), &b->keys_);
  builder.RegisterService(market.get());
  builder.RegisterService(op.get());
  builder.RegisterService(admin.get());
  builder.RegisterService(ops.get());
  b->services_.push_back(std::move(market));
  b->services_.push_back(std::move(op));
  b->services_.push_back(std::move(admin));
  b->services_.push_back(std::move(ops));
  b->server_ = builder.BuildAndStart();
  if (b->server_ == nullptr || b->port_ == 0) {
    b->engine_->Stop();
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen,
                     " (in use, or not an address of this machine?); choose another --listen"));
  }
  Log(absl::StrCat("serving gRPC on ", options.listen, " (port ", b->port_, ", ",
                   options.tls_cert_file.empty() ? "plaintext" : "TLS", ")"));
  b->metrics_->Start();
  if (!options.http_listen.empty()) {
    absl::StatusOr<std::unique_ptr<HttpServer>> http =
        HttpServer::Start(options.http_listen, b->metrics_.get());
    if (!http.ok()) {
      b->Shutdown(absl::ZeroDuration());
      return http.status();
    }
    b->http_ = *std::move(http);
    Log(absl::StrCat("serving HTTP on ", options.http_listen, " (port ", b->http_->port(),
                     "): /metrics, the dashboard at /"));
  }
  return b;
}

void Broker::Shutdown(absl::Duration grace) {
  if (stopped_) return;
  stopped_ = true;
  if (http_ != nullptr) http_->Stop();
  if (metrics_ != nullptr) metrics_->Stop();
  engine_->BeginStop();
  engine_->hub().CloseAll();
  if (server_ != nullptr) {
    server_->GetHealthCheckService()->SetServingStatus(false);
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::microseconds(absl::ToInt64Microseconds(grace)));
    server_->Wait();
  }
  engine_->Stop();
  Log("stopped: every acknowledged change is in the store");
}

Broker::~Broker() { Shutdown(); }

}  // namespace suanli::broker
