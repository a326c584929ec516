// suanlid: the Suanli broker. See broker/README.md and `suanlid --help`.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "broker/log.h"
#include "broker/server.h"
#include "storage/sqlite/sqlite_config.h"

namespace {

constexpr char kHelp[] = R"(suanlid: the Suanli broker (gRPC API, allocation engine, durable store)

Usage: suanlid [--flag=value ...]

  --listen=HOST:PORT      where the gRPC API listens (default 127.0.0.1:7700; port 0 picks one)
  --store=URL             where state is kept (default sqlite:var/suanli.db):
                            sqlite:PATH   an SQLite database file (its directory must exist)
  --admin-key-file=PATH   the admin API key (default var/admin.key). When the file is missing,
                          a new admin key is made and written there with mode 0600.
  --tls-cert=PATH         PEM certificate chain; with --tls-key, the gRPC port speaks TLS
  --tls-key=PATH          PEM private key
  --http=HOST:PORT        serve Prometheus /metrics and the ops dashboard (/) over plain HTTP
                          there, e.g. --http=127.0.0.1:7701 (default: off). No authentication:
                          use a loopback or private address.
  --max-batch=N           most calls decided in one engine batch and one commit (default 4096)
  --commission-bps=N      the broker's commission on every sale, in basis points (default 800 =
                          8%; 0..10000); docs/LEDGER.md
  --shutdown-grace=DUR    on SIGTERM/SIGINT, how long calls in flight may take (default 10s)
  --help                  this text

Every change a caller is told about is in the store first; kill -9 loses nothing acknowledged.
SIGTERM or SIGINT stop it gracefully: no new calls, calls in flight finish, the store is closed.
)";

struct Flags {
  suanli::broker::BrokerOptions broker;
  absl::Duration grace = absl::Seconds(10);
};

int Usage(const std::string& msg) {
  std::fprintf(stderr, "suanlid: %s\nRun 'suanlid --help' for the flags.\n", msg.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kHelp, stdout);
      return 0;
    }
    if (!absl::StartsWith(arg, "--")) return Usage(absl::StrCat("unexpected argument '", arg, "'"));
    std::string name = arg.substr(2), value;
    const size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return Usage(absl::StrCat("--", name, " needs a value"));
    }
    if (name == "listen") {
      f.broker.listen = value;
    } else if (name == "store") {
      f.broker.store_url = value;
    } else if (name == "admin-key-file") {
      f.broker.admin_key_file = value;
    } else if (name == "tls-cert") {
      f.broker.tls_cert_file = value;
    } else if (name == "tls-key") {
      f.broker.tls_key_file = value;
    } else if (name == "http") {
      f.broker.http_listen = value;
    } else if (name == "commission-bps") {
      int bps = 0;
      if (!absl::SimpleAtoi(value, &bps) || bps < 0 || bps > 10'000) {
        return Usage("--commission-bps must be a whole number from 0 to 10000");
      }
      f.broker.engine.commission_bps = bps;
    } else if (name == "max-batch") {
      if (!absl::SimpleAtoi(value, &f.broker.engine.max_batch) || f.broker.engine.max_batch < 1) {
        return Usage("--max-batch must be a positive whole number");
      }
    } else if (name == "shutdown-grace") {
      if (!absl::ParseDuration(value, &f.grace) || f.grace < absl::ZeroDuration()) {
        return Usage("--shutdown-grace must be a duration such as 10s");
      }
    } else {
      return Usage(absl::StrCat("unknown flag --", name));
    }
  }

  // Debian's Abseil checks every mutex operation against a global lock graph; the daemon does
  // not pay for that (the tests keep it on).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // SQLite's process-wide settings, before any thread or connection uses SQLite.
  if (!suanli::storage::ConfigureSqlite()) {
    suanli::broker::Log("SQLite was started before it could be configured; commits will be slower");
  }
  // Signals are taken by one thread with sigwait; every other thread has them blocked.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  absl::StatusOr<std::unique_ptr<suanli::broker::Broker>> broker =
      suanli::broker::Broker::Start(f.broker);
  if (!broker.ok()) {
    suanli::broker::Log(absl::StrCat("cannot start: ", broker.status().ToString()));
    return 1;
  }
  suanli::broker::Log("ready");
  int sig = 0;
  sigwait(&stop_signals, &sig);
  suanli::broker::Log(
      absl::StrCat("got ", sig == SIGTERM ? "SIGTERM" : "SIGINT", "; stopping gracefully"));
  (*broker)->Shutdown(f.grace);
  return 0;
}
