// A suanlid child process on a free loopback port, for `suanli-bench --spawn`: one command
// measures one configuration.
//
//   BrokerProcess::Options o;
//   o.suanlid = "build/bin/suanlid";
//   o.dir = "/tmp/suanli-bench-x1y2z3";          // gets admin.key and suanlid.log
//   o.store_url = "sqlite:/tmp/suanli-bench-x1y2z3/suanli.db";
//   absl::StatusOr<std::unique_ptr<BrokerProcess>> b = BrokerProcess::Start(o);
//   ... connect to (*b)->target() with (*b)->admin_key() ...
//   absl::Status stopped = (*b)->Stop();        // SIGTERM, then wait
//
// Start returns once suanlid has written its admin key; the caller still waits for the gRPC port
// to answer (suanlid writes the key just before it listens). The child gets SIGTERM when the
// bench dies, so a crashed bench leaves no broker behind.
//
// Not thread-safe: one owner.
#ifndef SUANLI_BENCH_BROKER_PROCESS_H_
#define SUANLI_BENCH_BROKER_PROCESS_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace suanli::bench {

class BrokerProcess {
 public:
  struct Options {
    std::string suanlid;    // path of the binary; required
    std::string dir;        // an existing directory for admin.key and suanlid.log; required
    std::string store_url;  // suanlid's --store; required
    std::vector<std::string> extra_flags;  // more suanlid flags, e.g. "--max-batch=1024"
    // How long suanlid may take to load its store and write its admin key. Default 120s.
    absl::Duration start_timeout = absl::Seconds(120);
  };

  // Picks a free loopback port, starts suanlid on it and waits for its admin key. INVALID_ARGUMENT
  // for missing options, NOT_FOUND when the binary is not there, UNAVAILABLE (with the end of
  // its log) when it exits or does not come up in time.
  static absl::StatusOr<std::unique_ptr<BrokerProcess>> Start(const Options& options);
  // Stops the process (as Stop) when it still runs.
  ~BrokerProcess();
  BrokerProcess(const BrokerProcess&) = delete;
  BrokerProcess& operator=(const BrokerProcess&) = delete;

  const std::string& target() const { return target_; }  // "127.0.0.1:PORT"
  const std::string& admin_key() const { return admin_key_; }
  const std::string& log_path() const { return log_path_; }
  pid_t pid() const { return pid_; }
  // False once the process has exited.
  bool Running();
  // User plus system CPU seconds the process has used; -1 when it cannot be read.
  double CpuSeconds() const;
  // Its peak resident memory (VmHWM) in MiB; -1 when it cannot be read.
  double PeakRssMib() const;
  // The last `bytes` of its log, for error messages.
  std::string LogTail(size_t bytes) const;

  // Sends SIGTERM (suanlid then stops gracefully), waits up to `grace`, then SIGKILL. OK when it
  // exited with status 0; INTERNAL otherwise. Idempotent.
  absl::Status Stop(absl::Duration grace = absl::Seconds(60));

 private:
  BrokerProcess() = default;

  std::string target_;
  std::string admin_key_;
  std::string log_path_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int exit_status_ = 0;
};

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed).
absl::StatusOr<int> PickFreeLoopbackPort();

}  // namespace suanli::bench

#endif  // SUANLI_BENCH_BROKER_PROCESS_H_
