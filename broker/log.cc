#include "broker/log.h"

#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace suanli::broker {

void Log(absl::string_view line) {
  const std::string out =
      absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
                   " suanlid: ", line, "\n");
  // One write call, so that lines of different threads do not interleave.
  (void)!write(STDERR_FILENO, out.data(), out.size());
}

}  // namespace suanli::broker
