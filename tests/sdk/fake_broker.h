// A fake broker for the SDK and CLI tests: parts of MarketService and OperatorService on
// 127.0.0.1 at a port the system picks, that record what they receive and answer as scripted.
// Thread-safe: gRPC calls the handlers on its own threads.
#ifndef SUANLI_TESTS_SDK_FAKE_BROKER_H_
#define SUANLI_TESTS_SDK_FAKE_BROKER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "grpcpp/server_context.h"
#include "suanli/v1/market.grpc.pb.h"
#include "suanli/v1/operator.grpc.pb.h"

namespace suanli::testing {

// A RESOURCE_EXHAUSTED answer carrying `rejection` the way the broker sends it: a google.rpc.Status
// in the error details, holding the rejection packed in an Any.
inline grpc::Status RejectedStatus(const v1::Rejection& rejection) {
  google::rpc::Status details;
  details.set_code(static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED));
  details.set_message("no capacity fits");
  details.add_details()->PackFrom(rejection);
  return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "no capacity fits",
                      details.SerializeAsString());
}

inline grpc::Status Unavailable() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, "scripted outage");
}

class FakeMarket final : public v1::MarketService::Service {
 public:
  // ---- Script (set before calls) ----
  int allocate_outages = 0;  // the next this many Allocate calls fail with UNAVAILABLE
  bool allocate_rejects = false;
  v1::Rejection rejection;    // sent when allocate_rejects
  int quote_outages = 0;      // the next this many Quote calls fail with UNAVAILABLE
  int extend_outages = 0;     // the next this many ExtendAllocation calls fail with UNAVAILABLE
  int release_outages = 0;    // the next this many ReleaseAllocation calls fail with UNAVAILABLE
  bool get_blocks = false;    // GetAllocation waits until the caller gives up
  v1::Allocation allocation;  // what GetAllocation answers when it does not block
  int watch_count = 3;        // allocations WatchAllocations sends before it ends

  // ---- Record ----
  struct Seen {
    std::vector<std::string> authorizations;  // of every call, "" when absent
    std::vector<std::string> allocate_keys;   // idempotency keys of Allocate calls
    int allocate_calls = 0;
    int quote_calls = 0;
    int get_calls = 0;
    std::vector<v1::ExtendAllocationRequest> extends;
    std::vector<std::string> released;  // allocation ids of ReleaseAllocation calls
  };
  Seen seen() const {
    absl::MutexLock lock(&mu_);
    return seen_;
  }

  grpc::Status Ping(grpc::ServerContext* ctx, const v1::PingRequest* r,
                    v1::PingResponse* out) override {
    Record(ctx);
    out->set_account_id("acc-buyer-1");
    out->set_role("buyer");
    out->mutable_server_time()->set_seconds(1'800'000'000);
    return grpc::Status::OK;
  }

  grpc::Status Allocate(grpc::ServerContext* ctx, const v1::AllocateRequest* r,
                        v1::Allocation* out) override {
    absl::MutexLock lock(&mu_);
    RecordLocked(ctx);
    ++seen_.allocate_calls;
    seen_.allocate_keys.push_back(r->request().idempotency_key());
    if (allocate_outages > 0) {
      --allocate_outages;
      return Unavailable();
    }
    if (allocate_rejects) return RejectedStatus(rejection);
    out->set_id("alloc-1");
    out->set_state(v1::ALLOCATION_STATE_ACTIVE);
    *out->mutable_request() = r->request();
    v1::Slice* s = out->add_slices();
    s->set_node_id("c1-ib0-n0001");
    s->set_gpus(r->request().gpus());
    s->set_model("H100-SXM5-80G");
    s->set_price_micros_per_gpu_hour(25'500'000);
    return grpc::Status::OK;
  }

  grpc::Status Quote(grpc::ServerContext* ctx, const v1::QuoteRequest* r,
                     v1::QuoteResponse* out) override {
    absl::MutexLock lock(&mu_);
    RecordLocked(ctx);
    ++seen_.quote_calls;
    if (quote_outages > 0) {
      --quote_outages;
      return Unavailable();
    }
    out->set_available(false);
    *out->mutable_rejection() = rejection;
    return grpc::Status::OK;
  }

  grpc::Status GetAllocation(grpc::ServerContext* ctx, const v1::GetAllocationRequest* r,
                             v1::Allocation* out) override {
    bool block = false;
    {
      absl::MutexLock lock(&mu_);
      RecordLocked(ctx);
      ++seen_.get_calls;
      block = get_blocks;
      *out = allocation;
      out->set_id(r->allocation_id());
    }
    // Bounded, so that a broken client cannot hang the test for ever.
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    while (block && !ctx->IsCancelled() && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    return grpc::Status::OK;
  }

  grpc::Status ExtendAllocation(grpc::ServerContext* ctx, const v1::ExtendAllocationRequest* r,
                                v1::Allocation* out) override {
    absl::MutexLock lock(&mu_);
    RecordLocked(ctx);
    seen_.extends.push_back(*r);
    if (extend_outages > 0) {
      --extend_outages;
      return Unavailable();
    }
    *out = allocation;
    out->set_id(r->allocation_id());
    *out->mutable_end() = r->new_end();
    return grpc::Status::OK;
  }

  grpc::Status ReleaseAllocation(grpc::ServerContext* ctx, const v1::ReleaseAllocationRequest* r,
                                 v1::Allocation* out) override {
    absl::MutexLock lock(&mu_);
    RecordLocked(ctx);
    seen_.released.push_back(r->allocation_id());
    if (release_outages > 0) {
      --release_outages;
      return Unavailable();
    }
    out->set_id(r->allocation_id());
    out->set_state(v1::ALLOCATION_STATE_ENDED);
    out->set_end_reason(v1::END_REASON_RELEASED);
    return grpc::Status::OK;
  }

  grpc::Status WatchAllocations(grpc::ServerContext* ctx, const v1::WatchAllocationsRequest* r,
                                grpc::ServerWriter<v1::Allocation>* writer) override {
    int count = 0;
    {
      absl::MutexLock lock(&mu_);
      RecordLocked(ctx);
      count = watch_count;
    }
    for (int i = 1; i <= count; ++i) {
      v1::Allocation a;
      a.set_id(absl::StrCat("alloc-", i));
      a.set_state(v1::ALLOCATION_STATE_ACTIVE);
      if (!writer->Write(a)) break;
    }
    return grpc::Status::OK;
  }

 private:
  void Record(grpc::ServerContext* ctx) {
    absl::MutexLock lock(&mu_);
    RecordLocked(ctx);
  }
  void RecordLocked(grpc::ServerContext* ctx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const auto& md = ctx->client_metadata();
    auto it = md.find("authorization");
    seen_.authorizations.push_back(
        it == md.end() ? "" : std::string(it->second.data(), it->second.size()));
  }

  mutable absl::Mutex mu_;
  Seen seen_ ABSL_GUARDED_BY(mu_);
};

class FakeOperator final : public v1::OperatorService::Service {
 public:
  // What ListCapacity answers (set before calls).
  v1::ListCapacityResponse capacity;

  // Sizes and nodes of every AddNodes call.
  std::vector<v1::AddNodesRequest> add_nodes() const {
    absl::MutexLock lock(&mu_);
    return add_nodes_;
  }

  grpc::Status ListCapacity(grpc::ServerContext* ctx, const v1::ListCapacityRequest* r,
                            v1::ListCapacityResponse* out) override {
    *out = capacity;
    return grpc::Status::OK;
  }

  grpc::Status AddNodes(grpc::ServerContext* ctx, const v1::AddNodesRequest* r,
                        v1::AddNodesResponse* out) override {
    absl::MutexLock lock(&mu_);
    add_nodes_.push_back(*r);
    out->set_added(r->nodes_size());
    return grpc::Status::OK;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<v1::AddNodesRequest> add_nodes_ ABSL_GUARDED_BY(mu_);
};

// The fakes, served on 127.0.0.1 at a port the system picks, until destroyed.
class FakeBroker {
 public:
  FakeBroker() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&market);
    builder.RegisterService(&operator_service);
    server_ = builder.BuildAndStart();
  }
  ~FakeBroker() {
    if (server_ != nullptr) server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  }
  FakeBroker(const FakeBroker&) = delete;
  FakeBroker& operator=(const FakeBroker&) = delete;

  bool started() const { return server_ != nullptr && port_ > 0; }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

  FakeMarket market;
  FakeOperator operator_service;

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace suanli::testing

#endif  // SUANLI_TESTS_SDK_FAKE_BROKER_H_
