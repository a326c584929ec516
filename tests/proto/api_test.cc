// The v1 API (proto/suanli/v1): every service has the calls the product needs, messages survive
// the wire, and every field is documented.
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "suanli/v1/admin.grpc.pb.h"
#include "suanli/v1/market.grpc.pb.h"
#include "suanli/v1/operator.grpc.pb.h"
#include "suanli/v1/ops.grpc.pb.h"

namespace suanli::v1 {
namespace {

using google::protobuf::DescriptorPool;
using google::protobuf::MethodDescriptor;
using google::protobuf::ServiceDescriptor;

// The generated pool knows a file once something of it is linked in: touch one message of each.
const ServiceDescriptor* Service(const std::string& name) {
  static const bool loaded = [] {
    return CreateAccountRequest::descriptor() && AllocateRequest::descriptor() &&
           RegisterCenterRequest::descriptor() && GetMarketStatsRequest::descriptor();
  }();
  EXPECT_TRUE(loaded);
  return DescriptorPool::generated_pool()->FindServiceByName("suanli.v1." + name);
}

void ExpectMethods(const std::string& service, const std::vector<std::string>& methods) {
  const ServiceDescriptor* s = Service(service);
  ASSERT_NE(s, nullptr) << service;
  for (const std::string& m : methods) {
    EXPECT_NE(s->FindMethodByName(m), nullptr) << service << "." << m;
  }
}

TEST(Api, ServicesHaveTheirCalls) {
  ExpectMethods("OperatorService", {"RegisterCenter", "AddDomain", "AddNodes", "RemoveNode",
                                    "SetNodeHealth", "CreateOffer", "WithdrawOffer", "ListCapacity",
                                    "ListSoldAllocations", "GetStatement"});
  ExpectMethods("MarketService",
                {"SearchCatalog", "Quote", "Allocate", "GetAllocation", "ListAllocations",
                 "ExtendAllocation", "ReleaseAllocation", "WatchAllocations", "GetInvoice"});
  ExpectMethods("AdminService", {"CreateAccount", "ListAccounts", "CreateApiKey", "RevokeApiKey"});
  ExpectMethods("OpsService", {"GetMarketStats", "GetSettlementReport"});
  const MethodDescriptor* watch = Service("MarketService")->FindMethodByName("WatchAllocations");
  ASSERT_NE(watch, nullptr);
  EXPECT_TRUE(watch->server_streaming());
  EXPECT_FALSE(watch->client_streaming());
}

TEST(Api, AllocationRequestSurvivesTheWire) {
  AllocationRequest r;
  r.add_models("H100-SXM5-80G");
  r.add_models("H800-SXM5-80G");
  r.set_gpus(64);
  r.set_gpus_per_node(8);
  r.set_locality(LOCALITY_DOMAIN);
  r.set_min_fabric(FABRIC_INFINIBAND);
  r.add_regions("cn-east-2");
  r.add_center_types(CENTER_TYPE_CARRIER);
  r.add_required_tags("data-in-cn");
  r.set_max_price_micros_per_gpu_hour(30'000'000);
  r.mutable_start()->set_seconds(1'800'000'000);
  r.mutable_duration()->set_seconds(int64_t{72} * 3600);
  r.set_idempotency_key("job-42");
  AllocationRequest back;
  ASSERT_TRUE(back.ParseFromString(r.SerializeAsString()));
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(r, back));
}

TEST(Api, RejectionKeepsAnAbsentCeilingApartFromZero) {
  Rejection none;
  Rejection zero;
  zero.set_min_ceiling_micros(0);
  Rejection a, b;
  ASSERT_TRUE(a.ParseFromString(none.SerializeAsString()));
  ASSERT_TRUE(b.ParseFromString(zero.SerializeAsString()));
  EXPECT_FALSE(a.has_min_ceiling_micros());
  EXPECT_TRUE(b.has_min_ceiling_micros());
}

// True for a message field declaration: "[repeated|optional] TYPE NAME = N;" (an enum value
// has no type, so it is not one).
bool IsField(const std::string& line) {
  const size_t eq = line.find(" = ");
  const size_t semi = line.find(';');
  if (eq == std::string::npos || semi == std::string::npos || semi < eq) return false;
  const size_t code = line.find_first_not_of(' ');
  if (line.compare(code, 2, "//") == 0 || line.compare(code, 6, "option") == 0) return false;
  std::istringstream words(line.substr(code, eq - code));
  int n = 0;
  for (std::string w; words >> w;) ++n;
  return n >= 2;
}

// Every field has a comment: on its own line or on the line before.
TEST(Api, EveryFieldIsDocumented) {
  int fields = 0;
  for (const char* name : {"common", "operator", "market", "admin", "ops"}) {
    const std::string path = std::string(SUANLI_SOURCE_DIR) + "/proto/suanli/v1/" + name + ".proto";
    std::ifstream in(path);
    ASSERT_TRUE(in.good()) << path;
    std::string line, previous;
    int number = 0;
    while (std::getline(in, line)) {
      ++number;
      if (IsField(line)) {
        ++fields;
        const bool own = line.find("//") != std::string::npos;
        const bool above = previous.find_first_not_of(' ') != std::string::npos &&
                           previous.compare(previous.find_first_not_of(' '), 2, "//") == 0;
        EXPECT_TRUE(own || above) << path << ":" << number << ": " << line;
      }
      previous = line;
    }
  }
  EXPECT_GT(fields, 100);  // the files were read
}

}  // namespace
}  // namespace suanli::v1
