#include "broker/services.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "broker/catalog_query.h"
#include "broker/market.h"
#include "broker/validate.h"
#include "google/rpc/status.pb.h"

namespace suanli::broker {
namespace {

absl::StatusOr<Principal> Authenticate(grpc::ServerContextBase* ctx, const KeyRing* keys) {
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return keys->Authenticate("");
  return keys->Authenticate(absl::string_view(it->second.data(), it->second.size()));
}

// Authenticates, runs `fn` on the engine, and answers.
template <typename Resp, typename Fn>
grpc::Status Call(grpc::ServerContext* ctx, const KeyRing* keys, Engine* engine, Resp* out, Fn fn) {
  absl::StatusOr<Principal> p = Authenticate(ctx, keys);
  if (!p.ok()) return ToGrpc(p.status());
  absl::StatusOr<Resp> r = engine->Run<Resp>(
      [&](Market& m, absl::Time now, storage::Batch* b) { return fn(m, *p, now, b); });
  if (!r.ok()) return ToGrpc(r.status());
  *out = *std::move(r);
  return grpc::Status::OK;
}

// The same with the callback API: the engine's writer finishes the call.
template <typename Resp, typename Fn>
grpc::ServerUnaryReactor* CallAsync(grpc::CallbackServerContext* ctx, const KeyRing* keys,
                                    Engine* engine, Resp* out, Fn fn) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  absl::StatusOr<Principal> p = Authenticate(ctx, keys);
  if (!p.ok()) {
    reactor->Finish(ToGrpc(p.status()));
    return reactor;
  }
  engine->Submit<Resp>([fn, p = *std::move(p)](Market& m, absl::Time now,
                                               storage::Batch* b) { return fn(m, p, now, b); },
                       [reactor, out](absl::StatusOr<Resp> r) {
                         if (!r.ok()) {
                           reactor->Finish(ToGrpc(r.status()));
                           return;
                         }
                         *out = *std::move(r);
                         reactor->Finish(grpc::Status::OK);
                       });
  return reactor;
}

}  // namespace

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  const auto code = static_cast<grpc::StatusCode>(s.code());
  const std::string message(s.message());
  std::optional<v1::Rejection> rejection = RejectionOf(s);
  if (!rejection.has_value()) return grpc::Status(code, message);
  google::rpc::Status details;
  details.set_code(static_cast<int>(s.code()));
  details.set_message(message);
  details.add_details()->PackFrom(*rejection);
  return grpc::Status(code, message, details.SerializeAsString());
}

// ------------------------------------------------------------------------------------ market

grpc::ServerUnaryReactor* MarketServiceImpl::Ping(grpc::CallbackServerContext* ctx,
                                                  const v1::PingRequest* r, v1::PingResponse* out) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  absl::StatusOr<Principal> p = Authenticate(ctx, keys_);
  if (!p.ok()) {
    reactor->Finish(ToGrpc(p.status()));
    return reactor;
  }
  out->set_account_id(p->account_id);
  out->set_role(RoleName(p->role));
  *out->mutable_server_time() = ToProto(absl::Now());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::Status MarketServiceImpl::SearchCatalog(grpc::ServerContext* ctx,
                                              const v1::SearchCatalogRequest* r,
                                              v1::SearchCatalogResponse* out) {
  absl::StatusOr<Principal> p = Authenticate(ctx, keys_);
  if (!p.ok()) return ToGrpc(p.status());
  absl::StatusOr<CatalogQuery> q = ParseCatalogQuery(r->query());
  if (!q.ok()) return ToGrpc(q.status());
  int size = r->page().page_size();
  if (size < 0 || size > 1000) {
    return ToGrpc(absl::InvalidArgumentError("page.page_size: must be 0..1000 (0: 100)"));
  }
  if (size == 0) size = 100;
  size_t start = 0;
  if (!r->page().page_token().empty() && !absl::SimpleAtoi(r->page().page_token(), &start)) {
    return ToGrpc(absl::InvalidArgumentError("page.page_token: not a token this broker gave out"));
  }
  std::shared_ptr<const CatalogSnapshot> snap = engine_->Catalog();
  const int64_t now_s = absl::ToUnixSeconds(absl::Now());
  size_t matched = 0;
  for (size_t i = 0; i < snap->entries.size(); ++i) {
    // The snapshot may be older than an offer's end: what can no longer be bought is not shown.
    if (snap->entries[i].until().seconds() <= now_s) continue;
    if (!q->Matches(snap->views[i])) continue;
    if (matched++ < start) continue;
    if (out->entries_size() == size) {
      out->set_next_page_token(absl::StrCat(start + static_cast<size_t>(size)));
      break;
    }
    *out->add_entries() = snap->entries[i];
  }
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* MarketServiceImpl::Quote(grpc::CallbackServerContext* ctx,
                                                   const v1::QuoteRequest* r,
                                                   v1::QuoteResponse* out) {
  return CallAsync(ctx, keys_, engine_, out,
                   [r](Market& m, const Principal& p, absl::Time now, storage::Batch* b) {
                     return m.Quote(p, *r, now, b);
                   });
}

grpc::ServerUnaryReactor* MarketServiceImpl::Allocate(grpc::CallbackServerContext* ctx,
                                                      const v1::AllocateRequest* r,
                                                      v1::Allocation* out) {
  return CallAsync(ctx, keys_, engine_, out,
                   [r](Market& m, const Principal& p, absl::Time now, storage::Batch* b) {
                     return m.Allocate(p, *r, now, b);
                   });
}

grpc::ServerUnaryReactor* MarketServiceImpl::GetAllocation(grpc::CallbackServerContext* ctx,
                                                           const v1::GetAllocationRequest* r,
                                                           v1::Allocation* out) {
  return CallAsync(ctx, keys_, engine_, out,
                   [r](Market& m, const Principal& p, absl::Time, storage::Batch*) {
                     return m.GetAllocation(p, *r);
                   });
}

grpc::ServerUnaryReactor* MarketServiceImpl::ListAllocations(grpc::CallbackServerContext* ctx,
                                                             const v1::ListAllocationsRequest* r,
                                                             v1::ListAllocationsResponse* out) {
  return CallAsync(ctx, keys_, engine_, out,
                   [r](Market& m, const Principal& p, absl::Time, storage::Batch*) {
                     return m.ListAllocations(p, *r);
                   });
}

grpc::ServerUnaryReactor* MarketServiceImpl::ExtendAllocation(grpc::CallbackServerContext* ctx,
                                                              const v1::ExtendAllocationRequest* r,
                                                              v1::Allocation* out) {
  return CallAsync(ctx, keys_, engine_, out,
                   [r](Market& m, const Principal& p, absl::Time now, storage::Batch* b) {
                     return m.ExtendAllocation(p, *r, now, b);
                   });
}

grpc::ServerUnaryReactor* MarketServiceImpl::ReleaseAllocation(
    grpc::CallbackServerContext* ctx, const v1::ReleaseAllocationRequest* r, v1::Allocation* out) {
  return CallAsync(ctx, keys_, engine_, out,
                   [r](Market& m, const Principal& p, absl::Time now, storage::Batch* b) {
                     return m.ReleaseAllocation(p, *r, now, b);
                   });
}

grpc::Status MarketServiceImpl::WatchAllocations(grpc::ServerContext* ctx,
                                                 const v1::WatchAllocationsRequest* r,
                                                 grpc::ServerWriter<v1::Allocation>* writer) {
  absl::StatusOr<Principal> p = Authenticate(ctx, keys_);
  if (!p.ok()) return ToGrpc(p.status());
  if (p->role != v1::ROLE_BUYER && p->role != v1::ROLE_ADMIN) {
    return ToGrpc(absl::PermissionDeniedError("watching allocations needs a buyer key"));
  }
  std::shared_ptr<Hub::Subscriber> sub;
  // Subscribing on the engine thread orders the first state before every later change.
  absl::StatusOr<std::vector<v1::Allocation>> current = engine_->Run<std::vector<v1::Allocation>>(
      [&](Market& m, absl::Time, storage::Batch*) -> absl::StatusOr<std::vector<v1::Allocation>> {
        sub = engine_->hub().Subscribe(p->account_id, r->include_ended());
        return m.AllocationsOf(*p, r->include_ended());
      });
  if (!current.ok()) {
    if (sub) engine_->hub().Unsubscribe(sub);
    return ToGrpc(current.status());
  }
  struct Unsub {
    Hub* hub;
    std::shared_ptr<Hub::Subscriber> s;
    ~Unsub() { hub->Unsubscribe(s); }
  } unsub{&engine_->hub(), sub};
  for (const v1::Allocation& a : *current) {
    if (!writer->Write(a)) return grpc::Status::CANCELLED;
  }
  std::deque<v1::Allocation> pending;
  for (;;) {
    bool closed = false, overflowed = false;
    {
      absl::MutexLock lock(&sub->mu);
      auto ready = [&sub]() ABSL_SHARED_LOCKS_REQUIRED(sub->mu) {
        return !sub->queue.empty() || sub->closed;
      };
      sub->mu.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(200));
      pending.swap(sub->queue);
      closed = sub->closed;
      overflowed = sub->overflowed;
    }
    for (const v1::Allocation& a : pending) {
      if (!writer->Write(a)) return grpc::Status::CANCELLED;
    }
    pending.clear();
    if (overflowed) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "this watch fell too far behind; watch again to get the current state");
    }
    if (closed) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the broker is shutting down");
    }
    if (ctx->IsCancelled()) return grpc::Status::CANCELLED;
  }
}

grpc::Status MarketServiceImpl::GetInvoice(grpc::ServerContext* ctx, const v1::GetInvoiceRequest* r,
                                           v1::Invoice* out) {
  return Call(ctx, keys_, engine_, out,
              [r](Market& m, const Principal& p, absl::Time now, storage::Batch*) {
                return m.BuyerInvoice(p, *r, now);
              });
}

// ------------------------------------------------------------------------------------ operator

grpc::Status OperatorServiceImpl::RegisterCenter(grpc::ServerContext* ctx,
                                                 const v1::RegisterCenterRequest* r,
                                                 v1::Center* out) {
  return Call(ctx, keys_, engine_, out,
              [r](Market& m, const Principal& p, absl::Time now, storage::Batch* b) {
                return m.RegisterCenter(p, *r, now, b);
              });
}

grpc::Status OperatorServiceImpl::AddDomain(grpc::ServerContext* ctx, const v1::AddDomainRequest* r,
                                            v1::FabricDomain* out) {
  return Call(ctx, keys_, engine_, out,
              [r](Market& m, const Principal& p, absl::Time now, storage::Batch* b) {
                return m.AddDomain(p, *r, now, b);
              });
}

grpc::Status OperatorServiceImpl::AddNodes(grpc::ServerContext* ctx, const v1::AddNodesRequest* r,
                                           v1::AddNodesResponse* out) {
  return Call(ctx, keys_, engine_, out,
              [r](Market& m, const Principal& p, absl::Time now, storage::Batch* b) {
                return m.AddNodes(p, *r, now, b);
              });
}

grpc::Status OperatorServiceImpl::RemoveNode(grpc::ServerContext* ctx,
                                             const v1::RemoveNodeRequest* r,
                                             v1::RemoveNodeResponse* out) {
  return Call(ctx, keys_, engine_, out,
              [r](Market& m, const Principal& p, absl::Time now, storage::Batch* b) {
                return m.RemoveNode(p, *r, now, b);
              });
}

grpc::Status OperatorServiceImpl::SetNodeHealth(grpc::ServerContext* ctx,
                                                const v1::SetNodeHealthRequest* r, v1::Node* out) {
  return Call(ctx, keys_, engine_, out,
              [r](Market& m, const Principal& p, absl::Time now, storage::Batch* b) {
                return m.SetNodeHealth(p, *r, now, b);
              });
}

grpc::Status OperatorServiceImpl::CreateOffer(grpc::ServerContext* ctx,
                                              const v1::CreateOfferRequest* r, v1::Offer* out) {
  return Call(ctx, keys_, engine_, out,
              [r](Market& m, const Principal& p, absl::Time now, storage::Batch* b) {
                return m.CreateOffer(p, *r, now, b);
              });
}

grpc::Status OperatorServiceImpl::WithdrawOffer(grpc::ServerContext* ctx,
                                                const v1::WithdrawOfferRequest* r, v1::Offer* out) {
  return Call(ctx, keys_, engine_, out,
              [r](Market& m, const Principal& p, absl::Time now, storage::Batch* b) {
                return m.WithdrawOffer(p, *r, now, b);
              });
}

grpc::Status OperatorServiceImpl::ListCapacity(grpc::ServerContext* ctx,
                                               const v1::ListCapacityRequest* r,
                                               v1::ListCapacityResponse* out) {
  return Call(ctx, keys_, engine_, out,
              [r](Market& m, const Principal& p, absl::Time, storage::Batch*) {
                return m.ListCapacity(p, *r);
              });
}

grpc::Status OperatorServiceImpl::ListSoldAllocations(grpc::ServerContext* ctx,
                                                      const v1::ListSoldAllocationsRequest* r,
                                                      v1::ListSoldAllocationsResponse* out) {
  return Call(ctx, keys_, engine_, out,
              [r](Market& m, const Principal& p, absl::Time now, storage::Batch*) {
                return m.ListSoldAllocations(p, *r, now);
              });
}

grpc::Status OperatorServiceImpl::GetStatement(grpc::ServerContext* ctx,
                                               const v1::GetStatementRequest* r,
                                               v1::Statement* out) {
  return Call(ctx, keys_, engine_, out,
              [r](Market& m, const Principal& p, absl::Time now, storage::Batch*) {
                return m.OperatorStatement(p, *r, now);
              });
}

// ------------------------------------------------------------------------------------ admin

grpc::Status AdminServiceImpl::CreateAccount(grpc::ServerContext* ctx,
                                             const v1::CreateAccountRequest* r,
                                             v1::CreateAccountResponse* out) {
  return Call(ctx, keys_, engine_, out,
              [r](Market& m, const Principal& p, absl::Time now, storage::Batch* b) {
                return m.CreateAccount(p, *r, now, b);
              });
}

grpc::Status AdminServiceImpl::ListAccounts(grpc::ServerContext* ctx,
                                            const v1::ListAccountsRequest* r,
                                            v1::ListAccountsResponse* out) {
  return Call(
      ctx, keys_, engine_, out,
      [](Market& m, const Principal& p, absl::Time, storage::Batch*) { return m.ListAccounts(p); });
}

grpc::Status AdminServiceImpl::CreateApiKey(grpc::ServerContext* ctx,
                                            const v1::CreateApiKeyRequest* r,
                                            v1::CreateApiKeyResponse* out) {
  return Call(ctx, keys_, engine_, out,
              [r](Market& m, const Principal& p, absl::Time now, storage::Batch* b) {
                return m.CreateApiKey(p, *r, now, b);
              });
}

grpc::Status AdminServiceImpl::RevokeApiKey(grpc::ServerContext* ctx,
                                            const v1::RevokeApiKeyRequest* r,
                                            v1::RevokeApiKeyResponse* out) {
  return Call(ctx, keys_, engine_, out,
              [r](Market& m, const Principal& p, absl::Time, storage::Batch* b) {
                return m.RevokeApiKey(p, *r, b);
              });
}

// ------------------------------------------------------------------------------------ ops

namespace {

grpc::Status NoEngine() {
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      "market figures are not wired into this server (OpsServiceImpl needs the "
                      "engine)");
}

}  // namespace

grpc::Status OpsServiceImpl::GetMarketStats(grpc::ServerContext* ctx,
                                            const v1::GetMarketStatsRequest* r,
                                            v1::GetMarketStatsResponse* out) {
  if (engine_ == nullptr) return NoEngine();
  return Call(ctx, keys_, engine_, out,
              [r](Market& m, const Principal& p, absl::Time now, storage::Batch*) {
                return m.MarketStats(p, *r, now);
              });
}

grpc::Status OpsServiceImpl::GetSettlementReport(grpc::ServerContext* ctx,
                                                 const v1::GetSettlementReportRequest* r,
                                                 v1::GetSettlementReportResponse* out) {
  if (engine_ == nullptr) return NoEngine();
  return Call(ctx, keys_, engine_, out,
              [r](Market& m, const Principal& p, absl::Time now, storage::Batch*) {
                return m.SettlementReport(p, *r, now);
              });
}

}  // namespace suanli::broker
