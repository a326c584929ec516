// The gRPC services of suanlid: each call authenticates the caller's API key, hands the call to
// the engine (or, for catalog searches, reads the published snapshot), and maps the answer to a
// canonical gRPC status. A RESOURCE_EXHAUSTED answer carries a google.rpc.Status in its details
// holding the suanli.v1.Rejection (what would work instead).
#ifndef SUANLI_BROKER_SERVICES_H_
#define SUANLI_BROKER_SERVICES_H_

#include "absl/status/status.h"
#include "broker/auth.h"
#include "broker/engine.h"
#include "grpcpp/grpcpp.h"
#include "suanli/v1/admin.grpc.pb.h"
#include "suanli/v1/market.grpc.pb.h"
#include "suanli/v1/operator.grpc.pb.h"
#include "suanli/v1/ops.grpc.pb.h"

namespace suanli::broker {

// An absl::Status as a gRPC status (same code and message; a rejection payload as details).
grpc::Status ToGrpc(const absl::Status& s);

// The calls that go through the engine and Ping are served with gRPC's callback API: no thread
// waits for the engine; the engine's writer finishes each call once its batch is durable.
using MarketServiceBase = v1::MarketService::WithCallbackMethod_Ping<
    v1::MarketService::WithCallbackMethod_Quote<v1::MarketService::WithCallbackMethod_Allocate<
        v1::MarketService::WithCallbackMethod_GetAllocation<
            v1::MarketService::WithCallbackMethod_ListAllocations<
                v1::MarketService::WithCallbackMethod_ExtendAllocation<
                    v1::MarketService::WithCallbackMethod_ReleaseAllocation<
                        v1::MarketService::Service>>>>>>>;

class MarketServiceImpl final : public MarketServiceBase {
 public:
  MarketServiceImpl(Engine* engine, const KeyRing* keys) : engine_(engine), keys_(keys) {}
  grpc::ServerUnaryReactor* Ping(grpc::CallbackServerContext* ctx, const v1::PingRequest* r,
                                 v1::PingResponse* out) override;
  grpc::Status SearchCatalog(grpc::ServerContext* ctx, const v1::SearchCatalogRequest* r,
                             v1::SearchCatalogResponse* out) override;
  grpc::ServerUnaryReactor* Quote(grpc::CallbackServerContext* ctx, const v1::QuoteRequest* r,
                                  v1::QuoteResponse* out) override;
  grpc::ServerUnaryReactor* Allocate(grpc::CallbackServerContext* ctx, const v1::AllocateRequest* r,
                                     v1::Allocation* out) override;
  grpc::ServerUnaryReactor* GetAllocation(grpc::CallbackServerContext* ctx,
                                          const v1::GetAllocationRequest* r,
                                          v1::Allocation* out) override;
  grpc::ServerUnaryReactor* ListAllocations(grpc::CallbackServerContext* ctx,
                                            const v1::ListAllocationsRequest* r,
                                            v1::ListAllocationsResponse* out) override;
  grpc::ServerUnaryReactor* ExtendAllocation(grpc::CallbackServerContext* ctx,
                                             const v1::ExtendAllocationRequest* r,
                                             v1::Allocation* out) override;
  grpc::ServerUnaryReactor* ReleaseAllocation(grpc::CallbackServerContext* ctx,
                                              const v1::ReleaseAllocationRequest* r,
                                              v1::Allocation* out) override;
  grpc::Status WatchAllocations(grpc::ServerContext* ctx, const v1::WatchAllocationsRequest* r,
                                grpc::ServerWriter<v1::Allocation>* writer) override;
  grpc::Status GetInvoice(grpc::ServerContext* ctx, const v1::GetInvoiceRequest* r,
                          v1::Invoice* out) override;

 private:
  Engine* engine_;
  const KeyRing* keys_;
};

class OperatorServiceImpl final : public v1::OperatorService::Service {
 public:
  OperatorServiceImpl(Engine* engine, const KeyRing* keys) : engine_(engine), keys_(keys) {}
  grpc::Status RegisterCenter(grpc::ServerContext* ctx, const v1::RegisterCenterRequest* r,
                              v1::Center* out) override;
  grpc::Status AddDomain(grpc::ServerContext* ctx, const v1::AddDomainRequest* r,
                         v1::FabricDomain* out) override;
  grpc::Status AddNodes(grpc::ServerContext* ctx, const v1::AddNodesRequest* r,
                        v1::AddNodesResponse* out) override;
  grpc::Status RemoveNode(grpc::ServerContext* ctx, const v1::RemoveNodeRequest* r,
                          v1::RemoveNodeResponse* out) override;
  grpc::Status SetNodeHealth(grpc::ServerContext* ctx, const v1::SetNodeHealthRequest* r,
                             v1::Node* out) override;
  grpc::Status CreateOffer(grpc::ServerContext* ctx, const v1::CreateOfferRequest* r,
                           v1::Offer* out) override;
  grpc::Status WithdrawOffer(grpc::ServerContext* ctx, const v1::WithdrawOfferRequest* r,
                             v1::Offer* out) override;
  grpc::Status ListCapacity(grpc::ServerContext* ctx, const v1::ListCapacityRequest* r,
                            v1::ListCapacityResponse* out) override;
  grpc::Status ListSoldAllocations(grpc::ServerContext* ctx,
                                   const v1::ListSoldAllocationsRequest* r,
                                   v1::ListSoldAllocationsResponse* out) override;
  grpc::Status GetStatement(grpc::ServerContext* ctx, const v1::GetStatementRequest* r,
                            v1::Statement* out) override;

 private:
  Engine* engine_;
  const KeyRing* keys_;
};

class AdminServiceImpl final : public v1::AdminService::Service {
 public:
  AdminServiceImpl(Engine* engine, const KeyRing* keys) : engine_(engine), keys_(keys) {}
  grpc::Status CreateAccount(grpc::ServerContext* ctx, const v1::CreateAccountRequest* r,
                             v1::CreateAccountResponse* out) override;
  grpc::Status ListAccounts(grpc::ServerContext* ctx, const v1::ListAccountsRequest* r,
                            v1::ListAccountsResponse* out) override;
  grpc::Status CreateApiKey(grpc::ServerContext* ctx, const v1::CreateApiKeyRequest* r,
                            v1::CreateApiKeyResponse* out) override;
  grpc::Status RevokeApiKey(grpc::ServerContext* ctx, const v1::RevokeApiKeyRequest* r,
                            v1::RevokeApiKeyResponse* out) override;

 private:
  Engine* engine_;
  const KeyRing* keys_;
};

class OpsServiceImpl final : public v1::OpsService::Service {
 public:
  // Without an engine, every call answers UNIMPLEMENTED.
  explicit OpsServiceImpl(const KeyRing* keys) : keys_(keys) {}
  OpsServiceImpl(Engine* engine, const KeyRing* keys) : engine_(engine), keys_(keys) {}
  grpc::Status GetMarketStats(grpc::ServerContext* ctx, const v1::GetMarketStatsRequest* r,
                              v1::GetMarketStatsResponse* out) override;
  grpc::Status GetSettlementReport(grpc::ServerContext* ctx,
                                   const v1::GetSettlementReportRequest* r,
                                   v1::GetSettlementReportResponse* out) override;

 private:
  Engine* engine_ = nullptr;
  const KeyRing* keys_;
};

}  // namespace suanli::broker

#endif  // SUANLI_BROKER_SERVICES_H_
