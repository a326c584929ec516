// suanli::Client against a fake broker over real gRPC on loopback: authentication, rejections
// as statuses, which calls are retried and with which idempotency key, deadlines, and watching.
#include "sdk/client.h"

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/sdk/fake_broker.h"

namespace suanli {
namespace {

using ::suanli::testing::FakeBroker;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::SizeIs;
using ::testing::StartsWith;

constexpr char kKey[] = "sk_key1_secret";

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(broker_.started()); }

  std::unique_ptr<Client> Connect(int max_attempts = 5,
                                  absl::Duration timeout = absl::Seconds(10)) {
    ClientOptions options;
    options.target = broker_.address();
    options.api_key = kKey;
    options.max_attempts = max_attempts;
    options.timeout = timeout;
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  // A client (2 attempts per call) of a broker that was started and stopped: nothing listens.
  static std::unique_ptr<Client> ConnectToABrokerThatIsGone() {
    std::string address;
    {
      FakeBroker gone;
      EXPECT_TRUE(gone.started());
      address = gone.address();
    }
    ClientOptions options;
    options.target = address;
    options.api_key = kKey;
    options.max_attempts = 2;
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  static v1::AllocateRequest SixteenGpus() {
    v1::AllocateRequest call;
    call.mutable_request()->add_models("H100-SXM5-80G");
    call.mutable_request()->set_gpus(16);
    call.mutable_request()->set_max_price_micros_per_gpu_hour(30'000'000);
    call.mutable_request()->mutable_duration()->set_seconds(int64_t{4} * 3600);
    return call;
  }

  FakeBroker broker_;
};

TEST_F(ClientTest, EveryCallCarriesTheBearerKey) {
  std::unique_ptr<Client> client = Connect();
  ASSERT_NE(client, nullptr);
  absl::StatusOr<v1::PingResponse> pong = client->Ping();
  ASSERT_TRUE(pong.ok()) << pong.status();
  EXPECT_EQ(pong->account_id(), "acc-buyer-1");
  ASSERT_TRUE(client->Allocate(SixteenGpus()).ok());
  EXPECT_THAT(broker_.market.seen().authorizations,
              ElementsAre("Bearer sk_key1_secret", "Bearer sk_key1_secret"));
}

TEST_F(ClientTest, WithoutAKeyNoHeaderIsSent) {
  ClientOptions options;
  options.target = broker_.address();
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(options);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->Ping().ok());
  EXPECT_THAT(broker_.market.seen().authorizations, ElementsAre(""));
}

TEST_F(ClientTest, ConnectRejectsBadOptions) {
  ClientOptions bad_key;
  bad_key.api_key = "not a key";
  EXPECT_EQ(Client::Connect(bad_key).status().code(), absl::StatusCode::kInvalidArgument);
  ClientOptions no_target;
  no_target.target = "";
  EXPECT_EQ(Client::Connect(no_target).status().code(), absl::StatusCode::kInvalidArgument);
  ClientOptions no_attempts;
  no_attempts.max_attempts = 0;
  EXPECT_EQ(Client::Connect(no_attempts).status().code(), absl::StatusCode::kInvalidArgument);
  ClientOptions no_time;
  no_time.timeout = absl::ZeroDuration();
  EXPECT_EQ(Client::Connect(no_time).status().code(), absl::StatusCode::kInvalidArgument);
  ClientOptions missing_ca;
  missing_ca.ca_file = "/nonexistent/suanli-ca.pem";
  EXPECT_EQ(Client::Connect(missing_ca).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ClientTest, ARejectionComesBackAsResourceExhaustedWithItsDetails) {
  broker_.market.allocate_rejects = true;
  broker_.market.rejection.set_reason(v1::REJECT_REASON_PRICE_ABOVE_CEILING);
  broker_.market.rejection.set_min_ceiling_micros(31'200'000);
  broker_.market.rejection.set_largest_block_gpus(8);
  broker_.market.rejection.set_message("cheapest fit is 31.20");
  std::unique_ptr<Client> client = Connect();
  ASSERT_NE(client, nullptr);

  absl::StatusOr<v1::Allocation> a = client->Allocate(SixteenGpus());
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(a.status().message(), "no capacity fits");
  std::optional<v1::Rejection> rejection = RejectionOf(a.status());
  ASSERT_TRUE(rejection.has_value());
  EXPECT_EQ(rejection->reason(), v1::REJECT_REASON_PRICE_ABOVE_CEILING);
  EXPECT_EQ(rejection->min_ceiling_micros(), 31'200'000);
  EXPECT_EQ(rejection->largest_block_gpus(), 8);
  EXPECT_EQ(rejection->message(), "cheapest fit is 31.20");
  // Not retried: only UNAVAILABLE is.
  EXPECT_EQ(broker_.market.seen().allocate_calls, 1);
}

TEST_F(ClientTest, StatusesWithoutARejectionHaveNone) {
  EXPECT_FALSE(RejectionOf(absl::OkStatus()).has_value());
  EXPECT_FALSE(RejectionOf(absl::ResourceExhaustedError("x")).has_value());
  const absl::Status plain =
      FromGrpcStatus(grpc::Status(grpc::StatusCode::NOT_FOUND, "no allocation a-9"));
  EXPECT_EQ(plain.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(plain.message(), "no allocation a-9");
  EXPECT_FALSE(RejectionOf(plain).has_value());
  // Details that are not a rejection are not mistaken for one.
  google::rpc::Status details;
  details.add_details()->PackFrom(v1::PingRequest());
  EXPECT_FALSE(RejectionOf(FromGrpcStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "x",
                                                       details.SerializeAsString())))
                   .has_value());
}

TEST_F(ClientTest, AllocateIsRetriedWithOneGeneratedKey) {
  broker_.market.allocate_outages = 2;
  std::unique_ptr<Client> client = Connect();
  ASSERT_NE(client, nullptr);
  absl::StatusOr<v1::Allocation> a = client->Allocate(SixteenGpus());
  ASSERT_TRUE(a.ok()) << a.status();
  const std::vector<std::string> keys = broker_.market.seen().allocate_keys;
  ASSERT_THAT(keys, SizeIs(3));
  EXPECT_THAT(keys[0], StartsWith("sdk-"));
  EXPECT_THAT(keys, Each(keys[0]));
  EXPECT_EQ(a->request().idempotency_key(), keys[0]);
}

TEST_F(ClientTest, AllocateKeepsTheCallersKeyAcrossRetries) {
  broker_.market.allocate_outages = 2;
  std::unique_ptr<Client> client = Connect();
  ASSERT_NE(client, nullptr);
  v1::AllocateRequest call = SixteenGpus();
  call.mutable_request()->set_idempotency_key("job-42");
  ASSERT_TRUE(client->Allocate(call).ok());
  EXPECT_THAT(broker_.market.seen().allocate_keys, ElementsAre("job-42", "job-42", "job-42"));
}

TEST_F(ClientTest, EachAllocateGetsItsOwnKey) {
  std::unique_ptr<Client> client = Connect();
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Allocate(SixteenGpus()).ok());
  ASSERT_TRUE(client->Allocate(SixteenGpus()).ok());
  const std::vector<std::string> keys = broker_.market.seen().allocate_keys;
  ASSERT_THAT(keys, SizeIs(2));
  EXPECT_NE(keys[0], keys[1]);
}

TEST_F(ClientTest, RetriesStopAfterMaxAttempts) {
  broker_.market.allocate_outages = 100;
  std::unique_ptr<Client> client = Connect(/*max_attempts=*/3);
  ASSERT_NE(client, nullptr);
  absl::StatusOr<v1::Allocation> a = client->Allocate(SixteenGpus());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(broker_.market.seen().allocate_calls, 3);
}

TEST_F(ClientTest, AQuoteWithoutHoldIsRetried) {
  broker_.market.quote_outages = 2;
  std::unique_ptr<Client> client = Connect();
  ASSERT_NE(client, nullptr);
  v1::QuoteRequest quote;
  *quote.mutable_request() = SixteenGpus().request();
  absl::StatusOr<v1::QuoteResponse> r = client->Quote(quote);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->available());
  EXPECT_EQ(broker_.market.seen().quote_calls, 3);
}

TEST_F(ClientTest, ABindingQuoteIsNotRetried) {
  broker_.market.quote_outages = 2;
  std::unique_ptr<Client> client = Connect();
  ASSERT_NE(client, nullptr);
  v1::QuoteRequest quote;
  *quote.mutable_request() = SixteenGpus().request();
  quote.mutable_hold()->set_seconds(30);
  absl::StatusOr<v1::QuoteResponse> r = client->Quote(quote);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(broker_.market.seen().quote_calls, 1);
}

TEST_F(ClientTest, ExtendingToATimeIsRetriedButExtendingByADurationIsNot) {
  broker_.market.extend_outages = 1;
  std::unique_ptr<Client> client = Connect();
  ASSERT_NE(client, nullptr);
  v1::ExtendAllocationRequest to_time;
  to_time.set_allocation_id("alloc-1");
  to_time.mutable_new_end()->set_seconds(1'900'000'000);
  EXPECT_TRUE(client->ExtendAllocation(to_time).ok());
  EXPECT_THAT(broker_.market.seen().extends, SizeIs(2));

  broker_.market.extend_outages = 1;
  v1::ExtendAllocationRequest by;
  by.set_allocation_id("alloc-1");
  by.mutable_by()->set_seconds(7200);
  EXPECT_EQ(client->ExtendAllocation(by).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(broker_.market.seen().extends, SizeIs(3));
}

TEST_F(ClientTest, EachAttemptHasADeadline) {
  broker_.market.get_blocks = true;
  std::unique_ptr<Client> client = Connect(/*max_attempts=*/5, absl::Milliseconds(200));
  ASSERT_NE(client, nullptr);
  v1::GetAllocationRequest get;
  get.set_allocation_id("alloc-1");
  absl::StatusOr<v1::Allocation> a = client->GetAllocation(get);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kDeadlineExceeded);
  // DEADLINE_EXCEEDED is not retried.
  EXPECT_EQ(broker_.market.seen().get_calls, 1);
}

TEST_F(ClientTest, ABrokerThatIsDownIsUnavailable) {
  std::unique_ptr<Client> client = ConnectToABrokerThatIsGone();
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->Ping().status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(ClientTest, WatchDeliversEveryChangeUntilTheStreamEnds) {
  std::unique_ptr<Client> client = Connect();
  ASSERT_NE(client, nullptr);
  std::vector<std::string> ids;
  const absl::Status s = client->WatchAllocations({}, [&](const v1::Allocation& a) {
    ids.push_back(a.id());
    return true;
  });
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_THAT(ids, ElementsAre("alloc-1", "alloc-2", "alloc-3"));
  EXPECT_THAT(broker_.market.seen().authorizations, ElementsAre("Bearer sk_key1_secret"));
}

TEST_F(ClientTest, WatchStopsWhenTheCallbackSaysSo) {
  broker_.market.watch_count = 1000;
  std::unique_ptr<Client> client = Connect();
  ASSERT_NE(client, nullptr);
  std::vector<std::string> ids;
  const absl::Status s = client->WatchAllocations({}, [&](const v1::Allocation& a) {
    ids.push_back(a.id());
    return ids.size() < 2;
  });
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_THAT(ids, ElementsAre("alloc-1", "alloc-2"));
}

// The outcome of one non-blocking call; answering twice fails the test (Notify twice aborts).
template <typename T>
class Awaited {
 public:
  Client::Done<T> Callback() {
    return [this](absl::StatusOr<T> r) {
      result_ = std::move(r);
      done_.Notify();
    };
  }
  // Waits (bounded, so that a lost answer fails instead of hanging) and returns the outcome.
  absl::StatusOr<T> Get() {
    if (!done_.WaitForNotificationWithTimeout(absl::Seconds(30))) {
      return absl::DeadlineExceededError("no answer in 30s");
    }
    return result_;
  }

 private:
  absl::Notification done_;
  absl::StatusOr<T> result_ = absl::UnknownError("not answered");
};

TEST_F(ClientTest, AllocateAsyncAnswersWhatAllocateWould) {
  std::unique_ptr<Client> client = Connect();
  ASSERT_NE(client, nullptr);
  Awaited<v1::Allocation> a;
  client->AllocateAsync(SixteenGpus(), a.Callback());
  absl::StatusOr<v1::Allocation> got = a.Get();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->id(), "alloc-1");
  EXPECT_EQ(got->slices(0).gpus(), 16);
  EXPECT_THAT(broker_.market.seen().authorizations, ElementsAre("Bearer sk_key1_secret"));
}

TEST_F(ClientTest, AllocateAsyncIsRetriedAfterABackoffWithOneGeneratedKey) {
  broker_.market.allocate_outages = 2;
  std::unique_ptr<Client> client = Connect();
  ASSERT_NE(client, nullptr);
  Awaited<v1::Allocation> a;
  const absl::Time t0 = absl::Now();
  client->AllocateAsync(SixteenGpus(), a.Callback());
  absl::StatusOr<v1::Allocation> got = a.Get();
  ASSERT_TRUE(got.ok()) << got.status();
  // Two backoffs of at least 25ms and 50ms (50ms and 100ms, with jitter down to half).
  EXPECT_GE(absl::Now() - t0, absl::Milliseconds(75));
  const std::vector<std::string> keys = broker_.market.seen().allocate_keys;
  ASSERT_THAT(keys, SizeIs(3));
  EXPECT_THAT(keys[0], StartsWith("sdk-"));
  EXPECT_THAT(keys, Each(keys[0]));
  EXPECT_EQ(got->request().idempotency_key(), keys[0]);
}

TEST_F(ClientTest, AsyncRetriesStopAfterMaxAttempts) {
  broker_.market.allocate_outages = 100;
  std::unique_ptr<Client> client = Connect(/*max_attempts=*/3);
  ASSERT_NE(client, nullptr);
  Awaited<v1::Allocation> a;
  client->AllocateAsync(SixteenGpus(), a.Callback());
  EXPECT_EQ(a.Get().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(broker_.market.seen().allocate_calls, 3);
}

TEST_F(ClientTest, AsyncRejectionCarriesItsDetails) {
  broker_.market.allocate_rejects = true;
  broker_.market.rejection.set_reason(v1::REJECT_REASON_PRICE_ABOVE_CEILING);
  std::unique_ptr<Client> client = Connect();
  ASSERT_NE(client, nullptr);
  Awaited<v1::Allocation> a;
  client->AllocateAsync(SixteenGpus(), a.Callback());
  const absl::Status s = a.Get().status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  std::optional<v1::Rejection> rejection = RejectionOf(s);
  ASSERT_TRUE(rejection.has_value());
  EXPECT_EQ(rejection->reason(), v1::REJECT_REASON_PRICE_ABOVE_CEILING);
  // A rejection is an answer, not an outage: not retried.
  EXPECT_EQ(broker_.market.seen().allocate_calls, 1);
}

TEST_F(ClientTest, ReleaseAllocationAsyncIsRetried) {
  broker_.market.release_outages = 1;
  std::unique_ptr<Client> client = Connect();
  ASSERT_NE(client, nullptr);
  v1::ReleaseAllocationRequest release;
  release.set_allocation_id("alloc-7");
  Awaited<v1::Allocation> a;
  client->ReleaseAllocationAsync(release, a.Callback());
  absl::StatusOr<v1::Allocation> got = a.Get();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->end_reason(), v1::END_REASON_RELEASED);
  EXPECT_THAT(broker_.market.seen().released, ElementsAre("alloc-7", "alloc-7"));
}

TEST_F(ClientTest, ManyAsyncCallsInFlightAreEachAnsweredOnce) {
  std::unique_ptr<Client> client = Connect();
  ASSERT_NE(client, nullptr);
  constexpr int kCalls = 200;
  std::vector<Awaited<v1::PingResponse>> pings(kCalls);
  for (Awaited<v1::PingResponse>& p : pings) client->PingAsync(p.Callback());
  for (Awaited<v1::PingResponse>& p : pings) {
    absl::StatusOr<v1::PingResponse> pong = p.Get();
    ASSERT_TRUE(pong.ok()) << pong.status();
    EXPECT_EQ(pong->account_id(), "acc-buyer-1");
  }
  EXPECT_THAT(broker_.market.seen().authorizations, SizeIs(kCalls));
}

TEST_F(ClientTest, DoneMayStartTheNextCall) {
  std::unique_ptr<Client> client = Connect();
  ASSERT_NE(client, nullptr);
  // Ten calls one after the other, each started from the previous one's callback.
  std::atomic<int> left{10};
  absl::Notification all;
  std::function<void(absl::StatusOr<v1::PingResponse>)> next =
      [&](const absl::StatusOr<v1::PingResponse>& pong) {
        EXPECT_TRUE(pong.ok()) << pong.status();
        if (--left == 0) {
          all.Notify();
        } else {
          client->PingAsync(next);
        }
      };
  client->PingAsync(next);
  ASSERT_TRUE(all.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_THAT(broker_.market.seen().authorizations, SizeIs(10));
}

TEST_F(ClientTest, AnAsyncCallToABrokerThatIsDownIsUnavailable) {
  std::unique_ptr<Client> client = ConnectToABrokerThatIsGone();
  ASSERT_NE(client, nullptr);
  Awaited<v1::PingResponse> p;
  client->PingAsync(p.Callback());
  EXPECT_EQ(p.Get().status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace suanli
