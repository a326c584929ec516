// The market as the broker keeps it: the allocation core plus what the API needs around it
// (accounts and keys, who owns which center, the records of allocations, idempotency keys), and
// the rules of who may do what. Every call here is one API call, decided in memory: it checks
// the caller's rights and the request, changes the market or nothing, and appends to `batch` the
// rows that make the change durable. The engine commits the batch before anyone is answered.
//
// Only the engine thread calls a Market. Recovery is the normal start: Load replays the stored
// capacity journal through the same code that applied it, then restores live allocations.
//
// Errors follow the API's canonical codes: INVALID_ARGUMENT (a field is wrong; the message names
// it), NOT_FOUND, PERMISSION_DENIED (another tenant's center, node or offer), FAILED_PRECONDITION,
// ALREADY_EXISTS, RESOURCE_EXHAUSTED (no capacity fits: the v1::Rejection rides along as a
// payload, see RejectionOf). Another buyer's allocation is NOT_FOUND, never PERMISSION_DENIED,
// so that ids of other tenants' allocations are not revealed.
#ifndef SUANLI_BROKER_MARKET_H_
#define SUANLI_BROKER_MARKET_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "broker/auth.h"
#include "broker/catalog_query.h"
#include "broker/latency_histogram.h"
#include "broker/ledger.h"
#include "broker/settlement.h"
#include "scheduler/matcher.h"
#include "storage/store.h"
#include "suanli/v1/admin.pb.h"
#include "suanli/v1/market.pb.h"
#include "suanli/v1/operator.pb.h"
#include "suanli/v1/ops.pb.h"

namespace suanli::broker {

// The kinds of the capacity journal (storage::CapacityRow::kind) and the message each payload is.
enum class CapacityKind : int32_t {
  kRegisterCenter = 1,  // v1::Center, operator_id set
  kAddDomain = 2,       // v1::FabricDomain
  kAddNodes = 3,        // v1::AddNodesRequest
  kRemoveNode = 4,      // v1::RemoveNodeRequest
  kSetNodeHealth = 5,   // v1::SetNodeHealthRequest
  kCreateOffer = 6,     // v1::Offer, `from` set
  kWithdrawOffer = 7,   // v1::WithdrawOfferRequest
};

// The type URL under which a RESOURCE_EXHAUSTED status carries a serialized v1::Rejection.
inline constexpr char kRejectionTypeUrl[] = "type.googleapis.com/suanli.v1.Rejection";
// The rejection a status carries, if any.
std::optional<v1::Rejection> RejectionOf(const absl::Status& status);

// What is on sale, as published for catalog searches.
struct CatalogSnapshot {
  std::vector<v1::CatalogEntry> entries;  // cheapest first
  std::vector<CatalogEntryView> views;    // the same entries, for the query language
  absl::Time at;
};

struct MarketOptions {
  // The broker's commission on every sale, in basis points of the price (0..10000; clamped).
  int commission_bps = kDefaultCommissionBps;
};

class Market {
 public:
  // `keys` is kept up to date with every key and account change; it outlives the market.
  explicit Market(KeyRing* keys, MarketOptions options = MarketOptions());
  ~Market();
  Market(const Market&) = delete;
  Market& operator=(const Market&) = delete;

  // Rebuilds the market from a store's contents. Allocations that ended while the broker was
  // down end now; their rows go into `batch`. DATA_LOSS when the contents do not replay.
  absl::Status Load(const storage::Contents& contents, absl::Time now, storage::Batch* batch);

  // First start: makes sure an admin account exists and `key` (when given) authenticates it.
  // Returns the key to write to the admin key file when a new one was made, else "".
  // FAILED_PRECONDITION when `key` is unknown but admins exist (a key file of another store).
  absl::StatusOr<std::string> Bootstrap(const std::optional<NewKey>& key, absl::Time now,
                                        storage::Batch* batch);

  // ---- AdminService (admin principals only).
  absl::StatusOr<v1::CreateAccountResponse> CreateAccount(const Principal& p,
                                                          const v1::CreateAccountRequest& r,
                                                          absl::Time now, storage::Batch* batch);
  absl::StatusOr<v1::ListAccountsResponse> ListAccounts(const Principal& p) const;
  absl::StatusOr<v1::CreateApiKeyResponse> CreateApiKey(const Principal& p,
                                                        const v1::CreateApiKeyRequest& r,
                                                        absl::Time now, storage::Batch* batch);
  absl::StatusOr<v1::RevokeApiKeyResponse> RevokeApiKey(const Principal& p,
                                                        const v1::RevokeApiKeyRequest& r,
                                                        storage::Batch* batch);

  // ---- OperatorService (operators on their own capacity; admins on any).
  absl::StatusOr<v1::Center> RegisterCenter(const Principal& p, const v1::RegisterCenterRequest& r,
                                            absl::Time now, storage::Batch* batch);
  absl::StatusOr<v1::FabricDomain> AddDomain(const Principal& p, const v1::AddDomainRequest& r,
                                             absl::Time now, storage::Batch* batch);
  absl::StatusOr<v1::AddNodesResponse> AddNodes(const Principal& p, const v1::AddNodesRequest& r,
                                                absl::Time now, storage::Batch* batch);
  absl::StatusOr<v1::RemoveNodeResponse> RemoveNode(const Principal& p,
                                                    const v1::RemoveNodeRequest& r, absl::Time now,
                                                    storage::Batch* batch);
  absl::StatusOr<v1::Node> SetNodeHealth(const Principal& p, const v1::SetNodeHealthRequest& r,
                                         absl::Time now, storage::Batch* batch);
  absl::StatusOr<v1::Offer> CreateOffer(const Principal& p, const v1::CreateOfferRequest& r,
                                        absl::Time now, storage::Batch* batch);
  absl::StatusOr<v1::Offer> WithdrawOffer(const Principal& p, const v1::WithdrawOfferRequest& r,
                                          absl::Time now, storage::Batch* batch);
  absl::StatusOr<v1::ListCapacityResponse> ListCapacity(const Principal& p,
                                                        const v1::ListCapacityRequest& r) const;
  absl::StatusOr<v1::ListSoldAllocationsResponse> ListSoldAllocations(
      const Principal& p, const v1::ListSoldAllocationsRequest& r, absl::Time now) const;

  // ---- MarketService (buyers on their own allocations; admins as buyers).
  absl::StatusOr<v1::QuoteResponse> Quote(const Principal& p, const v1::QuoteRequest& r,
                                          absl::Time now, storage::Batch* batch);
  absl::StatusOr<v1::Allocation> Allocate(const Principal& p, const v1::AllocateRequest& r,
                                          absl::Time now, storage::Batch* batch);
  absl::StatusOr<v1::Allocation> GetAllocation(const Principal& p,
                                               const v1::GetAllocationRequest& r) const;
  absl::StatusOr<v1::ListAllocationsResponse> ListAllocations(
      const Principal& p, const v1::ListAllocationsRequest& r) const;
  absl::StatusOr<v1::Allocation> ExtendAllocation(const Principal& p,
                                                  const v1::ExtendAllocationRequest& r,
                                                  absl::Time now, storage::Batch* batch);
  absl::StatusOr<v1::Allocation> ReleaseAllocation(const Principal& p,
                                                   const v1::ReleaseAllocationRequest& r,
                                                   absl::Time now, storage::Batch* batch);
  // The caller's allocations (live ones, or all), oldest first: where a watch starts.
  std::vector<v1::Allocation> AllocationsOf(const Principal& p, bool include_ended) const;

  // ---- OpsService (admins; operators see only their own capacity). The market's figures over
  // [from, to), see docs/LEDGER.md for what each one counts. INVALID_ARGUMENT when from >= to.
  absl::StatusOr<v1::GetMarketStatsResponse> MarketStats(const Principal& p,
                                                         const v1::GetMarketStatsRequest& r,
                                                         absl::Time now) const;
  // Every ledger entry, in id order (the books; for tests and audits).
  const std::vector<storage::LedgerEntryRow>& Ledger() const { return ledger_; }

  // ---- Settlement (docs/LEDGER.md): statements and invoices over a period, summed from the
  // ledger (broker/settlement.h). The period defaults as in MarketStats; INVALID_ARGUMENT when
  // from >= to. An empty account id means the caller's own account.
  // OperatorService.GetStatement: operators their own (PERMISSION_DENIED for another's), admins
  // any account's (NOT_FOUND for an unknown one); buyers PERMISSION_DENIED.
  absl::StatusOr<v1::Statement> OperatorStatement(const Principal& p,
                                                  const v1::GetStatementRequest& r,
                                                  absl::Time now) const;
  // MarketService.GetInvoice: buyers their own (PERMISSION_DENIED for another's), admins any
  // account's (NOT_FOUND for an unknown one); operators PERMISSION_DENIED.
  absl::StatusOr<v1::Invoice> BuyerInvoice(const Principal& p, const v1::GetInvoiceRequest& r,
                                           absl::Time now) const;
  // OpsService.GetSettlementReport: admins every operator's statement and every buyer's invoice
  // (without their lines); an operator its own statement only; buyers PERMISSION_DENIED.
  absl::StatusOr<v1::GetSettlementReportResponse> SettlementReport(
      const Principal& p, const v1::GetSettlementReportRequest& r, absl::Time now) const;

  // ---- Time: activations, expiries and lapses due by `now`.
  void Advance(absl::Time now, storage::Batch* batch);
  // When Advance may next have something to do (absl::InfiniteFuture() when nothing is pending).
  absl::Time NextEventTime() const;

  // ---- For the engine.
  // Makes a batch ready to commit: one row per allocation (the last), and for each allocation
  // it writes, the GPUs it holds on each node (storage::ClaimRow), so that the store can refuse
  // an oversold node; and one storage::DecisionMinuteRow, with the minute's full counts, per
  // minute whose decision counts changed since the last Seal.
  void Seal(storage::Batch* batch);
  // What is on sale now.
  std::shared_ptr<const CatalogSnapshot> BuildCatalog(absl::Time now) const;
  // Allocations changed since the last call, for watchers; and whether capacity or free GPUs
  // changed (the catalog is stale).
  std::vector<v1::Allocation> TakeChanged();
  // Forgets the changed allocations without copying them (nobody is watching).
  void ForgetChanged() { changed_.clear(); }
  bool TakeCatalogDirty();
  // Invariants of the core (slow; for tests and audits).
  scheduler::AuditReport Audit() const;
  scheduler::MarketTotals Totals() const;

 private:
  struct AllocRec {
    v1::Allocation a;
    absl::Time held_end;
    std::vector<std::string> offer_ids;  // per slice
  };
  struct IdemRec {
    std::string request;  // serialized AllocateRequest
    uint64_t allocation_id = 0;
    std::string rejection;
  };

  absl::Status ApplyCapacity(CapacityKind kind, const std::string& payload,
                             const std::string& actor, absl::Time at);
  void Journal(CapacityKind kind, const google::protobuf::Message& m, const Principal& p,
               absl::Time at, storage::Batch* batch);
  absl::Status CheckCenterOwner(const Principal& p, const std::string& center_id) const;
  absl::StatusOr<const AllocRec*> OwnAllocation(const Principal& p, const std::string& id) const;
  // Makes or refreshes the record of a live allocation of the core.
  void Record(const scheduler::Allocation& a, const v1::AllocationRequest& request, absl::Time now,
              storage::Batch* batch);
  // Turns the core's pending events into record changes and rows.
  void DrainEvents(storage::Batch* batch);
  // Writes the allocation's row, and posts the ledger entry (at `at`) that brings its books to
  // its current charge, if they differ.
  void Persist(uint64_t id, absl::Time at, storage::Batch* batch);
  void PostCharge(uint64_t id, absl::Time at, storage::Batch* batch,
                  std::optional<EntryKind> kind = std::nullopt);
  // Counts an allocation decision (Allocate with a request, or a hold) in its minute, with the
  // time the core took to decide it.
  void CountDecision(absl::Time now, const scheduler::Decision& d, absl::Duration took);
  // Adds ledger_[i] to the index of entries by party.
  void IndexEntry(size_t i);
  // The entries (id order) with a leg of `party`: "operator:<id>" (operator:<id> or
  // commission:<id> legs) or "buyer:<id>".
  std::vector<const storage::LedgerEntryRow*> EntriesOf(const std::string& party) const;
  // What statements and invoices show of allocations (settlement.h), looked up as needed and
  // remembered in `cache`.
  FactsOf Facts(absl::flat_hash_map<int64_t, AllocationFacts>* cache) const;
  // `a` as the API shows it. `offers` (when given) names the offer of each of a.slices, in
  // order; otherwise each slice gets an offer that covers it.
  v1::Allocation Preview(const scheduler::Allocation& a, const v1::AllocationRequest& r,
                         const std::vector<std::string>* offers = nullptr) const;
  std::string OfferCovering(const std::string& node_id, int64_t price, absl::Time start,
                            absl::Time end) const;
  std::string NewAccountId(v1::Role role);

  KeyRing* keys_;
  MarketOptions options_;
  std::unique_ptr<scheduler::Matcher> core_;
  int64_t capacity_seq_ = 0;
  // Accounts and keys.
  absl::btree_map<std::string, v1::Account> accounts_;  // by id
  absl::flat_hash_map<std::string, std::string> account_by_name_;
  absl::btree_map<std::string, storage::ApiKeyRow> api_keys_;  // by key id
  int64_t account_seq_ = 0;
  // Capacity as registered (for listing, ownership and the catalog's attributes).
  absl::btree_map<std::string, v1::Center> centers_;
  absl::btree_map<std::string, v1::FabricDomain> domains_;  // by "center/domain"
  absl::btree_map<std::string, std::vector<std::string>> domain_nodes_;
  absl::btree_map<std::string, v1::Node> nodes_;
  absl::btree_map<std::string, v1::Offer> offers_;
  absl::flat_hash_map<std::string, std::vector<std::string>> node_offers_;
  // Allocations, every one ever made, by id; and by buyer in id order.
  absl::btree_map<uint64_t, AllocRec> allocs_;
  absl::flat_hash_map<std::string, std::vector<uint64_t>> by_buyer_;
  absl::flat_hash_map<std::string, IdemRec> idem_;  // by buyer + '\n' + key
  absl::flat_hash_set<uint64_t> changed_;
  bool catalog_dirty_ = true;
  // The books: every entry (id order), and what is posted per allocation.
  std::vector<storage::LedgerEntryRow> ledger_;
  // Positions in ledger_ by party ("operator:<id>" for the operator's and its commission's legs,
  // "buyer:<id>"), increasing: what statements and invoices read.
  absl::flat_hash_map<std::string, std::vector<size_t>> entries_by_party_;
  absl::flat_hash_map<uint64_t, Books> posted_;
  int64_t ledger_seq_ = 0;
  // Decisions per minute (unix minute -> counts), stored (storage::DecisionMinuteRow) so that
  // they survive a restart: Seal writes the minutes changed since the last batch, Load reads
  // them back.
  struct DecisionCounts {
    int64_t requests = 0;
    int64_t grants = 0;
    absl::btree_map<std::string, int64_t> rejections;  // RejectReason name -> count
    LatencyHistogram latency;  // how long the core took to decide each of them
  };
  // The stored form of a minute's counts (DecisionMinuteRow::counts): text, one record a line,
  // fields separated by single spaces, integers in decimal:
  //   suanli-decisions 1            the format and its version (a newer one is not read)
  //   requests N
  //   grants N
  //   rejected REASON N             one per reason (RejectReason name), by name
  //   latency MIN MAX               nanoseconds; only when some decision was timed
  //   bucket B N                    one per used LatencyHistogram bucket, increasing
  // Decode returns false for anything else, a repeated or missing record, or a count below 0.
  static std::string EncodeDecisionCounts(const DecisionCounts& c);
  static bool DecodeDecisionCounts(absl::string_view text, DecisionCounts* c);
  absl::btree_map<int64_t, DecisionCounts> decisions_;
  absl::btree_set<int64_t> decisions_changed_;  // minutes counted since the last Seal
  // When withdrawn offers were withdrawn (for offered hours).
  absl::flat_hash_map<std::string, absl::Time> withdrawn_at_;
  // Nodes removed from the market, kept so that the periods they were on sale in still count
  // their offered hours.
  struct RetiredNode {
    v1::Node node;
    std::vector<std::string> offers;  // the node's offers when it was removed
    absl::Time removed_at;
  };
  std::vector<RetiredNode> retired_nodes_;
};

}  // namespace suanli::broker

#endif  // SUANLI_BROKER_MARKET_H_
