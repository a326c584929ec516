// The catalog query language: a filter a person can type, e.g.
//
//   model=H100-SXM5-80G,H800-SXM5-80G free_gpus>=64 region=cn-east-2 fabric=infiniband price<=30
//
// A query is terms separated by spaces, all of which must hold. A term is FIELD OP VALUE with no
// spaces inside. Text fields take = or != and a comma-separated list (any of / none of); number
// fields take =, !=, <, <=, >, >=. Prices are currency units per GPU-hour with at most six
// decimals (25.50), read exactly into micro-units. docs/QUERY.md lists the fields.
//
//   absl::StatusOr<CatalogQuery> q = ParseCatalogQuery("region=cn-east-2 price<=30");
//   if (q.ok() && q->Matches(entry)) ...
//
// A malformed query is INVALID_ARGUMENT with a message that names the 1-based column and what
// was expected there.
#ifndef SUANLI_BROKER_CATALOG_QUERY_H_
#define SUANLI_BROKER_CATALOG_QUERY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace suanli::broker {

// What the query is evaluated against: one catalog entry (capacity in one domain under one
// offer). Text fields compare exactly, except that enum names compare case-insensitively.
struct CatalogEntryView {
  std::string model;
  std::string region;
  std::string center_id;
  std::string center_type;  // "government", "carrier", ...
  std::string fabric;       // "ethernet", "roce", "infiniband", "nvlink"
  std::vector<std::string> tags;
  int64_t free_gpus = 0;
  int64_t free_nodes = 0;  // wholly free nodes
  int64_t gpus_per_node = 0;
  int64_t gbps = 0;
  int64_t price_micros = 0;  // per GPU-hour
};

enum class QueryOp { kEq, kNe, kLt, kLe, kGt, kGe };

struct QueryTerm {
  std::string field;
  QueryOp op = QueryOp::kEq;
  std::vector<std::string> texts;  // text fields: the list
  int64_t number = 0;              // number fields (prices in micro-units)
};

class CatalogQuery {
 public:
  // True when every term holds for the entry. An empty query matches everything.
  bool Matches(const CatalogEntryView& entry) const;
  const std::vector<QueryTerm>& terms() const { return terms_; }

 private:
  friend absl::StatusOr<CatalogQuery> ParseCatalogQuery(absl::string_view text);
  std::vector<QueryTerm> terms_;
};

absl::StatusOr<CatalogQuery> ParseCatalogQuery(absl::string_view text);

}  // namespace suanli::broker

#endif  // SUANLI_BROKER_CATALOG_QUERY_H_
