// Market::OperatorStatement, BuyerInvoice and SettlementReport: who may read which books, and the
// ledger entries and allocation facts that broker/settlement.h sums (docs/LEDGER.md).
#include <algorithm>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "broker/ledger.h"
#include "broker/market.h"
#include "broker/settlement.h"
#include "broker/validate.h"

namespace suanli::broker {
namespace {

absl::Time TimeOfProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

bool AnyBefore(const std::vector<const storage::LedgerEntryRow*>& entries, absl::Time to) {
  return std::any_of(entries.begin(), entries.end(),
                     [to](const storage::LedgerEntryRow* e) { return e->at < to; });
}

}  // namespace

std::vector<const storage::LedgerEntryRow*> Market::EntriesOf(const std::string& party) const {
  std::vector<const storage::LedgerEntryRow*> out;
  auto it = entries_by_party_.find(party);
  if (it == entries_by_party_.end()) return out;
  out.reserve(it->second.size());
  for (size_t i : it->second) out.push_back(&ledger_[i]);
  return out;
}

FactsOf Market::Facts(absl::flat_hash_map<int64_t, AllocationFacts>* cache) const {
  return [this, cache](int64_t allocation_id) -> const AllocationFacts* {
    auto cached = cache->find(allocation_id);
    if (cached != cache->end()) return &cached->second;
    auto rec =
        allocation_id > 0 ? allocs_.find(static_cast<uint64_t>(allocation_id)) : allocs_.end();
    if (rec == allocs_.end()) return nullptr;
    const v1::Allocation& a = rec->second.a;
    AllocationFacts f;
    f.buyer_id = a.buyer_id();
    f.start = TimeOfProto(a.start());
    f.end = TimeOfProto(a.end());
    std::set<std::string> models;
    for (const v1::Slice& s : a.slices()) {
      f.gpus += s.gpus();
      models.insert(s.model());
      auto c = centers_.find(s.center_id());
      AllocationFacts::Part& part =
          f.operators[c == centers_.end() ? std::string() : c->second.operator_id()];
      part.gpus += s.gpus();
      part.rate_micros_per_hour += int64_t{s.gpus()} * s.price_micros_per_gpu_hour();
    }
    f.models.assign(models.begin(), models.end());
    return &cache->emplace(allocation_id, std::move(f)).first->second;
  };
}

namespace {

// The account whose books a caller asks for: `asked`, or the caller's own when empty. Callers of
// another role than `role` (and not admins) are refused; so is a non-admin asking for another
// account. An admin may ask for any account of `role` or an admin's.
absl::StatusOr<std::string> BooksSubject(
    const Principal& p, const std::string& asked, v1::Role role, absl::string_view what,
    const absl::btree_map<std::string, v1::Account>& accounts) {
  const bool admin = p.role == v1::ROLE_ADMIN;
  if (!admin && p.role != role) {
    const char* article = role == v1::ROLE_OPERATOR ? "an " : "a ";
    return absl::PermissionDeniedError(absl::StrCat("a ", what, " needs ", article, RoleName(role),
                                                    " or admin key; this key is ", RoleName(p.role),
                                                    "'s"));
  }
  const std::string id = asked.empty() ? p.account_id : asked;
  if (!admin && id != p.account_id) {
    return absl::PermissionDeniedError(absl::StrCat(
        "this key may read only its own ", what, " (account ", p.account_id, "), not ", id, "'s"));
  }
  auto a = accounts.find(id);
  if (a == accounts.end() || (a->second.role() != role && a->second.role() != v1::ROLE_ADMIN)) {
    return absl::NotFoundError(absl::StrCat("no ", RoleName(role), " account '", id, "'"));
  }
  return id;
}

}  // namespace

absl::StatusOr<v1::Statement> Market::OperatorStatement(const Principal& p,
                                                        const v1::GetStatementRequest& r,
                                                        absl::Time now) const {
  absl::StatusOr<std::string> id =
      BooksSubject(p, r.operator_id(), v1::ROLE_OPERATOR, "statement", accounts_);
  if (!id.ok()) return id.status();
  absl::StatusOr<Period> period =
      ValidatePeriod(r.has_from() ? &r.from() : nullptr, r.has_to() ? &r.to() : nullptr, now);
  if (!period.ok()) return period.status();
  absl::flat_hash_map<int64_t, AllocationFacts> cache;
  v1::Statement out = StatementOf(*id, EntriesOf(absl::StrCat(kOperatorPrefix, *id)), period->from,
                                  period->to, Facts(&cache), /*with_lines=*/true);
  out.set_operator_name(accounts_.at(*id).name());
  return out;
}

absl::StatusOr<v1::Invoice> Market::BuyerInvoice(const Principal& p, const v1::GetInvoiceRequest& r,
                                                 absl::Time now) const {
  absl::StatusOr<std::string> id =
      BooksSubject(p, r.buyer_id(), v1::ROLE_BUYER, "invoice", accounts_);
  if (!id.ok()) return id.status();
  absl::StatusOr<Period> period =
      ValidatePeriod(r.has_from() ? &r.from() : nullptr, r.has_to() ? &r.to() : nullptr, now);
  if (!period.ok()) return period.status();
  absl::flat_hash_map<int64_t, AllocationFacts> cache;
  v1::Invoice out = InvoiceOf(*id, EntriesOf(absl::StrCat(kBuyerPrefix, *id)), period->from,
                              period->to, Facts(&cache), /*with_allocations=*/true);
  out.set_buyer_name(accounts_.at(*id).name());
  return out;
}

absl::StatusOr<v1::GetSettlementReportResponse> Market::SettlementReport(
    const Principal& p, const v1::GetSettlementReportRequest& r, absl::Time now) const {
  const bool admin = p.role == v1::ROLE_ADMIN;
  if (!admin && p.role != v1::ROLE_OPERATOR) {
    return absl::PermissionDeniedError("the settlement report needs an admin or operator key");
  }
  absl::StatusOr<Period> period =
      ValidatePeriod(r.has_from() ? &r.from() : nullptr, r.has_to() ? &r.to() : nullptr, now);
  if (!period.ok()) return period.status();
  v1::GetSettlementReportResponse out;
  *out.mutable_from() = ToProto(period->from);
  *out.mutable_to() = ToProto(period->to);
  // The parties, in account id order: every one with entries before `to` (admins), or the
  // caller's own statement.
  std::vector<std::string> operators;
  std::vector<std::string> buyers;
  if (admin) {
    for (const auto& [party, positions] : entries_by_party_) {
      if (absl::StartsWith(party, kOperatorPrefix)) {
        operators.push_back(party.substr(sizeof(kOperatorPrefix) - 1));
      } else if (absl::StartsWith(party, kBuyerPrefix)) {
        buyers.push_back(party.substr(sizeof(kBuyerPrefix) - 1));
      }
    }
    std::sort(operators.begin(), operators.end());
    std::sort(buyers.begin(), buyers.end());
  } else {
    operators.push_back(p.account_id);
  }
  absl::flat_hash_map<int64_t, AllocationFacts> cache;
  const FactsOf facts = Facts(&cache);
  for (const std::string& id : operators) {
    const std::vector<const storage::LedgerEntryRow*> entries =
        EntriesOf(absl::StrCat(kOperatorPrefix, id));
    if (admin && !AnyBefore(entries, period->to)) continue;
    v1::Statement* s = out.add_statements();
    *s = StatementOf(id, entries, period->from, period->to, facts, /*with_lines=*/false);
    auto a = accounts_.find(id);
    if (a != accounts_.end()) s->set_operator_name(a->second.name());
    out.set_gross_micros(out.gross_micros() + s->gross_micros());
    out.set_commission_micros(out.commission_micros() + s->commission_micros());
    out.set_net_micros(out.net_micros() + s->net_micros());
  }
  for (const std::string& id : buyers) {
    const std::vector<const storage::LedgerEntryRow*> entries =
        EntriesOf(absl::StrCat(kBuyerPrefix, id));
    if (!AnyBefore(entries, period->to)) continue;
    v1::Invoice* i = out.add_invoices();
    *i = InvoiceOf(id, entries, period->from, period->to, facts, /*with_allocations=*/false);
    auto a = accounts_.find(id);
    if (a != accounts_.end()) i->set_buyer_name(a->second.name());
    out.set_due_micros(out.due_micros() + i->total_due_micros());
  }
  return out;
}

}  // namespace suanli::broker
