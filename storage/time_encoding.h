// How every backend stores an absl::Time: int64 Unix microseconds (finer parts dropped), with
// the largest and smallest int64 standing for absl's infinite future and past.
#ifndef SUANLI_STORAGE_TIME_ENCODING_H_
#define SUANLI_STORAGE_TIME_ENCODING_H_

#include <cstdint>
#include <limits>

#include "absl/time/time.h"

namespace suanli::storage {

inline int64_t ToMicros(absl::Time t) {
  if (t == absl::InfiniteFuture()) return std::numeric_limits<int64_t>::max();
  if (t == absl::InfinitePast()) return std::numeric_limits<int64_t>::min();
  return absl::ToUnixMicros(t);  // rounds down; saturates beyond int64
}

inline absl::Time FromMicros(int64_t us) {
  if (us == std::numeric_limits<int64_t>::max()) return absl::InfiniteFuture();
  if (us == std::numeric_limits<int64_t>::min()) return absl::InfinitePast();
  return absl::FromUnixMicros(us);
}

}  // namespace suanli::storage

#endif  // SUANLI_STORAGE_TIME_ENCODING_H_
