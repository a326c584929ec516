// The broker's books: what an allocation is charged, and the double-entry ledger entries that
// record it, in integer micro-units of the currency (no floating point anywhere here).
//
// Accounts are strings: "buyer:<account id>" (debited what the buyer pays), "operator:<account
// id>" (credited what the operator earns) and "commission:<operator account id>" (the broker's
// commission on that operator's sales, a sub-account per operator so that every figure can be
// attributed). For a charge C of an allocation whose slices belong to operators with rates
// w_o (sum over their slices of gpus * price per GPU-hour):
//   - buyer:<b>         -C
//   - each operator o   share_o = floor(C * w_o / W), the remainder of C going to the operator
//                       with the largest w_o (the first in account order on ties), so the shares
//                       sum to C exactly;
//   - commission:<o>    floor(share_o * commission_bps / 10000)
//   - operator:<o>      share_o - commission_o
// These are the "books of C" (BooksOf). Every change of an allocation's charge from C0 to C1 posts
// one entry whose legs are BooksOf(C1) - BooksOf(C0), legs of 0 left out: so the entries of an
// allocation always add up to exactly the books of its current charge, whatever the path (sale,
// extensions, early release), and every entry sums to 0. An entry is immutable; a correction is a
// new entry. A hold (binding quote) that lapses or is cancelled is charged 0: it posts nothing.
//
// Pure functions and values; thread-compatible.
//
//   std::map<std::string, int64_t> books = BooksOf("buyer-1", 1'000'000, {{"op-1", 8}}, 800);
//   std::optional<Entry> e = Delta(old_books, books);  // nullopt when nothing changed
#ifndef SUANLI_BROKER_LEDGER_H_
#define SUANLI_BROKER_LEDGER_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace suanli::broker {

// What an entry records (storage::LedgerEntryRow::kind).
enum class EntryKind : int32_t {
  kSale = 1,        // an allocation was granted, or a binding quote redeemed: its whole price
  kExtension = 2,   // an allocation was extended: the extra
  kRefund = 3,      // released early: the unused part goes back (negative for the buyer)
  kCorrection = 4,  // brought an allocation's books to its charge at recovery (older stores)
};

inline constexpr int kDefaultCommissionBps = 800;  // 8%
inline constexpr int kMaxCommissionBps = 10'000;

inline constexpr char kBuyerPrefix[] = "buyer:";
inline constexpr char kOperatorPrefix[] = "operator:";
inline constexpr char kCommissionPrefix[] = "commission:";

// Account -> amount in micros. Ordered, so that legs come out in a stable order.
using Books = std::map<std::string, int64_t>;

// An operator's part of an allocation: the sum over its slices of gpus * price per GPU-hour.
struct OperatorRate {
  std::string operator_id;
  int64_t rate_micros_per_hour = 0;  // >= 0
};

// Splits `amount` (>= 0) over `weights` (each >= 0) exactly: floor(amount * w / W) each, the
// remainder to the largest weight (the first of equals). All to the first when W is 0. Empty
// weights: empty result. Exact for any int64 amount and weights (128-bit intermediates).
std::vector<int64_t> Apportion(int64_t amount, const std::vector<int64_t>& weights);

// The books of charging `buyer_id` `charge` micros (>= 0) for slices of `operators` (rates of the
// same operator are added together), at `commission_bps` basis points (0..10000). Accounts with
// 0 are left out, so BooksOf(.., 0, ..) is empty.
Books BooksOf(absl::string_view buyer_id, int64_t charge,
              const std::vector<OperatorRate>& operators, int commission_bps);

// The legs that take the books from `before` to `after`: after - before per account, zeros left
// out; nullopt when they are equal.
std::optional<Books> Delta(const Books& before, const Books& after);

// Which kind of entry moves an allocation's charge from `before` to `after` (not equal).
EntryKind KindOf(int64_t before, int64_t after);

// OK when `legs` is not empty and sums to exactly 0 without overflow; INTERNAL otherwise.
absl::Status CheckBalanced(const Books& legs);

// The broker's figures of a set of legs: what buyers paid (GMV, net of refunds) and the
// commission, in total.
struct Totals {
  int64_t gmv_micros = 0;
  int64_t commission_micros = 0;
  int64_t operators_micros = 0;
};
Totals Sum(const Books& legs);

// The operator id of an "operator:"/"commission:" account, or "" for others.
std::string OperatorOf(absl::string_view account);

}  // namespace suanli::broker

#endif  // SUANLI_BROKER_LEDGER_H_
