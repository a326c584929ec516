#include "broker/ledger.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace suanli::broker {

std::vector<int64_t> Apportion(int64_t amount, const std::vector<int64_t>& weights) {
  std::vector<int64_t> out(weights.size(), 0);
  if (weights.empty()) return out;
  __int128 total = 0;
  size_t largest = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    total += weights[i];
    if (weights[i] > weights[largest]) largest = i;
  }
  if (total <= 0) {
    out[0] = amount;
    return out;
  }
  int64_t given = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    out[i] = static_cast<int64_t>(static_cast<__int128>(amount) * weights[i] / total);
    given += out[i];
  }
  out[largest] += amount - given;
  return out;
}

Books BooksOf(absl::string_view buyer_id, int64_t charge,
              const std::vector<OperatorRate>& operators, int commission_bps) {
  Books books;
  if (charge == 0) return books;
  std::map<std::string, int64_t> rates;  // by operator, so that ties go to the first in order
  for (const OperatorRate& o : operators) rates[o.operator_id] += o.rate_micros_per_hour;
  std::vector<std::string> ids;
  std::vector<int64_t> weights;
  for (const auto& [id, rate] : rates) {
    ids.push_back(id);
    weights.push_back(rate);
  }
  books[absl::StrCat(kBuyerPrefix, buyer_id)] -= charge;
  if (ids.empty()) {
    // Nobody to pay (cannot happen for a granted allocation): the broker keeps it.
    books[absl::StrCat(kCommissionPrefix)] += charge;
    return books;
  }
  const std::vector<int64_t> shares = Apportion(charge, weights);
  for (size_t i = 0; i < ids.size(); ++i) {
    const int64_t commission =
        static_cast<int64_t>(static_cast<__int128>(shares[i]) * commission_bps / 10'000);
    books[absl::StrCat(kOperatorPrefix, ids[i])] += shares[i] - commission;
    books[absl::StrCat(kCommissionPrefix, ids[i])] += commission;
  }
  for (auto it = books.begin(); it != books.end();) {
    it = it->second == 0 ? books.erase(it) : std::next(it);
  }
  return books;
}

std::optional<Books> Delta(const Books& before, const Books& after) {
  Books legs = after;
  for (const auto& [account, amount] : before) legs[account] -= amount;
  for (auto it = legs.begin(); it != legs.end();) {
    it = it->second == 0 ? legs.erase(it) : std::next(it);
  }
  if (legs.empty()) return std::nullopt;
  return legs;
}

EntryKind KindOf(int64_t before, int64_t after) {
  if (before == 0) return EntryKind::kSale;
  return after > before ? EntryKind::kExtension : EntryKind::kRefund;
}

absl::Status CheckBalanced(const Books& legs) {
  if (legs.empty()) return absl::InternalError("ledger: an entry without legs");
  int64_t sum = 0;
  for (const auto& [account, amount] : legs) {
    if (__builtin_add_overflow(sum, amount, &sum)) {
      return absl::InternalError("ledger: an entry overflows int64");
    }
  }
  if (sum != 0) return absl::InternalError(absl::StrCat("ledger: an entry sums to ", sum));
  return absl::OkStatus();
}

Totals Sum(const Books& legs) {
  Totals t;
  for (const auto& [account, amount] : legs) {
    if (absl::StartsWith(account, kBuyerPrefix)) {
      t.gmv_micros -= amount;
    } else if (absl::StartsWith(account, kCommissionPrefix)) {
      t.commission_micros += amount;
    } else if (absl::StartsWith(account, kOperatorPrefix)) {
      t.operators_micros += amount;
    }
  }
  return t;
}

std::string OperatorOf(absl::string_view account) {
  for (absl::string_view prefix : {kOperatorPrefix, kCommissionPrefix}) {
    if (absl::StartsWith(account, prefix)) {
      const absl::string_view rest = account.substr(prefix.size());
      return {rest.data(), rest.size()};
    }
  }
  return std::string();
}

}  // namespace suanli::broker
