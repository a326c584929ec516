// suanli-bench: the end-to-end load tool. Drives a running suanlid over gRPC with the std workload
// of shared/WORKLOAD.md, from C concurrent clients, and reports decisions per second, latency, the
// floor of the machine (an authenticated Ping under the same concurrency, the disk's flush
// latency) and an audit of the result made through the API. See bench/README.md and --help.
//
//   suanli-bench --spawn --store=sqlite --gpus=1048576 --clients=64 --json
//   suanli-bench --server=127.0.0.1:7700 --admin-key-file=var/admin.key --requests=20000
//
// Phases, in order: registration (accounts, centers, domains, nodes, offers; register_sec), the
// disk's flush latency, Ping under the run's concurrency, the request stream with its releases,
// the audit. Speed is measured, never asserted; the exit status says whether the run was correct.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/api_audit.h"
#include "bench/broker_process.h"
#include "bench/workload.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "sdk/client.h"
#include "sdk/format.h"

namespace suanli::bench {
namespace {

constexpr char kHelp[] = R"(suanli-bench: the end-to-end load tool of Suanli

Drives suanlid over gRPC with the std workload of WORKLOAD.md: registers the market as operators
(accounts made with the admin key), measures the floor (the disk's flush latency, an
authenticated Ping under the run's concurrency), runs the request stream from concurrent clients
with the releases the workload prescribes, and audits every allocation through the API.

Usage:
  suanli-bench --spawn [--store=sqlite] [flags]          start a suanlid of its own, stop it after
  suanli-bench --server=HOST:PORT --admin-key-file=PATH [flags]   drive a running suanlid

Where the broker is (exactly one of --spawn and --server):
  --spawn                 start suanlid (next to suanli-bench, or --suanlid) on a free loopback
                          port and a fresh store, and stop it with SIGTERM at the end
  --store=URL             with --spawn, the store (default sqlite):
                            sqlite              a new SQLite file in a temporary directory
                                                (under --work-dir), removed at the end
                            sqlite:PATH         that SQLite file (should not exist yet)
                            postgresql://...    that PostgreSQL database (should be empty)
                          with --server, only a label for the report
  --server=HOST:PORT      a running suanlid with an empty market (a fresh store), on loopback
  --admin-key-file=PATH   with --server: the file holding its admin key (suanlid's own flag)
  --suanlid=PATH          with --spawn: the suanlid binary (default: next to suanli-bench)
  --suanlid-flag=FLAG     with --spawn: one more flag for suanlid (repeatable), e.g.
                          --suanlid-flag=--max-batch=512
  --work-dir=DIR          where --spawn makes its temporary directory (default $TMPDIR or /tmp)
  --keep                  keep the temporary directory (store, admin.key, suanlid.log)

The work:
  --gpus=N                GPUs of the std market (default 1048576; at least 8192; rounds down to
                          the topology)
  --requests=N            Allocate calls of the request stream (default 200000), plus the releases
                          they cause
  --seed=N                seed of the market and the request stream (default 1)
  --clients=C             concurrent clients, each with its own connection and one call in flight
                          at a time (default 64); the same concurrency for Ping; registration uses
                          min(C, 16) threads. The stream and the Pings use the SDK's non-blocking
                          calls, so the clients share gRPC's threads instead of a thread each
  --rate=R                open loop: request i is due R requests/s after the start, sent when due
                          by a free client, and its latency counts from when it was due (a backlog
                          shows); default 0: closed loop (each client sends when answered)
  --timeout=DURATION      deadline of each call (default 30s); calls are not retried
  --node-batch=N          nodes per AddNodes call, at most 10000 (default 10000)

The floor:
  --ping-seconds=S        how long the Ping phase runs (default 3)
  --fsync-count=N         8 KiB writes + fdatasync measured (default 500)
  --fsync-dir=DIR         where they are made (default: the directory of the SQLite file with
                          --spawn; else --spawn's temporary directory, or $TMPDIR or /tmp with
                          --server: give the database's disk for PostgreSQL or a remote store)

Output:
  --json                  one JSON object on stdout instead of the human summary
  --help                  this text

JSON fields: gpus, nodes, centers, clients, requests, granted, rejected, rejected_by_reason, errors,
releases, release_errors, mode (closed|open), rate, allocs_per_sec, p50_ms, p99_ms, p999_ms, max_ms,
by_kind, release_p50_ms, ping_p50_ms, ping_p99_ms, pings_per_sec, fsync_p50_ms, fsync_p99_ms,
fsync_dir, fsync_fs, register_sec, register_calls, run_sec, audit_sec, audited_allocations,
audited_slices, violations, problems (the first 20), first_error, store, server, seed,
server_cpu_sec and bench_cpu_sec (CPU used during the request stream; suanlid's with --spawn
only, else -1), server_peak_rss_mib, bench_peak_rss_mib, loadavg_before, loadavg_after, cpus,
date. Times in ms are per call, from the client's send (or, open loop, from when it was due) to
its receipt of the answer.

Exit status: 0 when the run was correct (no violation, no failed call), 1 when it was not, 2 for a
usage error, 3 when the broker could not be started or the market not registered.
)";

using SteadyClock = std::chrono::steady_clock;

constexpr int kBuyers = 64;  // the workload's buyers: buyer-0 .. buyer-63

struct Flags {
  bool spawn = false;
  std::string store = "sqlite";
  bool store_given = false;
  std::string server;
  std::string admin_key_file;
  std::string suanlid;
  std::vector<std::string> suanlid_flags;
  std::string work_dir;
  bool keep = false;
  int64_t gpus = 1 << 20;
  int64_t requests = 200'000;
  uint64_t seed = 1;
  int clients = 64;
  double rate = 0;
  absl::Duration timeout = absl::Seconds(30);
  int node_batch = 10'000;
  double ping_seconds = 3;
  int fsync_count = 500;
  std::string fsync_dir;
  bool json = false;
};

int Usage(const std::string& msg) {
  std::fprintf(stderr, "suanli-bench: %s\nRun 'suanli-bench --help' for the flags.\n", msg.c_str());
  return 2;
}

// Parses argv into *f. Returns -1 to go on, or the exit status (0 after --help).
int ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kHelp, stdout);
      return 0;
    }
    if (!absl::ConsumePrefix(&arg, "--")) {
      return Usage(absl::StrCat("unexpected argument '", arg, "'"));
    }
    std::string name(arg);
    std::string value;
    bool has_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      has_value = true;
    }
    auto boolean = [&](bool* out) {
      if (!has_value || value == "true") {
        *out = true;
      } else if (value == "false") {
        *out = false;
      } else {
        return false;
      }
      return true;
    };
    if (name == "spawn" || name == "json" || name == "keep") {
      if (!boolean(name == "spawn" ? &f->spawn : name == "json" ? &f->json : &f->keep)) {
        return Usage(absl::StrCat("--", name, " takes no value (or true/false)"));
      }
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) return Usage(absl::StrCat("--", name, " needs a value"));
      value = argv[++i];
    }
    bool ok = true;
    if (name == "store") {
      f->store = value;
      f->store_given = true;
    } else if (name == "server") {
      f->server = value;
    } else if (name == "admin-key-file") {
      f->admin_key_file = value;
    } else if (name == "suanlid") {
      f->suanlid = value;
    } else if (name == "suanlid-flag") {
      f->suanlid_flags.push_back(value);
    } else if (name == "work-dir") {
      f->work_dir = value;
    } else if (name == "gpus") {
      ok = absl::SimpleAtoi(value, &f->gpus) && f->gpus >= 8192 && f->gpus <= (int64_t{1} << 24);
    } else if (name == "requests") {
      ok = absl::SimpleAtoi(value, &f->requests) && f->requests >= 1;
    } else if (name == "seed") {
      ok = absl::SimpleAtoi(value, &f->seed);
    } else if (name == "clients") {
      ok = absl::SimpleAtoi(value, &f->clients) && f->clients >= 1 && f->clients <= 4096;
    } else if (name == "rate") {
      ok = absl::SimpleAtod(value, &f->rate) && f->rate >= 0 && std::isfinite(f->rate);
    } else if (name == "timeout") {
      ok = absl::ParseDuration(value, &f->timeout) && f->timeout > absl::ZeroDuration();
    } else if (name == "node-batch") {
      ok = absl::SimpleAtoi(value, &f->node_batch) && f->node_batch >= 1 && f->node_batch <= 10'000;
    } else if (name == "ping-seconds") {
      ok = absl::SimpleAtod(value, &f->ping_seconds) && f->ping_seconds > 0 &&
           f->ping_seconds <= 3600;
    } else if (name == "fsync-count") {
      ok = absl::SimpleAtoi(value, &f->fsync_count) && f->fsync_count >= 1;
    } else if (name == "fsync-dir") {
      f->fsync_dir = value;
    } else {
      return Usage(absl::StrCat("unknown flag --", name));
    }
    if (!ok) return Usage(absl::StrCat("bad value '", value, "' for --", name, " (see --help)"));
  }
  if (f->spawn == !f->server.empty()) return Usage("give exactly one of --spawn and --server");
  if (!f->server.empty() && f->admin_key_file.empty()) {
    return Usage("--server needs --admin-key-file");
  }
  if (f->spawn && f->store != "sqlite" && !absl::StartsWith(f->store, "sqlite:") &&
      !absl::StartsWith(f->store, "postgresql://") && !absl::StartsWith(f->store, "postgres://")) {
    return Usage("--store must be sqlite, sqlite:PATH or postgresql://...");
  }
  return -1;
}

// ------------------------------------------------------------------------------------ helpers

double Ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }

int64_t NsSince(SteadyClock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(SteadyClock::now() - t).count();
}

// The p-quantile (nearest rank) of sorted values, in ms; 0 when empty.
double PercentileMs(const std::vector<int64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto k = static_cast<size_t>(std::llround(p * static_cast<double>(sorted.size() - 1)));
  return Ms(sorted[k]);
}

std::string LoadAvg() {
  FILE* f = std::fopen("/proc/loadavg", "r");
  if (f == nullptr) return "";
  char buf[128] = {};
  const bool ok = std::fgets(buf, sizeof(buf), f) != nullptr;
  std::fclose(f);
  if (!ok) return "";
  // "1.23 0.98 0.70 2/345 6789": the three averages.
  std::vector<std::string> parts = absl::StrSplit(buf, ' ');
  if (parts.size() < 3) return "";
  return absl::StrCat(parts[0], " ", parts[1], " ", parts[2]);
}

double SelfCpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

double SelfPeakRssMib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // KiB on Linux
}

std::string FsType(const std::string& dir) {
  struct statfs s {};
  if (statfs(dir.c_str(), &s) != 0) return "unknown";
  switch (static_cast<uint64_t>(s.f_type)) {
    case 0xEF53:
      return "ext4";
    case 0x01021994:
      return "tmpfs";
    case 0x58465342:
      return "xfs";
    case 0x9123683E:
      return "btrfs";
    case 0x794c7630:
      return "overlayfs";
    default:
      return absl::StrFormat("0x%x", static_cast<uint64_t>(s.f_type));
  }
}

// A postgresql:// URL without its password, for the report.
std::string RedactUrl(const std::string& url) {
  const size_t scheme = url.find("://");
  const size_t at = url.find('@');
  if (scheme == std::string::npos || at == std::string::npos || at < scheme) return url;
  const size_t colon = url.find(':', scheme + 3);
  if (colon == std::string::npos || colon > at) return url;
  return absl::StrCat(url.substr(0, colon + 1), "***", url.substr(at));
}

std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppendFormat(&out, "\\u%04x", static_cast<int>(c));
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

// One JSON object, fields in the order added.
class JsonObject {
 public:
  JsonObject& Int(absl::string_view k, int64_t v) { return Raw(k, absl::StrCat(v)); }
  JsonObject& Num(absl::string_view k, double v, int decimals = 3) {
    return Raw(k, std::isfinite(v) ? absl::StrFormat("%.*f", decimals, v) : "null");
  }
  JsonObject& Str(absl::string_view k, absl::string_view v) { return Raw(k, JsonString(v)); }
  JsonObject& Raw(absl::string_view k, absl::string_view v) {
    absl::StrAppend(&text_, text_.empty() ? "" : ",", JsonString(k), ":", v);
    return *this;
  }
  std::string Done() const { return absl::StrCat("{", text_, "}"); }

 private:
  std::string text_;
};

// ------------------------------------------------------------------------------------ gRPC

// A channel of its own (its own TCP connection: gRPC would otherwise share one subchannel among
// channels to the same target), with no limit on what it receives (audit pages hold gangs).
std::shared_ptr<grpc::Channel> NewChannel(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(-1);
  args.SetUserAgentPrefix("suanli-bench");
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

std::unique_ptr<Client> NewClient(std::shared_ptr<grpc::Channel> channel, const std::string& key,
                                  absl::Duration timeout) {
  ClientOptions o;
  o.api_key = key;
  o.timeout = timeout;
  o.max_attempts = 1;  // every failure shows
  absl::StatusOr<std::unique_ptr<Client>> c = Client::Connect(std::move(channel), o);
  return c.ok() ? *std::move(c) : nullptr;
}

// Runs fn(i) for i in [0, n) on `threads` threads.
template <typename Fn>
void ParallelFor(int n, int threads, Fn fn) {
  std::atomic<int> next{0};
  std::vector<std::thread> pool;
  threads = std::max(1, std::min(threads, n));
  pool.reserve(static_cast<size_t>(threads));
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (int i = next++; i < n; i = next++) fn(i);
    });
  }
  for (std::thread& t : pool) t.join();
}

// Keeps the first error of many threads.
class FirstError {
 public:
  void Set(const absl::Status& s) {
    if (s.ok()) return;
    absl::MutexLock lock(&mu_);
    if (status_.ok()) status_ = s;
  }
  absl::Status Get() {
    absl::MutexLock lock(&mu_);
    return status_;
  }

 private:
  absl::Mutex mu_;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

absl::Status Annotate(const absl::Status& s, absl::string_view what) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(what, ": ", s.message()));
}

// ------------------------------------------------------------------------------------ the floor

// 8 KiB written and flushed with fdatasync, `count` times, at offsets cycling through a 16 MiB
// file made first (as pg_test_fsync does): the latency of one durable commit's flush.
absl::StatusOr<std::vector<int64_t>> ProbeFsync(const std::string& dir, int count) {
  const std::string path = absl::StrCat(dir, "/.suanli-bench-fsync-", getpid());
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot create '", path, "' to measure fsync: ", std::strerror(errno)));
  }
  constexpr size_t kBlock = 8192;
  constexpr size_t kFile = 16 << 20;
  std::vector<char> block(kBlock, 'x');
  absl::Status status;
  for (size_t off = 0; off < kFile && status.ok(); off += kBlock) {
    if (pwrite(fd, block.data(), kBlock, static_cast<off_t>(off)) != static_cast<ssize_t>(kBlock)) {
      status = absl::UnavailableError(absl::StrCat("write '", path, "': ", std::strerror(errno)));
    }
  }
  if (status.ok() && fsync(fd) != 0) {
    status = absl::UnavailableError(absl::StrCat("fsync '", path, "': ", std::strerror(errno)));
  }
  std::vector<int64_t> ns;
  ns.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count && status.ok(); ++i) {
    block[0] = static_cast<char>('a' + i % 26);
    const off_t off = static_cast<off_t>((static_cast<size_t>(i) * kBlock) % kFile);
    const auto t = SteadyClock::now();
    if (pwrite(fd, block.data(), kBlock, off) != static_cast<ssize_t>(kBlock) ||
        fdatasync(fd) != 0) {
      status = absl::UnavailableError(
          absl::StrCat("write + fdatasync '", path, "': ", std::strerror(errno)));
      break;
    }
    ns.push_back(NsSince(t));
  }
  close(fd);
  unlink(path.c_str());
  if (!status.ok()) return status;
  std::sort(ns.begin(), ns.end());
  return ns;
}

// ------------------------------------------------------------------------------------ market

// Workload enums to the API's (the proto enums number the scheduler's values from 1).
v1::CenterType ToProto(scheduler::CenterType t) {
  return static_cast<v1::CenterType>(static_cast<int>(t) + 1);
}
v1::Fabric ToProto(scheduler::Fabric f) { return static_cast<v1::Fabric>(static_cast<int>(f) + 1); }
v1::Locality ToProto(scheduler::Locality l) {
  return static_cast<v1::Locality>(static_cast<int>(l) + 1);
}

// The accounts the bench makes, and their keys.
struct Accounts {
  std::vector<std::string> buyer_keys;  // by buyer index
  std::vector<std::string> buyer_ids;   // by buyer index
};

struct Registration {
  Accounts accounts;
  int64_t calls = 0;
  double seconds = 0;
};

// Registers `market` on the broker at `target` as the workload's operators, and makes the
// workload's buyers. FAILED_PRECONDITION when the broker's market is not empty.
absl::StatusOr<Registration> Register(const std::string& target, const std::string& admin_key,
                                      const StdMarket& market, int threads, int node_batch,
                                      absl::Duration timeout) {
  const auto t0 = SteadyClock::now();
  std::unique_ptr<Client> admin = NewClient(NewChannel(target), admin_key, timeout);
  if (admin == nullptr) return absl::InvalidArgumentError("the admin key is malformed");
  absl::StatusOr<v1::ListAccountsResponse> existing = admin->ListAccounts();
  if (!existing.ok()) return Annotate(existing.status(), "ListAccounts with the admin key");
  for (const v1::Account& a : existing->accounts()) {
    if (a.role() != v1::ROLE_ADMIN) {
      return absl::FailedPreconditionError(
          absl::StrCat("the broker already has accounts (e.g. '", a.name(),
                       "'): the bench needs an empty market; start suanlid on a fresh store"));
    }
  }

  // The workload's operators, in order of first appearance, and what each owns.
  std::vector<std::string> op_names;
  absl::flat_hash_map<std::string, int> op_index;
  std::vector<std::vector<const scheduler::CenterSpec*>> op_centers;
  for (const scheduler::CenterSpec& c : market.centers) {
    auto [it, added] = op_index.try_emplace(c.operator_id, static_cast<int>(op_names.size()));
    if (added) {
      op_names.push_back(c.operator_id);
      op_centers.emplace_back();
    }
    op_centers[static_cast<size_t>(it->second)].push_back(&c);
  }
  absl::flat_hash_map<std::string, int> center_op;
  for (const scheduler::CenterSpec& c : market.centers) center_op[c.id] = op_index[c.operator_id];
  std::vector<std::vector<const scheduler::NodeSpec*>> op_nodes(op_names.size());
  for (const scheduler::NodeSpec& n : market.nodes) {
    op_nodes[static_cast<size_t>(center_op[n.center_id])].push_back(&n);
  }
  std::vector<std::vector<const scheduler::DomainSpec*>> op_domains(op_names.size());
  for (const scheduler::DomainSpec& d : market.domains) {
    op_domains[static_cast<size_t>(center_op[d.center_id])].push_back(&d);
  }
  std::vector<std::vector<const scheduler::OfferSpec*>> op_offers(op_names.size());
  for (const scheduler::OfferSpec& o : market.offers) {
    op_offers[static_cast<size_t>(center_op[o.center_id])].push_back(&o);
  }

  // Accounts: the operators, then the buyers.
  const int n_ops = static_cast<int>(op_names.size());
  std::vector<std::string> op_keys(op_names.size());
  Registration out;
  out.accounts.buyer_keys.resize(kBuyers);
  out.accounts.buyer_ids.resize(kBuyers);
  FirstError error;
  std::atomic<int64_t> calls{1};
  ParallelFor(n_ops + kBuyers, threads, [&](int i) {
    v1::CreateAccountRequest r;
    const bool op = i < n_ops;
    r.set_role(op ? v1::ROLE_OPERATOR : v1::ROLE_BUYER);
    r.set_name(op ? op_names[static_cast<size_t>(i)] : absl::StrCat("buyer-", i - n_ops));
    absl::StatusOr<v1::CreateAccountResponse> a = admin->CreateAccount(r);
    ++calls;
    if (!a.ok()) return error.Set(Annotate(a.status(), absl::StrCat("CreateAccount ", r.name())));
    if (op) {
      op_keys[static_cast<size_t>(i)] = a->api_key();
    } else {
      out.accounts.buyer_keys[static_cast<size_t>(i - n_ops)] = a->api_key();
      out.accounts.buyer_ids[static_cast<size_t>(i - n_ops)] = a->account().id();
    }
  });
  if (absl::Status s = error.Get(); !s.ok()) return s;

  // Capacity, one operator per thread at a time: centers, domains, nodes in batches, offers.
  const auto batch = static_cast<size_t>(node_batch);
  ParallelFor(n_ops, threads, [&](int i) {
    const auto k = static_cast<size_t>(i);
    std::unique_ptr<Client> c = NewClient(NewChannel(target), op_keys[k], timeout);
    if (c == nullptr) return error.Set(absl::InternalError("an operator key is malformed"));
    for (const scheduler::CenterSpec* cs : op_centers[k]) {
      v1::RegisterCenterRequest r;
      v1::Center& center = *r.mutable_center();
      center.set_id(cs->id);
      center.set_name(cs->name);
      center.set_region(cs->region);
      center.set_type(ToProto(cs->type));
      for (const std::string& t : cs->tags) center.add_tags(t);
      absl::StatusOr<v1::Center> done = c->RegisterCenter(r);
      ++calls;
      if (!done.ok()) return error.Set(Annotate(done.status(), "RegisterCenter " + cs->id));
    }
    for (const scheduler::DomainSpec* ds : op_domains[k]) {
      v1::AddDomainRequest r;
      v1::FabricDomain& d = *r.mutable_domain();
      d.set_center_id(ds->center_id);
      d.set_id(ds->id);
      d.set_fabric(ToProto(ds->fabric));
      d.set_gbps(ds->gbps);
      absl::StatusOr<v1::FabricDomain> done = c->AddDomain(r);
      ++calls;
      if (!done.ok()) return error.Set(Annotate(done.status(), "AddDomain " + ds->id));
    }
    const std::vector<const scheduler::NodeSpec*>& nodes = op_nodes[k];
    for (size_t from = 0; from < nodes.size(); from += batch) {
      v1::AddNodesRequest r;
      for (size_t j = from; j < std::min(nodes.size(), from + batch); ++j) {
        v1::Node& n = *r.add_nodes();
        n.set_id(nodes[j]->id);
        n.set_center_id(nodes[j]->center_id);
        n.set_domain_id(nodes[j]->domain_id);
        n.set_model(nodes[j]->model);
        n.set_gpus(nodes[j]->gpus);
      }
      absl::StatusOr<v1::AddNodesResponse> done = c->AddNodes(r);
      ++calls;
      if (!done.ok()) {
        return error.Set(Annotate(done.status(), absl::StrCat("AddNodes (", r.nodes_size(), ")")));
      }
    }
    for (const scheduler::OfferSpec* os : op_offers[k]) {
      v1::CreateOfferRequest r;
      v1::Offer& o = *r.mutable_offer();
      o.set_id(os->id);
      o.set_center_id(os->center_id);
      o.set_domain_id(os->domain_id);
      *o.mutable_until() = ToProtoTime(os->until);  // `from`: now, by default
      o.set_price_micros_per_gpu_hour(os->price_per_gpu_hour);
      absl::StatusOr<v1::Offer> done = c->CreateOffer(r);
      ++calls;
      if (!done.ok()) return error.Set(Annotate(done.status(), "CreateOffer " + os->id));
    }
  });
  if (absl::Status s = error.Get(); !s.ok()) return s;
  out.calls = calls.load();
  out.seconds = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  return out;
}

// ------------------------------------------------------------------------------------ the run

// One client: its own connection, and a Client per buyer key on it.
struct Worker {
  std::shared_ptr<grpc::Channel> channel;
  std::vector<std::unique_ptr<Client>> buyers;  // by buyer index
};

// A request of the stream, ready to send.
struct Prepared {
  v1::AllocateRequest call;  // start not set
  absl::Duration start_in;   // > 0: starts this long after it is sent
  int buyer = 0;
  RequestKind kind = RequestKind::kInference;
};

std::vector<Prepared> PrepareRequests(const StdMarket& market, uint64_t seed, int64_t n) {
  RequestStream stream(market, seed);
  const absl::Time base = absl::FromUnixSeconds(1'800'000'000);
  std::vector<Prepared> out(static_cast<size_t>(n));
  for (Prepared& p : out) {
    const scheduler::Request r = stream.Next(base, &p.kind);
    absl::string_view buyer = r.buyer;
    absl::ConsumePrefix(&buyer, "buyer-");
    if (!absl::SimpleAtoi(buyer, &p.buyer) || p.buyer < 0 || p.buyer >= kBuyers) p.buyer = 0;
    v1::AllocationRequest& q = *p.call.mutable_request();
    for (const std::string& m : r.models) q.add_models(m);
    q.set_gpus(r.gpus);
    q.set_gpus_per_node(r.gpus_per_node);
    q.set_locality(ToProto(r.locality));
    // The workload's default minimum, Ethernet, is the API's "no minimum".
    if (r.min_fabric != scheduler::Fabric::kEthernet) q.set_min_fabric(ToProto(r.min_fabric));
    for (const std::string& g : r.regions) q.add_regions(g);
    for (scheduler::CenterType t : r.center_types) q.add_center_types(ToProto(t));
    for (const std::string& t : r.required_tags) q.add_required_tags(t);
    q.set_max_price_micros_per_gpu_hour(r.max_price_per_gpu_hour);
    *q.mutable_duration() = ToProtoDuration(r.duration);
    p.start_in = r.start.has_value() ? *r.start - base : absl::ZeroDuration();
  }
  return out;
}

// A live allocation the driver may release.
struct PoolEntry {
  std::string id;
  int buyer = 0;
  int32_t gpus = 0;
  bool counted = false;  // started at once: counted in the GPUs sold now
};

// What the clients share during the request phase.
struct RunState {
  const std::vector<Prepared>* requests = nullptr;
  std::atomic<int64_t> next{0};
  int64_t offered_gpus = 0;
  double rate = 0;  // > 0: open loop
  SteadyClock::time_point start;
  absl::Mutex mu;
  std::vector<PoolEntry> pool ABSL_GUARDED_BY(mu);
  int64_t sold ABSL_GUARDED_BY(mu) = 0;  // GPUs of the pool that started at once
  std::mt19937_64 rng ABSL_GUARDED_BY(mu);
};

// What one client saw.
struct ClientResult {
  std::vector<int64_t> lat_ns;  // per decided request
  std::vector<RequestKind> kinds;
  std::vector<int64_t> release_ns;
  std::vector<std::pair<std::string, AskedGrant>> grants;
  std::vector<std::string> released;  // ids released (answered ENDED/RELEASED)
  std::map<std::string, int64_t> rejected_by;
  int64_t granted = 0;
  int64_t rejected = 0;
  int64_t errors = 0;
  int64_t release_errors = 0;
  std::string first_error;
};

// One client of the request stream: its calls go out one at a time, on gRPC's callback API (no
// thread per client). After each answer it releases while the market is busy (WORKLOAD.md), then
// takes the next request: at once (closed loop), or when the pacer hands it one (open loop).
// Its callbacks never overlap, so its ClientResult needs no lock. Each callback holds the client
// (and through it the idle list), so that nothing a callback is still returning through is
// destroyed when the run ends.
class StreamClient : public std::enable_shared_from_this<StreamClient> {
 public:
  // Clients that have nothing in flight: waiting for the pacer (open loop), or done.
  struct Idle {
    absl::Mutex mu;
    std::vector<StreamClient*> clients ABSL_GUARDED_BY(mu);
  };

  StreamClient(RunState* st, Worker* w, ClientResult* res, std::shared_ptr<Idle> idle)
      : st_(st), w_(w), res_(res), idle_(std::move(idle)) {}

  // Sends request i, counting its latency from `due`.
  void Send(int64_t i, SteadyClock::time_point due) {
    p_ = &(*st_->requests)[static_cast<size_t>(i)];
    due_ = due;
    call_ = p_->call;
    sent_ = absl::Now();
    if (p_->start_in > absl::ZeroDuration()) {
      // The broker keeps times to the microsecond.
      *call_.mutable_request()->mutable_start() =
          ToProtoTime(absl::FromUnixMicros(absl::ToUnixMicros(sent_ + p_->start_in)));
    }
    w_->buyers[static_cast<size_t>(p_->buyer)]->AllocateAsync(
        call_, [self = shared_from_this()](absl::StatusOr<v1::Allocation> a) {
          self->Allocated(std::move(a));
        });
  }

  // Closed loop: sends the next request of the stream, or says it is free when none is left.
  void SendNext() {
    const auto n = static_cast<int64_t>(st_->requests->size());
    const int64_t i = st_->next++;
    if (i >= n) {
      Free();
      return;
    }
    Send(i, SteadyClock::now());
  }

 private:
  void Allocated(absl::StatusOr<v1::Allocation> a) {
    const int64_t ns = NsSince(due_);
    const absl::Time received = absl::Now();
    if (a.ok()) {
      ++res_->granted;
      res_->lat_ns.push_back(ns);
      res_->kinds.push_back(p_->kind);
      const int32_t gpus = call_.request().gpus();
      AskedGrant g;
      // The request as this tool made it, not as the broker echoes it.
      g.request = std::move(*call_.mutable_request());
      g.buyer_id = a->buyer_id();
      g.sent = sent_;
      g.received = received;
      res_->grants.emplace_back(a->id(), std::move(g));
      absl::MutexLock lock(&st_->mu);
      const bool counted = p_->start_in <= absl::ZeroDuration();
      st_->pool.push_back({a->id(), p_->buyer, gpus, counted});
      if (counted) st_->sold += gpus;
    } else if (std::optional<v1::Rejection> rej = RejectionOf(a.status()); rej.has_value()) {
      ++res_->rejected;
      res_->lat_ns.push_back(ns);
      res_->kinds.push_back(p_->kind);
      ++res_->rejected_by[RejectReasonName(rej->reason())];
    } else {
      ++res_->errors;
      if (res_->first_error.empty()) res_->first_error = "Allocate: " + a.status().ToString();
    }
    ReleaseWhileBusy();
  }

  // Releases uniformly at random among the live allocations while GPUs sold exceed 80% of those
  // offered (WORKLOAD.md), one call at a time; then goes on with the stream.
  void ReleaseWhileBusy() {
    {
      absl::MutexLock lock(&st_->mu);
      if (!st_->pool.empty() && st_->sold * 10 > st_->offered_gpus * 8) {
        const size_t k = st_->rng() % st_->pool.size();
        releasing_ = std::move(st_->pool[k]);
        st_->pool[k] = std::move(st_->pool.back());
        st_->pool.pop_back();
        if (releasing_.counted) st_->sold -= releasing_.gpus;
      } else {
        releasing_.id.clear();
      }
    }
    if (releasing_.id.empty()) {
      if (st_->rate > 0) {
        Free();
      } else {
        SendNext();
      }
      return;
    }
    v1::ReleaseAllocationRequest r;
    r.set_allocation_id(releasing_.id);
    release_t_ = SteadyClock::now();
    w_->buyers[static_cast<size_t>(releasing_.buyer)]->ReleaseAllocationAsync(
        std::move(r), [self = shared_from_this()](absl::StatusOr<v1::Allocation> a) {
          self->Released(std::move(a));
        });
  }

  void Free() {
    absl::MutexLock lock(&idle_->mu);
    idle_->clients.push_back(this);
  }

  void Released(absl::StatusOr<v1::Allocation> a) {
    res_->release_ns.push_back(NsSince(release_t_));
    if (!a.ok()) {
      ++res_->release_errors;
      if (res_->first_error.empty()) {
        res_->first_error = "ReleaseAllocation: " + a.status().ToString();
      }
    } else if (a->end_reason() == v1::END_REASON_RELEASED) {
      res_->released.push_back(releasing_.id);
    }
    ReleaseWhileBusy();
  }

  RunState* const st_;
  Worker* const w_;
  ClientResult* const res_;
  const std::shared_ptr<Idle> idle_;
  // The call in flight.
  const Prepared* p_ = nullptr;
  v1::AllocateRequest call_;
  SteadyClock::time_point due_;
  absl::Time sent_;
  PoolEntry releasing_;
  SteadyClock::time_point release_t_;
};

// Runs the request stream from one StreamClient per worker until every request is answered.
void RunStream(RunState* st, std::vector<Worker>& workers, std::vector<ClientResult>& results) {
  auto idle = std::make_shared<StreamClient::Idle>();
  std::vector<std::shared_ptr<StreamClient>> clients;
  clients.reserve(workers.size());
  for (size_t i = 0; i < workers.size(); ++i) {
    clients.push_back(std::make_shared<StreamClient>(st, &workers[i], &results[i], idle));
  }
  st->start = SteadyClock::now();
  if (st->rate <= 0) {
    for (auto& c : clients) c->SendNext();
  } else {
    // The pacer: request i is due at i/rate s and goes to the next free client.
    {
      absl::MutexLock lock(&idle->mu);
      for (auto& c : clients) idle->clients.push_back(c.get());
    }
    const auto n = static_cast<int64_t>(st->requests->size());
    for (int64_t i = 0; i < n; ++i) {
      const SteadyClock::time_point due =
          st->start +
          std::chrono::nanoseconds(static_cast<int64_t>(static_cast<double>(i) * 1e9 / st->rate));
      std::this_thread::sleep_until(due);
      StreamClient* c = nullptr;
      {
        absl::MutexLock lock(&idle->mu);
        idle->mu.Await(absl::Condition(
            +[](std::vector<StreamClient*>* v) { return !v->empty(); }, &idle->clients));
        c = idle->clients.back();
        idle->clients.pop_back();
      }
      c->Send(i, due);
    }
  }
  // Every request is sent; wait until every client is idle again.
  absl::MutexLock lock(&idle->mu);
  const size_t all = clients.size();
  auto everyone = [&]()
                      ABSL_SHARED_LOCKS_REQUIRED(idle->mu) { return idle->clients.size() == all; };
  idle->mu.Await(absl::Condition(&everyone));
}

// Pings from every client for `seconds`, each keeping one call in flight; returns sorted
// latencies. Counts failures in *errors.
std::vector<int64_t> RunPings(std::vector<Worker>& workers, double seconds, int64_t* errors,
                              std::string* first_error) {
  // What the pingers share; each callback holds it (through its pinger), so that nothing a
  // callback is still returning through is destroyed when the phase ends.
  struct Shared {
    std::atomic<bool> stop{false};
    absl::Mutex mu;
    size_t stopped ABSL_GUARDED_BY(mu) = 0;
  };
  struct Pinger : std::enable_shared_from_this<Pinger> {
    std::shared_ptr<Shared> shared;
    Client* client = nullptr;
    std::vector<int64_t> lat;
    int64_t errors = 0;
    std::string first;
    SteadyClock::time_point t;

    void Next() {
      if (shared->stop.load(std::memory_order_relaxed)) {
        absl::MutexLock lock(&shared->mu);
        ++shared->stopped;
        return;
      }
      t = SteadyClock::now();
      client->PingAsync([self = shared_from_this()](const absl::StatusOr<v1::PingResponse>& r) {
        if (r.ok()) {
          self->lat.push_back(NsSince(self->t));
        } else {
          ++self->errors;
          if (self->first.empty()) self->first = "Ping: " + r.status().ToString();
        }
        self->Next();
      });
    }
  };
  auto shared = std::make_shared<Shared>();
  std::vector<std::shared_ptr<Pinger>> pingers;
  for (size_t i = 0; i < workers.size(); ++i) {
    pingers.push_back(std::make_shared<Pinger>());
    pingers.back()->shared = shared;
    pingers.back()->client = workers[i].buyers[i % kBuyers].get();
    pingers.back()->lat.reserve(1 << 14);
  }
  for (auto& p : pingers) p->Next();
  absl::SleepFor(absl::Seconds(seconds));
  shared->stop = true;
  {
    absl::MutexLock lock(&shared->mu);
    auto all = [&]() ABSL_SHARED_LOCKS_REQUIRED(shared->mu) {
      return shared->stopped == pingers.size();
    };
    shared->mu.Await(absl::Condition(&all));
  }
  std::vector<int64_t> all;
  for (auto& p : pingers) {
    all.insert(all.end(), p->lat.begin(), p->lat.end());
    *errors += p->errors;
    if (first_error->empty()) *first_error = p->first;
  }
  std::sort(all.begin(), all.end());
  return all;
}

// Every allocation of every buyer, ended ones included, page by page.
absl::StatusOr<std::vector<v1::Allocation>> ListEverything(std::vector<Worker>& workers) {
  std::vector<std::vector<v1::Allocation>> by_buyer(kBuyers);
  FirstError error;
  const int threads = std::min<int>(static_cast<int>(workers.size()), 16);
  ParallelFor(kBuyers, threads, [&](int b) {
    Client& c = *workers[static_cast<size_t>(b) % workers.size()].buyers[static_cast<size_t>(b)];
    v1::ListAllocationsRequest r;
    r.set_include_ended(true);
    r.mutable_page()->set_page_size(1000);
    for (;;) {
      absl::StatusOr<v1::ListAllocationsResponse> page = c.ListAllocations(r);
      if (!page.ok()) {
        return error.Set(Annotate(page.status(), absl::StrCat("ListAllocations of buyer-", b)));
      }
      for (v1::Allocation& a : *page->mutable_allocations()) {
        by_buyer[static_cast<size_t>(b)].push_back(std::move(a));
      }
      if (page->next_page_token().empty()) return;
      r.mutable_page()->set_page_token(page->next_page_token());
    }
  });
  if (absl::Status s = error.Get(); !s.ok()) return s;
  std::vector<v1::Allocation> all;
  for (std::vector<v1::Allocation>& v : by_buyer) {
    for (v1::Allocation& a : v) all.push_back(std::move(a));
  }
  return all;
}

// Waits until the broker answers Ping.
absl::Status WaitForBroker(Client& admin, absl::Duration timeout, BrokerProcess* process) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    absl::StatusOr<v1::PingResponse> r = admin.Ping();
    if (r.ok()) return absl::OkStatus();
    if (process != nullptr && !process->Running()) {
      return absl::UnavailableError(
          absl::StrCat("suanlid exited; its log ends:\n", process->LogTail(2000)));
    }
    if (absl::Now() > deadline) return Annotate(r.status(), "the broker does not answer Ping");
    absl::SleepFor(absl::Milliseconds(50));
  }
}

std::string SelfDir() {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : self.parent_path().string();
}

// $TMPDIR, or /tmp.
std::string TempRoot() {
  const char* tmp = std::getenv("TMPDIR");
  return tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
}

std::string ReadKeyFile(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return "";
  char buf[512] = {};
  const size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  return std::string(absl::StripAsciiWhitespace(absl::string_view(buf, n)));
}

struct KindStats {
  std::vector<int64_t> ns;
};

// What a run measured. Latencies in ns, sorted.
struct Report {
  const Flags* flags = nullptr;
  const StdMarket* market = nullptr;
  const Registration* reg = nullptr;
  const AuditResult* audit = nullptr;
  absl::Time started;
  std::string store, server, fsync_dir, first_error, loadavg_before, loadavg_after;
  std::vector<int64_t> fsync_ns, ping_ns, lat, release_lat;
  std::map<std::string, int64_t> rejected_by;
  std::map<std::string, std::vector<int64_t>> by_kind;
  int64_t granted = 0, rejected = 0, errors = 0, releases = 0, release_errors = 0;
  double run_sec = 0, audit_sec = 0;
  double server_cpu_sec = -1, bench_cpu_sec = -1, server_rss_mib = -1;

  double allocs_per_sec() const {
    return run_sec > 0 ? static_cast<double>(granted + rejected) / run_sec : 0;
  }
  double pings_per_sec() const { return static_cast<double>(ping_ns.size()) / flags->ping_seconds; }
};

std::string ReportJson(const Report& r) {
  JsonObject reasons;
  for (const auto& [k, v] : r.rejected_by) reasons.Int(k, v);
  JsonObject kinds;
  for (const auto& [k, v] : r.by_kind) {
    kinds.Raw(k, JsonObject()
                     .Int("count", static_cast<int64_t>(v.size()))
                     .Num("p50_ms", PercentileMs(v, 0.5))
                     .Num("p99_ms", PercentileMs(v, 0.99))
                     .Done());
  }
  std::vector<std::string> problems;
  problems.reserve(r.audit->problems.size());
  for (const std::string& p : r.audit->problems) problems.push_back(JsonString(p));
  const Flags& f = *r.flags;
  JsonObject o;
  o.Int("gpus", r.market->gpus)
      .Int("nodes", static_cast<int64_t>(r.market->nodes.size()))
      .Int("centers", static_cast<int64_t>(r.market->centers.size()))
      .Int("clients", f.clients)
      .Int("requests", f.requests)
      .Int("granted", r.granted)
      .Int("rejected", r.rejected)
      .Raw("rejected_by_reason", reasons.Done())
      .Int("errors", r.errors)
      .Int("releases", r.releases)
      .Int("release_errors", r.release_errors)
      .Str("mode", f.rate > 0 ? "open" : "closed")
      .Num("rate", f.rate, 1)
      .Num("allocs_per_sec", r.allocs_per_sec(), 0)
      .Num("p50_ms", PercentileMs(r.lat, 0.5))
      .Num("p99_ms", PercentileMs(r.lat, 0.99))
      .Num("p999_ms", PercentileMs(r.lat, 0.999))
      .Num("max_ms", r.lat.empty() ? 0 : Ms(r.lat.back()))
      .Raw("by_kind", kinds.Done())
      .Num("release_p50_ms", PercentileMs(r.release_lat, 0.5))
      .Num("ping_p50_ms", PercentileMs(r.ping_ns, 0.5))
      .Num("ping_p99_ms", PercentileMs(r.ping_ns, 0.99))
      .Num("pings_per_sec", r.pings_per_sec(), 0)
      .Num("fsync_p50_ms", PercentileMs(r.fsync_ns, 0.5))
      .Num("fsync_p99_ms", PercentileMs(r.fsync_ns, 0.99))
      .Str("fsync_dir", r.fsync_dir)
      .Str("fsync_fs", FsType(r.fsync_dir))
      .Num("register_sec", r.reg->seconds)
      .Int("register_calls", r.reg->calls)
      .Num("run_sec", r.run_sec)
      .Num("audit_sec", r.audit_sec)
      .Int("audited_allocations", r.audit->allocations)
      .Int("audited_slices", r.audit->slices)
      .Int("violations", r.audit->violations)
      .Raw("problems", absl::StrCat("[", absl::StrJoin(problems, ","), "]"))
      .Str("first_error", r.first_error)
      .Str("store", r.store)
      .Str("server", r.server)
      .Int("seed", static_cast<int64_t>(f.seed))
      .Num("server_cpu_sec", r.server_cpu_sec, 2)
      .Num("bench_cpu_sec", r.bench_cpu_sec, 2)
      .Num("server_peak_rss_mib", r.server_rss_mib, 1)
      .Num("bench_peak_rss_mib", SelfPeakRssMib(), 1)
      .Str("loadavg_before", r.loadavg_before)
      .Str("loadavg_after", r.loadavg_after)
      .Int("cpus", static_cast<int64_t>(std::thread::hardware_concurrency()))
      .Str("date", absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", r.started, absl::UTCTimeZone()));
  return o.Done();
}

void PrintReport(const Report& r, bool correct) {
  const Flags& f = *r.flags;
  const AuditResult& audit = *r.audit;
  std::printf("store %s, suanlid %s\n", r.store.c_str(), r.server.c_str());
  std::printf("market: %d GPUs on %zu nodes in %zu centers; registered in %.2f s (%d calls)\n",
              static_cast<int>(r.market->gpus), r.market->nodes.size(), r.market->centers.size(),
              r.reg->seconds, static_cast<int>(r.reg->calls));
  std::printf(
      "floor: fsync p50 %.3f ms p99 %.3f ms (%s, %s); ping p50 %.3f ms p99 %.3f ms "
      "(%.0f/s, %d clients)\n",
      PercentileMs(r.fsync_ns, 0.5), PercentileMs(r.fsync_ns, 0.99), r.fsync_dir.c_str(),
      FsType(r.fsync_dir).c_str(), PercentileMs(r.ping_ns, 0.5), PercentileMs(r.ping_ns, 0.99),
      r.pings_per_sec(), f.clients);
  std::printf("run: %d requests from %d clients, %s loop, in %.2f s: %.0f allocs/s\n",
              static_cast<int>(f.requests), f.clients, f.rate > 0 ? "open" : "closed", r.run_sec,
              r.allocs_per_sec());
  std::printf("  granted %d  rejected %d  errors %d  releases %d (%d failed)\n",
              static_cast<int>(r.granted), static_cast<int>(r.rejected), static_cast<int>(r.errors),
              static_cast<int>(r.releases), static_cast<int>(r.release_errors));
  for (const auto& [k, v] : r.rejected_by) {
    std::printf("  rejected %-26s %d\n", k.c_str(), static_cast<int>(v));
  }
  std::printf("  latency ms: p50 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n", PercentileMs(r.lat, 0.5),
              PercentileMs(r.lat, 0.99), PercentileMs(r.lat, 0.999),
              r.lat.empty() ? 0.0 : Ms(r.lat.back()));
  for (const auto& [k, v] : r.by_kind) {
    std::printf("    %-12s %8zu  p50 %.3f  p99 %.3f\n", k.c_str(), v.size(), PercentileMs(v, 0.5),
                PercentileMs(v, 0.99));
  }
  std::printf("  cpu s: suanlid %.2f  bench %.2f;  suanlid peak RSS %.1f MiB\n", r.server_cpu_sec,
              r.bench_cpu_sec, r.server_rss_mib);
  std::printf("audit: %d allocations, %d slices in %.2f s: %d violations\n",
              static_cast<int>(audit.allocations), static_cast<int>(audit.slices), r.audit_sec,
              static_cast<int>(audit.violations));
  for (const std::string& p : audit.problems) std::printf("  %s\n", p.c_str());
  if (!r.first_error.empty()) std::printf("first error: %s\n", r.first_error.c_str());
  std::printf("load average: %s before, %s after; %u cpus\n", r.loadavg_before.c_str(),
              r.loadavg_after.c_str(), std::thread::hardware_concurrency());
  std::printf("%s\n", correct ? "PASS" : "FAIL");
}

int Run(const Flags& flags) {
  const absl::Time started = absl::Now();
  const std::string loadavg_before = LoadAvg();

  // ---- the broker
  std::unique_ptr<BrokerProcess> process;
  std::string target = flags.server;
  std::string admin_key;
  std::string store = flags.spawn || flags.store_given ? RedactUrl(flags.store) : "unknown";
  std::string fsync_dir = flags.fsync_dir;
  std::string temp_dir;
  auto cleanup = [&] {
    if (process != nullptr) process->Stop().IgnoreError();
    if (!temp_dir.empty() && !flags.keep) {
      std::error_code ec;
      std::filesystem::remove_all(temp_dir, ec);
    }
  };
  if (flags.spawn) {
    const std::string parent = flags.work_dir.empty() ? TempRoot() : flags.work_dir;
    std::string pattern = absl::StrCat(parent, "/suanli-bench-XXXXXX");
    if (mkdtemp(pattern.data()) == nullptr) {
      std::fprintf(stderr, "suanli-bench: cannot make a directory under %s: %s\n", parent.c_str(),
                   std::strerror(errno));
      return 3;
    }
    temp_dir = pattern;
    std::string url = flags.store;
    if (url == "sqlite") url = absl::StrCat("sqlite:", temp_dir, "/suanli.db");
    store = RedactUrl(url);
    if (fsync_dir.empty()) {
      if (absl::StartsWith(url, "sqlite:")) {
        fsync_dir = std::filesystem::path(url.substr(7)).parent_path().string();
        if (fsync_dir.empty()) fsync_dir = ".";
      } else {
        fsync_dir = temp_dir;  // the database's own disk is not known from its URL
      }
    }
    BrokerProcess::Options o;
    o.suanlid = flags.suanlid.empty() ? SelfDir() + "/suanlid" : flags.suanlid;
    o.dir = temp_dir;
    o.store_url = url;
    o.extra_flags = flags.suanlid_flags;
    absl::StatusOr<std::unique_ptr<BrokerProcess>> p = BrokerProcess::Start(o);
    if (!p.ok()) {
      std::fprintf(stderr, "suanli-bench: cannot start suanlid: %s\n",
                   p.status().ToString().c_str());
      cleanup();
      return 3;
    }
    process = *std::move(p);
    target = process->target();
    admin_key = process->admin_key();
  } else {
    admin_key = ReadKeyFile(flags.admin_key_file);
    if (admin_key.empty()) {
      std::fprintf(stderr, "suanli-bench: no admin key in '%s'\n", flags.admin_key_file.c_str());
      return 2;
    }
    if (fsync_dir.empty()) fsync_dir = TempRoot();
  }
  auto fail = [&](int code, const std::string& msg) {
    std::fprintf(stderr, "suanli-bench: %s\n", msg.c_str());
    if (process != nullptr) {
      std::fprintf(stderr, "suanlid's log (%s) ends:\n%s\n", process->log_path().c_str(),
                   process->LogTail(1500).c_str());
    }
    cleanup();
    return code;
  };
  {
    std::unique_ptr<Client> admin = NewClient(NewChannel(target), admin_key, absl::Seconds(5));
    if (admin == nullptr) return fail(3, "the admin key is malformed");
    if (absl::Status s = WaitForBroker(*admin, absl::Seconds(120), process.get()); !s.ok()) {
      return fail(3, s.ToString());
    }
  }

  // ---- the market
  const StdMarket market = MakeStdMarket(flags.gpus, flags.seed, absl::Now());
  if (!flags.json) {
    std::fprintf(stderr, "registering %d GPUs (%zu nodes, %zu centers) on %s ...\n",
                 static_cast<int>(market.gpus), market.nodes.size(), market.centers.size(),
                 target.c_str());
  }
  absl::StatusOr<Registration> reg = Register(
      target, admin_key, market, std::min(flags.clients, 16), flags.node_batch, flags.timeout);
  if (!reg.ok()) return fail(3, absl::StrCat("registration: ", reg.status().ToString()));

  // ---- the floor: the disk, then Ping under the run's concurrency
  absl::StatusOr<std::vector<int64_t>> fsync_ns = ProbeFsync(fsync_dir, flags.fsync_count);
  if (!fsync_ns.ok()) return fail(3, fsync_ns.status().ToString());

  std::vector<Worker> workers(static_cast<size_t>(flags.clients));
  for (Worker& w : workers) {
    w.channel = NewChannel(target);
    for (const std::string& key : reg->accounts.buyer_keys) {
      w.buyers.push_back(NewClient(w.channel, key, flags.timeout));
      if (w.buyers.back() == nullptr) return fail(3, "a buyer key is malformed");
    }
  }
  // Connect every client before anything is timed.
  ParallelFor(flags.clients, std::min(flags.clients, 16), [&](int i) {
    workers[static_cast<size_t>(i)].channel->WaitForConnected(std::chrono::system_clock::now() +
                                                              std::chrono::seconds(10));
  });
  int64_t ping_errors = 0;
  std::string first_error;
  if (!flags.json) std::fprintf(stderr, "pinging for %.0f s ...\n", flags.ping_seconds);
  const std::vector<int64_t> ping_ns =
      RunPings(workers, flags.ping_seconds, &ping_errors, &first_error);

  // ---- the request stream
  const std::vector<Prepared> requests = PrepareRequests(market, flags.seed, flags.requests);
  if (!flags.json) {
    std::fprintf(stderr, "running %d requests from %d clients ...\n",
                 static_cast<int>(flags.requests), flags.clients);
  }
  RunState st;
  st.requests = &requests;
  st.offered_gpus = market.gpus;
  st.rate = flags.rate;
  {
    absl::MutexLock lock(&st.mu);
    st.rng.seed(flags.seed * 7919 + 1);
  }
  std::vector<ClientResult> results(workers.size());
  const double server_cpu0 = process != nullptr ? process->CpuSeconds() : -1;
  const double self_cpu0 = SelfCpuSeconds();
  RunStream(&st, workers, results);
  const double run_sec = std::chrono::duration<double>(SteadyClock::now() - st.start).count();
  const double server_cpu = process != nullptr ? process->CpuSeconds() - server_cpu0 : -1;
  const double self_cpu = SelfCpuSeconds() - self_cpu0;

  // ---- merge
  int64_t granted = 0, rejected = 0, errors = ping_errors, release_errors = 0;
  std::vector<int64_t> lat;
  std::vector<int64_t> release_lat;
  std::map<std::string, int64_t> rejected_by;
  std::map<std::string, KindStats> by_kind;
  absl::flat_hash_map<std::string, AskedGrant> asked;
  for (ClientResult& r : results) {
    granted += r.granted;
    rejected += r.rejected;
    errors += r.errors;
    release_errors += r.release_errors;
    if (first_error.empty()) first_error = r.first_error;
    lat.insert(lat.end(), r.lat_ns.begin(), r.lat_ns.end());
    release_lat.insert(release_lat.end(), r.release_ns.begin(), r.release_ns.end());
    for (size_t i = 0; i < r.lat_ns.size(); ++i) {
      by_kind[RequestKindName(r.kinds[i])].ns.push_back(r.lat_ns[i]);
    }
    for (const auto& [k, v] : r.rejected_by) rejected_by[k] += v;
    for (auto& [id, g] : r.grants) asked.emplace(id, std::move(g));
  }
  int64_t releases = 0;
  for (ClientResult& r : results) {
    for (const std::string& id : r.released) {
      auto it = asked.find(id);
      if (it != asked.end()) it->second.released = true;
      ++releases;
    }
  }
  results.clear();
  std::sort(lat.begin(), lat.end());
  std::sort(release_lat.begin(), release_lat.end());

  // ---- the audit
  if (!flags.json) {
    std::fprintf(stderr, "auditing %d grants through the API ...\n", static_cast<int>(granted));
  }
  const auto audit_t0 = SteadyClock::now();
  absl::StatusOr<std::vector<v1::Allocation>> listed = ListEverything(workers);
  if (!listed.ok()) return fail(1, absl::StrCat("audit: ", listed.status().ToString()));
  AuditInput in;
  in.market = &market;
  in.asked = &asked;
  in.listed = &*listed;
  const AuditResult audit = AuditAllocations(in);
  const double audit_sec = std::chrono::duration<double>(SteadyClock::now() - audit_t0).count();
  listed->clear();

  // ---- stop (connections first: suanlid's graceful stop waits for open ones)
  workers.clear();
  const double server_rss = process != nullptr ? process->PeakRssMib() : -1;
  absl::Status stopped = process != nullptr ? process->Stop() : absl::OkStatus();
  if (!stopped.ok()) {
    ++errors;
    if (first_error.empty()) first_error = stopped.ToString();
  }
  const bool correct = audit.violations == 0 && errors == 0 && release_errors == 0;

  // ---- report
  Report rep;
  rep.flags = &flags;
  rep.market = &market;
  rep.reg = &*reg;
  rep.audit = &audit;
  rep.started = started;
  rep.store = store;
  rep.server = flags.spawn ? absl::StrCat("spawned at ", target) : target;
  rep.fsync_dir = fsync_dir;
  rep.first_error = first_error;
  rep.loadavg_before = loadavg_before;
  rep.loadavg_after = LoadAvg();
  rep.fsync_ns = *std::move(fsync_ns);
  rep.ping_ns = ping_ns;
  rep.lat = std::move(lat);
  rep.release_lat = std::move(release_lat);
  rep.rejected_by = std::move(rejected_by);
  for (auto& [k, v] : by_kind) {
    std::sort(v.ns.begin(), v.ns.end());
    rep.by_kind[k] = std::move(v.ns);
  }
  rep.granted = granted;
  rep.rejected = rejected;
  rep.errors = errors;
  rep.releases = releases;
  rep.release_errors = release_errors;
  rep.run_sec = run_sec;
  rep.audit_sec = audit_sec;
  rep.server_cpu_sec = server_cpu;
  rep.bench_cpu_sec = self_cpu;
  rep.server_rss_mib = server_rss;
  if (flags.json) {
    std::printf("%s\n", ReportJson(rep).c_str());
  } else {
    PrintReport(rep, correct);
  }
  if (flags.keep && !temp_dir.empty()) {
    std::fprintf(stderr, "kept %s\n", temp_dir.c_str());
  }
  cleanup();
  return correct ? 0 : 1;
}

}  // namespace
}  // namespace suanli::bench

int main(int argc, char** argv) {
  // Debian's Abseil is built in debug mode, where every absl::Mutex operation (gRPC's own
  // included) goes through a global deadlock-detection graph; the tool must not measure itself.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  suanli::bench::Flags flags;
  if (int code = suanli::bench::ParseFlags(argc, argv, &flags); code >= 0) return code;
  return suanli::bench::Run(flags);
}
