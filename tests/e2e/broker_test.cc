// suanlid end to end, in-process, over real gRPC on loopback, through the SDK: the whole
// operator -> buyer flow, tenant isolation, validation, rejections with hints, idempotency,
// binding quotes, expiry, restart, and 32 buyers racing for the same capacity.
#include <atomic>
#include <map>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/harness.h"

namespace suanli::e2e {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kPrice = 25'500'000;  // 25.50 per GPU-hour

class BrokerTest : public ::testing::Test {
 protected:
  void SetUp() override { StartBroker(); }

  void StartBroker() {
    absl::StatusOr<std::unique_ptr<broker::Broker>> b = broker::Broker::Start(OptionsIn(dir_));
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = *std::move(b);
    admin_ = Connect(broker_->port(), ReadAll(dir_.File("admin.key")));
  }
  void Restart() {
    broker_->Shutdown();
    broker_.reset();
    StartBroker();
  }
  // An operator with one center of `nodes` 8-GPU nodes on sale, and a buyer.
  void Market(int nodes) {
    op_key_ = NewAccount(*admin_, v1::ROLE_OPERATOR, "op-a");
    buyer_key_ = NewAccount(*admin_, v1::ROLE_BUYER, "buyer-a");
    op_ = Connect(broker_->port(), op_key_);
    buyer_ = Connect(broker_->port(), buyer_key_);
    SmallMarket(*op_, "c-a", nodes, kPrice);
  }
  // The catalog once the engine has published the latest state.
  v1::SearchCatalogResponse Catalog(Client& c, const std::string& query, int want_free) {
    v1::SearchCatalogRequest r;
    r.set_query(query);
    absl::StatusOr<v1::SearchCatalogResponse> out;
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    do {
      out = c.SearchCatalog(r);
      if (out.ok() && (want_free < 0 ||
                       (out->entries_size() > 0 && out->entries(0).free_gpus() == want_free))) {
        break;
      }
      absl::SleepFor(absl::Milliseconds(10));
    } while (absl::Now() < deadline);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? *out : v1::SearchCatalogResponse();
  }

  int64_t Violations() {
    absl::StatusOr<int64_t> v = broker_->engine().Run<int64_t>(
        [](broker::Market& m, absl::Time, storage::Batch*) -> absl::StatusOr<int64_t> {
          return m.Audit().violations;
        });
    EXPECT_TRUE(v.ok());
    return v.ok() ? *v : -1;
  }
  scheduler::MarketTotals Totals() {
    absl::StatusOr<scheduler::MarketTotals> t = broker_->engine().Run<scheduler::MarketTotals>(
        [](broker::Market& m, absl::Time,
           storage::Batch*) -> absl::StatusOr<scheduler::MarketTotals> { return m.Totals(); });
    EXPECT_TRUE(t.ok());
    return t.ok() ? *t : scheduler::MarketTotals();
  }

  TempDir dir_;
  std::unique_ptr<broker::Broker> broker_;
  std::unique_ptr<Client> admin_, op_, buyer_;
  std::string op_key_, buyer_key_;
};

TEST_F(BrokerTest, FirstStartMakesAnAdminKeyFileOnlyItsOwnerReads) {
  struct stat st {};
  ASSERT_EQ(stat(dir_.File("admin.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  EXPECT_FALSE(broker_->new_admin_key().empty());
  absl::StatusOr<v1::PingResponse> ping = admin_->Ping();
  ASSERT_TRUE(ping.ok()) << ping.status();
  EXPECT_EQ(ping->role(), "admin");
  Restart();  // the same file keeps working, and no new key is made
  EXPECT_TRUE(broker_->new_admin_key().empty());
  EXPECT_TRUE(admin_->Ping().ok());
}

TEST_F(BrokerTest, OperatorToBuyerFlow) {
  Market(4);
  v1::SearchCatalogResponse cat = Catalog(*buyer_, "model=H100-SXM5-80G free_gpus>=32", 32);
  ASSERT_EQ(cat.entries_size(), 1);
  EXPECT_EQ(cat.entries(0).center_id(), "c-a");
  EXPECT_EQ(cat.entries(0).free_whole_nodes(), 4);
  EXPECT_EQ(cat.entries(0).price_micros_per_gpu_hour(), kPrice);
  EXPECT_EQ(cat.entries(0).fabric(), v1::FABRIC_INFINIBAND);

  v1::QuoteRequest q;
  *q.mutable_request() = Gang(16, absl::Hours(2), 30'000'000).request();
  absl::StatusOr<v1::QuoteResponse> quote = buyer_->Quote(q);
  ASSERT_TRUE(quote.ok()) << quote.status();
  ASSERT_TRUE(quote->available());
  EXPECT_EQ(quote->allocation().total_price_micros(), 16 * kPrice * 2);

  absl::StatusOr<v1::Allocation> a = buyer_->Allocate(Gang(16, absl::Hours(2), 30'000'000));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->state(), v1::ALLOCATION_STATE_ACTIVE);
  EXPECT_EQ(a->total_price_micros(), 16 * kPrice * 2);
  ASSERT_EQ(a->slices_size(), 2);
  for (const v1::Slice& s : a->slices()) {
    EXPECT_EQ(s.gpus(), 8);
    EXPECT_EQ(s.domain_id(), "ib0");
    EXPECT_EQ(s.offer_id(), "c-a-offer");
  }
  EXPECT_EQ(Catalog(*buyer_, "", 16).entries(0).free_gpus(), 16);

  v1::GetAllocationRequest g;
  g.set_allocation_id(a->id());
  absl::StatusOr<v1::Allocation> got = buyer_->GetAllocation(g);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->id(), a->id());

  v1::ExtendAllocationRequest e;
  e.set_allocation_id(a->id());
  *e.mutable_by() = Dur(absl::Hours(1));
  absl::StatusOr<v1::Allocation> ext = buyer_->ExtendAllocation(e);
  ASSERT_TRUE(ext.ok()) << ext.status();
  EXPECT_EQ(ext->end().seconds() - a->end().seconds(), 3600);
  EXPECT_EQ(ext->total_price_micros(), 16 * kPrice * 3);

  v1::ListSoldAllocationsRequest sold;
  absl::StatusOr<v1::ListSoldAllocationsResponse> s = op_->ListSoldAllocations(sold);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->allocations_size(), 1);
  EXPECT_EQ(s->allocations(0).id(), a->id());

  v1::ReleaseAllocationRequest rel;
  rel.set_allocation_id(a->id());
  absl::StatusOr<v1::Allocation> released = buyer_->ReleaseAllocation(rel);
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_EQ(released->state(), v1::ALLOCATION_STATE_ENDED);
  EXPECT_EQ(released->end_reason(), v1::END_REASON_RELEASED);
  EXPECT_LT(released->total_price_micros(), ext->total_price_micros());
  EXPECT_EQ(Catalog(*buyer_, "", 32).entries(0).free_gpus(), 32);

  v1::ListAllocationsRequest l;
  EXPECT_EQ(buyer_->ListAllocations(l)->allocations_size(), 0);
  l.set_include_ended(true);
  EXPECT_EQ(buyer_->ListAllocations(l)->allocations_size(), 1);
}

TEST_F(BrokerTest, TenantsSeeAndTouchOnlyTheirOwn) {
  Market(4);
  const std::string other_op_key = NewAccount(*admin_, v1::ROLE_OPERATOR, "op-b");
  const std::string other_buyer_key = NewAccount(*admin_, v1::ROLE_BUYER, "buyer-b");
  std::unique_ptr<Client> op_b = Connect(broker_->port(), other_op_key);
  std::unique_ptr<Client> buyer_b = Connect(broker_->port(), other_buyer_key);
  absl::StatusOr<v1::Allocation> a = buyer_->Allocate(Gang(8, absl::Hours(1), 30'000'000));
  ASSERT_TRUE(a.ok()) << a.status();

  // Another operator on this operator's capacity.
  v1::AddDomainRequest ad;
  ad.mutable_domain()->set_center_id("c-a");
  ad.mutable_domain()->set_id("ib1");
  ad.mutable_domain()->set_fabric(v1::FABRIC_ROCE);
  EXPECT_EQ(op_b->AddDomain(ad).status().code(), absl::StatusCode::kPermissionDenied);
  v1::AddNodesRequest an;
  v1::Node* n = an.add_nodes();
  n->set_id("intruder");
  n->set_center_id("c-a");
  n->set_domain_id("ib0");
  n->set_model("H100-SXM5-80G");
  n->set_gpus(8);
  EXPECT_EQ(op_b->AddNodes(an).status().code(), absl::StatusCode::kPermissionDenied);
  v1::SetNodeHealthRequest h;
  h.set_node_id("c-a-n0");
  h.set_health(v1::HEALTH_DOWN);
  EXPECT_EQ(op_b->SetNodeHealth(h).status().code(), absl::StatusCode::kPermissionDenied);
  v1::RemoveNodeRequest rn;
  rn.set_node_id("c-a-n3");
  EXPECT_EQ(op_b->RemoveNode(rn).status().code(), absl::StatusCode::kPermissionDenied);
  v1::CreateOfferRequest co;
  co.mutable_offer()->set_id("sneaky");
  co.mutable_offer()->set_center_id("c-a");
  co.mutable_offer()->set_domain_id("ib0");
  *co.mutable_offer()->mutable_until() = Ts(absl::Now() + absl::Hours(1000));
  co.mutable_offer()->set_price_micros_per_gpu_hour(1);
  EXPECT_EQ(op_b->CreateOffer(co).status().code(), absl::StatusCode::kPermissionDenied);
  v1::WithdrawOfferRequest w;
  w.set_offer_id("c-a-offer");
  EXPECT_EQ(op_b->WithdrawOffer(w).status().code(), absl::StatusCode::kPermissionDenied);
  v1::ListCapacityRequest lc;
  lc.set_center_id("c-a");
  EXPECT_EQ(op_b->ListCapacity(lc).status().code(), absl::StatusCode::kPermissionDenied);
  absl::StatusOr<v1::ListCapacityResponse> own = op_b->ListCapacity(v1::ListCapacityRequest());
  ASSERT_TRUE(own.ok());
  EXPECT_EQ(own->centers_size(), 0);
  absl::StatusOr<v1::ListSoldAllocationsResponse> sold =
      op_b->ListSoldAllocations(v1::ListSoldAllocationsRequest());
  ASSERT_TRUE(sold.ok());
  EXPECT_EQ(sold->allocations_size(), 0);

  // Another buyer on this buyer's allocation: as if it did not exist.
  v1::GetAllocationRequest g;
  g.set_allocation_id(a->id());
  EXPECT_EQ(buyer_b->GetAllocation(g).status().code(), absl::StatusCode::kNotFound);
  v1::ExtendAllocationRequest e;
  e.set_allocation_id(a->id());
  *e.mutable_by() = Dur(absl::Hours(1));
  EXPECT_EQ(buyer_b->ExtendAllocation(e).status().code(), absl::StatusCode::kNotFound);
  v1::ReleaseAllocationRequest r;
  r.set_allocation_id(a->id());
  EXPECT_EQ(buyer_b->ReleaseAllocation(r).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(buyer_b->ListAllocations(v1::ListAllocationsRequest())->allocations_size(), 0);

  // Roles: buyers do not operate, operators do not buy, neither administers.
  v1::RegisterCenterRequest rc;
  rc.mutable_center()->set_id("buyer-center");
  rc.mutable_center()->set_region("cn-north-1");
  rc.mutable_center()->set_type(v1::CENTER_TYPE_INTERNET);
  EXPECT_EQ(buyer_->RegisterCenter(rc).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(op_->Allocate(Gang(8, absl::Hours(1), 30'000'000)).status().code(),
            absl::StatusCode::kPermissionDenied);
  v1::CreateAccountRequest ca;
  ca.set_role(v1::ROLE_ADMIN);
  ca.set_name("me-too");
  EXPECT_EQ(buyer_->CreateAccount(ca).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(op_->CreateAccount(ca).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(buyer_->ListAccounts().status().code(), absl::StatusCode::kPermissionDenied);

  // Nothing above changed anything.
  absl::StatusOr<v1::ListCapacityResponse> mine = op_->ListCapacity(v1::ListCapacityRequest());
  ASSERT_TRUE(mine.ok());
  EXPECT_EQ(mine->domains_size(), 1);
  EXPECT_EQ(mine->nodes_size(), 4);
  EXPECT_EQ(mine->offers_size(), 1);
  EXPECT_FALSE(mine->offers(0).withdrawn());
  for (const v1::Node& node : mine->nodes()) EXPECT_EQ(node.health(), v1::HEALTH_HEALTHY);
}

TEST_F(BrokerTest, KeysAuthenticateUntilRevoked) {
  Market(1);
  std::unique_ptr<Client> nobody = Connect(broker_->port(), "");
  EXPECT_EQ(nobody->Ping().status().code(), absl::StatusCode::kUnauthenticated);
  std::unique_ptr<Client> garbage = Connect(broker_->port(), "sk_nope");
  EXPECT_EQ(garbage->Ping().status().code(), absl::StatusCode::kUnauthenticated);
  // A well-formed key with a wrong secret.
  std::string forged = buyer_key_;
  forged.back() = forged.back() == '0' ? '1' : '0';
  EXPECT_EQ(Connect(broker_->port(), forged)->Ping().status().code(),
            absl::StatusCode::kUnauthenticated);

  absl::StatusOr<v1::ListAccountsResponse> accounts = admin_->ListAccounts();
  ASSERT_TRUE(accounts.ok());
  std::string buyer_id;
  for (const v1::Account& a : accounts->accounts()) {
    if (a.name() == "buyer-a") buyer_id = a.id();
  }
  ASSERT_FALSE(buyer_id.empty());
  v1::CreateApiKeyRequest ck;
  ck.set_account_id(buyer_id);
  absl::StatusOr<v1::CreateApiKeyResponse> second = admin_->CreateApiKey(ck);
  ASSERT_TRUE(second.ok()) << second.status();
  std::unique_ptr<Client> b2 = Connect(broker_->port(), second->api_key());
  ASSERT_TRUE(b2->Ping().ok());
  EXPECT_EQ(b2->Ping()->account_id(), buyer_id);
  v1::RevokeApiKeyRequest rk;
  rk.set_key_id(second->key().key_id());
  ASSERT_TRUE(admin_->RevokeApiKey(rk).ok());
  absl::Status revoked = b2->Ping().status();
  EXPECT_EQ(revoked.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(revoked.message()), HasSubstr("revoked"));
  EXPECT_TRUE(buyer_->Ping().ok());  // the first key still works
  Restart();                         // and revocation is durable
  EXPECT_EQ(Connect(broker_->port(), second->api_key())->Ping().status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(Connect(broker_->port(), buyer_key_)->Ping().ok());
}

TEST_F(BrokerTest, EveryMalformedRequestIsInvalidArgumentAndChangesNothing) {
  Market(2);
  struct Case {
    std::string name;
    std::function<void(v1::AllocateRequest*)> mutate;
    std::string field;
  };
  const std::vector<Case> cases = {
      {"zero gpus", [](v1::AllocateRequest* r) { r->mutable_request()->set_gpus(0); }, "gpus"},
      {"packing", [](v1::AllocateRequest* r) { r->mutable_request()->set_gpus(12); },
       "gpus_per_node"},
      {"model", [](v1::AllocateRequest* r) { r->mutable_request()->add_models("Z9000"); },
       "models"},
      {"no ceiling",
       [](v1::AllocateRequest* r) { r->mutable_request()->set_max_price_micros_per_gpu_hour(0); },
       "max_price"},
      {"no duration", [](v1::AllocateRequest* r) { r->mutable_request()->clear_duration(); },
       "duration"},
      {"long duration",
       [](v1::AllocateRequest* r) {
         *r->mutable_request()->mutable_duration() = Dur(absl::Hours(24 * 400));
       },
       "duration"},
      {"locality",
       [](v1::AllocateRequest* r) {
         r->mutable_request()->set_locality(static_cast<v1::Locality>(42));
       },
       "locality"},
      {"node locality too big",
       [](v1::AllocateRequest* r) { r->mutable_request()->set_locality(v1::LOCALITY_NODE); },
       "locality"},
      {"center type",
       [](v1::AllocateRequest* r) {
         r->mutable_request()->add_center_types(v1::CENTER_TYPE_UNSPECIFIED);
       },
       "center_types"},
      {"far start",
       [](v1::AllocateRequest* r) {
         *r->mutable_request()->mutable_start() = Ts(absl::Now() + absl::Hours(24 * 365 * 11));
       },
       "start"},
      {"key", [](v1::AllocateRequest* r) { r->mutable_request()->set_idempotency_key("a b"); },
       "idempotency_key"},
      {"region", [](v1::AllocateRequest* r) { r->mutable_request()->add_regions(""); }, "regions"},
      {"no request", [](v1::AllocateRequest* r) { r->clear_request(); }, "request"},
  };
  for (const Case& c : cases) {
    v1::AllocateRequest r = Gang(16, absl::Hours(1), 30'000'000);
    c.mutate(&r);
    absl::Status s = buyer_->Allocate(r).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.name << ": " << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.field)) << c.name;
  }
  // Operator calls.
  v1::RegisterCenterRequest rc;
  rc.mutable_center()->set_id("Bad Id");
  rc.mutable_center()->set_region("cn-east-2");
  rc.mutable_center()->set_type(v1::CENTER_TYPE_CARRIER);
  EXPECT_EQ(op_->RegisterCenter(rc).status().code(), absl::StatusCode::kInvalidArgument);
  rc.mutable_center()->set_id("c-a");
  EXPECT_EQ(op_->RegisterCenter(rc).status().code(), absl::StatusCode::kAlreadyExists);
  rc.mutable_center()->set_id("c-new");
  rc.mutable_center()->set_type(v1::CENTER_TYPE_UNSPECIFIED);
  EXPECT_EQ(op_->RegisterCenter(rc).status().code(), absl::StatusCode::kInvalidArgument);
  v1::AddNodesRequest an;
  v1::Node* n = an.add_nodes();
  n->set_id("x1");
  n->set_center_id("c-a");
  n->set_domain_id("ib0");
  n->set_model("H100-SXM5-80G");
  n->set_gpus(17);
  EXPECT_EQ(op_->AddNodes(an).status().code(), absl::StatusCode::kInvalidArgument);
  n->set_gpus(8);
  n->set_domain_id("nope");
  EXPECT_EQ(op_->AddNodes(an).status().code(), absl::StatusCode::kNotFound);
  v1::CreateOfferRequest co;
  co.mutable_offer()->set_id("o2");
  co.mutable_offer()->set_center_id("c-a");
  co.mutable_offer()->set_domain_id("ib0");
  *co.mutable_offer()->mutable_until() = Ts(absl::Now() - absl::Hours(1));
  co.mutable_offer()->set_price_micros_per_gpu_hour(kPrice);
  EXPECT_EQ(op_->CreateOffer(co).status().code(), absl::StatusCode::kInvalidArgument);
  *co.mutable_offer()->mutable_until() = Ts(absl::Now() + absl::Hours(10));
  EXPECT_EQ(op_->CreateOffer(co).status().code(), absl::StatusCode::kFailedPrecondition)
      << "overlaps the live offer on the same nodes";
  v1::SearchCatalogRequest sc;
  sc.set_query("price<=abc");
  absl::Status bad_query = buyer_->SearchCatalog(sc).status();
  EXPECT_EQ(bad_query.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_query.message()), HasSubstr("column"));

  // Nothing changed: still all 16 GPUs free, nothing allocated, no extra capacity.
  EXPECT_EQ(Catalog(*buyer_, "", 16).entries(0).free_gpus(), 16);
  v1::ListAllocationsRequest l;
  l.set_include_ended(true);
  EXPECT_EQ(buyer_->ListAllocations(l)->allocations_size(), 0);
  absl::StatusOr<v1::ListCapacityResponse> cap = op_->ListCapacity(v1::ListCapacityRequest());
  EXPECT_EQ(cap->centers_size(), 1);
  EXPECT_EQ(cap->nodes_size(), 2);
  EXPECT_EQ(cap->offers_size(), 1);
}

TEST_F(BrokerTest, RejectionsSayWhatWouldWork) {
  Market(4);
  absl::Status too_many = buyer_->Allocate(Gang(64, absl::Hours(1), 30'000'000)).status();
  ASSERT_EQ(too_many.code(), absl::StatusCode::kResourceExhausted);
  std::optional<v1::Rejection> r = RejectionOf(too_many);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->reason(), v1::REJECT_REASON_INSUFFICIENT_CAPACITY);
  EXPECT_EQ(r->largest_block_gpus(), 32);

  absl::Status too_cheap = buyer_->Allocate(Gang(8, absl::Hours(1), 10'000'000)).status();
  ASSERT_EQ(too_cheap.code(), absl::StatusCode::kResourceExhausted);
  r = RejectionOf(too_cheap);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->reason(), v1::REJECT_REASON_PRICE_ABOVE_CEILING);
  EXPECT_EQ(r->min_ceiling_micros(), kPrice);

  v1::AllocateRequest wrong_model = Gang(8, absl::Hours(1), 30'000'000);
  wrong_model.mutable_request()->set_models(0, "A100-SXM4-80G");
  r = RejectionOf(buyer_->Allocate(wrong_model).status());
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->reason(), v1::REJECT_REASON_NO_MATCHING_CAPACITY);

  // Busy now, free in an hour: the earliest start says so.
  ASSERT_TRUE(buyer_->Allocate(Gang(32, absl::Hours(1), 30'000'000)).ok());
  r = RejectionOf(buyer_->Allocate(Gang(8, absl::Hours(1), 30'000'000)).status());
  ASSERT_TRUE(r.has_value());
  ASSERT_TRUE(r->has_earliest_start());
  EXPECT_GT(r->earliest_start().seconds(), absl::ToUnixSeconds(absl::Now() + absl::Minutes(55)));

  // A quote says the same without an error.
  v1::QuoteRequest q;
  *q.mutable_request() = Gang(8, absl::Hours(1), 30'000'000).request();
  absl::StatusOr<v1::QuoteResponse> quote = buyer_->Quote(q);
  ASSERT_TRUE(quote.ok());
  EXPECT_FALSE(quote->available());
  EXPECT_EQ(quote->rejection().reason(), v1::REJECT_REASON_INSUFFICIENT_CAPACITY);
}

TEST_F(BrokerTest, RepeatedIdempotencyKeyReturnsTheFirstAnswerAlsoAfterRestart) {
  Market(4);
  absl::StatusOr<v1::Allocation> first =
      buyer_->Allocate(Gang(16, absl::Hours(1), 30'000'000, "job-42"));
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<v1::Allocation> again =
      buyer_->Allocate(Gang(16, absl::Hours(1), 30'000'000, "job-42"));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->id(), first->id());
  EXPECT_EQ(Catalog(*buyer_, "", 16).entries(0).free_gpus(), 16) << "allocated once";
  // The same key with another request is a mistake worth telling.
  absl::Status other = buyer_->Allocate(Gang(8, absl::Hours(1), 30'000'000, "job-42")).status();
  EXPECT_EQ(other.code(), absl::StatusCode::kFailedPrecondition);
  // A rejection is a first answer too.
  absl::Status rejected = buyer_->Allocate(Gang(64, absl::Hours(1), 30'000'000, "big")).status();
  EXPECT_EQ(rejected.code(), absl::StatusCode::kResourceExhausted);
  // Another buyer's keys are its own.
  std::unique_ptr<Client> b2 =
      Connect(broker_->port(), NewAccount(*admin_, v1::ROLE_BUYER, "buyer-2"));
  absl::StatusOr<v1::Allocation> theirs =
      b2->Allocate(Gang(8, absl::Hours(1), 30'000'000, "job-42"));
  ASSERT_TRUE(theirs.ok());
  EXPECT_NE(theirs->id(), first->id());

  Restart();
  buyer_ = Connect(broker_->port(), buyer_key_);
  absl::StatusOr<v1::Allocation> after =
      buyer_->Allocate(Gang(16, absl::Hours(1), 30'000'000, "job-42"));
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->id(), first->id());
  absl::Status still_rejected =
      buyer_->Allocate(Gang(64, absl::Hours(1), 30'000'000, "big")).status();
  EXPECT_EQ(still_rejected.code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(RejectionOf(still_rejected).has_value());
}

TEST_F(BrokerTest, BindingQuoteHoldsThenRedeemsOnceOrLapses) {
  Market(2);
  v1::QuoteRequest q;
  *q.mutable_request() = Gang(8, absl::Hours(1), 30'000'000).request();
  *q.mutable_hold() = Dur(absl::Seconds(30));
  absl::StatusOr<v1::QuoteResponse> held = buyer_->Quote(q);
  ASSERT_TRUE(held.ok()) << held.status();
  ASSERT_TRUE(held->available());
  EXPECT_EQ(held->allocation().state(), v1::ALLOCATION_STATE_HELD);
  EXPECT_EQ(Catalog(*buyer_, "", 8).entries(0).free_gpus(), 8) << "held GPUs are not on sale";

  // Another buyer cannot redeem it.
  std::unique_ptr<Client> b2 =
      Connect(broker_->port(), NewAccount(*admin_, v1::ROLE_BUYER, "buyer-2"));
  v1::AllocateRequest redeem;
  redeem.set_quote_id(held->allocation().id());
  EXPECT_EQ(b2->Allocate(redeem).status().code(), absl::StatusCode::kNotFound);

  absl::StatusOr<v1::Allocation> a = buyer_->Allocate(redeem);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->id(), held->allocation().id());
  EXPECT_EQ(a->state(), v1::ALLOCATION_STATE_ACTIVE);
  EXPECT_EQ(a->total_price_micros(), held->allocation().total_price_micros());
  absl::StatusOr<v1::Allocation> again = buyer_->Allocate(redeem);  // a retried redeem
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->id(), a->id());

  // A short hold lapses by itself and its GPUs come back.
  *q.mutable_hold() = Dur(absl::Milliseconds(300));
  absl::StatusOr<v1::QuoteResponse> brief = buyer_->Quote(q);
  ASSERT_TRUE(brief.ok() && brief->available());
  v1::GetAllocationRequest g;
  g.set_allocation_id(brief->allocation().id());
  absl::StatusOr<v1::Allocation> lapsed;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  do {
    absl::SleepFor(absl::Milliseconds(50));
    lapsed = buyer_->GetAllocation(g);
  } while (lapsed.ok() && lapsed->state() != v1::ALLOCATION_STATE_ENDED && absl::Now() < deadline);
  ASSERT_TRUE(lapsed.ok());
  EXPECT_EQ(lapsed->state(), v1::ALLOCATION_STATE_ENDED);
  EXPECT_EQ(lapsed->end_reason(), v1::END_REASON_LAPSED);
  redeem.set_quote_id(brief->allocation().id());
  EXPECT_EQ(buyer_->Allocate(redeem).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(BrokerTest, ExpiryHappensOnTimeWithoutARequest) {
  Market(1);
  absl::StatusOr<v1::Allocation> a = buyer_->Allocate(Gang(8, absl::Seconds(1), 30'000'000));
  ASSERT_TRUE(a.ok()) << a.status();
  // Watch: the first message is the current state; the next is the expiry, pushed by the broker
  // with no other call in between.
  std::vector<v1::Allocation> seen;
  v1::WatchAllocationsRequest w;
  absl::Status s = buyer_->WatchAllocations(w, [&](const v1::Allocation& x) {
    seen.push_back(x);
    return x.state() != v1::ALLOCATION_STATE_ENDED;
  });
  ASSERT_GE(seen.size(), 2u) << s;
  EXPECT_EQ(seen.front().state(), v1::ALLOCATION_STATE_ACTIVE);
  EXPECT_EQ(seen.back().id(), a->id());
  EXPECT_EQ(seen.back().state(), v1::ALLOCATION_STATE_ENDED);
  EXPECT_EQ(seen.back().end_reason(), v1::END_REASON_EXPIRED);
  EXPECT_EQ(seen.back().total_price_micros(), a->total_price_micros());
}

TEST_F(BrokerTest, RestartKeepsCapacityAllocationsAndHolds) {
  Market(4);
  absl::StatusOr<v1::Allocation> a = buyer_->Allocate(Gang(16, absl::Hours(3), 30'000'000));
  ASSERT_TRUE(a.ok());
  v1::AllocateRequest later = Gang(8, absl::Hours(2), 30'000'000);
  *later.mutable_request()->mutable_start() = Ts(absl::Now() + absl::Hours(5));
  absl::StatusOr<v1::Allocation> reserved = buyer_->Allocate(later);
  ASSERT_TRUE(reserved.ok());
  EXPECT_EQ(reserved->state(), v1::ALLOCATION_STATE_RESERVED);
  v1::QuoteRequest q;
  *q.mutable_request() = Gang(8, absl::Hours(1), 30'000'000).request();
  *q.mutable_hold() = Dur(absl::Minutes(10));
  absl::StatusOr<v1::QuoteResponse> held = buyer_->Quote(q);
  ASSERT_TRUE(held.ok() && held->available());
  v1::SetNodeHealthRequest h;
  h.set_node_id("c-a-n3");
  h.set_health(v1::HEALTH_DOWN);
  ASSERT_TRUE(op_->SetNodeHealth(h).ok());

  Restart();
  buyer_ = Connect(broker_->port(), buyer_key_);
  op_ = Connect(broker_->port(), op_key_);
  for (const v1::Allocation* x :
       std::vector<const v1::Allocation*>{&*a, &*reserved, &held->allocation()}) {
    v1::GetAllocationRequest g;
    g.set_allocation_id(x->id());
    absl::StatusOr<v1::Allocation> got = buyer_->GetAllocation(g);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->SerializeAsString(), x->SerializeAsString()) << got->DebugString();
  }
  absl::StatusOr<v1::ListCapacityResponse> cap = op_->ListCapacity(v1::ListCapacityRequest());
  ASSERT_TRUE(cap.ok());
  ASSERT_EQ(cap->nodes_size(), 4);
  for (const v1::Node& n : cap->nodes()) {
    EXPECT_EQ(n.health(), n.id() == "c-a-n3" ? v1::HEALTH_DOWN : v1::HEALTH_HEALTHY);
  }
  // The restored sales still count (16 sold + 8 held now; the reservation later), the core's
  // invariants hold, and new ids are never old ones.
  EXPECT_EQ(Totals().sold_gpus_now, 24);
  EXPECT_EQ(Totals().live_allocations, 3);
  EXPECT_EQ(Violations(), 0);
  v1::QuoteRequest small;
  *small.mutable_request() = Gang(8, absl::Hours(1), 30'000'000).request();
  *small.mutable_hold() = Dur(absl::Minutes(1));
  absl::StatusOr<v1::QuoteResponse> fresh = buyer_->Quote(small);
  ASSERT_TRUE(fresh.ok());
  if (fresh->available()) {
    EXPECT_GT(std::stoll(fresh->allocation().id()), std::stoll(held->allocation().id()));
  }
  v1::AllocateRequest redeem;
  redeem.set_quote_id(held->allocation().id());
  absl::StatusOr<v1::Allocation> redeemed = buyer_->Allocate(redeem);
  ASSERT_TRUE(redeemed.ok()) << redeemed.status();
  EXPECT_EQ(redeemed->state(), v1::ALLOCATION_STATE_ACTIVE);
}

TEST_F(BrokerTest, ThirtyTwoBuyersRacingNeverOversell) {
  Market(16);  // 128 GPUs
  constexpr int kBuyers = 32;
  std::vector<std::unique_ptr<Client>> buyers;
  buyers.reserve(kBuyers);
  for (int i = 0; i < kBuyers; ++i) {
    buyers.push_back(
        Connect(broker_->port(), NewAccount(*admin_, v1::ROLE_BUYER, absl::StrCat("racer-", i))));
  }
  std::atomic<int> granted_gpus{0};
  std::mutex mu;
  std::map<std::string, int> per_node;
  std::vector<std::thread> threads;
  threads.reserve(kBuyers);
  for (int i = 0; i < kBuyers; ++i) {
    threads.emplace_back([&, i] {
      for (int k = 0; k < 4; ++k) {
        v1::AllocateRequest r = Gang(8 * (1 + (i + k) % 2), absl::Hours(1), 30'000'000);
        r.mutable_request()->set_gpus_per_node(0);
        r.mutable_request()->set_locality(v1::LOCALITY_ANY);
        absl::StatusOr<v1::Allocation> a = buyers[static_cast<size_t>(i)]->Allocate(r);
        if (!a.ok()) {
          EXPECT_EQ(a.status().code(), absl::StatusCode::kResourceExhausted) << a.status();
          continue;
        }
        granted_gpus += r.request().gpus();
        std::lock_guard<std::mutex> lock(mu);
        for (const v1::Slice& s : a->slices()) per_node[s.node_id()] += s.gpus();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(granted_gpus.load(), 128) << "demand (32 x 4 x 12 GPUs) exceeds supply: all is sold";
  for (const auto& [node, gpus] : per_node) EXPECT_LE(gpus, 8) << node;
  EXPECT_EQ(Violations(), 0);
  EXPECT_EQ(Totals().sold_gpus_now, 128);
}

}  // namespace
}  // namespace suanli::e2e
