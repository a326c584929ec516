#include "broker/market.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "broker/validate.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace suanli::broker {
namespace {

using scheduler::AllocationState;
using scheduler::EndReason;

constexpr int kDefaultPage = 100;
constexpr int kMaxPage = 1000;

bool IsAdmin(const Principal& p) { return p.role == v1::ROLE_ADMIN; }

absl::Status Require(const Principal& p, v1::Role role, absl::string_view what) {
  if (p.role == role || IsAdmin(p)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(what, " needs a ", RoleName(role),
                                                  " key; this key is ", RoleName(p.role), "'s"));
}

// Deterministic bytes of a message, for comparing requests.
std::string Canonical(const google::protobuf::Message& message) {
  std::unique_ptr<google::protobuf::Message> known(message.New());
  known->CopyFrom(message);
  known->DiscardUnknownFields();
  const google::protobuf::Message& m = *known;
  std::string out;
  google::protobuf::io::StringOutputStream raw(&out);
  google::protobuf::io::CodedOutputStream coded(&raw);
  coded.SetSerializationDeterministic(true);
  m.SerializeToCodedStream(&coded);
  coded.Trim();
  return std::string(out.data(), static_cast<size_t>(coded.ByteCount()));
}

absl::StatusOr<int> PageSize(const v1::PageRequest& page) {
  if (page.page_size() < 0 || page.page_size() > kMaxPage) {
    return absl::InvalidArgumentError(
        absl::StrCat("page.page_size: must be 0..", kMaxPage, " (0: ", kDefaultPage, ")"));
  }
  return page.page_size() == 0 ? kDefaultPage : page.page_size();
}

// Page tokens of allocation lists: the id to continue below (lists run newest first).
absl::StatusOr<uint64_t> PageStart(const v1::PageRequest& page) {
  if (page.page_token().empty()) return std::numeric_limits<uint64_t>::max();
  uint64_t v = 0;
  if (!absl::SimpleAtoi(page.page_token(), &v)) {
    return absl::InvalidArgumentError("page.page_token: not a token this broker gave out");
  }
  return v;
}

absl::StatusOr<uint64_t> ParseAllocationId(absl::string_view field, absl::string_view id) {
  uint64_t v = 0;
  if (id.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": required"));
  if (!absl::SimpleAtoi(id, &v) || v == 0) {
    return absl::NotFoundError(absl::StrCat("allocation '", id, "' not found"));
  }
  return v;
}

uint64_t IdOf(const v1::Allocation& a) {
  uint64_t v = 0;
  (void)absl::SimpleAtoi(a.id(), &v);  // ids are made here, always decimal
  return v;
}

v1::AllocationState StateToProto(AllocationState s) {
  switch (s) {
    case AllocationState::kHeld:
      return v1::ALLOCATION_STATE_HELD;
    case AllocationState::kReserved:
      return v1::ALLOCATION_STATE_RESERVED;
    case AllocationState::kActive:
      return v1::ALLOCATION_STATE_ACTIVE;
    case AllocationState::kEnded:
      return v1::ALLOCATION_STATE_ENDED;
  }
  return v1::ALLOCATION_STATE_UNSPECIFIED;
}

v1::EndReason EndToProto(EndReason r) {
  switch (r) {
    case EndReason::kReleased:
      return v1::END_REASON_RELEASED;
    case EndReason::kExpired:
      return v1::END_REASON_EXPIRED;
    case EndReason::kLapsed:
      return v1::END_REASON_LAPSED;
    case EndReason::kRedeemed:
      return v1::END_REASON_REDEEMED;
    case EndReason::kNone:
      break;
  }
  return v1::END_REASON_UNSPECIFIED;
}

absl::Time TimeOf(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

int64_t RateOf(const v1::Allocation& a) {
  int64_t rate = 0;
  for (const v1::Slice& s : a.slices()) rate += int64_t{s.gpus()} * s.price_micros_per_gpu_hour();
  return rate;
}

v1::Rejection RejectionToProto(const scheduler::Rejection& r) {
  v1::Rejection out;
  out.set_reason(ToProto(r.reason));
  if (r.min_ceiling.has_value()) out.set_min_ceiling_micros(*r.min_ceiling);
  out.set_largest_block_gpus(r.largest_block);
  if (r.earliest_start.has_value()) *out.mutable_earliest_start() = ToProto(*r.earliest_start);
  out.set_message(r.message);
  return out;
}

absl::Status Exhausted(const v1::Rejection& r) {
  absl::Status s = absl::ResourceExhaustedError(absl::StrCat(
      "no capacity fits: ", r.message().empty() ? RejectReason_Name(r.reason()) : r.message()));
  s.SetPayload(kRejectionTypeUrl, absl::Cord(r.SerializeAsString()));
  return s;
}

std::string IdemKey(absl::string_view buyer, absl::string_view key) {
  return absl::StrCat(buyer, "\n", key);
}

}  // namespace

std::optional<v1::Rejection> RejectionOf(const absl::Status& status) {
  auto payload = status.GetPayload(kRejectionTypeUrl);
  if (!payload.has_value()) return std::nullopt;
  v1::Rejection r;
  const absl::string_view bytes = payload->Flatten();
  if (!r.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return std::nullopt;
  return r;
}

Market::Market(KeyRing* keys, MarketOptions options)
    : keys_(keys), options_(options), core_(std::make_unique<scheduler::Matcher>()) {
  options_.commission_bps = std::clamp(options_.commission_bps, 0, kMaxCommissionBps);
}
Market::~Market() = default;

// ------------------------------------------------------------------------------------ loading

absl::Status Market::Load(const storage::Contents& contents, absl::Time now,
                          storage::Batch* batch) {
  // The books first: restoring allocations below may post entries on top of them.
  for (const storage::LedgerEntryRow& e : contents.ledger) {
    ledger_seq_ = std::max(ledger_seq_, e.id);
    Books& posted = posted_[static_cast<uint64_t>(e.allocation_id)];
    for (const storage::LedgerLeg& leg : e.legs) posted[leg.account] += leg.amount_micros;
    ledger_.push_back(e);
    IndexEntry(ledger_.size() - 1);
  }
  for (const storage::AccountRow& row : contents.accounts) {
    v1::Account a;
    a.set_id(row.id);
    a.set_role(static_cast<v1::Role>(row.role));
    a.set_name(row.name);
    *a.mutable_created() = ToProto(row.created);
    account_by_name_[row.name] = row.id;
    accounts_[row.id] = std::move(a);
    ++account_seq_;
  }
  std::vector<KeyRing::Key> ring;
  ring.reserve(contents.api_keys.size());
  for (const storage::ApiKeyRow& row : contents.api_keys) {
    auto it = accounts_.find(row.account_id);
    if (it == accounts_.end()) {
      return absl::DataLossError(
          absl::StrCat("api key ", row.key_id, " belongs to unknown account ", row.account_id));
    }
    ring.push_back({row.key_id, row.secret_hash, {row.account_id, it->second.role()}, row.revoked});
    api_keys_[row.key_id] = row;
  }
  for (const storage::CapacityRow& row : contents.capacity) {
    absl::Status s =
        ApplyCapacity(static_cast<CapacityKind>(row.kind), row.payload, row.actor, row.at);
    if (!s.ok()) {
      return absl::DataLossError(
          absl::StrCat("capacity journal entry ", row.seq, " does not replay: ", s.message()));
    }
    capacity_seq_ = row.seq;
  }
  // The clock may read earlier than what the store saw (stepped back across a restart): time
  // never goes backwards for the market. A start-now hold started when it was made.
  now = std::max(now, core_->now());
  for (const storage::AllocationRow& row : contents.allocations) {
    if (row.state == v1::ALLOCATION_STATE_HELD && row.held_end != absl::Time()) {
      v1::Allocation a;
      if (a.ParseFromString(row.payload) && row.held_end > TimeOf(a.end())) {
        now = std::max(now, TimeOf(a.start()));
      }
    }
  }
  absl::flat_hash_set<int64_t> claimed;
  for (const storage::ClaimRow& c : contents.claims) claimed.insert(c.allocation_id);
  uint64_t max_id = 0;
  for (const storage::AllocationRow& row : contents.allocations) {
    AllocRec rec;
    if (!rec.a.ParseFromString(row.payload)) {
      return absl::DataLossError(absl::StrCat("allocation ", row.id, " cannot be read back"));
    }
    rec.held_end = row.held_end;
    if (!row.offer_ids.empty()) rec.offer_ids = absl::StrSplit(row.offer_ids, ',');
    const uint64_t id = static_cast<uint64_t>(row.id);
    max_id = std::max(max_id, id);
    by_buyer_[row.buyer_id].push_back(id);
    const v1::AllocationState st = rec.a.state();
    allocs_[id] = std::move(rec);
    if (st == v1::ALLOCATION_STATE_ENDED) continue;
    const AllocRec& r = allocs_[id];
    scheduler::RestoreSpec spec;
    spec.id = id;
    spec.buyer = r.a.buyer_id();
    spec.start = TimeOf(r.a.start());
    spec.end = TimeOf(r.a.end());
    spec.state = st == v1::ALLOCATION_STATE_HELD       ? AllocationState::kHeld
                 : st == v1::ALLOCATION_STATE_RESERVED ? AllocationState::kReserved
                                                       : AllocationState::kActive;
    spec.hold_expires = TimeOf(r.a.hold_expires());
    spec.held_end = r.held_end;
    for (int i = 0; i < r.a.slices_size(); ++i) {
      const v1::Slice& sl = r.a.slices(i);
      spec.slices.push_back({sl.node_id(), sl.gpus(), sl.price_micros_per_gpu_hour(),
                             i < static_cast<int>(r.offer_ids.size()) ? r.offer_ids[i] : ""});
    }
    absl::StatusOr<scheduler::Allocation> restored = core_->Restore(spec, now);
    if (!restored.ok()) {
      return absl::DataLossError(
          absl::StrCat("allocation ", id, " cannot be restored: ", restored.status().message()));
    }
    // A reservation whose start passed while the broker was down is active now.
    AllocRec& stored = allocs_[id];
    if (restored->state != AllocationState::kEnded &&
        StateToProto(restored->state) != stored.a.state()) {
      stored.a.set_state(StateToProto(restored->state));
      Persist(id, now, batch);
    } else if (!claimed.contains(row.id)) {
      Persist(id, now, batch);  // stored before the store kept claims: write them now
    }
  }
  for (const storage::DecisionMinuteRow& row : contents.decision_minutes) {
    DecisionCounts c;
    if (!DecodeDecisionCounts(row.counts, &c)) {
      return absl::DataLossError(
          absl::StrCat("decision counts of minute ", row.minute, " cannot be read back"));
    }
    decisions_[row.minute] = std::move(c);
  }
  for (const storage::IdempotencyRow& row : contents.idempotency) {
    idem_[IdemKey(row.buyer_id, row.key)] =
        IdemRec{row.request, static_cast<uint64_t>(row.allocation_id), row.rejection};
  }
  core_->ReserveIds(max_id + 1);
  core_->Advance(now);
  DrainEvents(batch);
  // Books of allocations stored before the ledger existed (or otherwise behind their charge)
  // are brought to their charge by a correcting entry.
  for (const auto& [id, rec] : allocs_) PostCharge(id, now, batch, EntryKind::kCorrection);
  keys_->ReplaceAll(ring);
  catalog_dirty_ = true;
  return absl::OkStatus();
}

absl::StatusOr<std::string> Market::Bootstrap(const std::optional<NewKey>& key, absl::Time now,
                                              storage::Batch* batch) {
  const v1::Account* admin = nullptr;
  for (const auto& [id, a] : accounts_) {
    if (a.role() == v1::ROLE_ADMIN) {
      admin = &a;
      break;
    }
  }
  if (key.has_value()) {
    auto known = api_keys_.find(key->key_id);
    if (known != api_keys_.end()) {
      auto owner = accounts_.find(known->second.account_id);
      if (known->second.revoked || known->second.secret_hash != key->secret_hash ||
          owner == accounts_.end() || owner->second.role() != v1::ROLE_ADMIN) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the admin key file holds key ", key->key_id,
            ", which is revoked, wrong or not an admin's; move the file away and start again to "
            "have a new admin key made"));
      }
      return std::string();
    }
  }
  if (key.has_value() && admin != nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the admin key file holds key ", key->key_id,
        ", which this store does not know (a key file of another store?); move the file away "
        "and start again to have a new admin key made"));
  }
  std::string account_id;
  if (admin == nullptr) {
    account_id = NewAccountId(v1::ROLE_ADMIN);
    v1::Account a;
    a.set_id(account_id);
    a.set_role(v1::ROLE_ADMIN);
    std::string name = "admin";
    while (account_by_name_.contains(name)) name += "-";
    a.set_name(name);
    *a.mutable_created() = ToProto(now);
    batch->accounts.push_back({a.id(), a.role(), a.name(), now});
    account_by_name_[a.name()] = a.id();
    accounts_[a.id()] = std::move(a);
  } else {
    account_id = admin->id();
  }
  const NewKey k = key.has_value() ? *key : MakeKey();
  storage::ApiKeyRow row{k.key_id, account_id, k.secret_hash, now, false};
  api_keys_[k.key_id] = row;
  batch->api_keys.push_back(row);
  keys_->Put(k.key_id, k.secret_hash, {account_id, v1::ROLE_ADMIN}, false);
  return key.has_value() ? std::string() : k.key;
}

// ------------------------------------------------------------------------------------ accounts

std::string Market::NewAccountId(v1::Role role) {
  const char* prefix = role == v1::ROLE_ADMIN      ? "admin"
                       : role == v1::ROLE_OPERATOR ? "op"
                                                   : "buyer";
  std::string id;
  do {
    id = absl::StrCat(prefix, "-", ++account_seq_);
  } while (accounts_.contains(id));
  return id;
}

absl::StatusOr<v1::CreateAccountResponse> Market::CreateAccount(const Principal& p,
                                                                const v1::CreateAccountRequest& r,
                                                                absl::Time now,
                                                                storage::Batch* batch) {
  if (absl::Status s = Require(p, v1::ROLE_ADMIN, "creating accounts"); !s.ok()) return s;
  if (absl::Status s = ValidateRole(r.role()); !s.ok()) return s;
  if (absl::Status s = ValidateAccountName(r.name()); !s.ok()) return s;
  if (account_by_name_.contains(r.name())) {
    return absl::AlreadyExistsError(absl::StrCat("an account named '", r.name(), "' exists"));
  }
  v1::CreateAccountResponse out;
  v1::Account* a = out.mutable_account();
  a->set_id(NewAccountId(r.role()));
  a->set_role(r.role());
  a->set_name(r.name());
  *a->mutable_created() = ToProto(now);
  const NewKey k = MakeKey();
  out.set_api_key(k.key);
  batch->accounts.push_back({a->id(), a->role(), a->name(), now});
  storage::ApiKeyRow row{k.key_id, a->id(), k.secret_hash, now, false};
  batch->api_keys.push_back(row);
  api_keys_[k.key_id] = row;
  account_by_name_[a->name()] = a->id();
  accounts_[a->id()] = *a;
  keys_->Put(k.key_id, k.secret_hash, {a->id(), a->role()}, false);
  return out;
}

absl::StatusOr<v1::ListAccountsResponse> Market::ListAccounts(const Principal& p) const {
  if (absl::Status s = Require(p, v1::ROLE_ADMIN, "listing accounts"); !s.ok()) return s;
  v1::ListAccountsResponse out;
  for (const auto& [id, a] : accounts_) *out.add_accounts() = a;
  std::sort(out.mutable_accounts()->begin(), out.mutable_accounts()->end(),
            [](const v1::Account& x, const v1::Account& y) {
              return std::make_pair(TimeOf(x.created()), x.id()) <
                     std::make_pair(TimeOf(y.created()), y.id());
            });
  return out;
}

absl::StatusOr<v1::CreateApiKeyResponse> Market::CreateApiKey(const Principal& p,
                                                              const v1::CreateApiKeyRequest& r,
                                                              absl::Time now,
                                                              storage::Batch* batch) {
  if (absl::Status s = Require(p, v1::ROLE_ADMIN, "creating API keys"); !s.ok()) return s;
  auto it = accounts_.find(r.account_id());
  if (it == accounts_.end()) {
    return absl::NotFoundError(absl::StrCat("account '", r.account_id(), "' not found"));
  }
  const NewKey k = MakeKey();
  storage::ApiKeyRow row{k.key_id, r.account_id(), k.secret_hash, now, false};
  batch->api_keys.push_back(row);
  api_keys_[k.key_id] = row;
  keys_->Put(k.key_id, k.secret_hash, {r.account_id(), it->second.role()}, false);
  v1::CreateApiKeyResponse out;
  out.mutable_key()->set_key_id(k.key_id);
  out.mutable_key()->set_account_id(r.account_id());
  *out.mutable_key()->mutable_created() = ToProto(now);
  out.set_api_key(k.key);
  return out;
}

absl::StatusOr<v1::RevokeApiKeyResponse> Market::RevokeApiKey(const Principal& p,
                                                              const v1::RevokeApiKeyRequest& r,
                                                              storage::Batch* batch) {
  if (absl::Status s = Require(p, v1::ROLE_ADMIN, "revoking API keys"); !s.ok()) return s;
  auto it = api_keys_.find(r.key_id());
  if (it == api_keys_.end()) {
    return absl::NotFoundError(absl::StrCat("API key '", r.key_id(), "' not found"));
  }
  storage::ApiKeyRow& row = it->second;
  if (!row.revoked) {
    row.revoked = true;
    batch->api_keys.push_back(row);
    keys_->Put(row.key_id, row.secret_hash, {row.account_id, accounts_[row.account_id].role()},
               true);
  }
  v1::RevokeApiKeyResponse out;
  out.mutable_key()->set_key_id(row.key_id);
  out.mutable_key()->set_account_id(row.account_id);
  *out.mutable_key()->mutable_created() = ToProto(row.created);
  out.mutable_key()->set_revoked(true);
  return out;
}

// ------------------------------------------------------------------------------------ capacity

absl::Status Market::CheckCenterOwner(const Principal& p, const std::string& center_id) const {
  auto it = centers_.find(center_id);
  if (it == centers_.end()) {
    return absl::NotFoundError(absl::StrCat("center '", center_id, "' not found"));
  }
  if (!IsAdmin(p) && it->second.operator_id() != p.account_id) {
    return absl::PermissionDeniedError(
        absl::StrCat("center '", center_id, "' belongs to another operator"));
  }
  return absl::OkStatus();
}

void Market::Journal(CapacityKind kind, const google::protobuf::Message& m, const Principal& p,
                     absl::Time at, storage::Batch* batch) {
  // Fields this broker does not know are neither kept nor replayed.
  std::unique_ptr<google::protobuf::Message> known(m.New());
  known->CopyFrom(m);
  known->DiscardUnknownFields();
  batch->capacity.push_back(
      {++capacity_seq_, static_cast<int32_t>(kind), p.account_id, at, known->SerializeAsString()});
  catalog_dirty_ = true;
}

absl::Status Market::ApplyCapacity(CapacityKind kind, const std::string& payload,
                                   const std::string& actor, absl::Time at) {
  switch (kind) {
    case CapacityKind::kRegisterCenter: {
      v1::Center c;
      if (!c.ParseFromString(payload)) return absl::DataLossError("unreadable center");
      c.DiscardUnknownFields();
      absl::StatusOr<scheduler::CenterSpec> spec = ValidateCenter(c, c.operator_id());
      if (!spec.ok()) return spec.status();
      if (absl::Status s = core_->AddCenter(*spec); !s.ok()) return s;
      c.set_name(spec->name);
      centers_[c.id()] = std::move(c);
      return absl::OkStatus();
    }
    case CapacityKind::kAddDomain: {
      v1::FabricDomain d;
      if (!d.ParseFromString(payload)) return absl::DataLossError("unreadable domain");
      d.DiscardUnknownFields();
      absl::StatusOr<scheduler::DomainSpec> spec = ValidateDomain(d);
      if (!spec.ok()) return spec.status();
      if (absl::Status s = core_->AddDomain(*spec); !s.ok()) return s;
      const std::string key = absl::StrCat(d.center_id(), "/", d.id());
      domain_nodes_[key];
      domains_[key] = std::move(d);
      return absl::OkStatus();
    }
    case CapacityKind::kAddNodes: {
      v1::AddNodesRequest r;
      if (!r.ParseFromString(payload)) return absl::DataLossError("unreadable nodes");
      r.DiscardUnknownFields();
      std::vector<scheduler::NodeSpec> specs;
      specs.reserve(static_cast<size_t>(r.nodes_size()));
      for (const v1::Node& n : r.nodes()) {
        absl::StatusOr<scheduler::NodeSpec> spec = ValidateNode(n);
        if (!spec.ok()) return spec.status();
        specs.push_back(*std::move(spec));
      }
      if (absl::Status s = core_->AddNodes(specs); !s.ok()) return s;
      for (v1::Node n : r.nodes()) {
        n.set_health(v1::HEALTH_HEALTHY);
        domain_nodes_[absl::StrCat(n.center_id(), "/", n.domain_id())].push_back(n.id());
        nodes_[n.id()] = std::move(n);
      }
      return absl::OkStatus();
    }
    case CapacityKind::kRemoveNode: {
      v1::RemoveNodeRequest r;
      if (!r.ParseFromString(payload)) return absl::DataLossError("unreadable node removal");
      if (absl::Status s = core_->RemoveNode(r.node_id()); !s.ok()) return s;
      auto it = nodes_.find(r.node_id());
      if (it != nodes_.end()) {
        std::vector<std::string>& in_domain =
            domain_nodes_[absl::StrCat(it->second.center_id(), "/", it->second.domain_id())];
        in_domain.erase(std::remove(in_domain.begin(), in_domain.end(), r.node_id()),
                        in_domain.end());
        RetiredNode retired{std::move(it->second), {}, at};
        if (auto o = node_offers_.find(r.node_id()); o != node_offers_.end()) {
          retired.offers = std::move(o->second);
          node_offers_.erase(o);
        }
        retired_nodes_.push_back(std::move(retired));
        nodes_.erase(it);
      }
      return absl::OkStatus();
    }
    case CapacityKind::kSetNodeHealth: {
      v1::SetNodeHealthRequest r;
      if (!r.ParseFromString(payload)) return absl::DataLossError("unreadable health");
      absl::StatusOr<scheduler::Health> h = ValidateHealth(r.health());
      if (!h.ok()) return h.status();
      if (absl::Status s = core_->SetNodeHealth(r.node_id(), *h); !s.ok()) return s;
      nodes_[r.node_id()].set_health(r.health());
      return absl::OkStatus();
    }
    case CapacityKind::kCreateOffer: {
      v1::Offer o;
      if (!o.ParseFromString(payload)) return absl::DataLossError("unreadable offer");
      o.DiscardUnknownFields();
      absl::StatusOr<scheduler::OfferSpec> spec = ValidateOffer(o, at);
      if (!spec.ok()) return spec.status();
      if (absl::Status s = core_->AddOffer(*spec, at); !s.ok()) return s;
      std::vector<std::string> covered =
          o.domain_id().empty() ? std::vector<std::string>(o.node_ids().begin(), o.node_ids().end())
                                : domain_nodes_[absl::StrCat(o.center_id(), "/", o.domain_id())];
      for (const std::string& n : covered) node_offers_[n].push_back(o.id());
      offers_[o.id()] = std::move(o);
      return absl::OkStatus();
    }
    case CapacityKind::kWithdrawOffer: {
      v1::WithdrawOfferRequest r;
      if (!r.ParseFromString(payload)) return absl::DataLossError("unreadable withdrawal");
      if (absl::Status s = core_->WithdrawOffer(r.offer_id(), at); !s.ok()) return s;
      offers_[r.offer_id()].set_withdrawn(true);
      withdrawn_at_[r.offer_id()] = at;
      return absl::OkStatus();
    }
  }
  (void)actor;
  return absl::DataLossError(absl::StrCat("unknown capacity kind ", static_cast<int>(kind)));
}

absl::StatusOr<v1::Center> Market::RegisterCenter(const Principal& p,
                                                  const v1::RegisterCenterRequest& r,
                                                  absl::Time now, storage::Batch* batch) {
  if (absl::Status s = Require(p, v1::ROLE_OPERATOR, "registering a center"); !s.ok()) return s;
  v1::Center c = r.center();
  if (!IsAdmin(p) || c.operator_id().empty()) {
    c.set_operator_id(p.account_id);
  } else {
    auto it = accounts_.find(c.operator_id());
    if (it == accounts_.end() || it->second.role() != v1::ROLE_OPERATOR) {
      return absl::InvalidArgumentError(
          absl::StrCat("center.operator_id: '", c.operator_id(), "' is not an operator account"));
    }
  }
  absl::StatusOr<scheduler::CenterSpec> spec = ValidateCenter(c, c.operator_id());
  if (!spec.ok()) return spec.status();
  c.set_name(spec->name);
  const std::string payload = c.SerializeAsString();
  if (absl::Status s = ApplyCapacity(CapacityKind::kRegisterCenter, payload, p.account_id, now);
      !s.ok()) {
    return s;
  }
  Journal(CapacityKind::kRegisterCenter, c, p, now, batch);
  return c;
}

absl::StatusOr<v1::FabricDomain> Market::AddDomain(const Principal& p,
                                                   const v1::AddDomainRequest& r, absl::Time now,
                                                   storage::Batch* batch) {
  if (absl::Status s = Require(p, v1::ROLE_OPERATOR, "adding a domain"); !s.ok()) return s;
  absl::StatusOr<scheduler::DomainSpec> spec = ValidateDomain(r.domain());
  if (!spec.ok()) return spec.status();
  if (absl::Status s = CheckCenterOwner(p, r.domain().center_id()); !s.ok()) return s;
  if (absl::Status s = ApplyCapacity(CapacityKind::kAddDomain, r.domain().SerializeAsString(),
                                     p.account_id, now);
      !s.ok()) {
    return s;
  }
  Journal(CapacityKind::kAddDomain, r.domain(), p, now, batch);
  return r.domain();
}

absl::StatusOr<v1::AddNodesResponse> Market::AddNodes(const Principal& p,
                                                      const v1::AddNodesRequest& r, absl::Time now,
                                                      storage::Batch* batch) {
  if (absl::Status s = Require(p, v1::ROLE_OPERATOR, "adding nodes"); !s.ok()) return s;
  if (r.nodes_size() == 0) return absl::InvalidArgumentError("nodes: at least one node");
  if (r.nodes_size() > 10'000) {
    return absl::InvalidArgumentError(
        absl::StrCat("nodes: at most 10,000 per call, got ", r.nodes_size()));
  }
  for (const v1::Node& n : r.nodes()) {
    if (absl::Status s = ValidateNode(n).status(); !s.ok()) return s;
    if (absl::Status s = CheckCenterOwner(p, n.center_id()); !s.ok()) return s;
  }
  v1::AddNodesRequest clean = r;
  for (v1::Node& n : *clean.mutable_nodes()) n.clear_health();
  if (absl::Status s =
          ApplyCapacity(CapacityKind::kAddNodes, clean.SerializeAsString(), p.account_id, now);
      !s.ok()) {
    return s;
  }
  Journal(CapacityKind::kAddNodes, clean, p, now, batch);
  v1::AddNodesResponse out;
  out.set_added(r.nodes_size());
  return out;
}

absl::StatusOr<v1::RemoveNodeResponse> Market::RemoveNode(const Principal& p,
                                                          const v1::RemoveNodeRequest& r,
                                                          absl::Time now, storage::Batch* batch) {
  if (absl::Status s = Require(p, v1::ROLE_OPERATOR, "removing a node"); !s.ok()) return s;
  auto it = nodes_.find(r.node_id());
  if (it == nodes_.end()) {
    return absl::NotFoundError(absl::StrCat("node '", r.node_id(), "' not found"));
  }
  if (absl::Status s = CheckCenterOwner(p, it->second.center_id()); !s.ok()) return s;
  if (absl::Status s =
          ApplyCapacity(CapacityKind::kRemoveNode, r.SerializeAsString(), p.account_id, now);
      !s.ok()) {
    return s;
  }
  Journal(CapacityKind::kRemoveNode, r, p, now, batch);
  return v1::RemoveNodeResponse();
}

absl::StatusOr<v1::Node> Market::SetNodeHealth(const Principal& p,
                                               const v1::SetNodeHealthRequest& r, absl::Time now,
                                               storage::Batch* batch) {
  if (absl::Status s = Require(p, v1::ROLE_OPERATOR, "setting node health"); !s.ok()) return s;
  auto it = nodes_.find(r.node_id());
  if (it == nodes_.end()) {
    return absl::NotFoundError(absl::StrCat("node '", r.node_id(), "' not found"));
  }
  if (absl::Status s = CheckCenterOwner(p, it->second.center_id()); !s.ok()) return s;
  if (absl::Status s = ValidateHealth(r.health()).status(); !s.ok()) return s;
  if (it->second.health() == r.health()) return it->second;
  if (absl::Status s =
          ApplyCapacity(CapacityKind::kSetNodeHealth, r.SerializeAsString(), p.account_id, now);
      !s.ok()) {
    return s;
  }
  Journal(CapacityKind::kSetNodeHealth, r, p, now, batch);
  return nodes_[r.node_id()];
}

absl::StatusOr<v1::Offer> Market::CreateOffer(const Principal& p, const v1::CreateOfferRequest& r,
                                              absl::Time now, storage::Batch* batch) {
  if (absl::Status s = Require(p, v1::ROLE_OPERATOR, "creating an offer"); !s.ok()) return s;
  absl::StatusOr<scheduler::OfferSpec> spec = ValidateOffer(r.offer(), now);
  if (!spec.ok()) return spec.status();
  if (absl::Status s = CheckCenterOwner(p, r.offer().center_id()); !s.ok()) return s;
  v1::Offer o = r.offer();
  *o.mutable_from() = ToProto(spec->from);
  *o.mutable_until() = ToProto(spec->until);
  o.set_withdrawn(false);
  if (absl::Status s =
          ApplyCapacity(CapacityKind::kCreateOffer, o.SerializeAsString(), p.account_id, now);
      !s.ok()) {
    return s;
  }
  Journal(CapacityKind::kCreateOffer, o, p, now, batch);
  return o;
}

absl::StatusOr<v1::Offer> Market::WithdrawOffer(const Principal& p,
                                                const v1::WithdrawOfferRequest& r, absl::Time now,
                                                storage::Batch* batch) {
  if (absl::Status s = Require(p, v1::ROLE_OPERATOR, "withdrawing an offer"); !s.ok()) return s;
  auto it = offers_.find(r.offer_id());
  if (it == offers_.end()) {
    return absl::NotFoundError(absl::StrCat("offer '", r.offer_id(), "' not found"));
  }
  if (absl::Status s = CheckCenterOwner(p, it->second.center_id()); !s.ok()) return s;
  if (it->second.withdrawn()) return it->second;
  if (absl::Status s =
          ApplyCapacity(CapacityKind::kWithdrawOffer, r.SerializeAsString(), p.account_id, now);
      !s.ok()) {
    return s;
  }
  Journal(CapacityKind::kWithdrawOffer, r, p, now, batch);
  return offers_[r.offer_id()];
}

absl::StatusOr<v1::ListCapacityResponse> Market::ListCapacity(
    const Principal& p, const v1::ListCapacityRequest& r) const {
  if (absl::Status s = Require(p, v1::ROLE_OPERATOR, "listing capacity"); !s.ok()) return s;
  if (!r.center_id().empty()) {
    if (absl::Status s = CheckCenterOwner(p, r.center_id()); !s.ok()) return s;
  }
  v1::ListCapacityResponse out;
  absl::flat_hash_set<std::string> mine;
  for (const auto& [id, c] : centers_) {
    if (!r.center_id().empty() && id != r.center_id()) continue;
    if (!IsAdmin(p) && c.operator_id() != p.account_id) continue;
    mine.insert(id);
    *out.add_centers() = c;
  }
  for (const auto& [key, d] : domains_) {
    if (mine.contains(d.center_id())) *out.add_domains() = d;
  }
  for (const auto& [id, n] : nodes_) {
    if (mine.contains(n.center_id())) *out.add_nodes() = n;
  }
  for (const auto& [id, o] : offers_) {
    if (mine.contains(o.center_id())) *out.add_offers() = o;
  }
  return out;
}

absl::StatusOr<v1::ListSoldAllocationsResponse> Market::ListSoldAllocations(
    const Principal& p, const v1::ListSoldAllocationsRequest& r, absl::Time now) const {
  if (absl::Status s = Require(p, v1::ROLE_OPERATOR, "listing sold allocations"); !s.ok()) {
    return s;
  }
  if (!r.center_id().empty()) {
    if (absl::Status s = CheckCenterOwner(p, r.center_id()); !s.ok()) return s;
  }
  absl::StatusOr<int> size = PageSize(r.page());
  if (!size.ok()) return size.status();
  absl::StatusOr<uint64_t> below = PageStart(r.page());
  if (!below.ok()) return below.status();
  absl::Time since = now;
  if (r.has_since()) {
    absl::StatusOr<absl::Time> t = FromProto("since", r.since());
    if (!t.ok()) return t.status();
    since = *t;
  }
  v1::ListSoldAllocationsResponse out;
  for (auto it = allocs_.lower_bound(*below); it != allocs_.begin();) {
    --it;
    if (it->first >= *below) continue;
    const v1::Allocation& a = it->second.a;
    if (a.state() == v1::ALLOCATION_STATE_HELD || TimeOf(a.end()) <= since) continue;
    // Binding quotes that lapsed or were cancelled were never sold.
    if (a.state() == v1::ALLOCATION_STATE_ENDED && a.has_hold_expires() &&
        (a.end_reason() == v1::END_REASON_LAPSED || a.total_price_micros() == 0)) {
      continue;
    }
    auto mine = [&](const v1::Slice& s) {
      auto c = centers_.find(s.center_id());
      if (c == centers_.end()) return false;
      return !r.center_id().empty() ? s.center_id() == r.center_id()
                                    : (IsAdmin(p) || c->second.operator_id() == p.account_id);
    };
    if (std::none_of(a.slices().begin(), a.slices().end(), mine)) continue;
    if (out.allocations_size() == *size) {
      out.set_next_page_token(absl::StrCat(it->first + 1));
      break;
    }
    v1::Allocation* sold = out.add_allocations();
    *sold = a;
    if (!IsAdmin(p)) {
      // An operator sees its own slices and what they earn, not the buyer's request (its
      // ceiling) or other operators' slices and prices.
      sold->clear_request();
      sold->clear_slices();
      for (const v1::Slice& s : a.slices()) {
        if (mine(s)) *sold->add_slices() = s;
      }
      if (sold->slices_size() != a.slices_size()) {
        sold->set_total_price_micros(
            a.total_price_micros() == 0
                ? 0
                : scheduler::PriceFor(RateOf(*sold), TimeOf(a.end()) - TimeOf(a.start())));
      }
    }
  }
  return out;
}

// ------------------------------------------------------------------------------------ buying

std::string Market::OfferCovering(const std::string& node_id, int64_t price, absl::Time start,
                                  absl::Time end) const {
  auto it = node_offers_.find(node_id);
  if (it == node_offers_.end()) return std::string();
  for (const std::string& id : it->second) {
    const v1::Offer& o = offers_.at(id);
    if (!o.withdrawn() && o.price_micros_per_gpu_hour() == price && TimeOf(o.from()) <= start &&
        end <= TimeOf(o.until())) {
      return id;
    }
  }
  return std::string();
}

v1::Allocation Market::Preview(const scheduler::Allocation& a, const v1::AllocationRequest& r,
                               const std::vector<std::string>* offers) const {
  v1::Allocation out;
  if (a.id != 0) out.set_id(absl::StrCat(a.id));
  out.set_buyer_id(a.buyer);
  for (size_t i = 0; i < a.slices.size(); ++i) {
    const scheduler::Slice& s = a.slices[i];
    const std::string& node_id = core_->NodeId(s.node);
    const v1::Node& n = nodes_.at(node_id);
    v1::Slice* sl = out.add_slices();
    sl->set_node_id(node_id);
    sl->set_center_id(n.center_id());
    sl->set_domain_id(n.domain_id());
    sl->set_model(n.model());
    sl->set_gpus(s.gpus);
    sl->set_price_micros_per_gpu_hour(s.price_per_gpu_hour);
    sl->set_offer_id(offers != nullptr && i < offers->size()
                         ? (*offers)[i]
                         : OfferCovering(node_id, s.price_per_gpu_hour, a.start, a.end));
  }
  std::sort(out.mutable_slices()->begin(), out.mutable_slices()->end(),
            [](const v1::Slice& x, const v1::Slice& y) { return x.node_id() < y.node_id(); });
  *out.mutable_start() = ToProto(a.start);
  *out.mutable_end() = ToProto(a.end);
  out.set_total_price_micros(a.total_price);
  out.set_state(StateToProto(a.state));
  if (a.state == AllocationState::kHeld) *out.mutable_hold_expires() = ToProto(a.hold_expires);
  *out.mutable_request() = r;
  out.mutable_request()->DiscardUnknownFields();
  return out;
}

void Market::Record(const scheduler::Allocation& a, const v1::AllocationRequest& request,
                    absl::Time now, storage::Batch* batch) {
  AllocRec rec;
  // The offer of each slice as the core sold it (the spec lists a.slices in order).
  std::optional<scheduler::RestoreSpec> spec = core_->RestoreSpecOf(a.id);
  std::vector<std::string> offers;
  if (spec.has_value() && spec->slices.size() == a.slices.size()) {
    offers.reserve(spec->slices.size());
    for (scheduler::RestoreSpec::Part& part : spec->slices)
      offers.push_back(std::move(part.offer_id));
    rec.a = Preview(a, request, &offers);
    for (const v1::Slice& sl : rec.a.slices()) rec.offer_ids.push_back(sl.offer_id());
  } else {
    rec.a = Preview(a, request);
  }
  rec.held_end = a.held_end;
  const bool is_new = !allocs_.contains(a.id);
  allocs_[a.id] = std::move(rec);
  if (is_new) by_buyer_[a.buyer].push_back(a.id);
  Persist(a.id, now, batch);
}

void Market::PostCharge(uint64_t id, absl::Time at, storage::Batch* batch,
                        std::optional<EntryKind> kind) {
  const v1::Allocation& a = allocs_.at(id).a;
  // A binding quote held, lapsed or cancelled sells nothing; everything else is charged its
  // total price (which release and extension keep up to date).
  const int64_t charge = a.state() == v1::ALLOCATION_STATE_HELD ? 0 : a.total_price_micros();
  std::vector<OperatorRate> rates;
  for (const v1::Slice& s : a.slices()) {
    auto c = centers_.find(s.center_id());
    rates.push_back({c == centers_.end() ? std::string() : c->second.operator_id(),
                     int64_t{s.gpus()} * s.price_micros_per_gpu_hour()});
  }
  Books& posted = posted_[id];
  std::optional<Books> legs =
      Delta(posted, BooksOf(a.buyer_id(), charge, rates, options_.commission_bps));
  if (!legs.has_value()) return;
  int64_t before = 0;
  for (const auto& [account, amount] : posted) {
    if (absl::StartsWith(account, kBuyerPrefix)) before -= amount;
  }
  storage::LedgerEntryRow e;
  e.id = ++ledger_seq_;
  e.at = at;
  e.allocation_id = static_cast<int64_t>(id);
  e.kind = static_cast<int32_t>(kind.value_or(KindOf(before, charge)));
  for (const auto& [account, amount] : *legs) {
    e.legs.push_back({account, amount});
    posted[account] += amount;
  }
  batch->ledger.push_back(e);
  ledger_.push_back(std::move(e));
  IndexEntry(ledger_.size() - 1);
}

void Market::IndexEntry(size_t i) {
  const storage::LedgerEntryRow& e = ledger_[i];
  absl::flat_hash_set<std::string> parties;
  for (const storage::LedgerLeg& leg : e.legs) {
    if (absl::StartsWith(leg.account, kBuyerPrefix)) {
      parties.insert(leg.account);
    } else if (absl::StartsWith(leg.account, kOperatorPrefix) ||
               absl::StartsWith(leg.account, kCommissionPrefix)) {
      parties.insert(absl::StrCat(kOperatorPrefix, OperatorOf(leg.account)));
    }
  }
  for (const std::string& party : parties) entries_by_party_[party].push_back(i);
}

void Market::CountDecision(absl::Time now, const scheduler::Decision& d, absl::Duration took) {
  const int64_t minute = absl::ToUnixSeconds(now) / 60;
  DecisionCounts& c = decisions_[minute];
  decisions_changed_.insert(minute);
  c.latency.Record(took);
  ++c.requests;
  if (d.granted) {
    ++c.grants;
  } else {
    ++c.rejections[RejectReason_Name(ToProto(d.rejection.reason))];
  }
}

void Market::Persist(uint64_t id, absl::Time at, storage::Batch* batch) {
  PostCharge(id, at, batch);
  const AllocRec& rec = allocs_.at(id);
  batch->allocations.push_back({static_cast<int64_t>(id), rec.a.buyer_id(), rec.a.state(),
                                rec.a.SerializeAsString(), rec.held_end,
                                absl::StrJoin(rec.offer_ids, ",")});
  changed_.insert(id);
  catalog_dirty_ = true;
}

void Market::DrainEvents(storage::Batch* batch) {
  for (const scheduler::AllocationEvent& ev : core_->TakeEvents()) {
    auto it = allocs_.find(ev.id);
    if (it == allocs_.end()) continue;  // recorded by the caller that made it
    AllocRec& rec = it->second;
    const scheduler::Allocation* live = core_->Find(ev.id);
    if (live != nullptr) {
      v1::Allocation& a = rec.a;
      a.set_state(StateToProto(live->state));
      *a.mutable_start() = ToProto(live->start);
      *a.mutable_end() = ToProto(live->end);
      a.set_total_price_micros(live->total_price);
      rec.held_end = live->held_end;
    } else if (ev.state == AllocationState::kEnded) {
      v1::Allocation& a = rec.a;
      const bool was_held = a.state() == v1::ALLOCATION_STATE_HELD;
      a.set_state(v1::ALLOCATION_STATE_ENDED);
      a.set_end_reason(EndToProto(ev.reason));
      if (was_held) {
        // A binding quote that lapsed or was cancelled sold nothing: it held the GPUs until it
        // ended, and costs nothing.
        const absl::Time start = TimeOf(a.start());
        *a.mutable_end() = ToProto(std::clamp(ev.at, start, TimeOf(a.end())));
        a.set_total_price_micros(0);
      } else if (ev.reason == EndReason::kReleased) {
        // Sold until it was released: the end and the price follow.
        const absl::Time start = TimeOf(a.start());
        const absl::Time end = std::clamp(ev.at, start, TimeOf(a.end()));
        *a.mutable_end() = ToProto(end);
        a.set_total_price_micros(scheduler::PriceFor(RateOf(a), end - start));
      }
    } else {
      continue;
    }
    Persist(ev.id, ev.at, batch);
  }
}

absl::StatusOr<v1::QuoteResponse> Market::Quote(const Principal& p, const v1::QuoteRequest& r,
                                                absl::Time now, storage::Batch* batch) {
  if (absl::Status s = Require(p, v1::ROLE_BUYER, "quoting"); !s.ok()) return s;
  if (!r.has_request()) return absl::InvalidArgumentError("request: required");
  absl::StatusOr<scheduler::Request> q = ValidateAllocationRequest(r.request(), p.account_id, now);
  if (!q.ok()) return q.status();
  v1::QuoteResponse out;
  absl::StatusOr<scheduler::Decision> d;
  const bool hold = r.has_hold();
  if (hold) {
    absl::StatusOr<absl::Duration> ttl = ValidateHold(r.hold());
    if (!ttl.ok()) return ttl.status();
    const auto started = std::chrono::steady_clock::now();
    d = core_->Hold(*q, *ttl, now);
    const absl::Duration took = absl::FromChrono(std::chrono::steady_clock::now() - started);
    if (d.ok()) CountDecision(now, *d, took);
  } else {
    d = core_->Quote(*q, now);
  }
  if (!d.ok()) return d.status();
  if (!d->granted) {
    out.set_available(false);
    *out.mutable_rejection() = RejectionToProto(d->rejection);
    return out;
  }
  out.set_available(true);
  if (hold) {
    Record(d->allocation, r.request(), now, batch);
    DrainEvents(batch);
    *out.mutable_allocation() = allocs_.at(d->allocation.id).a;
  } else {
    *out.mutable_allocation() = Preview(d->allocation, r.request());
  }
  return out;
}

absl::StatusOr<v1::Allocation> Market::Allocate(const Principal& p, const v1::AllocateRequest& r,
                                                absl::Time now, storage::Batch* batch) {
  if (absl::Status s = Require(p, v1::ROLE_BUYER, "allocating"); !s.ok()) return s;
  if (!r.quote_id().empty()) {
    absl::StatusOr<uint64_t> id = ParseAllocationId("quote_id", r.quote_id());
    if (!id.ok()) return id.status();
    auto it = allocs_.find(*id);
    if (it == allocs_.end() || it->second.a.buyer_id() != p.account_id) {
      return absl::NotFoundError(absl::StrCat("binding quote '", r.quote_id(), "' not found"));
    }
    const v1::Allocation& a = it->second.a;
    if (a.state() != v1::ALLOCATION_STATE_HELD) {
      // A redeem retried after it succeeded gets the allocation it made.
      if (a.has_hold_expires() && a.state() != v1::ALLOCATION_STATE_ENDED) return a;
      return absl::NotFoundError(absl::StrCat(
          "binding quote '", r.quote_id(), "' has ",
          a.end_reason() == v1::END_REASON_LAPSED ? "lapsed" : "ended or was already redeemed"));
    }
    absl::StatusOr<scheduler::Allocation> redeemed = core_->Redeem(*id, p.account_id, now);
    if (!redeemed.ok()) return redeemed.status();
    AllocRec& rec = it->second;
    rec.a.set_state(StateToProto(redeemed->state));
    *rec.a.mutable_start() = ToProto(redeemed->start);
    *rec.a.mutable_end() = ToProto(redeemed->end);
    rec.a.set_total_price_micros(redeemed->total_price);
    rec.held_end = absl::Time();
    Persist(*id, now, batch);
    DrainEvents(batch);
    return allocs_.at(*id).a;
  }
  if (!r.has_request()) return absl::InvalidArgumentError("request: required (or quote_id)");
  absl::StatusOr<scheduler::Request> q = ValidateAllocationRequest(r.request(), p.account_id, now);
  if (!q.ok()) return q.status();
  const std::string& key = r.request().idempotency_key();
  std::string canonical;
  if (!key.empty()) {
    canonical = Canonical(r);
    auto it = idem_.find(IdemKey(p.account_id, key));
    if (it != idem_.end()) {
      if (it->second.request != canonical) {
        return absl::FailedPreconditionError(absl::StrCat(
            "idempotency key '", key,
            "' was first used with a different request; use a new key for a new request"));
      }
      if (it->second.allocation_id != 0) return allocs_.at(it->second.allocation_id).a;
      v1::Rejection rej;
      rej.ParseFromString(it->second.rejection);
      return Exhausted(rej);
    }
  }
  // The decision's latency, on the monotonic clock: the core's time alone.
  const auto started = std::chrono::steady_clock::now();
  absl::StatusOr<scheduler::Decision> d = core_->Allocate(*q, now);
  const absl::Duration took = absl::FromChrono(std::chrono::steady_clock::now() - started);
  if (!d.ok()) return d.status();
  CountDecision(now, *d, took);
  if (!d->granted) {
    const v1::Rejection rej = RejectionToProto(d->rejection);
    if (!key.empty()) {
      idem_[IdemKey(p.account_id, key)] = IdemRec{canonical, 0, rej.SerializeAsString()};
      batch->idempotency.push_back({p.account_id, key, canonical, 0, rej.SerializeAsString()});
    }
    return Exhausted(rej);
  }
  Record(d->allocation, r.request(), now, batch);
  DrainEvents(batch);
  if (!key.empty()) {
    idem_[IdemKey(p.account_id, key)] = IdemRec{canonical, d->allocation.id, ""};
    batch->idempotency.push_back(
        {p.account_id, key, canonical, static_cast<int64_t>(d->allocation.id), ""});
  }
  return allocs_.at(d->allocation.id).a;
}

absl::StatusOr<const Market::AllocRec*> Market::OwnAllocation(const Principal& p,
                                                              const std::string& id) const {
  if (absl::Status s = Require(p, v1::ROLE_BUYER, "reading allocations"); !s.ok()) return s;
  absl::StatusOr<uint64_t> n = ParseAllocationId("allocation_id", id);
  if (!n.ok()) return n.status();
  auto it = allocs_.find(*n);
  if (it == allocs_.end() || (!IsAdmin(p) && it->second.a.buyer_id() != p.account_id)) {
    return absl::NotFoundError(absl::StrCat("allocation '", id, "' not found"));
  }
  return &it->second;
}

absl::StatusOr<v1::Allocation> Market::GetAllocation(const Principal& p,
                                                     const v1::GetAllocationRequest& r) const {
  absl::StatusOr<const AllocRec*> rec = OwnAllocation(p, r.allocation_id());
  if (!rec.ok()) return rec.status();
  return (*rec)->a;
}

absl::StatusOr<v1::ListAllocationsResponse> Market::ListAllocations(
    const Principal& p, const v1::ListAllocationsRequest& r) const {
  if (absl::Status s = Require(p, v1::ROLE_BUYER, "listing allocations"); !s.ok()) return s;
  absl::StatusOr<int> size = PageSize(r.page());
  if (!size.ok()) return size.status();
  absl::StatusOr<uint64_t> below = PageStart(r.page());
  if (!below.ok()) return below.status();
  v1::ListAllocationsResponse out;
  auto it = by_buyer_.find(p.account_id);
  if (it == by_buyer_.end()) return out;
  const std::vector<uint64_t>& ids = it->second;
  for (auto id = std::lower_bound(ids.begin(), ids.end(), *below); id != ids.begin();) {
    --id;
    const v1::Allocation& a = allocs_.at(*id).a;
    if (!r.include_ended() && a.state() == v1::ALLOCATION_STATE_ENDED) continue;
    if (out.allocations_size() == *size) {
      out.set_next_page_token(absl::StrCat(*id + 1));
      break;
    }
    *out.add_allocations() = a;
  }
  return out;
}

absl::StatusOr<v1::Allocation> Market::ExtendAllocation(const Principal& p,
                                                        const v1::ExtendAllocationRequest& r,
                                                        absl::Time now, storage::Batch* batch) {
  absl::StatusOr<const AllocRec*> rec = OwnAllocation(p, r.allocation_id());
  if (!rec.ok()) return rec.status();
  const v1::Allocation& a = (*rec)->a;
  if (r.has_new_end() == r.has_by()) {
    return absl::InvalidArgumentError("give exactly one of new_end and by");
  }
  absl::Time new_end;
  if (r.has_new_end()) {
    absl::StatusOr<absl::Time> t = FromProto("new_end", r.new_end());
    if (!t.ok()) return t.status();
    new_end = absl::FromUnixMicros(absl::ToUnixMicros(*t));
    // A retried extension to the same end is already done.
    if (new_end == TimeOf(a.end()) && a.state() != v1::ALLOCATION_STATE_ENDED) return a;
  } else {
    absl::StatusOr<absl::Duration> by = FromProto("by", r.by());
    if (!by.ok()) return by.status();
    if (*by <= absl::ZeroDuration() || *by > absl::Hours(24 * 366)) {
      return absl::InvalidArgumentError("by: must be more than 0 and at most 366 days");
    }
    new_end = TimeOf(a.end()) + *by;
  }
  new_end = absl::FromUnixMicros(absl::ToUnixMicros(new_end));
  if (a.state() == v1::ALLOCATION_STATE_ENDED) {
    return absl::FailedPreconditionError(
        absl::StrCat("allocation ", a.id(), " has ended (", EndReason_Name(a.end_reason()), ")"));
  }
  if (a.state() == v1::ALLOCATION_STATE_HELD) {
    return absl::FailedPreconditionError(
        "a binding quote cannot be extended; redeem it first (allocate with quote_id)");
  }
  if (new_end - TimeOf(a.end()) > absl::Hours(24 * 3650)) {
    return absl::InvalidArgumentError("new_end: too far in the future");
  }
  const uint64_t id = IdOf(a);
  absl::StatusOr<scheduler::Allocation> ext = core_->Extend(id, new_end, now);
  if (!ext.ok()) return ext.status();
  AllocRec& mut = allocs_.at(id);
  *mut.a.mutable_end() = ToProto(ext->end);
  mut.a.set_total_price_micros(ext->total_price);
  mut.a.set_state(StateToProto(ext->state));
  Persist(id, now, batch);
  DrainEvents(batch);
  return allocs_.at(id).a;
}

absl::StatusOr<v1::Allocation> Market::ReleaseAllocation(const Principal& p,
                                                         const v1::ReleaseAllocationRequest& r,
                                                         absl::Time now, storage::Batch* batch) {
  absl::StatusOr<const AllocRec*> rec = OwnAllocation(p, r.allocation_id());
  if (!rec.ok()) return rec.status();
  // Releasing what has ended already changes nothing: a retried release gets the same answer.
  if ((*rec)->a.state() == v1::ALLOCATION_STATE_ENDED) return (*rec)->a;
  const uint64_t id = IdOf((*rec)->a);
  if (absl::Status s = core_->Release(id, now); !s.ok()) return s;
  DrainEvents(batch);
  return allocs_.at(id).a;
}

std::vector<v1::Allocation> Market::AllocationsOf(const Principal& p, bool include_ended) const {
  std::vector<v1::Allocation> out;
  auto it = by_buyer_.find(p.account_id);
  if (it == by_buyer_.end()) return out;
  for (uint64_t id : it->second) {
    const v1::Allocation& a = allocs_.at(id).a;
    if (include_ended || a.state() != v1::ALLOCATION_STATE_ENDED) out.push_back(a);
  }
  return out;
}

// ------------------------------------------------------------------------------------ time

void Market::Advance(absl::Time now, storage::Batch* batch) {
  core_->Advance(now);
  DrainEvents(batch);
}

absl::Time Market::NextEventTime() const { return core_->NextEventTime(); }

// ------------------------------------------------------------------------------------ engine

std::shared_ptr<const CatalogSnapshot> Market::BuildCatalog(absl::Time now) const {
  auto snap = std::make_shared<CatalogSnapshot>();
  snap->at = now;
  for (const scheduler::CatalogLine& line : core_->Catalog()) {
    const v1::Center& c = centers_.at(line.center_id);
    const v1::FabricDomain& d = domains_.at(absl::StrCat(line.center_id, "/", line.domain_id));
    v1::CatalogEntry e;
    e.set_center_id(c.id());
    e.set_center_name(c.name());
    e.set_region(c.region());
    e.set_center_type(c.type());
    *e.mutable_tags() = c.tags();
    e.set_domain_id(d.id());
    e.set_fabric(d.fabric());
    e.set_gbps(d.gbps());
    e.set_model(line.model);
    e.set_gpus_per_node(line.gpus_per_node);
    e.set_nodes(line.nodes);
    e.set_free_gpus(line.free_gpus);
    e.set_free_whole_nodes(line.free_whole_nodes);
    e.set_price_micros_per_gpu_hour(line.price_per_gpu_hour);
    *e.mutable_from() = ToProto(line.from);
    *e.mutable_until() = ToProto(line.until);
    e.set_offer_id(line.offer_id);
    CatalogEntryView v;
    v.model = line.model;
    v.region = c.region();
    v.center_id = c.id();
    v.center_type = LowerName(c.type());
    v.fabric = LowerName(d.fabric());
    v.tags.assign(c.tags().begin(), c.tags().end());
    v.free_gpus = line.free_gpus;
    v.free_nodes = line.free_whole_nodes;
    v.gpus_per_node = line.gpus_per_node;
    v.gbps = d.gbps();
    v.price_micros = line.price_per_gpu_hour;
    snap->entries.push_back(std::move(e));
    snap->views.push_back(std::move(v));
  }
  return snap;
}

std::string Market::EncodeDecisionCounts(const DecisionCounts& c) {
  std::string out =
      absl::StrCat("suanli-decisions 1\nrequests ", c.requests, "\ngrants ", c.grants, "\n");
  for (const auto& [reason, n] : c.rejections) {
    absl::StrAppend(&out, "rejected ", reason, " ", n, "\n");
  }
  if (c.latency.count() > 0) {
    absl::StrAppend(&out, "latency ", c.latency.min_nanos(), " ", c.latency.max_nanos(), "\n");
    c.latency.ForEachBucket(
        [&](int bucket, int64_t n) { absl::StrAppend(&out, "bucket ", bucket, " ", n, "\n"); });
  }
  return out;
}

bool Market::DecodeDecisionCounts(absl::string_view text, DecisionCounts* c) {
  *c = DecisionCounts();
  if (!absl::ConsumeSuffix(&text, "\n")) return false;
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  if (lines.size() < 3 || lines[0] != "suanli-decisions 1") return false;
  auto count = [](absl::string_view field, int64_t* n) {
    return absl::SimpleAtoi(field, n) && *n >= 0;
  };
  bool have_latency = false;
  int64_t min = 0;
  int64_t max = 0;
  int last_bucket = -1;
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::vector<absl::string_view> f = absl::StrSplit(lines[i], ' ');
    if (i == 1) {
      if (f.size() != 2 || f[0] != "requests" || !count(f[1], &c->requests)) return false;
    } else if (i == 2) {
      if (f.size() != 2 || f[0] != "grants" || !count(f[1], &c->grants)) return false;
    } else if (f.size() == 3 && f[0] == "rejected" && !have_latency) {
      int64_t n = 0;
      const std::string reason = {f[1].data(), f[1].size()};
      if (reason.empty() || !count(f[2], &n)) return false;
      if (!c->rejections.empty() && c->rejections.rbegin()->first >= reason) return false;
      c->rejections[reason] = n;
    } else if (f.size() == 3 && f[0] == "latency" && !have_latency) {
      if (!count(f[1], &min) || !count(f[2], &max)) return false;
      have_latency = true;
    } else if (f.size() == 3 && f[0] == "bucket" && have_latency) {
      int bucket = 0;
      int64_t n = 0;
      if (!absl::SimpleAtoi(f[1], &bucket) || bucket <= last_bucket || !count(f[2], &n)) {
        return false;
      }
      if (!c->latency.AddBucket(bucket, n)) return false;
      last_bucket = bucket;
    } else {
      return false;
    }
  }
  if (have_latency && !c->latency.RestoreMinMax(min, max)) return false;
  return true;
}

void Market::Seal(storage::Batch* batch) {
  for (int64_t minute : decisions_changed_) {
    batch->decision_minutes.push_back({minute, EncodeDecisionCounts(decisions_.at(minute))});
  }
  decisions_changed_.clear();
  std::vector<storage::AllocationRow>& rows = batch->allocations;
  if (rows.empty()) return;
  // Keep the last row of each allocation, in the order of those last rows.
  absl::flat_hash_map<int64_t, size_t> last;
  for (size_t i = 0; i < rows.size(); ++i) last[rows[i].id] = i;
  if (last.size() != rows.size()) {
    std::vector<storage::AllocationRow> kept;
    kept.reserve(last.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      if (last[rows[i].id] == i) kept.push_back(std::move(rows[i]));
    }
    rows.swap(kept);
  }
  for (const storage::AllocationRow& row : rows) {
    const scheduler::Allocation* live = core_->Find(static_cast<uint64_t>(row.id));
    if (live == nullptr || live->state == AllocationState::kEnded) continue;
    const absl::Time until = live->state == AllocationState::kHeld ? live->held_end : live->end;
    for (const scheduler::Slice& s : live->slices) {
      const std::string& node = core_->NodeId(s.node);
      batch->claims.push_back({row.id, node, nodes_.at(node).gpus(), s.gpus, live->start, until});
    }
  }
}

std::vector<v1::Allocation> Market::TakeChanged() {
  std::vector<uint64_t> ids(changed_.begin(), changed_.end());
  std::sort(ids.begin(), ids.end());
  changed_.clear();
  std::vector<v1::Allocation> out;
  out.reserve(ids.size());
  for (uint64_t id : ids) out.push_back(allocs_.at(id).a);
  return out;
}

bool Market::TakeCatalogDirty() {
  const bool dirty = catalog_dirty_;
  catalog_dirty_ = false;
  return dirty;
}

scheduler::AuditReport Market::Audit() const { return core_->Audit(); }
scheduler::MarketTotals Market::Totals() const { return core_->Totals(); }

}  // namespace suanli::broker
