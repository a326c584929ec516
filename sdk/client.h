// suanli::Client: the C++ SDK of the Suanli broker (suanlid). One method per call of the v1 API
// (proto/suanli/v1: MarketService, OperatorService, AdminService, OpsService), each returning
// the response proto or an absl::Status with the call's canonical code and message.
//
// A buyer's program:
//
//   suanli::ClientOptions options;
//   options.target = "broker.example.cn:7700";
//   options.api_key = std::getenv("SUANLI_KEY");  // "sk_<keyid>_<secret>"
//   auto client = suanli::Client::Connect(options);
//   if (!client.ok()) return Fail(client.status());
//   suanli::v1::AllocateRequest call;
//   suanli::v1::AllocationRequest& r = *call.mutable_request();
//   r.add_models("H100-SXM5-80G");
//   r.set_gpus(16);
//   r.set_gpus_per_node(8);
//   r.set_locality(suanli::v1::LOCALITY_DOMAIN);
//   r.set_max_price_micros_per_gpu_hour(30 * suanli::kMicrosPerUnit);
//   *r.mutable_duration() = suanli::ToProtoDuration(absl::Hours(4));
//   absl::StatusOr<suanli::v1::Allocation> a = (*client)->Allocate(call);
//   if (auto rejection = suanli::RejectionOf(a.status())) Hint(suanli::RejectionHint(*rejection));
//
// AUTHENTICATION AND TRANSPORT
// Every call carries the metadata `authorization: Bearer <api_key>`. With a CA file the channel
// uses TLS and trusts only that CA; without one it is plaintext (for localhost and tests).
//
// DEADLINES AND RETRIES
// Every attempt of a unary call has its own deadline, `timeout` after it starts. A call that
// fails with UNAVAILABLE is tried again, up to `max_attempts` attempts in all, after a backoff of
// 50ms doubling up to 2s, each drawn with jitter in [backoff/2, backoff] — but only calls that
// are safe to repeat:
//   retried:     Ping, SearchCatalog, GetAllocation, ListAllocations, ListCapacity,
//                ListSoldAllocations, ListAccounts, GetMarketStats, GetInvoice, GetStatement,
//                GetSettlementReport (reads);
//                Allocate (see below); Quote without `hold`; ReleaseAllocation;
//                ExtendAllocation with `new_end` (not with `by`); WithdrawOffer; SetNodeHealth.
//   not retried: RegisterCenter, AddDomain, AddNodes, RemoveNode, CreateOffer, CreateAccount,
//                CreateApiKey, RevokeApiKey, Quote with `hold`, ExtendAllocation with `by`.
// When a call that is not retried fails with UNAVAILABLE, it may or may not have taken effect;
// the caller gets UNAVAILABLE and should look before calling again. No other code is retried.
//
// IDEMPOTENT ALLOCATION
// Allocate fills `request.idempotency_key` with a fresh random key when the caller left it empty,
// and sends the same key on every attempt, so a retried Allocate returns the first answer instead
// of allocating twice. To retry across processes or after this call has returned UNAVAILABLE,
// set the key yourself and send it again; the granted Allocation echoes it in
// `request.idempotency_key`.
//
// REJECTIONS
// When no capacity fits, Allocate (and a binding Quote) fail with RESOURCE_EXHAUSTED and carry a
// v1::Rejection (why, and what would work) as a status payload: RejectionOf() returns it. A Quote
// without hold answers `available = false` with the rejection in its response instead.
//
// NON-BLOCKING CALLS
// AllocateAsync, ReleaseAllocationAsync and PingAsync start a call and return at once; `done`
// later gets exactly what the blocking call would have returned, with the same deadline per
// attempt, the same retries after the same backoff (waited out by a timer, no thread sleeps) and,
// for Allocate, the same idempotency key on every attempt. `done` runs exactly once, on a thread
// of gRPC's: it must not block (no blocking calls inside it), and it may start further
// non-blocking calls. Many calls may be in flight at once on one Client; destroy the Client only
// after the `done` of every call it started has run. They need a channel that serves gRPC's
// callback API: one Connect made, or one from grpc::CreateChannel, grpc::CreateCustomChannel or a
// server's InProcessChannel (not a hand-written ChannelInterface). One thread can so keep many
// calls in flight, where blocking calls need a thread each.
//
// THREAD SAFETY
// A Client is thread-safe: one instance may serve any number of threads at once.
#ifndef SUANLI_SDK_CLIENT_H_
#define SUANLI_SDK_CLIENT_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"
#include "sdk/format.h"
#include "suanli/v1/admin.grpc.pb.h"
#include "suanli/v1/common.pb.h"
#include "suanli/v1/market.grpc.pb.h"
#include "suanli/v1/operator.grpc.pb.h"
#include "suanli/v1/ops.grpc.pb.h"

namespace suanli {

// Where the broker is and how to talk to it.
struct ClientOptions {
  // host:port of the broker. Default "localhost:7700".
  std::string target = "localhost:7700";
  // "sk_<keyid>_<secret>", sent with every call. Default empty: no authorization header (every
  // call then fails with UNAUTHENTICATED).
  std::string api_key;
  // PEM file of the CA that signed the broker's certificate: TLS when set. Default empty:
  // plaintext.
  std::string ca_file;
  // Deadline of each attempt of a unary call. Default 10s; must be > 0.
  absl::Duration timeout = absl::Seconds(10);
  // Attempts of a retry-safe call that keeps failing with UNAVAILABLE, the first one included.
  // Default 5; must be >= 1 (1 = never retry).
  int max_attempts = 5;
};

// The type URL under which a v1::Rejection (serialized) is attached to an absl::Status.
inline constexpr char kRejectionTypeUrl[] = "type.googleapis.com/suanli.v1.Rejection";

// The rejection carried by `status`, if any: set on RESOURCE_EXHAUSTED answers to Allocate and
// binding Quotes when no capacity fits.
std::optional<v1::Rejection> RejectionOf(const absl::Status& status);

// The absl::Status of a gRPC status: same code and message, and the v1::Rejection found in its
// details (grpc-status-details-bin, a google.rpc.Status) as a payload under kRejectionTypeUrl.
absl::Status FromGrpcStatus(const grpc::Status& status);

class Client {
 public:
  // A client of the broker at options.target. Does not wait for the broker: a broker that is
  // down shows as UNAVAILABLE on calls. INVALID_ARGUMENT for bad options (an empty target, an API
  // key that is not "sk_..." printable ASCII, timeout <= 0, max_attempts < 1); NOT_FOUND when the
  // CA file cannot be read.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(ClientOptions options);
  // The same over a channel the caller made (for in-process servers and tests); target and
  // ca_file are not used.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(
      std::shared_ptr<grpc::ChannelInterface> channel, ClientOptions options);

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const ClientOptions& options() const { return options_; }

  // ---- MarketService (buyers) ----
  absl::StatusOr<v1::PingResponse> Ping(const v1::PingRequest& request = {});
  absl::StatusOr<v1::SearchCatalogResponse> SearchCatalog(const v1::SearchCatalogRequest& request);
  // Not retried when request.hold is set (a binding quote).
  absl::StatusOr<v1::QuoteResponse> Quote(const v1::QuoteRequest& request);
  // Fills request.idempotency_key when empty (see IDEMPOTENT ALLOCATION), then allocates.
  // RESOURCE_EXHAUSTED with a rejection (RejectionOf) when no capacity fits.
  absl::StatusOr<v1::Allocation> Allocate(v1::AllocateRequest request);
  absl::StatusOr<v1::Allocation> GetAllocation(const v1::GetAllocationRequest& request);
  absl::StatusOr<v1::ListAllocationsResponse> ListAllocations(
      const v1::ListAllocationsRequest& request);
  // Retried only when request.new_end is set; an extension `by` is not safe to repeat.
  absl::StatusOr<v1::Allocation> ExtendAllocation(const v1::ExtendAllocationRequest& request);
  absl::StatusOr<v1::Allocation> ReleaseAllocation(const v1::ReleaseAllocationRequest& request);

  // ---- Non-blocking calls (see NON-BLOCKING CALLS above) ----
  template <typename Response>
  using Done = std::function<void(absl::StatusOr<Response>)>;
  void AllocateAsync(v1::AllocateRequest request, Done<v1::Allocation> done);
  void ReleaseAllocationAsync(v1::ReleaseAllocationRequest request, Done<v1::Allocation> done);
  void PingAsync(Done<v1::PingResponse> done);
  // Calls on_change with each of the caller's allocations as it is now, then with every change,
  // until on_change returns false (then OK), the broker ends the stream (OK) or the stream fails
  // (its status). No deadline. Opening the stream is retried on UNAVAILABLE like a read until the
  // first allocation arrives; a stream that breaks later is not reopened. Blocks the calling
  // thread throughout.
  absl::Status WatchAllocations(const v1::WatchAllocationsRequest& request,
                                absl::FunctionRef<bool(const v1::Allocation&)> on_change);
  // The invoice of a buyer for a period [from, to) (default: the caller's, the last 24 hours):
  // every allocation charged in it with its ledger entries, and the total due, in micro-units.
  // PERMISSION_DENIED for another buyer's invoice unless the caller is an admin.
  absl::StatusOr<v1::Invoice> GetInvoice(const v1::GetInvoiceRequest& request = {});

  // ---- OperatorService (center operators) ----
  absl::StatusOr<v1::Center> RegisterCenter(const v1::RegisterCenterRequest& request);
  absl::StatusOr<v1::FabricDomain> AddDomain(const v1::AddDomainRequest& request);
  // At most 10,000 nodes per call; all of them are added or none.
  absl::StatusOr<v1::AddNodesResponse> AddNodes(const v1::AddNodesRequest& request);
  absl::StatusOr<v1::RemoveNodeResponse> RemoveNode(const v1::RemoveNodeRequest& request);
  absl::StatusOr<v1::Node> SetNodeHealth(const v1::SetNodeHealthRequest& request);
  absl::StatusOr<v1::Offer> CreateOffer(const v1::CreateOfferRequest& request);
  absl::StatusOr<v1::Offer> WithdrawOffer(const v1::WithdrawOfferRequest& request);
  absl::StatusOr<v1::ListCapacityResponse> ListCapacity(const v1::ListCapacityRequest& request);
  absl::StatusOr<v1::ListSoldAllocationsResponse> ListSoldAllocations(
      const v1::ListSoldAllocationsRequest& request);
  // The settlement statement of an operator for a period [from, to) (default: the caller's, the
  // last 24 hours): its sales line by line, gross, commission and net payable, in micro-units.
  // PERMISSION_DENIED for another operator's statement unless the caller is an admin.
  absl::StatusOr<v1::Statement> GetStatement(const v1::GetStatementRequest& request = {});

  // ---- AdminService (admin keys) ----
  // The response holds the account's first API key, which the broker shows only this once.
  absl::StatusOr<v1::CreateAccountResponse> CreateAccount(const v1::CreateAccountRequest& request);
  absl::StatusOr<v1::ListAccountsResponse> ListAccounts(
      const v1::ListAccountsRequest& request = {});
  absl::StatusOr<v1::CreateApiKeyResponse> CreateApiKey(const v1::CreateApiKeyRequest& request);
  absl::StatusOr<v1::RevokeApiKeyResponse> RevokeApiKey(const v1::RevokeApiKeyRequest& request);

  // ---- OpsService ----
  absl::StatusOr<v1::GetMarketStatsResponse> GetMarketStats(
      const v1::GetMarketStatsRequest& request);
  // One statement summary per operator and one invoice summary per buyer for a period (admins);
  // an operator gets its own statement summary only.
  absl::StatusOr<v1::GetSettlementReportResponse> GetSettlementReport(
      const v1::GetSettlementReportRequest& request = {});

 private:
  Client(std::shared_ptr<grpc::ChannelInterface> channel, ClientOptions options);

  // Calls `method` of `stub` with a fresh context per attempt, retrying on UNAVAILABLE when
  // `retry_safe`.
  template <typename Stub, typename Request, typename Response>
  absl::StatusOr<Response> Call(bool retry_safe, Stub* stub,
                                grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                                             Response*),
                                const Request& request);
  // A MarketService method on gRPC's callback API.
  template <typename Request, typename Response>
  using AsyncMethod = void (v1::MarketService::StubInterface::async_interface::*)(
      grpc::ClientContext*, const Request*, Response*, std::function<void(grpc::Status)>);
  template <typename Request, typename Response>
  class AsyncCall;
  // Starts `method` of the market service with the retries of Call; `done` gets the outcome.
  template <typename Request, typename Response>
  void CallAsync(bool retry_safe, AsyncMethod<Request, Response> method, Request request,
                 Done<Response> done);
  // A context with the authorization header and, when `deadline`, the attempt's deadline.
  std::unique_ptr<grpc::ClientContext> NewContext(bool deadline) const;
  // How long to wait before attempt `attempt` (2, 3, ...): 50ms doubling up to 2s, with jitter.
  absl::Duration BackoffDelay(int attempt);
  // Sets a fresh random key when the caller left request.idempotency_key empty.
  void FillIdempotencyKey(v1::AllocateRequest* request);

  const ClientOptions options_;
  const std::shared_ptr<grpc::ChannelInterface> channel_;
  const std::unique_ptr<v1::MarketService::Stub> market_;
  const std::unique_ptr<v1::OperatorService::Stub> operator_;
  const std::unique_ptr<v1::AdminService::Stub> admin_;
  const std::unique_ptr<v1::OpsService::Stub> ops_;

  absl::Mutex random_mu_;
  absl::BitGen random_ ABSL_GUARDED_BY(random_mu_);
};

}  // namespace suanli

#endif  // SUANLI_SDK_CLIENT_H_
