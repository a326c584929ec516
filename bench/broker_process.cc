#include "bench/broker_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace suanli::bench {
namespace {

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

absl::StatusOr<int> PickFreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  auto* sa = reinterpret_cast<sockaddr*>(&addr);
  if (bind(fd, sa, sizeof(addr)) != 0 || getsockname(fd, sa, &len) != 0) {
    const int err = errno;
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("cannot bind a loopback port: ", std::strerror(err)));
  }
  close(fd);
  return static_cast<int>(ntohs(addr.sin_port));
}

absl::StatusOr<std::unique_ptr<BrokerProcess>> BrokerProcess::Start(const Options& options) {
  if (options.suanlid.empty() || options.dir.empty() || options.store_url.empty()) {
    return absl::InvalidArgumentError("BrokerProcess needs suanlid, dir and store_url");
  }
  if (access(options.suanlid.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("no suanlid at '", options.suanlid,
                                            "' (build it: ninja suanlid), or give --suanlid"));
  }
  absl::StatusOr<int> port = PickFreeLoopbackPort();
  if (!port.ok()) return port.status();

  std::unique_ptr<BrokerProcess> p(new BrokerProcess());
  p->target_ = absl::StrCat("127.0.0.1:", *port);
  p->log_path_ = absl::StrCat(options.dir, "/suanlid.log");
  const std::string key_file = absl::StrCat(options.dir, "/admin.key");

  // Everything the child needs is made before fork: after it, only async-signal-safe calls.
  std::vector<std::string> args = {options.suanlid, absl::StrCat("--listen=", p->target_),
                                   absl::StrCat("--store=", options.store_url),
                                   absl::StrCat("--admin-key-file=", key_file)};
  args.insert(args.end(), options.extra_flags.begin(), options.extra_flags.end());
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int log_fd = open(p->log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot write '", p->log_path_, "': ", std::strerror(errno)));
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(log_fd);
    return absl::UnavailableError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    // The child: dies with the bench, logs to the file, runs suanlid.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    const int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(log_fd);
  p->pid_ = pid;

  const absl::Time deadline = absl::Now() + options.start_timeout;
  for (;;) {
    const std::string key = ReadWholeFile(key_file);
    if (!key.empty() && key.back() == '\n') {
      p->admin_key_ = std::string(absl::StripAsciiWhitespace(key));
      return p;
    }
    if (!p->Running()) {
      return absl::UnavailableError(absl::StrCat("suanlid exited with status ", p->exit_status_,
                                                 " while starting; its log ends:\n",
                                                 p->LogTail(2000)));
    }
    if (absl::Now() > deadline) {
      p->Stop(absl::Seconds(5)).IgnoreError();
      return absl::UnavailableError(absl::StrCat("suanlid did not write its admin key within ",
                                                 absl::FormatDuration(options.start_timeout),
                                                 "; its log ends:\n", p->LogTail(2000)));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

BrokerProcess::~BrokerProcess() { Stop().IgnoreError(); }

bool BrokerProcess::Running() {
  if (exited_ || pid_ <= 0) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    exited_ = true;
    exit_status_ = status;
    return false;
  }
  return true;
}

double BrokerProcess::CpuSeconds() const {
  if (pid_ <= 0) return -1;
  const std::string stat = ReadWholeFile(absl::StrCat("/proc/", pid_, "/stat"));
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return -1;
  // After the command's closing parenthesis: state (field 3), ..., utime (14), stime (15).
  std::vector<absl::string_view> f =
      absl::StrSplit(absl::string_view(stat).substr(paren + 2), ' ', absl::SkipEmpty());
  int64_t utime = 0;
  int64_t stime = 0;
  if (f.size() < 13 || !absl::SimpleAtoi(f[11], &utime) || !absl::SimpleAtoi(f[12], &stime)) {
    return -1;
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double BrokerProcess::PeakRssMib() const {
  if (pid_ <= 0) return -1;
  const std::string status = ReadWholeFile(absl::StrCat("/proc/", pid_, "/status"));
  for (absl::string_view line : absl::StrSplit(status, '\n')) {
    if (!absl::ConsumePrefix(&line, "VmHWM:")) continue;
    line = absl::StripAsciiWhitespace(line);
    absl::ConsumeSuffix(&line, " kB");
    int64_t kib = 0;
    if (absl::SimpleAtoi(line, &kib)) return static_cast<double>(kib) / 1024.0;
  }
  return -1;
}

std::string BrokerProcess::LogTail(size_t bytes) const {
  const std::string log = ReadWholeFile(log_path_);
  return log.size() <= bytes ? log : log.substr(log.size() - bytes);
}

absl::Status BrokerProcess::Stop(absl::Duration grace) {
  if (pid_ <= 0) return absl::OkStatus();
  if (Running()) {
    kill(pid_, SIGTERM);
    const absl::Time deadline = absl::Now() + grace;
    while (Running() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
    if (Running()) {
      kill(pid_, SIGKILL);
      int status = 0;
      waitpid(pid_, &status, 0);
      exited_ = true;
      exit_status_ = status;
      return absl::InternalError(absl::StrCat("suanlid did not stop within ",
                                              absl::FormatDuration(grace), " of SIGTERM; killed"));
    }
  }
  if (WIFEXITED(exit_status_) && WEXITSTATUS(exit_status_) == 0) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat("suanlid ended with ",
                   WIFEXITED(exit_status_) ? absl::StrCat("exit status ", WEXITSTATUS(exit_status_))
                                           : absl::StrCat("signal ", WTERMSIG(exit_status_)),
                   "; its log ends:\n", LogTail(2000)));
}

}  // namespace suanli::bench
