#include "broker/catalog_query.h"

#include <algorithm>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace suanli::broker {
namespace {

enum class Kind { kText, kEnum, kTags, kNumber, kPrice };

struct Field {
  const char* name;
  Kind kind;
};

constexpr Field kFields[] = {
    {"model", Kind::kText},       {"region", Kind::kText},       {"center", Kind::kText},
    {"type", Kind::kEnum},        {"fabric", Kind::kEnum},       {"tag", Kind::kTags},
    {"free_gpus", Kind::kNumber}, {"free_nodes", Kind::kNumber}, {"gpus_per_node", Kind::kNumber},
    {"gbps", Kind::kNumber},      {"price", Kind::kPrice},
};

const Field* FindField(absl::string_view name) {
  for (const Field& f : kFields) {
    if (name == f.name) return &f;
  }
  return nullptr;
}

std::string FieldNames() {
  std::vector<std::string> names;
  for (const Field& f : kFields) names.emplace_back(f.name);
  return absl::StrJoin(names, ", ");
}

absl::Status ErrorAt(size_t pos, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("catalog query, column ", pos + 1, ": ", what));
}

bool IsFieldChar(char c) { return absl::ascii_islower(c) || c == '_'; }
bool IsValueChar(char c) { return absl::ascii_isalnum(c) || c == '.' || c == '-' || c == '_'; }

// Reads "123" or "123.45" (at most six decimals) as micro-units; false when malformed or too big.
bool ParsePrice(absl::string_view s, int64_t* micros) {
  const size_t dot = s.find('.');
  const absl::string_view whole = s.substr(0, dot);
  const absl::string_view frac = dot == absl::string_view::npos ? "" : s.substr(dot + 1);
  if (whole.empty() || whole.size() > 12) return false;
  if (dot != absl::string_view::npos && (frac.empty() || frac.size() > 6)) return false;
  int64_t v = 0;
  for (char c : whole) {
    if (!absl::ascii_isdigit(c)) return false;
    v = v * 10 + (c - '0');
  }
  int64_t f = 0;
  for (size_t i = 0; i < 6; ++i) {
    const char c = i < frac.size() ? frac[i] : '0';
    if (!absl::ascii_isdigit(c)) return false;
    f = f * 10 + (c - '0');
  }
  *micros = v * 1'000'000 + f;
  return true;
}

bool ParseWhole(absl::string_view s, int64_t* out) {
  if (s.empty() || s.size() > 15) return false;
  int64_t v = 0;
  for (char c : s) {
    if (!absl::ascii_isdigit(c)) return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
  return true;
}

bool Compare(int64_t have, QueryOp op, int64_t want) {
  switch (op) {
    case QueryOp::kEq:
      return have == want;
    case QueryOp::kNe:
      return have != want;
    case QueryOp::kLt:
      return have < want;
    case QueryOp::kLe:
      return have <= want;
    case QueryOp::kGt:
      return have > want;
    case QueryOp::kGe:
      return have >= want;
  }
  return false;
}

// For = : any item equals; for != : no item equals.
bool TextMatches(const std::vector<std::string>& haystack, const QueryTerm& t, bool fold_case) {
  bool any = false;
  for (const std::string& item : t.texts) {
    for (const std::string& h : haystack) {
      any |= fold_case ? absl::EqualsIgnoreCase(h, item) : h == item;
    }
  }
  return t.op == QueryOp::kEq ? any : !any;
}

}  // namespace

absl::StatusOr<CatalogQuery> ParseCatalogQuery(absl::string_view text) {
  CatalogQuery q;
  size_t i = 0;
  const size_t n = text.size();
  while (true) {
    while (i < n && text[i] == ' ') ++i;
    if (i == n) break;
    // FIELD
    const size_t field_at = i;
    while (i < n && IsFieldChar(text[i])) ++i;
    const absl::string_view name = text.substr(field_at, i - field_at);
    if (name.empty()) {
      return ErrorAt(field_at, absl::StrCat("expected a field name (", FieldNames(), ")"));
    }
    const Field* field = FindField(name);
    if (field == nullptr) {
      return ErrorAt(field_at,
                     absl::StrCat("unknown field '", name, "'; fields are ", FieldNames()));
    }
    // OP
    const size_t op_at = i;
    QueryTerm term;
    term.field.assign(name.data(), name.size());
    auto starts = [&](absl::string_view tok) { return text.substr(i, tok.size()) == tok; };
    if (starts("!=")) {
      term.op = QueryOp::kNe, i += 2;
    } else if (starts("<=")) {
      term.op = QueryOp::kLe, i += 2;
    } else if (starts(">=")) {
      term.op = QueryOp::kGe, i += 2;
    } else if (starts("=")) {
      term.op = QueryOp::kEq, i += 1;
    } else if (starts("<")) {
      term.op = QueryOp::kLt, i += 1;
    } else if (starts(">")) {
      term.op = QueryOp::kGt, i += 1;
    } else {
      return ErrorAt(op_at,
                     absl::StrCat("expected an operator (=, !=, <, <=, >, >=) after '", name, "'"));
    }
    const bool is_text =
        field->kind == Kind::kText || field->kind == Kind::kEnum || field->kind == Kind::kTags;
    if (is_text && term.op != QueryOp::kEq && term.op != QueryOp::kNe) {
      return ErrorAt(op_at, absl::StrCat("'", name, "' takes = or != (it is not a number)"));
    }
    // VALUE
    const size_t value_at = i;
    while (i < n && text[i] != ' ') ++i;
    const absl::string_view value = text.substr(value_at, i - value_at);
    if (value.empty()) {
      return ErrorAt(value_at, absl::StrCat("expected a value after '",
                                            text.substr(field_at, value_at - field_at), "'"));
    }
    if (is_text) {
      size_t item_at = value_at;
      for (absl::string_view item : absl::StrSplit(value, ',')) {
        if (item.empty()) return ErrorAt(item_at, "expected a value here (empty list item)");
        for (size_t k = 0; k < item.size(); ++k) {
          if (!IsValueChar(item[k])) {
            return ErrorAt(item_at + k,
                           absl::StrCat("unexpected character '", std::string(1, item[k]),
                                        "' (values use letters, digits, . - _)"));
          }
        }
        term.texts.emplace_back(item);
        item_at += item.size() + 1;
      }
    } else if (field->kind == Kind::kPrice) {
      if (!ParsePrice(value, &term.number)) {
        return ErrorAt(value_at, absl::StrCat("expected a price such as 30 or 25.50 (at most six "
                                              "decimals), got '",
                                              value, "'"));
      }
    } else if (!ParseWhole(value, &term.number)) {
      return ErrorAt(value_at, absl::StrCat("expected a whole number, got '", value, "'"));
    }
    q.terms_.push_back(std::move(term));
  }
  return q;
}

bool CatalogQuery::Matches(const CatalogEntryView& e) const {
  for (const QueryTerm& t : terms_) {
    bool ok = true;
    if (t.field == "model") {
      ok = TextMatches({e.model}, t, false);
    } else if (t.field == "region") {
      ok = TextMatches({e.region}, t, false);
    } else if (t.field == "center") {
      ok = TextMatches({e.center_id}, t, false);
    } else if (t.field == "type") {
      ok = TextMatches({e.center_type}, t, true);
    } else if (t.field == "fabric") {
      ok = TextMatches({e.fabric}, t, true);
    } else if (t.field == "tag") {
      ok = TextMatches(e.tags, t, false);
    } else if (t.field == "free_gpus") {
      ok = Compare(e.free_gpus, t.op, t.number);
    } else if (t.field == "free_nodes") {
      ok = Compare(e.free_nodes, t.op, t.number);
    } else if (t.field == "gpus_per_node") {
      ok = Compare(e.gpus_per_node, t.op, t.number);
    } else if (t.field == "gbps") {
      ok = Compare(e.gbps, t.op, t.number);
    } else if (t.field == "price") {
      ok = Compare(e.price_micros, t.op, t.number);
    }
    if (!ok) return false;
  }
  return true;
}

}  // namespace suanli::broker
