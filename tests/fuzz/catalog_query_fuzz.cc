// libFuzzer target for the catalog query parser (broker/catalog_query.h): any input either parses
// into terms that can be evaluated, or is refused with a positioned INVALID_ARGUMENT; never a
// crash, a hang or undefined behaviour (the build adds ASan and UBSan).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "broker/catalog_query.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<suanli::broker::CatalogQuery> q = suanli::broker::ParseCatalogQuery(text);
  if (!q.ok()) {
    if (q.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    if (q.status().message().rfind("catalog query, column ", 0) != 0) std::abort();
    return 0;
  }
  suanli::broker::CatalogEntryView e;
  e.model = "H100-SXM5-80G";
  e.region = "cn-east-2";
  e.tags = {"data-in-cn"};
  e.free_gpus = 64;
  e.price_micros = 28'000'000;
  const bool once = q->Matches(e);
  // Parsing is deterministic.
  absl::StatusOr<suanli::broker::CatalogQuery> again = suanli::broker::ParseCatalogQuery(text);
  if (!again.ok() || again->Matches(e) != once) std::abort();
  return 0;
}
