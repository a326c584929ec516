#include "sdk/client.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/call_once.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/alarm.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "grpcpp/support/sync_stream.h"

namespace suanli {
namespace {

constexpr absl::Duration kFirstBackoff = absl::Milliseconds(50);
constexpr absl::Duration kMaxBackoff = absl::Seconds(2);
constexpr char kUserAgent[] = "suanli-sdk-cpp/0.1";

absl::Status CheckOptions(const ClientOptions& options) {
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeout must be more than 0");
  }
  if (options.max_attempts < 1) {
    return absl::InvalidArgumentError("max_attempts must be at least 1");
  }
  const std::string& key = options.api_key;
  if (!key.empty()) {
    const bool printable =
        std::all_of(key.begin(), key.end(), [](char c) { return c > ' ' && c < 0x7f; });
    if (!printable || !absl::StartsWith(key, "sk_")) {
      return absl::InvalidArgumentError(
          "the API key must look like sk_<keyid>_<secret> (printable, no spaces)");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read CA file ", path));
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// gRPC 1.51 serves the callback API of every channel from one process-wide completion queue,
// which it tears down when the last channel that used it is destroyed and builds again for the
// next one; that teardown races with the queue's own threads (an abort, "assertion failed:
// prior > 0", in grpc_cq_internal_unref). Once a program makes a non-blocking call, one channel
// that never connects (a unix socket path that does not exist) makes one callback call and is
// kept for the life of the process, so that the queue is built once and never torn down.
struct CallbackQueueKeeper {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::MarketService::Stub> stub;
  grpc::ClientContext context;
  v1::PingRequest request;
  v1::PingResponse response;
};

// Never deleted (it must outlive every other channel); held here so that it stays reachable.
std::atomic<CallbackQueueKeeper*> callback_queue_keeper{nullptr};

void KeepCallbackQueue() {
  static absl::once_flag once;
  absl::call_once(once, [] {
    auto* k = new CallbackQueueKeeper;
    k->channel = grpc::CreateChannel("unix:/nonexistent/suanli-sdk-callback-queue",
                                     grpc::InsecureChannelCredentials());
    k->stub = v1::MarketService::NewStub(k->channel);
    k->context.set_deadline(std::chrono::system_clock::now());
    k->stub->async()->Ping(&k->context, &k->request, &k->response, [](const grpc::Status&) {});
    callback_queue_keeper.store(k);
  });
}

}  // namespace

std::optional<v1::Rejection> RejectionOf(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(kRejectionTypeUrl);
  if (!payload.has_value()) return std::nullopt;
  v1::Rejection rejection;
  if (!rejection.ParseFromString(static_cast<std::string>(*payload))) return std::nullopt;
  return rejection;
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  absl::Status out(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  if (status.error_details().empty()) return out;
  google::rpc::Status details;
  if (!details.ParseFromString(status.error_details())) return out;
  for (const google::protobuf::Any& any : details.details()) {
    if (any.type_url() == kRejectionTypeUrl) {
      out.SetPayload(kRejectionTypeUrl, absl::Cord(any.value()));
      break;
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(ClientOptions options) {
  if (options.target.empty()) return absl::InvalidArgumentError("no server address given");
  if (absl::Status s = CheckOptions(options); !s.ok()) return s;
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.ca_file.empty()) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    absl::StatusOr<std::string> pem = ReadFile(options.ca_file);
    if (!pem.ok()) return pem.status();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = *std::move(pem);
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetUserAgentPrefix(kUserAgent);
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(options.target, credentials, args);
  return Connect(std::move(channel), std::move(options));
}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(
    std::shared_ptr<grpc::ChannelInterface> channel, ClientOptions options) {
  if (channel == nullptr) return absl::InvalidArgumentError("no channel given");
  if (absl::Status s = CheckOptions(options); !s.ok()) return s;
  return std::unique_ptr<Client>(new Client(std::move(channel), std::move(options)));
}

Client::Client(std::shared_ptr<grpc::ChannelInterface> channel, ClientOptions options)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      market_(v1::MarketService::NewStub(channel_)),
      operator_(v1::OperatorService::NewStub(channel_)),
      admin_(v1::AdminService::NewStub(channel_)),
      ops_(v1::OpsService::NewStub(channel_)) {}

std::unique_ptr<grpc::ClientContext> Client::NewContext(bool deadline) const {
  auto context = std::make_unique<grpc::ClientContext>();
  if (!options_.api_key.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", options_.api_key));
  }
  if (deadline) context->set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
  return context;
}

absl::Duration Client::BackoffDelay(int attempt) {
  absl::Duration backoff = kFirstBackoff;
  for (int i = 2; i < attempt && backoff < kMaxBackoff; ++i) backoff *= 2;
  backoff = std::min(backoff, kMaxBackoff);
  absl::MutexLock lock(&random_mu_);
  return absl::Microseconds(absl::Uniform<int64_t>(random_, absl::ToInt64Microseconds(backoff) / 2,
                                                   absl::ToInt64Microseconds(backoff) + 1));
}

void Client::FillIdempotencyKey(v1::AllocateRequest* request) {
  if (!request->request().idempotency_key().empty()) return;
  absl::MutexLock lock(&random_mu_);
  request->mutable_request()->set_idempotency_key(absl::StrFormat(
      "sdk-%016x%016x", absl::Uniform<uint64_t>(random_), absl::Uniform<uint64_t>(random_)));
}

template <typename Stub, typename Request, typename Response>
absl::StatusOr<Response> Client::Call(bool retry_safe, Stub* stub,
                                      grpc::Status (Stub::*method)(grpc::ClientContext*,
                                                                   const Request&, Response*),
                                      const Request& request) {
  const int attempts = retry_safe ? options_.max_attempts : 1;
  grpc::Status status;
  for (int attempt = 1; attempt <= attempts; ++attempt) {
    if (attempt > 1) absl::SleepFor(BackoffDelay(attempt));
    std::unique_ptr<grpc::ClientContext> context = NewContext(/*deadline=*/true);
    Response response;
    status = (stub->*method)(context.get(), request, &response);
    if (status.ok()) return response;
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE) break;
  }
  return FromGrpcStatus(status);
}

// One non-blocking call and its attempts. Shared by the callbacks that may still run (the
// attempt's and the backoff timer's), so it lives until the last of them has returned.
template <typename Request, typename Response>
class Client::AsyncCall : public std::enable_shared_from_this<AsyncCall<Request, Response>> {
 public:
  AsyncCall(Client* client, int attempts, AsyncMethod<Request, Response> method, Request request,
            Done<Response> done)
      : client_(client),
        attempts_(attempts),
        method_(method),
        request_(std::move(request)),
        done_(std::move(done)) {}

  void Attempt() {
    ++attempt_;
    context_ = client_->NewContext(/*deadline=*/true);
    response_.Clear();
    std::shared_ptr<AsyncCall> self = this->shared_from_this();
    (client_->market_->async()->*method_)(context_.get(), &request_, &response_,
                                          [self](grpc::Status status) { self->Answered(status); });
  }

 private:
  void Answered(const grpc::Status& status) {
    if (status.ok()) {
      done_(std::move(response_));
      return;
    }
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE && attempt_ < attempts_) {
      // A timer per retry, kept until the call ends: a timer is never destroyed while its own
      // callback may still be running.
      alarms_.push_back(std::make_unique<grpc::Alarm>());
      std::shared_ptr<AsyncCall> self = this->shared_from_this();
      alarms_.back()->Set(absl::ToChronoTime(absl::Now() + client_->BackoffDelay(attempt_ + 1)),
                          [self](bool /*fired*/) mutable {
                            // Not kept by the timer past this call: no cycle through alarms_.
                            std::shared_ptr<AsyncCall> call = std::move(self);
                            call->Attempt();
                          });
      return;
    }
    done_(FromGrpcStatus(status));
  }

  Client* const client_;
  const int attempts_;
  const AsyncMethod<Request, Response> method_;
  const Request request_;
  Done<Response> done_;
  int attempt_ = 0;
  std::unique_ptr<grpc::ClientContext> context_;
  Response response_;
  std::vector<std::unique_ptr<grpc::Alarm>> alarms_;
};

template <typename Request, typename Response>
void Client::CallAsync(bool retry_safe, AsyncMethod<Request, Response> method, Request request,
                       Done<Response> done) {
  KeepCallbackQueue();
  std::make_shared<AsyncCall<Request, Response>>(this, retry_safe ? options_.max_attempts : 1,
                                                 method, std::move(request), std::move(done))
      ->Attempt();
}

// ---- MarketService ------------------------------------------------------------------------------

absl::StatusOr<v1::PingResponse> Client::Ping(const v1::PingRequest& request) {
  return Call(true, market_.get(), &v1::MarketService::Stub::Ping, request);
}

absl::StatusOr<v1::SearchCatalogResponse> Client::SearchCatalog(
    const v1::SearchCatalogRequest& request) {
  return Call(true, market_.get(), &v1::MarketService::Stub::SearchCatalog, request);
}

absl::StatusOr<v1::QuoteResponse> Client::Quote(const v1::QuoteRequest& request) {
  const bool binding = request.has_hold();
  return Call(!binding, market_.get(), &v1::MarketService::Stub::Quote, request);
}

absl::StatusOr<v1::Allocation> Client::Allocate(v1::AllocateRequest request) {
  FillIdempotencyKey(&request);
  return Call(true, market_.get(), &v1::MarketService::Stub::Allocate, request);
}

absl::StatusOr<v1::Allocation> Client::GetAllocation(const v1::GetAllocationRequest& request) {
  return Call(true, market_.get(), &v1::MarketService::Stub::GetAllocation, request);
}

absl::StatusOr<v1::ListAllocationsResponse> Client::ListAllocations(
    const v1::ListAllocationsRequest& request) {
  return Call(true, market_.get(), &v1::MarketService::Stub::ListAllocations, request);
}

absl::StatusOr<v1::Allocation> Client::ExtendAllocation(
    const v1::ExtendAllocationRequest& request) {
  const bool to_a_time = request.has_new_end() && !request.has_by();
  return Call(to_a_time, market_.get(), &v1::MarketService::Stub::ExtendAllocation, request);
}

absl::StatusOr<v1::Allocation> Client::ReleaseAllocation(
    const v1::ReleaseAllocationRequest& request) {
  return Call(true, market_.get(), &v1::MarketService::Stub::ReleaseAllocation, request);
}

void Client::AllocateAsync(v1::AllocateRequest request, Done<v1::Allocation> done) {
  FillIdempotencyKey(&request);
  CallAsync<v1::AllocateRequest, v1::Allocation>(
      true, &v1::MarketService::StubInterface::async_interface::Allocate, std::move(request),
      std::move(done));
}

void Client::ReleaseAllocationAsync(v1::ReleaseAllocationRequest request,
                                    Done<v1::Allocation> done) {
  CallAsync<v1::ReleaseAllocationRequest, v1::Allocation>(
      true, &v1::MarketService::StubInterface::async_interface::ReleaseAllocation,
      std::move(request), std::move(done));
}

void Client::PingAsync(Done<v1::PingResponse> done) {
  CallAsync<v1::PingRequest, v1::PingResponse>(
      true, &v1::MarketService::StubInterface::async_interface::Ping, v1::PingRequest(),
      std::move(done));
}

absl::StatusOr<v1::Invoice> Client::GetInvoice(const v1::GetInvoiceRequest& request) {
  return Call(true, market_.get(), &v1::MarketService::Stub::GetInvoice, request);
}

absl::Status Client::WatchAllocations(const v1::WatchAllocationsRequest& request,
                                      absl::FunctionRef<bool(const v1::Allocation&)> on_change) {
  grpc::Status status;
  for (int attempt = 1; attempt <= options_.max_attempts; ++attempt) {
    if (attempt > 1) absl::SleepFor(BackoffDelay(attempt));
    std::unique_ptr<grpc::ClientContext> context = NewContext(/*deadline=*/false);
    std::unique_ptr<grpc::ClientReader<v1::Allocation>> reader =
        market_->WatchAllocations(context.get(), request);
    bool received = false;
    v1::Allocation allocation;
    while (reader->Read(&allocation)) {
      received = true;
      if (!on_change(allocation)) {
        context->TryCancel();
        // Drain what is in flight; Finish then reports CANCELLED, which the caller asked for.
        while (reader->Read(&allocation)) {
        }
        reader->Finish().IgnoreError();
        return absl::OkStatus();
      }
    }
    status = reader->Finish();
    if (status.ok() || received || status.error_code() != grpc::StatusCode::UNAVAILABLE) break;
  }
  return FromGrpcStatus(status);
}

// ---- OperatorService ----------------------------------------------------------------------------

absl::StatusOr<v1::Center> Client::RegisterCenter(const v1::RegisterCenterRequest& request) {
  return Call(false, operator_.get(), &v1::OperatorService::Stub::RegisterCenter, request);
}

absl::StatusOr<v1::FabricDomain> Client::AddDomain(const v1::AddDomainRequest& request) {
  return Call(false, operator_.get(), &v1::OperatorService::Stub::AddDomain, request);
}

absl::StatusOr<v1::AddNodesResponse> Client::AddNodes(const v1::AddNodesRequest& request) {
  return Call(false, operator_.get(), &v1::OperatorService::Stub::AddNodes, request);
}

absl::StatusOr<v1::RemoveNodeResponse> Client::RemoveNode(const v1::RemoveNodeRequest& request) {
  return Call(false, operator_.get(), &v1::OperatorService::Stub::RemoveNode, request);
}

absl::StatusOr<v1::Node> Client::SetNodeHealth(const v1::SetNodeHealthRequest& request) {
  return Call(true, operator_.get(), &v1::OperatorService::Stub::SetNodeHealth, request);
}

absl::StatusOr<v1::Offer> Client::CreateOffer(const v1::CreateOfferRequest& request) {
  return Call(false, operator_.get(), &v1::OperatorService::Stub::CreateOffer, request);
}

absl::StatusOr<v1::Offer> Client::WithdrawOffer(const v1::WithdrawOfferRequest& request) {
  return Call(true, operator_.get(), &v1::OperatorService::Stub::WithdrawOffer, request);
}

absl::StatusOr<v1::ListCapacityResponse> Client::ListCapacity(
    const v1::ListCapacityRequest& request) {
  return Call(true, operator_.get(), &v1::OperatorService::Stub::ListCapacity, request);
}

absl::StatusOr<v1::ListSoldAllocationsResponse> Client::ListSoldAllocations(
    const v1::ListSoldAllocationsRequest& request) {
  return Call(true, operator_.get(), &v1::OperatorService::Stub::ListSoldAllocations, request);
}

absl::StatusOr<v1::Statement> Client::GetStatement(const v1::GetStatementRequest& request) {
  return Call(true, operator_.get(), &v1::OperatorService::Stub::GetStatement, request);
}

// ---- AdminService -------------------------------------------------------------------------------

absl::StatusOr<v1::CreateAccountResponse> Client::CreateAccount(
    const v1::CreateAccountRequest& request) {
  return Call(false, admin_.get(), &v1::AdminService::Stub::CreateAccount, request);
}

absl::StatusOr<v1::ListAccountsResponse> Client::ListAccounts(
    const v1::ListAccountsRequest& request) {
  return Call(true, admin_.get(), &v1::AdminService::Stub::ListAccounts, request);
}

absl::StatusOr<v1::CreateApiKeyResponse> Client::CreateApiKey(
    const v1::CreateApiKeyRequest& request) {
  return Call(false, admin_.get(), &v1::AdminService::Stub::CreateApiKey, request);
}

absl::StatusOr<v1::RevokeApiKeyResponse> Client::RevokeApiKey(
    const v1::RevokeApiKeyRequest& request) {
  return Call(false, admin_.get(), &v1::AdminService::Stub::RevokeApiKey, request);
}

// ---- OpsService ---------------------------------------------------------------------------------

absl::StatusOr<v1::GetMarketStatsResponse> Client::GetMarketStats(
    const v1::GetMarketStatsRequest& request) {
  return Call(true, ops_.get(), &v1::OpsService::Stub::GetMarketStats, request);
}

absl::StatusOr<v1::GetSettlementReportResponse> Client::GetSettlementReport(
    const v1::GetSettlementReportRequest& request) {
  return Call(true, ops_.get(), &v1::OpsService::Stub::GetSettlementReport, request);
}

}  // namespace suanli
