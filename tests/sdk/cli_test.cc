// The `suanli` CLI (sdk/cli): its command line, the requests it builds from flags, and whole
// commands run in-process against a fake broker, down to their output and exit codes.
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "sdk/cli/args.h"
#include "sdk/cli/commands.h"
#include "sdk/format.h"
#include "tests/sdk/fake_broker.h"

namespace suanli::cli {
namespace {

using ::suanli::testing::FakeBroker;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

const std::vector<FlagSpec> kSpecs = {
    {"server", FlagKind::kValue, ""}, {"output", FlagKind::kValue, ""},
    {"all", FlagKind::kSwitch, ""},   {"gpus", FlagKind::kValue, ""},
    {"tag", FlagKind::kList, ""},     {"help", FlagKind::kSwitch, ""},
};

// ---- The command line ---------------------------------------------------------------------------

TEST(SplitCommandLine, TakesFlagsAnywhereInEitherForm) {
  absl::StatusOr<CommandLine> line = SplitCommandLine(
      {"--server=b:7700", "allocation", "--all", "get", "a-1", "--output", "json"}, kSpecs);
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_THAT(line->words, ElementsAre("allocation", "get", "a-1"));
  EXPECT_EQ(line->flags.ValueOr("server", ""), "b:7700");
  EXPECT_EQ(line->flags.ValueOr("output", ""), "json");
  EXPECT_TRUE(line->flags.Switch("all"));
  EXPECT_FALSE(line->flags.Has("gpus"));
}

TEST(SplitCommandLine, ListsRepeatAndSplitAtCommas) {
  absl::StatusOr<CommandLine> line =
      SplitCommandLine({"--tag=a", "--tag", "b,c", "--tag=,d,"}, kSpecs);
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_THAT(line->flags.List("tag"), ElementsAre("a", "b", "c", "d"));
}

TEST(SplitCommandLine, DoubleDashEndsTheFlags) {
  absl::StatusOr<CommandLine> line = SplitCommandLine({"catalog", "--", "--all", "x"}, kSpecs);
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_THAT(line->words, ElementsAre("catalog", "--all", "x"));
  EXPECT_FALSE(line->flags.Has("all"));
}

TEST(SplitCommandLine, SwitchesTakeOnlyTrueOrFalse) {
  absl::StatusOr<CommandLine> off = SplitCommandLine({"--all=false", "-h"}, kSpecs);
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->flags.Switch("all"));
  EXPECT_TRUE(off->flags.Switch("help"));
  EXPECT_FALSE(SplitCommandLine({"--all=maybe"}, kSpecs).ok());
}

TEST(SplitCommandLine, RejectsUnknownRepeatedAndValuelessFlags) {
  EXPECT_THAT(SplitCommandLine({"--nope"}, kSpecs).status().message(),
              HasSubstr("unknown flag --nope"));
  EXPECT_THAT(SplitCommandLine({"--gpus"}, kSpecs).status().message(),
              HasSubstr("--gpus needs a value"));
  EXPECT_THAT(SplitCommandLine({"--gpus=1", "--gpus=2"}, kSpecs).status().message(),
              HasSubstr("--gpus given twice"));
}

// ---- Requests from flags ------------------------------------------------------------------------

const absl::Time kNow = absl::FromUnixSeconds(1'800'000'000);

Flags FlagsOf(const std::vector<std::string>& args) {
  std::vector<FlagSpec> specs;
  for (const char* name : {"gpus", "gpus-per-node", "locality", "min-fabric", "max-price",
                           "duration", "start", "idempotency-key"}) {
    specs.push_back({name, FlagKind::kValue, ""});
  }
  for (const char* name : {"model", "region", "center-type", "tag"}) {
    specs.push_back({name, FlagKind::kList, ""});
  }
  absl::StatusOr<CommandLine> line = SplitCommandLine(args, specs);
  EXPECT_TRUE(line.ok()) << line.status();
  return line.ok() ? line->flags : Flags();
}

TEST(AllocationRequestFromFlags, BuildsEveryField) {
  absl::StatusOr<v1::AllocationRequest> r = AllocationRequestFromFlags(
      FlagsOf({"--model=H100-SXM5-80G,H800-SXM5-80G", "--gpus=16", "--gpus-per-node=8",
               "--locality=domain", "--min-fabric=infiniband", "--region=cn-east-2",
               "--center-type=carrier,internet", "--tag=data-in-cn", "--max-price=30.00",
               "--duration=4h", "--start=+1h", "--idempotency-key=job-7"}),
      kNow, /*complete=*/true);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->models(), ElementsAre("H100-SXM5-80G", "H800-SXM5-80G"));
  EXPECT_EQ(r->gpus(), 16);
  EXPECT_EQ(r->gpus_per_node(), 8);
  EXPECT_EQ(r->locality(), v1::LOCALITY_DOMAIN);
  EXPECT_EQ(r->min_fabric(), v1::FABRIC_INFINIBAND);
  EXPECT_THAT(r->regions(), ElementsAre("cn-east-2"));
  EXPECT_THAT(r->center_types(), ElementsAre(v1::CENTER_TYPE_CARRIER, v1::CENTER_TYPE_INTERNET));
  EXPECT_THAT(r->required_tags(), ElementsAre("data-in-cn"));
  EXPECT_EQ(r->max_price_micros_per_gpu_hour(), 30'000'000);
  EXPECT_EQ(r->duration().seconds(), 4 * 3600);
  EXPECT_EQ(FromProtoTime(r->start()), kNow + absl::Hours(1));
  EXPECT_EQ(r->idempotency_key(), "job-7");
}

TEST(AllocationRequestFromFlags, NamesTheFlagAtFault) {
  const std::vector<std::string> good = {"--gpus=16", "--max-price=30", "--duration=4h"};
  auto without = [&](const std::string& flag) {
    std::vector<std::string> args;
    for (const std::string& a : good) {
      if (a.rfind(flag, 0) != 0) args.push_back(a);
    }
    return args;
  };
  auto error = [&](const std::vector<std::string>& args) {
    return std::string(AllocationRequestFromFlags(FlagsOf(args), kNow, true).status().message());
  };
  EXPECT_TRUE(AllocationRequestFromFlags(FlagsOf(good), kNow, true).ok());
  EXPECT_THAT(error(without("--gpus")), HasSubstr("--gpus is required"));
  EXPECT_THAT(error(without("--max-price")), HasSubstr("--max-price is required"));
  EXPECT_THAT(error(without("--duration")), HasSubstr("--duration is required"));
  EXPECT_THAT(error({"--gpus=16", "--max-price=30.0000001", "--duration=4h"}),
              HasSubstr("--max-price: bad amount"));
  EXPECT_THAT(error({"--gpus=16", "--max-price=0", "--duration=4h"}),
              HasSubstr("--max-price must be more than 0"));
  EXPECT_THAT(error({"--gpus=sixteen", "--max-price=30", "--duration=4h"}),
              HasSubstr("--gpus: \"sixteen\" is not a whole number"));
  EXPECT_THAT(error({"--gpus=16", "--max-price=30", "--duration=4 hours"}),
              HasSubstr("--duration: bad duration"));
  EXPECT_THAT(error({"--gpus=16", "--max-price=30", "--duration=4h", "--locality=rack"}),
              HasSubstr("--locality: unknown locality \"rack\""));
  EXPECT_THAT(error({"--gpus=16", "--max-price=30", "--duration=4h", "--center-type=bank"}),
              HasSubstr("--center-type: unknown center type"));
  EXPECT_THAT(error({"--gpus=16", "--max-price=30", "--duration=4h", "--start=soon"}),
              HasSubstr("--start: bad time"));
  // Redeeming a quote needs none of them.
  EXPECT_TRUE(AllocationRequestFromFlags(FlagsOf({}), kNow, /*complete=*/false).ok());
}

TEST(NextNodeIds, ContinueAfterTheHighestNumberWithThePrefix) {
  EXPECT_THAT(NextNodeIds({}, "c1-ib0-n", 2), ElementsAre("c1-ib0-n0001", "c1-ib0-n0002"));
  EXPECT_THAT(NextNodeIds({"c1-ib0-n0001", "c1-ib0-n0007", "c1-ib0-n0003", "c1-ib1-n0099",
                           "c1-ib0-nX", "c1-ib0-n0002a", "other"},
                          "c1-ib0-n", 2),
              ElementsAre("c1-ib0-n0008", "c1-ib0-n0009"));
  EXPECT_THAT(NextNodeIds({"c1-ib0-n9999"}, "c1-ib0-n", 1), ElementsAre("c1-ib0-n10000"));
  EXPECT_THAT(NextNodeIds({"x"}, "p-n", 0), IsEmpty());
}

// ---- Whole commands -----------------------------------------------------------------------------

struct Result {
  int code = -1;
  std::string out;
  std::string err;
};

Result RunCli(const std::vector<std::string>& args,
              const std::map<std::string, std::string>& env = {}) {
  std::ostringstream out;
  std::ostringstream err;
  const GetEnv getenv = [&](const std::string& name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
  Result r;
  r.code = Run(args, getenv, out, err);
  r.out = out.str();
  r.err = err.str();
  return r;
}

TEST(Cli, HelpIsEverywhereAndExitsZero) {
  Result main_help = RunCli({"--help"});
  EXPECT_EQ(main_help.code, kExitOk);
  EXPECT_THAT(main_help.out, HasSubstr("allocation watch"));
  EXPECT_THAT(main_help.out, HasSubstr("Exit codes"));
  EXPECT_THAT(main_help.out, HasSubstr("3  capacity not available"));
  Result allocate_help = RunCli({"allocate", "--help"});
  EXPECT_EQ(allocate_help.code, kExitOk);
  EXPECT_THAT(allocate_help.out, HasSubstr("--max-price=PRICE"));
  EXPECT_THAT(allocate_help.out, HasSubstr("--quote=ID"));
  EXPECT_THAT(allocate_help.out, HasSubstr("--server="));
  EXPECT_EQ(RunCli({"help", "node", "add"}).code, kExitOk);
  Result group = RunCli({"allocation", "--help"});
  EXPECT_EQ(group.code, kExitOk);
  EXPECT_THAT(group.out, HasSubstr("suanli allocation get ID"));
}

TEST(Cli, UsageErrorsExitTwo) {
  const std::map<std::string, std::string> env = {{"SUANLI_KEY", "sk_k_s"}};
  EXPECT_EQ(RunCli({}).code, kExitUsage);
  Result unknown = RunCli({"buy"}, env);
  EXPECT_EQ(unknown.code, kExitUsage);
  EXPECT_THAT(unknown.err, HasSubstr("unknown command \"buy\""));
  Result group = RunCli({"node"}, env);
  EXPECT_EQ(group.code, kExitUsage);
  EXPECT_THAT(group.err, HasSubstr("missing subcommand"));
  Result wrong_flag = RunCli({"allocate", "--hold=30s"}, env);
  EXPECT_EQ(wrong_flag.code, kExitUsage);
  EXPECT_THAT(wrong_flag.err, HasSubstr("suanli: allocate: no flag --hold here"));
  Result no_id = RunCli({"release"}, env);
  EXPECT_EQ(no_id.code, kExitUsage);
  EXPECT_THAT(no_id.err, HasSubstr("expects ID"));
  EXPECT_EQ(RunCli({"release", "a", "b"}, env).code, kExitUsage);
  EXPECT_EQ(RunCli({"ping", "--output=yaml"}, env).code, kExitUsage);
  EXPECT_EQ(RunCli({"ping", "--timeout=soon"}, env).code, kExitUsage);
  Result no_key = RunCli({"ping"});
  EXPECT_EQ(no_key.code, kExitUsage);
  EXPECT_THAT(no_key.err, HasSubstr("no API key"));
  Result bad_price = RunCli({"allocate", "--gpus=8", "--max-price=abc", "--duration=1h"}, env);
  EXPECT_EQ(bad_price.code, kExitUsage);
  EXPECT_THAT(bad_price.err, HasSubstr("suanli: allocate: --max-price: bad amount \"abc\""));
  EXPECT_EQ(RunCli({"extend", "a-1"}, env).code, kExitUsage);  // neither --by nor --until
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(broker_.started()); }

  Result Cli(std::vector<std::string> args) {
    args.push_back("--server=" + broker_.address());
    args.push_back("--key=sk_key1_secret");
    return RunCli(args);
  }

  void Reject() {
    broker_.market.allocate_rejects = true;
    broker_.market.rejection.set_reason(v1::REJECT_REASON_PRICE_ABOVE_CEILING);
    broker_.market.rejection.set_min_ceiling_micros(31'200'000);
    broker_.market.rejection.set_largest_block_gpus(16);
  }

  FakeBroker broker_;
};

TEST_F(CliTest, PingPrintsTheAccountAndJsonIsOneDocument) {
  Result table = Cli({"ping"});
  EXPECT_EQ(table.code, kExitOk) << table.err;
  EXPECT_THAT(table.out, HasSubstr("account acc-buyer-1 (buyer)"));
  EXPECT_THAT(broker_.market.seen().authorizations, ElementsAre("Bearer sk_key1_secret"));

  Result json = Cli({"ping", "--output=json"});
  EXPECT_EQ(json.code, kExitOk) << json.err;
  v1::PingResponse pong;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json.out, &pong).ok()) << json.out;
  EXPECT_EQ(pong.account_id(), "acc-buyer-1");
}

TEST_F(CliTest, ServerAndKeyComeFromTheEnvironment) {
  Result r = RunCli({"ping"}, {{"SUANLI_SERVER", broker_.address()}, {"SUANLI_KEY", "sk_e_v\n"}});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_THAT(broker_.market.seen().authorizations, ElementsAre("Bearer sk_e_v"));
}

TEST_F(CliTest, AllocatePrintsTheSlices) {
  Result r =
      Cli({"allocate", "--model=H100-SXM5-80G", "--gpus=8", "--max-price=30", "--duration=4h"});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_THAT(r.out, HasSubstr("alloc-1"));
  EXPECT_THAT(r.out, HasSubstr("c1-ib0-n0001"));
  EXPECT_THAT(r.out, HasSubstr("25.50/GPU-h"));
  EXPECT_THAT(r.err, IsEmpty());
}

TEST_F(CliTest, ARejectionExitsThreeAndSaysWhatWouldWork) {
  Reject();
  Result r = Cli({"allocate", "--gpus=16", "--max-price=30", "--duration=4h"});
  EXPECT_EQ(r.code, kExitRejected);
  EXPECT_THAT(r.err, HasSubstr("suanli: allocate: RESOURCE_EXHAUSTED: no capacity fits\n"));
  EXPECT_THAT(r.err, HasSubstr("what would work: a price ceiling of 31.20 per GPU-hour would be "
                               "granted; at most 16 GPUs"));
  EXPECT_THAT(r.out, IsEmpty());

  Result json = Cli({"allocate", "--gpus=16", "--max-price=30", "--duration=4h", "--output=json"});
  EXPECT_EQ(json.code, kExitRejected);
  v1::Rejection rejection;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json.out, &rejection).ok()) << json.out;
  EXPECT_EQ(rejection.min_ceiling_micros(), 31'200'000);
}

TEST_F(CliTest, AnUnavailableQuoteExitsThree) {
  Reject();
  Result r = Cli({"quote", "--gpus=16", "--max-price=30", "--duration=4h"});
  EXPECT_EQ(r.code, kExitRejected);
  EXPECT_THAT(r.err, HasSubstr("suanli: quote: RESOURCE_EXHAUSTED: not available"));
  EXPECT_THAT(r.err, HasSubstr("a price ceiling of 31.20"));
}

TEST_F(CliTest, ExtendByAsksForAnEndSoThatItCanBeRetried) {
  *broker_.market.allocation.mutable_end() = ToProtoTime(kNow);
  broker_.market.extend_outages = 1;
  Result r = Cli({"extend", "alloc-1", "--by=2h"});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  const std::vector<v1::ExtendAllocationRequest> extends = broker_.market.seen().extends;
  ASSERT_THAT(extends, SizeIs(2));  // the first attempt met an outage and was retried
  for (const v1::ExtendAllocationRequest& e : extends) {
    EXPECT_EQ(e.allocation_id(), "alloc-1");
    EXPECT_FALSE(e.has_by());
    EXPECT_EQ(FromProtoTime(e.new_end()), kNow + absl::Hours(2));
  }
  EXPECT_THAT(r.out, HasSubstr(TimeToString(kNow + absl::Hours(2))));
}

TEST_F(CliTest, NodeAddContinuesTheNumberingInBatches) {
  v1::ListCapacityResponse& capacity = broker_.operator_service.capacity;
  v1::FabricDomain* domain = capacity.add_domains();
  domain->set_center_id("c1");
  domain->set_id("ib0");
  for (const char* id : {"c1-ib0-n0001", "c1-ib0-n0002", "c1-ib0-n0003"}) {
    capacity.add_nodes()->set_id(id);
  }
  Result r = Cli({"node", "add", "--center=c1", "--domain=ib0", "--model=H100-SXM5-80G",
                  "--gpus-per-node=8", "--count=25000"});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  const std::vector<v1::AddNodesRequest> calls = broker_.operator_service.add_nodes();
  ASSERT_THAT(calls, SizeIs(3));
  EXPECT_EQ(calls[0].nodes_size(), 10'000);
  EXPECT_EQ(calls[1].nodes_size(), 10'000);
  EXPECT_EQ(calls[2].nodes_size(), 5'000);
  EXPECT_EQ(calls[0].nodes(0).id(), "c1-ib0-n0004");
  EXPECT_EQ(calls[0].nodes(0).center_id(), "c1");
  EXPECT_EQ(calls[0].nodes(0).domain_id(), "ib0");
  EXPECT_EQ(calls[0].nodes(0).model(), "H100-SXM5-80G");
  EXPECT_EQ(calls[0].nodes(0).gpus(), 8);
  EXPECT_EQ(calls[2].nodes(4'999).id(), "c1-ib0-n25003");
  EXPECT_THAT(r.out, HasSubstr("added 25000 nodes (c1-ib0-n0004 .. c1-ib0-n25003)"));
}

TEST_F(CliTest, NodeAddChecksTheDomain) {
  Result r = Cli({"node", "add", "--center=c1", "--domain=ib9", "--model=H100-SXM5-80G",
                  "--gpus-per-node=8", "--count=2"});
  EXPECT_EQ(r.code, kExitError);
  EXPECT_THAT(r.err, HasSubstr("center c1 has no domain ib9"));
  EXPECT_THAT(broker_.operator_service.add_nodes(), IsEmpty());
}

TEST_F(CliTest, WatchPrintsOneLinePerChange) {
  Result r = Cli({"allocation", "watch"});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_THAT(r.out, HasSubstr("alloc-1  active"));
  EXPECT_THAT(r.out, HasSubstr("alloc-3  active"));
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 3);
}

TEST_F(CliTest, AnUnimplementedCallIsAnErrorThatExitsOne) {
  Result r = Cli({"account", "list"});  // the fake has no AdminService
  EXPECT_EQ(r.code, kExitError);
  EXPECT_THAT(r.err, HasSubstr("suanli: account list: UNIMPLEMENTED"));
  EXPECT_THAT(r.err, Not(HasSubstr("what would work")));
}

}  // namespace
}  // namespace suanli::cli
