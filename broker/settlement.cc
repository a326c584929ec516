#include "broker/settlement.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "broker/ledger.h"
#include "broker/validate.h"

namespace suanli::broker {
namespace {

// The operator's legs in one entry.
struct OperatorLegs {
  bool any = false;
  int64_t net = 0;         // operator:<id>
  int64_t commission = 0;  // commission:<id>
};

OperatorLegs LegsOf(const storage::LedgerEntryRow& e, const std::string& operator_account,
                    const std::string& commission_account) {
  OperatorLegs out;
  for (const storage::LedgerLeg& leg : e.legs) {
    if (leg.account == operator_account) {
      out.any = true;
      out.net += leg.amount_micros;
    } else if (leg.account == commission_account) {
      out.any = true;
      out.commission += leg.amount_micros;
    }
  }
  return out;
}

// The buyer:<id> leg of an entry (what the buyer was charged is minus it), if any.
bool BuyerLeg(const storage::LedgerEntryRow& e, const std::string& buyer_account, int64_t* amount) {
  bool any = false;
  *amount = 0;
  for (const storage::LedgerLeg& leg : e.legs) {
    if (leg.account == buyer_account) {
      any = true;
      *amount += leg.amount_micros;
    }
  }
  return any;
}

// The buyer of an entry: its buyer:<id> leg's account, else what the facts say.
std::string BuyerOf(const storage::LedgerEntryRow& e, const AllocationFacts* facts) {
  for (const storage::LedgerLeg& leg : e.legs) {
    if (absl::StartsWith(leg.account, kBuyerPrefix)) {
      return leg.account.substr(sizeof(kBuyerPrefix) - 1);
    }
  }
  return facts == nullptr ? std::string() : facts->buyer_id;
}

}  // namespace

v1::LedgerEntryKind LedgerEntryKindOf(int32_t kind) {
  switch (static_cast<EntryKind>(kind)) {
    case EntryKind::kSale:
      return v1::LEDGER_ENTRY_KIND_SALE;
    case EntryKind::kExtension:
      return v1::LEDGER_ENTRY_KIND_EXTENSION;
    case EntryKind::kRefund:
      return v1::LEDGER_ENTRY_KIND_REFUND;
    case EntryKind::kCorrection:
      return v1::LEDGER_ENTRY_KIND_CORRECTION;
  }
  return v1::LEDGER_ENTRY_KIND_UNSPECIFIED;
}

v1::Statement StatementOf(absl::string_view operator_id,
                          const std::vector<const storage::LedgerEntryRow*>& entries,
                          absl::Time from, absl::Time to, const FactsOf& facts, bool with_lines) {
  v1::Statement out;
  out.set_operator_id(operator_id.data(), operator_id.size());
  *out.mutable_from() = ToProto(from);
  *out.mutable_to() = ToProto(to);
  const std::string op(operator_id.data(), operator_id.size());
  const std::string operator_account = absl::StrCat(kOperatorPrefix, op);
  const std::string commission_account = absl::StrCat(kCommissionPrefix, operator_id);
  int64_t opening = 0;
  int64_t lines = 0;
  int64_t gross = 0;
  int64_t commission = 0;
  int64_t net = 0;
  double gpu_hours = 0;
  for (const storage::LedgerEntryRow* e : entries) {
    if (e->at >= to) continue;
    const OperatorLegs legs = LegsOf(*e, operator_account, commission_account);
    if (!legs.any) continue;
    if (e->at < from) {
      opening += legs.net;
      continue;
    }
    const AllocationFacts* f = facts ? facts(e->allocation_id) : nullptr;
    const int64_t line_gross = legs.net + legs.commission;
    int32_t gpus = 0;
    double hours = 0;
    if (f != nullptr) {
      auto part = f->operators.find(op);
      if (part != f->operators.end()) {
        gpus = part->second.gpus;
        // gross / rate is the hours the amount pays for (micros / micros per hour).
        if (part->second.rate_micros_per_hour > 0) {
          hours = static_cast<double>(gpus) * static_cast<double>(line_gross) /
                  static_cast<double>(part->second.rate_micros_per_hour);
        }
      }
    }
    ++lines;
    gross += line_gross;
    commission += legs.commission;
    net += legs.net;
    gpu_hours += hours;
    if (!with_lines) continue;
    v1::StatementLine* line = out.add_lines();
    line->set_entry_id(e->id);
    *line->mutable_posted() = ToProto(e->at);
    line->set_allocation_id(absl::StrCat(e->allocation_id));
    line->set_buyer_id(BuyerOf(*e, f));
    line->set_kind(LedgerEntryKindOf(e->kind));
    line->set_gpus(gpus);
    line->set_gpu_hours(hours);
    line->set_gross_micros(line_gross);
    line->set_commission_micros(legs.commission);
    line->set_net_micros(legs.net);
  }
  out.set_line_count(lines);
  out.set_gpu_hours(gpu_hours);
  out.set_gross_micros(gross);
  out.set_commission_micros(commission);
  out.set_net_micros(net);
  out.set_opening_balance_micros(opening);
  out.set_closing_balance_micros(opening + net);
  return out;
}

v1::Invoice InvoiceOf(absl::string_view buyer_id,
                      const std::vector<const storage::LedgerEntryRow*>& entries, absl::Time from,
                      absl::Time to, const FactsOf& facts, bool with_allocations) {
  v1::Invoice out;
  out.set_buyer_id(buyer_id.data(), buyer_id.size());
  *out.mutable_from() = ToProto(from);
  *out.mutable_to() = ToProto(to);
  const std::string buyer_account = absl::StrCat(kBuyerPrefix, buyer_id);
  int64_t opening = 0;
  int64_t entry_count = 0;
  int64_t due = 0;
  std::map<int64_t, v1::InvoiceAllocation> allocations;  // by id
  for (const storage::LedgerEntryRow* e : entries) {
    if (e->at >= to) continue;
    int64_t leg = 0;
    if (!BuyerLeg(*e, buyer_account, &leg)) continue;
    const int64_t charged = -leg;
    if (e->at < from) {
      opening += charged;
      continue;
    }
    ++entry_count;
    due += charged;
    auto [it, is_new] = allocations.try_emplace(e->allocation_id);
    v1::InvoiceAllocation& a = it->second;
    if (is_new) {
      a.set_allocation_id(absl::StrCat(e->allocation_id));
      const AllocationFacts* f = facts ? facts(e->allocation_id) : nullptr;
      if (f != nullptr) {
        a.set_gpus(f->gpus);
        for (const std::string& m : f->models) a.add_models(m);
        *a.mutable_start() = ToProto(f->start);
        *a.mutable_end() = ToProto(f->end);
      }
    }
    a.set_total_micros(a.total_micros() + charged);
    if (!with_allocations) continue;
    v1::InvoiceEntry* entry = a.add_entries();
    entry->set_entry_id(e->id);
    *entry->mutable_posted() = ToProto(e->at);
    entry->set_kind(LedgerEntryKindOf(e->kind));
    entry->set_amount_micros(charged);
  }
  out.set_allocation_count(static_cast<int64_t>(allocations.size()));
  out.set_entry_count(entry_count);
  out.set_total_due_micros(due);
  out.set_opening_balance_micros(opening);
  out.set_closing_balance_micros(opening + due);
  if (with_allocations) {
    for (auto& [id, a] : allocations) *out.add_allocations() = std::move(a);
  }
  return out;
}

}  // namespace suanli::broker
