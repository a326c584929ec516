// The `suanli` binary against a live broker: the operator -> buyer flow a person would type, JSON
// output on every command, and exit codes with messages on stderr.
#include <sys/wait.h>

#include <cstdio>

#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/e2e/harness.h"

namespace suanli::e2e {
namespace {

using ::testing::HasSubstr;

struct Result {
  int code = -1;
  std::string out, err;
};

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<broker::Broker>> b = broker::Broker::Start(OptionsIn(dir_));
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = *std::move(b);
    admin_key_ = ReadAll(dir_.File("admin.key"));
  }

  // Runs `suanli ARGS` with the given key; stdin is empty.
  Result Suanli(const std::string& key, const std::vector<std::string>& args) {
    std::string cmd = absl::StrCat("'", BinPath("suanli"), "' --server=127.0.0.1:", broker_->port(),
                                   " --key='", key, "'");
    for (const std::string& a : args) absl::StrAppend(&cmd, " '", a, "'");
    absl::StrAppend(&cmd, " </dev/null 2>'", dir_.File("stderr"), "'");
    Result r;
    FILE* p = popen(cmd.c_str(), "r");
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
    const int status = pclose(p);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.err = ReadAll(dir_.File("stderr"));
    return r;
  }

  // The api key a table-output `account create` printed.
  static std::string KeyIn(const std::string& out) {
    const size_t at = out.find("sk_");
    return at == std::string::npos ? "" : out.substr(at, 3 + 16 + 1 + 64);
  }

  TempDir dir_;
  std::unique_ptr<broker::Broker> broker_;
  std::string admin_key_;
};

TEST_F(CliTest, OperatorAndBuyerFlowAsAPersonTypesIt) {
  Result op = Suanli(admin_key_, {"account", "create", "--role=operator", "--name=op1"});
  ASSERT_EQ(op.code, 0) << op.err;
  const std::string op_key = KeyIn(op.out);
  ASSERT_FALSE(op_key.empty()) << op.out;
  Result buyer = Suanli(admin_key_, {"account", "create", "--role=buyer", "--name=b1"});
  ASSERT_EQ(buyer.code, 0) << buyer.err;
  const std::string buyer_key = KeyIn(buyer.out);

  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"center", "register", "--id=sh-1", "--name=Shanghai One", "--region=cn-east-2",
            "--type=carrier"},
           {"domain", "add", "--center=sh-1", "--id=ib0", "--fabric=infiniband", "--gbps=400"},
           {"node", "add", "--center=sh-1", "--domain=ib0", "--model=H800-SXM5-80G",
            "--gpus-per-node=8", "--count=6"},
           {"offer", "create", "--center=sh-1", "--domain=ib0", "--until=+240h",
            "--price=25.50"}}) {
    Result r = Suanli(op_key, args);
    ASSERT_EQ(r.code, 0) << absl::StrJoin(args, " ") << ": " << r.err;
  }
  // The catalog shows it (the snapshot is refreshed within milliseconds).
  Result cat;
  for (int i = 0; i < 100; ++i) {
    cat = Suanli(buyer_key, {"catalog", "model=H800-SXM5-80G", "free_gpus>=48"});
    if (cat.out.find("sh-1") != std::string::npos) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ(cat.code, 0) << cat.err;
  EXPECT_THAT(cat.out, HasSubstr("sh-1"));
  EXPECT_THAT(cat.out, HasSubstr("25.50"));

  Result a = Suanli(buyer_key, {"allocate", "--model=H800-SXM5-80G", "--gpus=16",
                                "--gpus-per-node=8", "--locality=domain", "--max-price=30",
                                "--duration=4h", "--idempotency-key=job-1", "--output=json"});
  ASSERT_EQ(a.code, 0) << a.err;
  v1::Allocation alloc;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(a.out, &alloc).ok()) << a.out;
  EXPECT_EQ(alloc.slices_size(), 2);
  EXPECT_EQ(alloc.total_price_micros(), 16 * 25'500'000LL * 4);
  // The same key again: the same allocation.
  Result again = Suanli(buyer_key, {"allocate", "--model=H800-SXM5-80G", "--gpus=16",
                                    "--gpus-per-node=8", "--locality=domain", "--max-price=30",
                                    "--duration=4h", "--idempotency-key=job-1", "--output=json"});
  ASSERT_EQ(again.code, 0) << again.err;
  v1::Allocation same;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(again.out, &same).ok());
  EXPECT_EQ(same.id(), alloc.id());

  Result get = Suanli(buyer_key, {"allocation", "get", alloc.id()});
  ASSERT_EQ(get.code, 0) << get.err;
  EXPECT_THAT(get.out, HasSubstr("active"));
  Result list = Suanli(buyer_key, {"allocation", "list", "--output=json"});
  ASSERT_EQ(list.code, 0) << list.err;
  v1::ListAllocationsResponse listed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(list.out, &listed).ok()) << list.out;
  EXPECT_EQ(listed.allocations_size(), 1);

  Result ext = Suanli(buyer_key, {"extend", alloc.id(), "--by=2h", "--output=json"});
  ASSERT_EQ(ext.code, 0) << ext.err;
  v1::Allocation longer;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(ext.out, &longer).ok());
  EXPECT_EQ(longer.end().seconds() - alloc.end().seconds(), 7200);

  // A binding quote, redeemed.
  Result q = Suanli(buyer_key, {"quote", "--model=H800-SXM5-80G", "--gpus=8", "--max-price=30",
                                "--duration=1h", "--hold=30s", "--output=json"});
  ASSERT_EQ(q.code, 0) << q.err;
  v1::QuoteResponse quote;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(q.out, &quote).ok()) << q.out;
  ASSERT_TRUE(quote.available());
  EXPECT_EQ(quote.allocation().state(), v1::ALLOCATION_STATE_HELD);
  Result redeem =
      Suanli(buyer_key, {"allocate", absl::StrCat("--quote=", quote.allocation().id())});
  ASSERT_EQ(redeem.code, 0) << redeem.err;
  EXPECT_THAT(redeem.out, HasSubstr("active"));

  Result sold = Suanli(op_key, {"sold", "list"});
  ASSERT_EQ(sold.code, 0) << sold.err;
  EXPECT_THAT(sold.out, HasSubstr(alloc.id()));

  Result rel = Suanli(buyer_key, {"release", alloc.id()});
  ASSERT_EQ(rel.code, 0) << rel.err;
  EXPECT_THAT(rel.out, HasSubstr("released"));

  Result cap = Suanli(op_key, {"capacity", "list", "--output=json"});
  ASSERT_EQ(cap.code, 0) << cap.err;
  v1::ListCapacityResponse capacity;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(cap.out, &capacity).ok()) << cap.out;
  EXPECT_EQ(capacity.nodes_size(), 6);
}

TEST_F(CliTest, ErrorsExitNonZeroWithAMessageOnStderr) {
  const std::string buyer_key =
      KeyIn(Suanli(admin_key_, {"account", "create", "--role=buyer", "--name=b1"}).out);
  ASSERT_FALSE(buyer_key.empty());
  // Nothing on sale: a rejection, exit 3, and what would work.
  Result none = Suanli(buyer_key, {"allocate", "--gpus=8", "--max-price=30", "--duration=1h"});
  EXPECT_EQ(none.code, 3);
  EXPECT_THAT(none.err, HasSubstr("RESOURCE_EXHAUSTED"));
  EXPECT_TRUE(none.out.empty());
  // The broker refuses: exit 1.
  Result denied =
      Suanli(buyer_key, {"center", "register", "--id=x", "--region=r", "--type=carrier"});
  EXPECT_EQ(denied.code, 1);
  EXPECT_THAT(denied.err, HasSubstr("PERMISSION_DENIED"));
  Result unauth = Suanli("sk_bad", {"ping"});
  EXPECT_EQ(unauth.code, 1);
  EXPECT_THAT(unauth.err, HasSubstr("UNAUTHENTICATED"));
  Result bad_query = Suanli(buyer_key, {"catalog", "price<=x"});
  EXPECT_EQ(bad_query.code, 1);
  EXPECT_THAT(bad_query.err, HasSubstr("column"));
  // Usage errors: exit 2, before any call.
  Result usage = Suanli(buyer_key, {"allocate", "--gpus=eight"});
  EXPECT_EQ(usage.code, 2);
  EXPECT_FALSE(usage.err.empty());
  Result unknown = Suanli(buyer_key, {"frobnicate"});
  EXPECT_EQ(unknown.code, 2);
  Result money =
      Suanli(buyer_key, {"allocate", "--gpus=8", "--max-price=1.0000001", "--duration=1h"});
  EXPECT_EQ(money.code, 2);
}

}  // namespace
}  // namespace suanli::e2e
