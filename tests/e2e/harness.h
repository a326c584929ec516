// What the end-to-end tests share: a temporary directory, a broker started in-process on a loopback
// port (or as a separate suanlid process), SDK clients for its accounts, and a small market.
#ifndef SUANLI_TESTS_E2E_HARNESS_H_
#define SUANLI_TESTS_E2E_HARNESS_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "broker/server.h"
#include "gtest/gtest.h"
#include "sdk/client.h"

namespace suanli::e2e {

// A directory removed with everything in it when the object goes.
class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string tmpl = absl::StrCat(base != nullptr ? base : "/tmp", "/suanli-e2e-XXXXXX");
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    if (!path_.empty()) (void)!system(absl::StrCat("rm -rf '", path_, "'").c_str());
  }
  const std::string& path() const { return path_; }
  std::string File(absl::string_view name) const { return absl::StrCat(path_, "/", name); }

 private:
  std::string path_;
};

inline std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return std::string(absl::StripAsciiWhitespace(ss.str()));
}

inline broker::BrokerOptions OptionsIn(const TempDir& dir) {
  broker::BrokerOptions o;
  o.listen = "127.0.0.1:0";
  o.store_url = absl::StrCat("sqlite:", dir.File("suanli.db"));
  o.admin_key_file = dir.File("admin.key");
  o.engine.catalog_refresh = absl::Milliseconds(20);
  return o;
}

inline std::unique_ptr<Client> Connect(int port, const std::string& key,
                                       const std::string& ca_file = "") {
  ClientOptions o;
  o.target = absl::StrCat("127.0.0.1:", port);
  o.api_key = key;
  o.ca_file = ca_file;
  o.timeout = absl::Seconds(20);
  absl::StatusOr<std::unique_ptr<Client>> c = Client::Connect(o);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *std::move(c) : nullptr;
}

inline std::string NewAccount(Client& admin, v1::Role role, const std::string& name) {
  v1::CreateAccountRequest r;
  r.set_role(role);
  r.set_name(name);
  absl::StatusOr<v1::CreateAccountResponse> a = admin.CreateAccount(r);
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? a->api_key() : "";
}

inline google::protobuf::Timestamp Ts(absl::Time t) {
  google::protobuf::Timestamp p;
  p.set_seconds(absl::ToUnixSeconds(t));
  return p;
}

inline google::protobuf::Duration Dur(absl::Duration d) {
  google::protobuf::Duration p;
  p.set_seconds(absl::ToInt64Seconds(d));
  p.set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d) % 1'000'000'000));
  return p;
}

// Registers center `center` of the operator behind `op` with one InfiniBand domain "ib0" of
// `nodes` nodes of 8 H100s, on sale for 30 days at `price_micros`.
inline void SmallMarket(Client& op, const std::string& center, int nodes, int64_t price_micros) {
  v1::RegisterCenterRequest rc;
  rc.mutable_center()->set_id(center);
  rc.mutable_center()->set_name(center);
  rc.mutable_center()->set_region("cn-east-2");
  rc.mutable_center()->set_type(v1::CENTER_TYPE_GOVERNMENT);
  ASSERT_TRUE(op.RegisterCenter(rc).ok());
  v1::AddDomainRequest ad;
  ad.mutable_domain()->set_center_id(center);
  ad.mutable_domain()->set_id("ib0");
  ad.mutable_domain()->set_fabric(v1::FABRIC_INFINIBAND);
  ad.mutable_domain()->set_gbps(400);
  ASSERT_TRUE(op.AddDomain(ad).ok());
  v1::AddNodesRequest an;
  for (int i = 0; i < nodes; ++i) {
    v1::Node* n = an.add_nodes();
    n->set_id(absl::StrCat(center, "-n", i));
    n->set_center_id(center);
    n->set_domain_id("ib0");
    n->set_model("H100-SXM5-80G");
    n->set_gpus(8);
  }
  absl::StatusOr<v1::AddNodesResponse> added = op.AddNodes(an);
  ASSERT_TRUE(added.ok()) << added.status();
  v1::CreateOfferRequest co;
  co.mutable_offer()->set_id(absl::StrCat(center, "-offer"));
  co.mutable_offer()->set_center_id(center);
  co.mutable_offer()->set_domain_id("ib0");
  *co.mutable_offer()->mutable_until() = Ts(absl::Now() + absl::Hours(24 * 30));
  co.mutable_offer()->set_price_micros_per_gpu_hour(price_micros);
  absl::StatusOr<v1::Offer> offer = op.CreateOffer(co);
  ASSERT_TRUE(offer.ok()) << offer.status();
}

inline v1::AllocateRequest Gang(int gpus, absl::Duration d, int64_t ceiling_micros,
                                const std::string& key = "") {
  v1::AllocateRequest r;
  r.mutable_request()->add_models("H100-SXM5-80G");
  r.mutable_request()->set_gpus(gpus);
  r.mutable_request()->set_gpus_per_node(8);
  r.mutable_request()->set_locality(v1::LOCALITY_DOMAIN);
  r.mutable_request()->set_max_price_micros_per_gpu_hour(ceiling_micros);
  *r.mutable_request()->mutable_duration() = Dur(d);
  r.mutable_request()->set_idempotency_key(key);
  return r;
}

// The path of a program built next to the test binaries.
inline std::string BinPath(const std::string& name) {
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  std::string dir = n > 0 ? std::string(self, static_cast<size_t>(n)) : std::string();
  dir = dir.substr(0, dir.rfind('/'));
  return absl::StrCat(dir, "/", name);
}

// A suanlid process (for kill -9 and signals).
class BrokerProcess {
 public:
  // `store` defaults to an SQLite file in `dir`.
  BrokerProcess(const TempDir& dir, int port, std::vector<std::string> extra = {},
                std::string store = "")
      : dir_(dir),
        port_(port),
        extra_(std::move(extra)),
        store_(store.empty() ? absl::StrCat("sqlite:", dir.File("suanli.db")) : std::move(store)) {}
  ~BrokerProcess() {
    if (pid_ > 0) Kill(SIGKILL);
  }
  // Starts suanlid and waits until it answers a ping (at most 30 s).
  void Start() {
    std::vector<std::string> args = {BinPath("suanlid"), absl::StrCat("--listen=127.0.0.1:", port_),
                                     absl::StrCat("--store=", store_),
                                     absl::StrCat("--admin-key-file=", dir_.File("admin.key"))};
    args.insert(args.end(), extra_.begin(), extra_.end());
    pid_ = fork();
    if (pid_ == 0) {
      const std::string log = dir_.File("suanlid.log");
      FILE* f = freopen(log.c_str(), "a", stderr);
      (void)f;
      std::vector<char*> argv;
      argv.reserve(args.size() + 1);
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    ASSERT_GT(pid_, 0);
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      if (access(dir_.File("admin.key").c_str(), F_OK) == 0) {
        std::unique_ptr<Client> c = Connect(port_, ReadAll(dir_.File("admin.key")));
        if (c != nullptr && c->Ping().ok()) return;
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        FAIL() << "suanlid exited at start; log:\n" << ReadAll(dir_.File("suanlid.log"));
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    FAIL() << "suanlid did not answer within 30 s";
  }
  // Sends `sig` and waits for the process; returns its wait status.
  int Kill(int sig) {
    if (pid_ <= 0) return -1;
    kill(pid_, sig);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }
  int port() const { return port_; }

 private:
  const TempDir& dir_;
  int port_;
  std::vector<std::string> extra_;
  std::string store_;
  pid_t pid_ = -1;
};

// A loopback port that is free now.
inline int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  close(fd);
  return port;
}

}  // namespace suanli::e2e

#endif  // SUANLI_TESTS_E2E_HARNESS_H_
