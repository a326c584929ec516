// One line per event on standard error, prefixed with the UTC time: what suanlid tells the
// person running it. Thread-safe (one write per line).
#ifndef SUANLI_BROKER_LOG_H_
#define SUANLI_BROKER_LOG_H_

#include "absl/strings/string_view.h"

namespace suanli::broker {

void Log(absl::string_view line);

}  // namespace suanli::broker

#endif  // SUANLI_BROKER_LOG_H_
