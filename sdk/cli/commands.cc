#include "sdk/cli/commands.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/json_util.h"
#include "sdk/client.h"
#include "sdk/format.h"

namespace suanli::cli {
namespace {

constexpr char kDefaultServer[] = "localhost:7700";
constexpr int kAddNodesBatch = 10'000;
constexpr int kDefaultLimit = 1000;
constexpr int kMaxPageSize = 1000;
// Marks a status as a usage error (exit 2).
constexpr char kUsagePayload[] = "suanli.cli/usage";

absl::Status UsageError(absl::string_view message) {
  absl::Status s = absl::InvalidArgumentError(message);
  s.SetPayload(kUsagePayload, absl::Cord("1"));
  return s;
}

bool IsUsageError(const absl::Status& s) { return s.GetPayload(kUsagePayload).has_value(); }

// A parse error of one flag as a usage error that names the flag.
absl::Status FlagError(absl::string_view flag, const absl::Status& s) {
  return UsageError(absl::StrCat("--", flag, ": ", s.message()));
}

// ---- Commands -----------------------------------------------------------------------------------

struct Context;
using Handler = absl::Status (*)(Context&);

struct Command {
  std::string path;     // "allocation get"
  std::string usage;    // the arguments after the path, e.g. "ID"
  size_t min_args = 0;  // words after the path
  size_t max_args = 0;  // SIZE_MAX: any number
  std::string summary;  // one line
  std::vector<FlagSpec> flags;
  Handler run = nullptr;
  bool retry_safe = true;  // false: an UNAVAILABLE answer may hide a change
};

// What a running command has at hand.
struct Context {
  const Command& command;
  std::vector<std::string> args;  // words after the command's path
  const Flags& flags;
  Client* client = nullptr;
  bool json = false;
  bool csv = false;  // stats, reports, statements and invoices
  std::string server;
  bool tls = false;
  absl::Time now;
  std::ostream& out;
  std::ostream& err;
  bool printed = false;  // something went to `out`
};

// ---- Flag values --------------------------------------------------------------------------------

absl::StatusOr<std::string> Required(const Flags& flags, absl::string_view name) {
  std::optional<std::string> v = flags.Value(name);
  if (!v.has_value() || v->empty()) return UsageError(absl::StrCat("--", name, " is required"));
  return *v;
}

absl::StatusOr<int> IntFlag(const Flags& flags, absl::string_view name, int fallback, int min) {
  std::optional<std::string> v = flags.Value(name);
  if (!v.has_value()) return fallback;
  int n = 0;
  if (!absl::SimpleAtoi(*v, &n)) {
    return UsageError(absl::StrCat("--", name, ": \"", *v, "\" is not a whole number"));
  }
  if (n < min) return UsageError(absl::StrCat("--", name, " must be at least ", min));
  return n;
}

absl::StatusOr<int64_t> PriceFlag(const Flags& flags, absl::string_view name) {
  absl::StatusOr<std::string> text = Required(flags, name);
  if (!text.ok()) return text.status();
  absl::StatusOr<int64_t> micros = ParseMoney(*text);
  if (!micros.ok()) return FlagError(name, micros.status());
  if (*micros <= 0) return UsageError(absl::StrCat("--", name, " must be more than 0"));
  return *micros;
}

absl::StatusOr<std::optional<absl::Duration>> DurationFlag(const Flags& flags,
                                                           absl::string_view name) {
  std::optional<std::string> text = flags.Value(name);
  if (!text.has_value()) return std::optional<absl::Duration>();
  absl::StatusOr<absl::Duration> d = ParseDuration(*text);
  if (!d.ok()) return FlagError(name, d.status());
  if (*d <= absl::ZeroDuration()) {
    return UsageError(absl::StrCat("--", name, " must be more than 0"));
  }
  return std::optional<absl::Duration>(*d);
}

absl::StatusOr<std::optional<absl::Time>> TimeFlag(const Flags& flags, absl::string_view name,
                                                   absl::Time now) {
  std::optional<std::string> text = flags.Value(name);
  if (!text.has_value()) return std::optional<absl::Time>();
  absl::StatusOr<absl::Time> t = ParseTime(*text, now);
  if (!t.ok()) return FlagError(name, t.status());
  return std::optional<absl::Time>(*t);
}

// Parses every value of a list flag with `parse` and hands each to `add`.
template <typename T, typename Parse, typename Add>
absl::Status EnumListFlag(const Flags& flags, absl::string_view name, Parse parse, Add add) {
  for (const std::string& item : flags.List(name)) {
    absl::StatusOr<T> v = parse(item);
    if (!v.ok()) return FlagError(name, v.status());
    add(*v);
  }
  return absl::OkStatus();
}

// ---- Output -------------------------------------------------------------------------------------

void PrintJson(Context& ctx, const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(message, &json, options).ok()) {
    json = "{}";
  }
  ctx.out << json;
  if (!absl::EndsWith(json, "\n")) ctx.out << "\n";
  ctx.printed = true;
}

void Print(Context& ctx, absl::string_view text) {
  ctx.out << text;
  ctx.out.flush();
  ctx.printed = true;
}

int SliceGpus(const v1::Allocation& a) {
  int gpus = 0;
  for (const v1::Slice& s : a.slices()) gpus += s.gpus();
  return gpus > 0 ? gpus : a.request().gpus();
}

std::string Models(const v1::Allocation& a) {
  std::set<std::string> models;
  for (const v1::Slice& s : a.slices()) models.insert(s.model());
  return models.empty() ? "-" : absl::StrJoin(models, ",");
}

std::string StateText(const v1::Allocation& a) {
  std::string state = AllocationStateName(a.state());
  if (a.state() == v1::ALLOCATION_STATE_ENDED && a.end_reason() != v1::END_REASON_UNSPECIFIED) {
    absl::StrAppend(&state, " (", EndReasonName(a.end_reason()), ")");
  }
  return state;
}

std::string Window(const google::protobuf::Timestamp& from, const google::protobuf::Timestamp& to) {
  return absl::StrCat(TimeToString(from), " .. ", TimeToString(to));
}

std::string PricePerHour(int64_t micros) { return absl::StrCat(FormatMoney(micros), "/GPU-h"); }

std::string AllocationDetail(const v1::Allocation& a) {
  std::string text;
  absl::StrAppend(&text, "allocation  ", a.id(), "\n");
  absl::StrAppend(&text, "state       ", StateText(a), "\n");
  absl::StrAppend(&text, "window      ", Window(a.start(), a.end()), "  (",
                  DurationToString(absl::Trunc(FromProtoTime(a.end()) - FromProtoTime(a.start()),
                                               absl::Seconds(1))),
                  ")\n");
  absl::StrAppend(&text, "gpus        ", SliceGpus(a), " on ", a.slices_size(), " node",
                  a.slices_size() == 1 ? "" : "s", "\n");
  absl::StrAppend(&text, "total       ", FormatMoney(a.total_price_micros()), "\n");
  if (a.state() == v1::ALLOCATION_STATE_HELD) {
    absl::StrAppend(&text, "held until  ", TimeToString(a.hold_expires()), "\n");
  }
  if (a.slices_size() > 0) {
    Table t({"NODE", "CENTER", "DOMAIN", "MODEL", "GPUS", "PRICE", "OFFER"});
    for (const v1::Slice& s : a.slices()) {
      t.AddRow({s.node_id(), s.center_id(), s.domain_id(), s.model(), absl::StrCat(s.gpus()),
                PricePerHour(s.price_micros_per_gpu_hour()), s.offer_id()});
    }
    absl::StrAppend(&text, "\n", t.Render());
  }
  return text;
}

std::string AllocationTable(const google::protobuf::RepeatedPtrField<v1::Allocation>& list) {
  Table t({"ID", "STATE", "GPUS", "MODELS", "START", "END", "TOTAL"});
  for (const v1::Allocation& a : list) {
    t.AddRow({a.id(), StateText(a), absl::StrCat(SliceGpus(a)), Models(a), TimeToString(a.start()),
              TimeToString(a.end()), FormatMoney(a.total_price_micros())});
  }
  return t.Render();
}

void PrintAllocation(Context& ctx, const v1::Allocation& a) {
  if (ctx.json) {
    PrintJson(ctx, a);
  } else {
    Print(ctx, AllocationDetail(a));
  }
}

// Fetches pages of a List call until the last one or `limit` items, into one response whose
// next_page_token is set only when items were left.
template <typename Response, typename Fetch, typename Items>
absl::StatusOr<Response> FetchAll(int limit, Fetch fetch, Items items) {
  Response all;
  v1::PageRequest page;
  while (true) {
    page.set_page_size(std::min(kMaxPageSize, limit - items(&all)->size()));
    absl::StatusOr<Response> r = fetch(page);
    if (!r.ok()) return r.status();
    for (auto& item : *items(&*r)) *items(&all)->Add() = std::move(item);
    all.set_next_page_token(r->next_page_token());
    if (r->next_page_token().empty() || items(&all)->size() >= limit) break;
    page.set_page_token(r->next_page_token());
  }
  return all;
}

void NoteTruncated(Context& ctx, const std::string& next_page_token, int shown) {
  if (!next_page_token.empty()) {
    ctx.err << "suanli: " << ctx.command.path << ": showing the first " << shown
            << "; pass --limit=N for more\n";
  }
}

}  // namespace

// ---- Request from flags -------------------------------------------------------------------------

absl::StatusOr<v1::AllocationRequest> AllocationRequestFromFlags(const Flags& flags, absl::Time now,
                                                                 bool complete) {
  v1::AllocationRequest r;
  for (const std::string& model : flags.List("model")) r.add_models(model);
  if (complete || flags.Has("gpus")) {
    if (complete && !flags.Has("gpus")) return UsageError("--gpus is required");
    absl::StatusOr<int> gpus = IntFlag(flags, "gpus", 0, 1);
    if (!gpus.ok()) return gpus.status();
    r.set_gpus(*gpus);
  }
  absl::StatusOr<int> per_node = IntFlag(flags, "gpus-per-node", 0, 0);
  if (!per_node.ok()) return per_node.status();
  r.set_gpus_per_node(*per_node);
  if (std::optional<std::string> v = flags.Value("locality")) {
    absl::StatusOr<v1::Locality> locality = ParseLocality(*v);
    if (!locality.ok()) return FlagError("locality", locality.status());
    r.set_locality(*locality);
  }
  if (std::optional<std::string> v = flags.Value("min-fabric")) {
    absl::StatusOr<v1::Fabric> fabric = ParseFabric(*v);
    if (!fabric.ok()) return FlagError("min-fabric", fabric.status());
    r.set_min_fabric(*fabric);
  }
  for (const std::string& region : flags.List("region")) r.add_regions(region);
  absl::Status types = EnumListFlag<v1::CenterType>(
      flags, "center-type", ParseCenterType, [&](v1::CenterType t) { r.add_center_types(t); });
  if (!types.ok()) return types;
  for (const std::string& tag : flags.List("tag")) r.add_required_tags(tag);
  if (complete || flags.Has("max-price")) {
    absl::StatusOr<int64_t> ceiling = PriceFlag(flags, "max-price");
    if (!ceiling.ok()) return ceiling.status();
    r.set_max_price_micros_per_gpu_hour(*ceiling);
  }
  absl::StatusOr<std::optional<absl::Duration>> duration = DurationFlag(flags, "duration");
  if (!duration.ok()) return duration.status();
  if (duration->has_value()) {
    *r.mutable_duration() = ToProtoDuration(**duration);
  } else if (complete) {
    return UsageError("--duration is required");
  }
  absl::StatusOr<std::optional<absl::Time>> start = TimeFlag(flags, "start", now);
  if (!start.ok()) return start.status();
  if (start->has_value()) *r.mutable_start() = ToProtoTime(**start);
  r.set_idempotency_key(flags.ValueOr("idempotency-key", ""));
  return r;
}

std::vector<std::string> NextNodeIds(const std::vector<std::string>& existing,
                                     absl::string_view prefix, int count) {
  int64_t highest = 0;
  for (const std::string& id : existing) {
    if (!absl::StartsWith(id, prefix)) continue;
    const absl::string_view digits = absl::string_view(id).substr(prefix.size());
    int64_t n = 0;
    if (!digits.empty() && digits.size() <= 12 &&
        std::all_of(digits.begin(), digits.end(), absl::ascii_isdigit) &&
        absl::SimpleAtoi(digits, &n)) {
      highest = std::max(highest, n);
    }
  }
  std::vector<std::string> ids;
  ids.reserve(std::max(count, 0));
  for (int i = 1; i <= count; ++i) ids.push_back(absl::StrFormat("%s%04d", prefix, highest + i));
  return ids;
}

namespace {

// ---- Handlers -----------------------------------------------------------------------------------

absl::Status Ping(Context& ctx) {
  absl::StatusOr<v1::PingResponse> r = ctx.client->Ping();
  if (!r.ok()) return r.status();
  if (ctx.json) {
    PrintJson(ctx, *r);
  } else {
    Print(ctx, absl::StrCat("pong from ", ctx.server, ": account ", r->account_id(), " (",
                            r->role(), "), server time ", TimeToString(r->server_time()), "\n"));
  }
  return absl::OkStatus();
}

void WarnKeptOnce(Context& ctx) {
  ctx.err << "suanli: keep this API key somewhere safe: the broker stores only its hash and will "
             "never show it again\n";
}

absl::Status AccountCreate(Context& ctx) {
  absl::StatusOr<std::string> role_text = Required(ctx.flags, "role");
  if (!role_text.ok()) return role_text.status();
  absl::StatusOr<v1::Role> role = ParseRole(*role_text);
  if (!role.ok()) return FlagError("role", role.status());
  absl::StatusOr<std::string> name = Required(ctx.flags, "name");
  if (!name.ok()) return name.status();
  v1::CreateAccountRequest req;
  req.set_role(*role);
  req.set_name(*name);
  absl::StatusOr<v1::CreateAccountResponse> r = ctx.client->CreateAccount(req);
  if (!r.ok()) return r.status();
  if (ctx.json) {
    PrintJson(ctx, *r);
  } else {
    Print(ctx, absl::StrCat("account  ", r->account().id(), "  ", RoleName(r->account().role()),
                            "  ", r->account().name(), "\napi key  ", r->api_key(), "\n"));
  }
  WarnKeptOnce(ctx);
  return absl::OkStatus();
}

absl::Status AccountList(Context& ctx) {
  absl::StatusOr<v1::ListAccountsResponse> r = ctx.client->ListAccounts();
  if (!r.ok()) return r.status();
  if (ctx.json) {
    PrintJson(ctx, *r);
    return absl::OkStatus();
  }
  Table t({"ID", "ROLE", "NAME", "CREATED"});
  for (const v1::Account& a : r->accounts()) {
    t.AddRow({a.id(), RoleName(a.role()), a.name(), TimeToString(a.created())});
  }
  Print(ctx, t.Render());
  return absl::OkStatus();
}

absl::Status KeyCreate(Context& ctx) {
  absl::StatusOr<std::string> account = Required(ctx.flags, "account");
  if (!account.ok()) return account.status();
  v1::CreateApiKeyRequest req;
  req.set_account_id(*account);
  absl::StatusOr<v1::CreateApiKeyResponse> r = ctx.client->CreateApiKey(req);
  if (!r.ok()) return r.status();
  if (ctx.json) {
    PrintJson(ctx, *r);
  } else {
    Print(ctx, absl::StrCat("key      ", r->key().key_id(), "  account ", r->key().account_id(),
                            "\napi key  ", r->api_key(), "\n"));
  }
  WarnKeptOnce(ctx);
  return absl::OkStatus();
}

absl::Status KeyRevoke(Context& ctx) {
  v1::RevokeApiKeyRequest req;
  req.set_key_id(ctx.args[0]);
  absl::StatusOr<v1::RevokeApiKeyResponse> r = ctx.client->RevokeApiKey(req);
  if (!r.ok()) return r.status();
  if (ctx.json) {
    PrintJson(ctx, *r);
  } else {
    Print(ctx, absl::StrCat("revoked key ", r->key().key_id(), " of account ",
                            r->key().account_id(), "\n"));
  }
  return absl::OkStatus();
}

absl::Status CenterRegister(Context& ctx) {
  v1::RegisterCenterRequest req;
  v1::Center& c = *req.mutable_center();
  absl::StatusOr<std::string> id = Required(ctx.flags, "id");
  if (!id.ok()) return id.status();
  absl::StatusOr<std::string> region = Required(ctx.flags, "region");
  if (!region.ok()) return region.status();
  absl::StatusOr<std::string> type_text = Required(ctx.flags, "type");
  if (!type_text.ok()) return type_text.status();
  absl::StatusOr<v1::CenterType> type = ParseCenterType(*type_text);
  if (!type.ok()) return FlagError("type", type.status());
  c.set_id(*id);
  c.set_name(ctx.flags.ValueOr("name", *id));
  c.set_region(*region);
  c.set_type(*type);
  for (const std::string& tag : ctx.flags.List("tag")) c.add_tags(tag);
  absl::StatusOr<v1::Center> r = ctx.client->RegisterCenter(req);
  if (!r.ok()) return r.status();
  if (ctx.json) {
    PrintJson(ctx, *r);
  } else {
    Print(ctx, absl::StrCat("registered center ", r->id(), " (", r->name(), ", ",
                            CenterTypeName(r->type()), ", ", r->region(), ")\n"));
  }
  return absl::OkStatus();
}

absl::Status DomainAdd(Context& ctx) {
  v1::AddDomainRequest req;
  v1::FabricDomain& d = *req.mutable_domain();
  absl::StatusOr<std::string> center = Required(ctx.flags, "center");
  if (!center.ok()) return center.status();
  absl::StatusOr<std::string> id = Required(ctx.flags, "id");
  if (!id.ok()) return id.status();
  absl::StatusOr<std::string> fabric_text = Required(ctx.flags, "fabric");
  if (!fabric_text.ok()) return fabric_text.status();
  absl::StatusOr<v1::Fabric> fabric = ParseFabric(*fabric_text);
  if (!fabric.ok()) return FlagError("fabric", fabric.status());
  absl::StatusOr<int> gbps = IntFlag(ctx.flags, "gbps", 0, 0);
  if (!gbps.ok()) return gbps.status();
  d.set_center_id(*center);
  d.set_id(*id);
  d.set_fabric(*fabric);
  d.set_gbps(*gbps);
  absl::StatusOr<v1::FabricDomain> r = ctx.client->AddDomain(req);
  if (!r.ok()) return r.status();
  if (ctx.json) {
    PrintJson(ctx, *r);
  } else {
    Print(ctx, absl::StrCat("added domain ", r->id(), " to center ", r->center_id(), " (",
                            FabricName(r->fabric()),
                            r->gbps() > 0 ? absl::StrCat(", ", r->gbps(), " Gbit/s") : "", ")\n"));
  }
  return absl::OkStatus();
}

absl::Status NodeAdd(Context& ctx) {
  absl::StatusOr<std::string> center = Required(ctx.flags, "center");
  if (!center.ok()) return center.status();
  absl::StatusOr<std::string> domain = Required(ctx.flags, "domain");
  if (!domain.ok()) return domain.status();
  absl::StatusOr<std::string> model = Required(ctx.flags, "model");
  if (!model.ok()) return model.status();
  if (!ctx.flags.Has("gpus-per-node")) return UsageError("--gpus-per-node is required");
  absl::StatusOr<int> gpus = IntFlag(ctx.flags, "gpus-per-node", 0, 1);
  if (!gpus.ok()) return gpus.status();
  if (!ctx.flags.Has("count")) return UsageError("--count is required");
  absl::StatusOr<int> count = IntFlag(ctx.flags, "count", 0, 1);
  if (!count.ok()) return count.status();
  const std::string prefix =
      ctx.flags.ValueOr("prefix", absl::StrCat(*center, "-", *domain)) + "-n";

  v1::ListCapacityRequest list;
  list.set_center_id(*center);
  absl::StatusOr<v1::ListCapacityResponse> capacity = ctx.client->ListCapacity(list);
  if (!capacity.ok()) return capacity.status();
  const bool domain_known = std::any_of(
      capacity->domains().begin(), capacity->domains().end(),
      [&](const v1::FabricDomain& d) { return d.center_id() == *center && d.id() == *domain; });
  if (!domain_known) {
    return absl::NotFoundError(absl::StrCat("center ", *center, " has no domain ", *domain,
                                            " of yours (see `suanli capacity list`)"));
  }
  std::vector<std::string> existing;
  for (const v1::Node& n : capacity->nodes()) existing.push_back(n.id());
  const std::vector<std::string> ids = NextNodeIds(existing, prefix, *count);

  v1::AddNodesResponse total;
  for (size_t first = 0; first < ids.size(); first += kAddNodesBatch) {
    v1::AddNodesRequest req;
    const size_t last = std::min(ids.size(), first + kAddNodesBatch);
    for (size_t i = first; i < last; ++i) {
      v1::Node& n = *req.add_nodes();
      n.set_id(ids[i]);
      n.set_center_id(*center);
      n.set_domain_id(*domain);
      n.set_model(*model);
      n.set_gpus(*gpus);
    }
    absl::StatusOr<v1::AddNodesResponse> r = ctx.client->AddNodes(req);
    if (!r.ok()) {
      if (total.added() > 0) {
        ctx.err << "suanli: node add: " << total.added() << " of " << ids.size()
                << " nodes were added (" << ids.front() << " .. " << ids[first - 1]
                << ") before this error; run it again with --count=" << ids.size() - total.added()
                << " to add the rest\n";
      }
      return r.status();
    }
    total.set_added(total.added() + r->added());
  }
  if (ctx.json) {
    PrintJson(ctx, total);
  } else {
    Print(ctx, absl::StrCat("added ", total.added(), " nodes (", ids.front(), " .. ", ids.back(),
                            ") of ", *gpus, " x ", *model, " to ", *center, "/", *domain, "\n"));
  }
  return absl::OkStatus();
}

absl::Status NodeHealth(Context& ctx) {
  absl::StatusOr<std::string> text = Required(ctx.flags, "health");
  if (!text.ok()) return text.status();
  absl::StatusOr<v1::Health> health = ParseHealth(*text);
  if (!health.ok()) return FlagError("health", health.status());
  v1::SetNodeHealthRequest req;
  req.set_node_id(ctx.args[0]);
  req.set_health(*health);
  absl::StatusOr<v1::Node> r = ctx.client->SetNodeHealth(req);
  if (!r.ok()) return r.status();
  if (ctx.json) {
    PrintJson(ctx, *r);
  } else {
    Print(ctx, absl::StrCat("node ", r->id(), " is ", HealthName(r->health()), "\n"));
  }
  return absl::OkStatus();
}

absl::Status NodeRemove(Context& ctx) {
  v1::RemoveNodeRequest req;
  req.set_node_id(ctx.args[0]);
  absl::StatusOr<v1::RemoveNodeResponse> r = ctx.client->RemoveNode(req);
  if (!r.ok()) return r.status();
  if (ctx.json) {
    PrintJson(ctx, *r);
  } else {
    Print(ctx, absl::StrCat("removed node ", ctx.args[0], "\n"));
  }
  return absl::OkStatus();
}

std::string RandomSuffix() {
  absl::BitGen gen;
  return absl::StrFormat("%08x", absl::Uniform<uint32_t>(gen));
}

absl::Status OfferCreate(Context& ctx) {
  v1::CreateOfferRequest req;
  v1::Offer& o = *req.mutable_offer();
  absl::StatusOr<std::string> center = Required(ctx.flags, "center");
  if (!center.ok()) return center.status();
  o.set_center_id(*center);
  const std::vector<std::string> nodes = ctx.flags.List("nodes");
  if (ctx.flags.Has("domain") == !nodes.empty()) {
    return UsageError("give exactly one of --domain and --nodes");
  }
  if (ctx.flags.Has("domain")) {
    o.set_domain_id(ctx.flags.ValueOr("domain", ""));
  } else {
    for (const std::string& n : nodes) o.add_node_ids(n);
  }
  absl::StatusOr<std::optional<absl::Time>> from = TimeFlag(ctx.flags, "from", ctx.now);
  if (!from.ok()) return from.status();
  if (from->has_value()) *o.mutable_from() = ToProtoTime(**from);
  if (!ctx.flags.Has("until")) return UsageError("--until is required");
  absl::StatusOr<std::optional<absl::Time>> until = TimeFlag(ctx.flags, "until", ctx.now);
  if (!until.ok()) return until.status();
  *o.mutable_until() = ToProtoTime(**until);
  absl::StatusOr<int64_t> price = PriceFlag(ctx.flags, "price");
  if (!price.ok()) return price.status();
  o.set_price_micros_per_gpu_hour(*price);
  absl::StatusOr<std::optional<absl::Duration>> min_lease = DurationFlag(ctx.flags, "min-lease");
  if (!min_lease.ok()) return min_lease.status();
  if (min_lease->has_value()) *o.mutable_min_lease() = ToProtoDuration(**min_lease);
  o.set_whole_node_only(ctx.flags.Switch("whole-node-only"));
  o.set_id(ctx.flags.ValueOr("id", absl::StrCat(*center, "-offer-", RandomSuffix())));
  absl::StatusOr<v1::Offer> r = ctx.client->CreateOffer(req);
  if (!r.ok()) return r.status();
  if (ctx.json) {
    PrintJson(ctx, *r);
  } else {
    const std::string what = r->domain_id().empty() ? absl::StrCat(r->node_ids_size(), " nodes")
                                                    : absl::StrCat("domain ", r->domain_id());
    Print(ctx, absl::StrCat("offer ", r->id(), ": ", r->center_id(), " ", what, ", ",
                            Window(r->from(), r->until()), " at ",
                            PricePerHour(r->price_micros_per_gpu_hour()),
                            r->whole_node_only() ? ", whole nodes only" : "", "\n"));
  }
  return absl::OkStatus();
}

absl::Status OfferWithdraw(Context& ctx) {
  v1::WithdrawOfferRequest req;
  req.set_offer_id(ctx.args[0]);
  absl::StatusOr<v1::Offer> r = ctx.client->WithdrawOffer(req);
  if (!r.ok()) return r.status();
  if (ctx.json) {
    PrintJson(ctx, *r);
  } else {
    Print(ctx, absl::StrCat("withdrew offer ", r->id(), "; what was sold under it stays sold\n"));
  }
  return absl::OkStatus();
}

absl::Status CapacityList(Context& ctx) {
  v1::ListCapacityRequest req;
  req.set_center_id(ctx.flags.ValueOr("center", ""));
  absl::StatusOr<v1::ListCapacityResponse> r = ctx.client->ListCapacity(req);
  if (!r.ok()) return r.status();
  if (ctx.json) {
    PrintJson(ctx, *r);
    return absl::OkStatus();
  }
  std::string text;
  Table centers({"CENTER", "NAME", "REGION", "TYPE", "TAGS"});
  for (const v1::Center& c : r->centers()) {
    centers.AddRow({c.id(), c.name(), c.region(), CenterTypeName(c.type()),
                    c.tags().empty() ? "-" : absl::StrJoin(c.tags(), ",")});
  }
  absl::StrAppend(&text, centers.Render());
  // Nodes summed up per domain; --nodes lists each one.
  struct DomainSum {
    int nodes = 0, gpus = 0, healthy = 0, degraded = 0, down = 0;
    std::set<std::string> models;
  };
  std::map<std::pair<std::string, std::string>, DomainSum> sums;
  for (const v1::Node& n : r->nodes()) {
    DomainSum& s = sums[{n.center_id(), n.domain_id()}];
    ++s.nodes;
    s.gpus += n.gpus();
    s.models.insert(n.model());
    if (n.health() == v1::HEALTH_HEALTHY) ++s.healthy;
    if (n.health() == v1::HEALTH_DEGRADED) ++s.degraded;
    if (n.health() == v1::HEALTH_DOWN) ++s.down;
  }
  Table domains({"CENTER", "DOMAIN", "FABRIC", "GBPS", "NODES", "GPUS", "MODELS", "HEALTHY",
                 "DEGRADED", "DOWN"});
  for (const v1::FabricDomain& d : r->domains()) {
    const DomainSum& s = sums[{d.center_id(), d.id()}];
    domains.AddRow({d.center_id(), d.id(), FabricName(d.fabric()), absl::StrCat(d.gbps()),
                    absl::StrCat(s.nodes), absl::StrCat(s.gpus),
                    s.models.empty() ? "-" : absl::StrJoin(s.models, ","), absl::StrCat(s.healthy),
                    absl::StrCat(s.degraded), absl::StrCat(s.down)});
  }
  absl::StrAppend(&text, "\n", domains.Render());
  if (ctx.flags.Switch("nodes")) {
    Table nodes({"NODE", "CENTER", "DOMAIN", "MODEL", "GPUS", "HEALTH"});
    for (const v1::Node& n : r->nodes()) {
      nodes.AddRow({n.id(), n.center_id(), n.domain_id(), n.model(), absl::StrCat(n.gpus()),
                    HealthName(n.health())});
    }
    absl::StrAppend(&text, "\n", nodes.Render());
  }
  Table offers({"OFFER", "CENTER", "ON", "PRICE", "WINDOW", "MIN LEASE", "STATE"});
  for (const v1::Offer& o : r->offers()) {
    offers.AddRow({o.id(), o.center_id(),
                   o.domain_id().empty() ? absl::StrCat(o.node_ids_size(), " nodes")
                                         : absl::StrCat("domain ", o.domain_id()),
                   PricePerHour(o.price_micros_per_gpu_hour()), Window(o.from(), o.until()),
                   DurationToString(FromProtoDuration(o.min_lease())),
                   absl::StrCat(o.withdrawn() ? "withdrawn" : "on sale",
                                o.whole_node_only() ? ", whole nodes" : "")});
  }
  absl::StrAppend(&text, "\n", offers.Render());
  Print(ctx, text);
  return absl::OkStatus();
}

absl::Status Catalog(Context& ctx) {
  absl::StatusOr<int> limit = IntFlag(ctx.flags, "limit", kDefaultLimit, 1);
  if (!limit.ok()) return limit.status();
  const std::string query = absl::StrJoin(ctx.args, " ");
  absl::StatusOr<v1::SearchCatalogResponse> r = FetchAll<v1::SearchCatalogResponse>(
      *limit,
      [&](const v1::PageRequest& page) {
        v1::SearchCatalogRequest req;
        req.set_query(query);
        *req.mutable_page() = page;
        return ctx.client->SearchCatalog(req);
      },
      [](v1::SearchCatalogResponse* r) { return r->mutable_entries(); });
  if (!r.ok()) return r.status();
  if (ctx.json) {
    PrintJson(ctx, *r);
    return absl::OkStatus();
  }
  Table t({"CENTER", "REGION", "TYPE", "DOMAIN", "FABRIC", "MODEL", "GPUS/NODE", "FREE GPUS",
           "FREE NODES", "PRICE", "WINDOW"});
  for (const v1::CatalogEntry& e : r->entries()) {
    t.AddRow({e.center_id(), e.region(), CenterTypeName(e.center_type()), e.domain_id(),
              FabricName(e.fabric()), e.model(), absl::StrCat(e.gpus_per_node()),
              absl::StrCat(e.free_gpus()), absl::StrCat(e.free_whole_nodes()),
              PricePerHour(e.price_micros_per_gpu_hour()), Window(e.from(), e.until())});
  }
  Print(ctx, t.Render());
  NoteTruncated(ctx, r->next_page_token(), r->entries_size());
  return absl::OkStatus();
}

// A status that makes Run exit 3 and print the hints of `rejection`.
absl::Status Rejected(const v1::Rejection& rejection) {
  absl::Status s = absl::ResourceExhaustedError(
      absl::StrCat("not available", rejection.message().empty() ? "" : ": ", rejection.message()));
  s.SetPayload(kRejectionTypeUrl, absl::Cord(rejection.SerializeAsString()));
  return s;
}

absl::Status Quote(Context& ctx) {
  absl::StatusOr<v1::AllocationRequest> request =
      AllocationRequestFromFlags(ctx.flags, ctx.now, /*complete=*/true);
  if (!request.ok()) return request.status();
  v1::QuoteRequest req;
  *req.mutable_request() = *std::move(request);
  absl::StatusOr<std::optional<absl::Duration>> hold = DurationFlag(ctx.flags, "hold");
  if (!hold.ok()) return hold.status();
  if (hold->has_value()) *req.mutable_hold() = ToProtoDuration(**hold);
  absl::StatusOr<v1::QuoteResponse> r = ctx.client->Quote(req);
  if (!r.ok()) return r.status();
  if (ctx.json) PrintJson(ctx, *r);
  if (!r->available()) return Rejected(r->rejection());
  if (ctx.json) return absl::OkStatus();
  const v1::Allocation& a = r->allocation();
  std::string text;
  if (a.state() == v1::ALLOCATION_STATE_HELD) {
    absl::StrAppend(&text, "binding quote ", a.id(), ", held until ",
                    TimeToString(a.hold_expires()),
                    "; redeem it with: suanli allocate --quote=", a.id(), "\n\n");
  } else {
    absl::StrAppend(&text, "available (not held; `--hold=30s` holds it)\n\n");
  }
  absl::StrAppend(&text, AllocationDetail(a));
  Print(ctx, text);
  return absl::OkStatus();
}

absl::Status Allocate(Context& ctx) {
  v1::AllocateRequest req;
  const std::string quote = ctx.flags.ValueOr("quote", "");
  absl::StatusOr<v1::AllocationRequest> request =
      AllocationRequestFromFlags(ctx.flags, ctx.now, /*complete=*/quote.empty());
  if (!request.ok()) return request.status();
  *req.mutable_request() = *std::move(request);
  req.set_quote_id(quote);
  absl::StatusOr<v1::Allocation> r = ctx.client->Allocate(req);
  if (!r.ok()) return r.status();
  PrintAllocation(ctx, *r);
  return absl::OkStatus();
}

absl::Status AllocationGet(Context& ctx) {
  v1::GetAllocationRequest req;
  req.set_allocation_id(ctx.args[0]);
  absl::StatusOr<v1::Allocation> r = ctx.client->GetAllocation(req);
  if (!r.ok()) return r.status();
  PrintAllocation(ctx, *r);
  return absl::OkStatus();
}

absl::Status AllocationList(Context& ctx) {
  absl::StatusOr<int> limit = IntFlag(ctx.flags, "limit", kDefaultLimit, 1);
  if (!limit.ok()) return limit.status();
  absl::StatusOr<v1::ListAllocationsResponse> r = FetchAll<v1::ListAllocationsResponse>(
      *limit,
      [&](const v1::PageRequest& page) {
        v1::ListAllocationsRequest req;
        req.set_include_ended(ctx.flags.Switch("all"));
        *req.mutable_page() = page;
        return ctx.client->ListAllocations(req);
      },
      [](v1::ListAllocationsResponse* r) { return r->mutable_allocations(); });
  if (!r.ok()) return r.status();
  if (ctx.json) {
    PrintJson(ctx, *r);
    return absl::OkStatus();
  }
  Print(ctx, AllocationTable(r->allocations()));
  NoteTruncated(ctx, r->next_page_token(), r->allocations_size());
  return absl::OkStatus();
}

absl::Status AllocationWatch(Context& ctx) {
  v1::WatchAllocationsRequest req;
  req.set_include_ended(ctx.flags.Switch("all"));
  return ctx.client->WatchAllocations(req, [&](const v1::Allocation& a) {
    if (ctx.json) {
      // One compact document per line (JSON Lines): the stream has no end to wrap.
      google::protobuf::util::JsonPrintOptions options;
      options.always_print_primitive_fields = true;
      options.preserve_proto_field_names = true;
      std::string json;
      if (google::protobuf::util::MessageToJsonString(a, &json, options).ok()) {
        Print(ctx, absl::StrCat(json, "\n"));
      }
    } else {
      Print(ctx, absl::StrCat(TimeToString(absl::Now()), "  ", a.id(), "  ", StateText(a), "  ",
                              SliceGpus(a), " GPUs  ", Window(a.start(), a.end()), "  ",
                              FormatMoney(a.total_price_micros()), "\n"));
    }
    return true;
  });
}

absl::Status Extend(Context& ctx) {
  const bool by = ctx.flags.Has("by");
  if (by == ctx.flags.Has("until")) return UsageError("give exactly one of --by and --until");
  v1::ExtendAllocationRequest req;
  req.set_allocation_id(ctx.args[0]);
  if (by) {
    // The new end is computed here from the current one, so that the call names a time and is
    // safe to retry (an extension `by` would add twice if repeated).
    absl::StatusOr<std::optional<absl::Duration>> more = DurationFlag(ctx.flags, "by");
    if (!more.ok()) return more.status();
    v1::GetAllocationRequest get;
    get.set_allocation_id(ctx.args[0]);
    absl::StatusOr<v1::Allocation> current = ctx.client->GetAllocation(get);
    if (!current.ok()) return current.status();
    *req.mutable_new_end() = ToProtoTime(FromProtoTime(current->end()) + **more);
  } else {
    absl::StatusOr<std::optional<absl::Time>> until = TimeFlag(ctx.flags, "until", ctx.now);
    if (!until.ok()) return until.status();
    *req.mutable_new_end() = ToProtoTime(**until);
  }
  absl::StatusOr<v1::Allocation> r = ctx.client->ExtendAllocation(req);
  if (!r.ok()) return r.status();
  PrintAllocation(ctx, *r);
  return absl::OkStatus();
}

absl::Status Release(Context& ctx) {
  v1::ReleaseAllocationRequest req;
  req.set_allocation_id(ctx.args[0]);
  absl::StatusOr<v1::Allocation> r = ctx.client->ReleaseAllocation(req);
  if (!r.ok()) return r.status();
  PrintAllocation(ctx, *r);
  return absl::OkStatus();
}

absl::Status SoldList(Context& ctx) {
  absl::StatusOr<int> limit = IntFlag(ctx.flags, "limit", kDefaultLimit, 1);
  if (!limit.ok()) return limit.status();
  absl::StatusOr<std::optional<absl::Time>> since = TimeFlag(ctx.flags, "since", ctx.now);
  if (!since.ok()) return since.status();
  absl::StatusOr<v1::ListSoldAllocationsResponse> r = FetchAll<v1::ListSoldAllocationsResponse>(
      *limit,
      [&](const v1::PageRequest& page) {
        v1::ListSoldAllocationsRequest req;
        req.set_center_id(ctx.flags.ValueOr("center", ""));
        if (since->has_value()) *req.mutable_since() = ToProtoTime(**since);
        *req.mutable_page() = page;
        return ctx.client->ListSoldAllocations(req);
      },
      [](v1::ListSoldAllocationsResponse* r) { return r->mutable_allocations(); });
  if (!r.ok()) return r.status();
  if (ctx.json) {
    PrintJson(ctx, *r);
    return absl::OkStatus();
  }
  Table t({"ID", "BUYER", "STATE", "NODE", "GPUS", "MODEL", "START", "END", "PRICE"});
  for (const v1::Allocation& a : r->allocations()) {
    for (const v1::Slice& s : a.slices()) {
      t.AddRow({a.id(), a.buyer_id(), StateText(a), s.node_id(), absl::StrCat(s.gpus()), s.model(),
                TimeToString(a.start()), TimeToString(a.end()),
                PricePerHour(s.price_micros_per_gpu_hour())});
    }
  }
  Print(ctx, t.Render());
  NoteTruncated(ctx, r->next_page_token(), r->allocations_size());
  return absl::OkStatus();
}

// A CSV field: quoted when it holds a comma, a quote or a line break.
std::string CsvField(const std::string& text) {
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  return absl::StrCat("\"", absl::StrReplaceAll(text, {{"\"", "\"\""}}), "\"");
}

// The period [--from, --to) of a statement, invoice or report: both required.
absl::Status PeriodFlags(const Context& ctx, google::protobuf::Timestamp* from,
                         google::protobuf::Timestamp* to) {
  for (const char* name : {"from", "to"}) {
    if (!ctx.flags.Has(name)) return UsageError(absl::StrCat("--", name, " is required"));
  }
  absl::StatusOr<std::optional<absl::Time>> f = TimeFlag(ctx.flags, "from", ctx.now);
  if (!f.ok()) return f.status();
  absl::StatusOr<std::optional<absl::Time>> t = TimeFlag(ctx.flags, "to", ctx.now);
  if (!t.ok()) return t.status();
  if (**f >= **t) return UsageError("--from must be before --to");
  *from = ToProtoTime(**f);
  *to = ToProtoTime(**t);
  return absl::OkStatus();
}

absl::StatusOr<v1::GetMarketStatsRequest> StatsRequest(const Context& ctx) {
  v1::GetMarketStatsRequest req;
  absl::StatusOr<std::optional<absl::Time>> from = TimeFlag(ctx.flags, "from", ctx.now);
  if (!from.ok()) return from.status();
  if (from->has_value()) *req.mutable_from() = ToProtoTime(**from);
  absl::StatusOr<std::optional<absl::Time>> to = TimeFlag(ctx.flags, "to", ctx.now);
  if (!to.ok()) return to.status();
  if (to->has_value()) *req.mutable_to() = ToProtoTime(**to);
  std::optional<std::string> g = ctx.flags.Value("by");
  if (!g.has_value()) g = ctx.flags.Value("group-by");
  if (g.has_value()) {
    absl::StatusOr<v1::GroupBy> group = ParseGroupBy(*g);
    if (!group.ok()) return FlagError("by", group.status());
    req.set_group_by(*group);
  }
  return req;
}

// Machine-readable figures: plain numbers (hours, ratios 0..1, money in micro-units).
std::string StatsCsv(const v1::GetMarketStatsResponse& r) {
  std::string csv =
      "group,offered_gpu_hours,sold_gpu_hours,offered_pflops_hours,sold_pflops_hours,"
      "utilization,requests,grants,fill_rate,gmv_micros,commission_micros,idle_fragment_gpus\n";
  for (const v1::MarketStatsRow& row : r.rows()) {
    absl::StrAppend(
        &csv, CsvField(row.group()), ",",
        absl::StrFormat("%.6f,%.6f,%.6f,%.6f,%.6f", row.offered_gpu_hours(), row.sold_gpu_hours(),
                        row.offered_pflops_hours(), row.sold_pflops_hours(), row.utilization()),
        ",", row.requests(), ",", row.grants(), ",", absl::StrFormat("%.6f", row.fill_rate()), ",",
        row.gmv_micros(), ",", row.commission_micros(), ",", row.idle_fragment_gpus(), "\n");
  }
  return csv;
}

std::string StatsTable(const v1::GetMarketStatsResponse& r) {
  Table t({"GROUP", "OFFERED GPU-H", "SOLD GPU-H", "UTILIZATION", "REQUESTS", "GRANTS", "FILL",
           "GMV", "COMMISSION", "IDLE FRAGMENTS"});
  for (const v1::MarketStatsRow& row : r.rows()) {
    t.AddRow({row.group().empty() ? "(market)" : row.group(),
              absl::StrFormat("%.1f", row.offered_gpu_hours()),
              absl::StrFormat("%.1f", row.sold_gpu_hours()),
              absl::StrFormat("%.1f%%", 100 * row.utilization()), absl::StrCat(row.requests()),
              absl::StrCat(row.grants()), absl::StrFormat("%.1f%%", 100 * row.fill_rate()),
              FormatMoney(row.gmv_micros()), FormatMoney(row.commission_micros()),
              absl::StrCat(row.idle_fragment_gpus())});
  }
  std::string latency =
      r.decisions_timed() == 0
          ? "\ndecision latency: no decisions timed in this range\n"
          : absl::StrFormat(
                "\ndecision latency: p50 %.1fus, p99 %.1fus, p99.9 %.1fus (%d decisions)\n",
                r.decision_p50_us(), r.decision_p99_us(), r.decision_p999_us(),
                r.decisions_timed());
  return absl::StrCat(t.Render(), latency);
}

absl::Status Stats(Context& ctx) {
  absl::StatusOr<v1::GetMarketStatsRequest> req = StatsRequest(ctx);
  if (!req.ok()) return req.status();
  absl::StatusOr<v1::GetMarketStatsResponse> r = ctx.client->GetMarketStats(*req);
  if (!r.ok()) return r.status();
  if (ctx.json) {
    PrintJson(ctx, *r);
  } else if (ctx.csv) {
    Print(ctx, StatsCsv(*r));
  } else {
    Print(ctx, StatsTable(*r));
  }
  return absl::OkStatus();
}

std::string KindName(v1::LedgerEntryKind kind) {
  switch (kind) {
    case v1::LEDGER_ENTRY_KIND_SALE:
      return "sale";
    case v1::LEDGER_ENTRY_KIND_EXTENSION:
      return "extension";
    case v1::LEDGER_ENTRY_KIND_REFUND:
      return "refund";
    case v1::LEDGER_ENTRY_KIND_CORRECTION:
      return "correction";
    default:
      return absl::StrCat(static_cast<int>(kind));
  }
}

std::string Named(const std::string& id, const std::string& name) {
  return name.empty() || name == id ? id : absl::StrCat(id, " (", name, ")");
}

absl::Status Statement(Context& ctx) {
  v1::GetStatementRequest req;
  req.set_operator_id(ctx.flags.ValueOr("operator", ""));
  if (absl::Status s = PeriodFlags(ctx, req.mutable_from(), req.mutable_to()); !s.ok()) return s;
  absl::StatusOr<v1::Statement> r = ctx.client->GetStatement(req);
  if (!r.ok()) return r.status();
  if (ctx.json) {
    PrintJson(ctx, *r);
    return absl::OkStatus();
  }
  if (ctx.csv) {
    std::string csv =
        "entry_id,posted,allocation_id,buyer_id,kind,gpus,gpu_hours,gross_micros,"
        "commission_micros,net_micros\n";
    for (const v1::StatementLine& l : r->lines()) {
      absl::StrAppend(&csv, l.entry_id(), ",", TimeToString(l.posted()), ",",
                      CsvField(l.allocation_id()), ",", CsvField(l.buyer_id()), ",",
                      KindName(l.kind()), ",", l.gpus(), ",",
                      absl::StrFormat("%.6f", l.gpu_hours()), ",", l.gross_micros(), ",",
                      l.commission_micros(), ",", l.net_micros(), "\n");
    }
    Print(ctx, csv);
    return absl::OkStatus();
  }
  Table t({"ENTRY", "POSTED", "ALLOCATION", "BUYER", "KIND", "GPUS", "GPU-H", "GROSS", "COMMISSION",
           "NET"});
  for (const v1::StatementLine& l : r->lines()) {
    t.AddRow({absl::StrCat(l.entry_id()), TimeToString(l.posted()), l.allocation_id(), l.buyer_id(),
              KindName(l.kind()), absl::StrCat(l.gpus()), absl::StrFormat("%.2f", l.gpu_hours()),
              FormatMoney(l.gross_micros()), FormatMoney(l.commission_micros()),
              FormatMoney(l.net_micros())});
  }
  Print(ctx, absl::StrCat("statement of ", Named(r->operator_id(), r->operator_name()),
                          "\nperiod      ", Window(r->from(), r->to()), "\n\n",
                          t.rows() == 0 ? "no sales in this period\n" : t.Render(),
                          "\nlines            ", r->line_count(),
                          absl::StrFormat(" (%.2f GPU-h)", r->gpu_hours()), "\ngross            ",
                          FormatMoney(r->gross_micros()), "\ncommission       ",
                          FormatMoney(r->commission_micros()), "\nnet payable      ",
                          FormatMoney(r->net_micros()), "\nopening balance  ",
                          FormatMoney(r->opening_balance_micros()), "\nclosing balance  ",
                          FormatMoney(r->closing_balance_micros()), "\n"));
  return absl::OkStatus();
}

absl::Status Invoice(Context& ctx) {
  v1::GetInvoiceRequest req;
  req.set_buyer_id(ctx.flags.ValueOr("buyer", ""));
  if (absl::Status s = PeriodFlags(ctx, req.mutable_from(), req.mutable_to()); !s.ok()) return s;
  absl::StatusOr<v1::Invoice> r = ctx.client->GetInvoice(req);
  if (!r.ok()) return r.status();
  if (ctx.json) {
    PrintJson(ctx, *r);
    return absl::OkStatus();
  }
  if (ctx.csv) {
    std::string csv = "allocation_id,gpus,models,start,end,entry_id,posted,kind,amount_micros\n";
    for (const v1::InvoiceAllocation& a : r->allocations()) {
      for (const v1::InvoiceEntry& e : a.entries()) {
        absl::StrAppend(&csv, CsvField(a.allocation_id()), ",", a.gpus(), ",",
                        CsvField(absl::StrJoin(a.models(), " ")), ",", TimeToString(a.start()), ",",
                        TimeToString(a.end()), ",", e.entry_id(), ",", TimeToString(e.posted()),
                        ",", KindName(e.kind()), ",", e.amount_micros(), "\n");
      }
    }
    Print(ctx, csv);
    return absl::OkStatus();
  }
  Table t({"ALLOCATION", "GPUS", "MODELS", "WINDOW", "ENTRY", "POSTED", "KIND", "AMOUNT"});
  for (const v1::InvoiceAllocation& a : r->allocations()) {
    bool first = true;
    for (const v1::InvoiceEntry& e : a.entries()) {
      t.AddRow({first ? a.allocation_id() : "", first ? absl::StrCat(a.gpus()) : "",
                first ? absl::StrJoin(a.models(), ",") : "",
                first ? Window(a.start(), a.end()) : "", absl::StrCat(e.entry_id()),
                TimeToString(e.posted()), KindName(e.kind()), FormatMoney(e.amount_micros())});
      first = false;
    }
    t.AddRow({"", "", "", "", "", "", "total", FormatMoney(a.total_micros())});
  }
  Print(ctx, absl::StrCat("invoice of ", Named(r->buyer_id(), r->buyer_name()), "\nperiod      ",
                          Window(r->from(), r->to()), "\n\n",
                          t.rows() == 0 ? "no charges in this period\n" : t.Render(),
                          "\nallocations      ", r->allocation_count(), " (", r->entry_count(),
                          " entries)", "\ntotal due        ", FormatMoney(r->total_due_micros()),
                          "\nopening balance  ", FormatMoney(r->opening_balance_micros()),
                          "\nclosing balance  ", FormatMoney(r->closing_balance_micros()), "\n"));
  return absl::OkStatus();
}

// `ops report`: the market's figures and the settlement of the same period.
absl::Status Report(Context& ctx) {
  absl::StatusOr<v1::GetMarketStatsRequest> stats_req = StatsRequest(ctx);
  if (!stats_req.ok()) return stats_req.status();
  v1::GetSettlementReportRequest books_req;
  if (absl::Status s = PeriodFlags(ctx, books_req.mutable_from(), books_req.mutable_to());
      !s.ok()) {
    return s;
  }
  absl::StatusOr<v1::GetMarketStatsResponse> stats = ctx.client->GetMarketStats(*stats_req);
  if (!stats.ok()) return stats.status();
  absl::StatusOr<v1::GetSettlementReportResponse> books =
      ctx.client->GetSettlementReport(books_req);
  if (!books.ok()) return books.status();
  if (ctx.json) {
    // One document: {"stats": GetMarketStatsResponse, "settlement": GetSettlementReportResponse},
    // each printed as PrintJson prints it (fields in proto order), indented one level further.
    google::protobuf::util::JsonPrintOptions options;
    options.add_whitespace = true;
    options.always_print_primitive_fields = true;
    options.preserve_proto_field_names = true;
    std::string doc = "{";
    for (const auto& [name, message] :
         std::vector<std::pair<std::string, const google::protobuf::Message*>>{
             {"stats", &*stats}, {"settlement", &*books}}) {
      std::string json;
      if (!google::protobuf::util::MessageToJsonString(*message, &json, options).ok()) {
        return absl::InternalError(absl::StrCat("cannot print the ", name, " as JSON"));
      }
      absl::StrAppend(
          &doc, doc.size() > 1 ? "," : "", "\n \"", name,
          "\": ", absl::StrReplaceAll(absl::StripTrailingAsciiWhitespace(json), {{"\n", "\n "}}));
    }
    absl::StrAppend(&doc, "\n}\n");
    Print(ctx, doc);
    return absl::OkStatus();
  }
  if (ctx.csv) {
    // Three tables, each with its header line, separated by an empty line.
    std::string csv = StatsCsv(*stats);
    absl::StrAppend(&csv,
                    "\noperator_id,operator_name,lines,gpu_hours,gross_micros,commission_micros,"
                    "net_micros,opening_balance_micros,closing_balance_micros\n");
    for (const v1::Statement& s : books->statements()) {
      absl::StrAppend(&csv, CsvField(s.operator_id()), ",", CsvField(s.operator_name()), ",",
                      s.line_count(), ",", absl::StrFormat("%.6f", s.gpu_hours()), ",",
                      s.gross_micros(), ",", s.commission_micros(), ",", s.net_micros(), ",",
                      s.opening_balance_micros(), ",", s.closing_balance_micros(), "\n");
    }
    absl::StrAppend(&csv,
                    "\nbuyer_id,buyer_name,allocations,entries,total_due_micros,"
                    "opening_balance_micros,closing_balance_micros\n");
    for (const v1::Invoice& i : books->invoices()) {
      absl::StrAppend(&csv, CsvField(i.buyer_id()), ",", CsvField(i.buyer_name()), ",",
                      i.allocation_count(), ",", i.entry_count(), ",", i.total_due_micros(), ",",
                      i.opening_balance_micros(), ",", i.closing_balance_micros(), "\n");
    }
    Print(ctx, csv);
    return absl::OkStatus();
  }
  Table ops({"OPERATOR", "NAME", "LINES", "GPU-H", "GROSS", "COMMISSION", "NET PAYABLE", "OPENING",
             "CLOSING"});
  for (const v1::Statement& s : books->statements()) {
    ops.AddRow({s.operator_id(), s.operator_name(), absl::StrCat(s.line_count()),
                absl::StrFormat("%.1f", s.gpu_hours()), FormatMoney(s.gross_micros()),
                FormatMoney(s.commission_micros()), FormatMoney(s.net_micros()),
                FormatMoney(s.opening_balance_micros()), FormatMoney(s.closing_balance_micros())});
  }
  Table buyers({"BUYER", "NAME", "ALLOCATIONS", "ENTRIES", "TOTAL DUE", "OPENING", "CLOSING"});
  for (const v1::Invoice& i : books->invoices()) {
    buyers.AddRow({i.buyer_id(), i.buyer_name(), absl::StrCat(i.allocation_count()),
                   absl::StrCat(i.entry_count()), FormatMoney(i.total_due_micros()),
                   FormatMoney(i.opening_balance_micros()),
                   FormatMoney(i.closing_balance_micros())});
  }
  Print(ctx, absl::StrCat("report for ", Window(books->from(), books->to()), "\n\nMarket figures\n",
                          StatsTable(*stats), "\nStatements (operators)\n",
                          ops.rows() == 0 ? "none\n" : ops.Render(), "\nInvoices (buyers)\n",
                          buyers.rows() == 0 ? "none\n" : buyers.Render(), "\nsettlement: gross ",
                          FormatMoney(books->gross_micros()), ", commission ",
                          FormatMoney(books->commission_micros()), ", net payable to operators ",
                          FormatMoney(books->net_micros()), ", invoiced to buyers ",
                          FormatMoney(books->due_micros()), "\n"));
  return absl::OkStatus();
}

// ---- The command table --------------------------------------------------------------------------

std::vector<FlagSpec> GlobalFlags() {
  return {
      {"server", FlagKind::kValue,
       "=HOST:PORT  the broker (default $SUANLI_SERVER, else localhost:7700)"},
      {"key", FlagKind::kValue, "=sk_...  API key (default $SUANLI_KEY)"},
      {"ca-file", FlagKind::kValue,
       "=PEM  CA of the broker's certificate: use TLS (default $SUANLI_CA_FILE; none: plaintext)"},
      {"timeout", FlagKind::kValue, "=DURATION  deadline of each attempt of a call (default 10s)"},
      {"output", FlagKind::kValue,
       "=table|json|csv  json prints the response as one JSON document; csv is for stats, "
       "reports, statements and invoices"},
      {"help", FlagKind::kSwitch, "  show help"},
  };
}

std::vector<FlagSpec> RequestFlags() {
  return {
      {"model", FlagKind::kList, "=M[,M...]  acceptable GPU models (default any)"},
      {"gpus", FlagKind::kValue, "=N  total GPUs (required)"},
      {"gpus-per-node", FlagKind::kValue, "=K  GPUs on every node used (default any packing)"},
      {"locality", FlagKind::kValue,
       "=node|domain|center|any  where the GPUs may come from (default any)"},
      {"min-fabric", FlagKind::kValue, "=ethernet|roce|infiniband|nvlink  minimum interconnect"},
      {"region", FlagKind::kList, "=R[,R...]  acceptable regions (default any)"},
      {"center-type", FlagKind::kList,
       "=T[,T...]  government|carrier|internet|enterprise|academic"},
      {"tag", FlagKind::kList, "=T  a tag every center must carry (repeatable)"},
      {"max-price", FlagKind::kValue, "=PRICE  ceiling per GPU-hour, e.g. 30.00 (required)"},
      {"duration", FlagKind::kValue, "=DURATION  how long, e.g. 4h or 1h30m (required)"},
      {"start", FlagKind::kValue, "=TIME  RFC 3339, now or +2h (default now)"},
      {"idempotency-key", FlagKind::kValue,
       "=K  makes a repeated request return the first answer (default: a random one per run)"},
  };
}

std::vector<FlagSpec> With(std::vector<FlagSpec> a, const std::vector<FlagSpec>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

constexpr size_t kAny = SIZE_MAX;

const std::vector<Command>& Commands() {
  static const std::vector<Command>* const commands = new std::vector<Command>{
      {"ping",
       "",
       0,
       0,
       "check the key and the connection; show the account and the broker's clock",
       {},
       Ping},
      {"account create",
       "",
       0,
       0,
       "create an account and its first API key (admin)",
       {{"role", FlagKind::kValue, "=admin|operator|buyer  (required)"},
        {"name", FlagKind::kValue, "=NAME  unique account name (required)"}},
       AccountCreate,
       false},
      {"account list", "", 0, 0, "list every account (admin)", {}, AccountList},
      {"key create",
       "",
       0,
       0,
       "create a further API key for an account (admin)",
       {{"account", FlagKind::kValue, "=ID  the account (required)"}},
       KeyCreate,
       false},
      {"key revoke", "KEYID", 1, 1, "revoke an API key (admin)", {}, KeyRevoke, false},
      {"center register",
       "",
       0,
       0,
       "register a computing center (operator)",
       {{"id", FlagKind::kValue, "=ID  [a-z0-9-], unique in the market (required)"},
        {"name", FlagKind::kValue, "=NAME  for people (default: the id)"},
        {"region", FlagKind::kValue, "=REGION  e.g. cn-east-2 (required)"},
        {"type", FlagKind::kValue, "=government|carrier|internet|enterprise|academic  (required)"},
        {"tag", FlagKind::kList, "=T  a compliance tag (repeatable)"}},
       CenterRegister,
       false},
      {"domain add",
       "",
       0,
       0,
       "add a fabric domain to a center (operator)",
       {{"center", FlagKind::kValue, "=ID  (required)"},
        {"id", FlagKind::kValue, "=ID  unique within the center (required)"},
        {"fabric", FlagKind::kValue, "=ethernet|roce|infiniband|nvlink  (required)"},
        {"gbps", FlagKind::kValue, "=N  per-node bandwidth in Gbit/s (default unknown)"}},
       DomainAdd,
       false},
      {"node add",
       "",
       0,
       0,
       "add COUNT nodes to a domain, named <prefix>-n0001... after the domain's existing ones "
       "(operator)",
       {{"center", FlagKind::kValue, "=ID  (required)"},
        {"domain", FlagKind::kValue, "=ID  (required)"},
        {"model", FlagKind::kValue, "=MODEL  GPU model, e.g. H100-SXM5-80G (required)"},
        {"gpus-per-node", FlagKind::kValue, "=N  GPUs on each node, 1..16 (required)"},
        {"count", FlagKind::kValue, "=N  how many nodes (required)"},
        {"prefix", FlagKind::kValue, "=P  node ids are P-n0001... (default <center>-<domain>)"}},
       NodeAdd,
       false},
      {"node health",
       "ID",
       1,
       1,
       "report a node's health; only healthy nodes are sold (operator)",
       {{"health", FlagKind::kValue, "=healthy|degraded|down  (required)"}},
       NodeHealth},
      {"node remove", "ID", 1, 1, "remove an idle node (operator)", {}, NodeRemove, false},
      {"offer create",
       "",
       0,
       0,
       "put a domain or some nodes on sale (operator)",
       {{"center", FlagKind::kValue, "=ID  (required)"},
        {"domain", FlagKind::kValue, "=ID  every node of this domain (or --nodes)"},
        {"nodes", FlagKind::kList, "=N[,N...]  these nodes of the center (or --domain)"},
        {"from", FlagKind::kValue, "=TIME  start of the window (default now)"},
        {"until", FlagKind::kValue,
         "=TIME  end of the window, e.g. 2026-12-31T00:00:00Z or +30d (required)"},
        {"price", FlagKind::kValue, "=PRICE  ask per GPU-hour, e.g. 25.50 (required)"},
        {"min-lease", FlagKind::kValue, "=DURATION  shortest sale (default none)"},
        {"whole-node-only", FlagKind::kSwitch, "  sell whole nodes only"},
        {"id", FlagKind::kValue, "=ID  the offer's id (default <center>-offer-<random>)"}},
       OfferCreate,
       false},
      {"offer withdraw",
       "ID",
       1,
       1,
       "take an offer off the market; sold capacity stays sold (operator)",
       {},
       OfferWithdraw},
      {"capacity list",
       "",
       0,
       0,
       "your centers, domains (with node counts) and offers (operator)",
       {{"center", FlagKind::kValue, "=ID  one center (default all yours)"},
        {"nodes", FlagKind::kSwitch, "  also list every node"}},
       CapacityList},
      {"catalog",
       "[QUERY...]",
       0,
       kAny,
       "capacity on sale, cheapest first; QUERY like: 'model=H100-SXM5-80G free_gpus>=16 "
       "price<=30'",
       {{"limit", FlagKind::kValue, "=N  at most N entries (default 1000)"}},
       Catalog},
      {"quote", "", 0, 0, "what allocate would grant now, without taking it; --hold binds it",
       With(RequestFlags(),
            {{"hold", FlagKind::kValue,
              "=DURATION  hold the capacity this long (at most 1h) as a binding quote"}}),
       Quote},
      {"allocate", "", 0, 0, "take capacity, all of it or nothing",
       With(RequestFlags(), {{"quote", FlagKind::kValue,
                              "=ID  redeem this binding quote instead (request flags optional)"}}),
       Allocate},
      {"allocation get", "ID", 1, 1, "one of your allocations, with its slices", {}, AllocationGet},
      {"allocation list",
       "",
       0,
       0,
       "your live allocations, newest first",
       {{"all", FlagKind::kSwitch, "  include ended ones"},
        {"limit", FlagKind::kValue, "=N  at most N (default 1000)"}},
       AllocationList},
      {"allocation watch",
       "",
       0,
       0,
       "one line per change of your allocations, until Ctrl-C",
       {{"all", FlagKind::kSwitch, "  include ended ones"}},
       AllocationWatch},
      {"extend",
       "ID",
       1,
       1,
       "move an allocation's end later (--by reads the current end and asks for end + by)",
       {{"by", FlagKind::kValue, "=DURATION  this much longer"},
        {"until", FlagKind::kValue, "=TIME  to this end"}},
       Extend},
      {"release", "ID", 1, 1, "end an allocation now, or cancel a binding quote", {}, Release},
      {"sold list",
       "",
       0,
       0,
       "allocations sold on your capacity, for provisioning (operator)",
       {{"center", FlagKind::kValue, "=ID  one center (default all yours)"},
        {"since", FlagKind::kValue, "=TIME  those that end after this (default now)"},
        {"limit", FlagKind::kValue, "=N  at most N (default 1000)"}},
       SoldList},
      {"stats",
       "",
       0,
       0,
       "the market's figures (admin; operators see their own)",
       {{"by", FlagKind::kValue, "=none|center|region|operator|model|center-type  grouping"},
        {"group-by", FlagKind::kValue, "=...  the same as --by"},
        {"from", FlagKind::kValue, "=TIME  (default 24h before --to)"},
        {"to", FlagKind::kValue, "=TIME  (default now)"}},
       Stats},
      {"ops stats",
       "",
       0,
       0,
       "the same as stats",
       {{"by", FlagKind::kValue, "=none|center|region|operator|model|center-type  grouping"},
        {"group-by", FlagKind::kValue, "=...  the same as --by"},
        {"from", FlagKind::kValue, "=TIME  (default 24h before --to)"},
        {"to", FlagKind::kValue, "=TIME  (default now)"}},
       Stats},
      {"ops report",
       "",
       0,
       0,
       "the market's figures and the settlement of a period: a statement summary per operator "
       "and an invoice summary per buyer (admin; operators see their own)",
       {{"from", FlagKind::kValue, "=TIME  start of the period (required)"},
        {"to", FlagKind::kValue, "=TIME  end of the period, exclusive (required)"},
        {"by", FlagKind::kValue,
         "=none|center|region|operator|model|center-type  grouping of the figures"},
        {"group-by", FlagKind::kValue, "=...  the same as --by"}},
       Report},
      {"statement",
       "",
       0,
       0,
       "an operator's settlement statement: its sales of a period line by line, gross, "
       "commission and net payable (operator: your own; admin: --operator)",
       {{"operator", FlagKind::kValue, "=ID  the operator account (default: yours)"},
        {"from", FlagKind::kValue, "=TIME  start of the period (required)"},
        {"to", FlagKind::kValue, "=TIME  end of the period, exclusive (required)"}},
       Statement},
      {"invoice",
       "",
       0,
       0,
       "a buyer's invoice: every allocation charged in a period with its entries, and the total "
       "due (buyer: your own; admin: --buyer)",
       {{"buyer", FlagKind::kValue, "=ID  the buyer account (default: yours)"},
        {"from", FlagKind::kValue, "=TIME  start of the period (required)"},
        {"to", FlagKind::kValue, "=TIME  end of the period, exclusive (required)"}},
       Invoice},
  };
  return *commands;
}

// Every flag any command knows: the table the command line is split with.
std::vector<FlagSpec> AllFlags() {
  std::vector<FlagSpec> all = GlobalFlags();
  for (const Command& c : Commands()) {
    for (const FlagSpec& f : c.flags) {
      if (std::none_of(all.begin(), all.end(),
                       [&](const FlagSpec& g) { return g.name == f.name; })) {
        all.push_back(f);
      }
    }
  }
  return all;
}

constexpr char kExitCodesHelp[] =
    "Exit codes:\n"
    "  0  done\n"
    "  1  the call failed (the broker refused it, or could not be reached)\n"
    "  2  usage error (unknown command or flag, missing or malformed value)\n"
    "  3  capacity not available: the request was rejected; what would work is on stderr\n";

// The rows of a table whose first column is empty (an indent), without its header row.
std::string IndentedRows(const Table& t) {
  const std::string text = t.Render();
  return text.substr(text.find('\n') + 1);
}

// One line per flag: "--name=VALUE" and what it does, in two aligned columns.
std::string FlagsHelp(const std::vector<FlagSpec>& flags) {
  Table t({"", "", ""});
  for (const FlagSpec& f : flags) {
    const size_t gap = f.help.find("  ");
    const std::string value = f.help.substr(0, gap);
    const std::string what = gap == std::string::npos ? "" : f.help.substr(gap + 2);
    t.AddRow({"", absl::StrCat("--", f.name, value), what});
  }
  return IndentedRows(t);
}

std::string MainHelp() {
  std::string text =
      "suanli: the command line of the Suanli GPU-capacity broker.\n\n"
      "Usage: suanli COMMAND [ARGS] [FLAGS]   (flags may come anywhere; suanli COMMAND --help)\n\n"
      "Commands:\n";
  Table t({"", "", ""});
  for (const Command& c : Commands()) t.AddRow({"", absl::StrCat(c.path, " ", c.usage), c.summary});
  absl::StrAppend(&text, IndentedRows(t), "\nGlobal flags:\n", FlagsHelp(GlobalFlags()),
                  "\nEnvironment: SUANLI_SERVER, SUANLI_KEY, SUANLI_CA_FILE (flags win).\n"
                  "Money is in currency units with up to 6 decimals (25.50); durations like 30s, "
                  "90m, 2h, 3d, 1h30m;\ntimes RFC 3339 (2026-12-01T08:00:00Z), \"now\" or \"+2h\". "
                  "Output times are UTC.\n\n",
                  kExitCodesHelp);
  return text;
}

std::string CommandHelp(const Command& c) {
  return absl::StrCat("Usage: suanli ", c.path, c.usage.empty() ? "" : " ", c.usage,
                      c.flags.empty() ? "" : " [FLAGS]", "\n\n", c.summary, "\n",
                      c.flags.empty() ? "" : absl::StrCat("\nFlags:\n", FlagsHelp(c.flags)),
                      "\nGlobal flags:\n", FlagsHelp(GlobalFlags()), "\n", kExitCodesHelp);
}

// The command whose path is the longest prefix of `words`, and how many words it took.
const Command* FindCommand(const std::vector<std::string>& words, size_t* taken) {
  const Command* found = nullptr;
  for (const Command& c : Commands()) {
    const std::vector<std::string> path = absl::StrSplit(c.path, ' ');
    if (path.size() > words.size()) continue;
    if (!std::equal(path.begin(), path.end(), words.begin())) continue;
    if (found == nullptr || path.size() > *taken) {
      found = &c;
      *taken = path.size();
    }
  }
  return found;
}

// The subcommands of a group such as "allocation", or empty.
std::vector<const Command*> Group(absl::string_view first_word) {
  std::vector<const Command*> group;
  for (const Command& c : Commands()) {
    if (absl::StartsWith(c.path, absl::StrCat(first_word, " "))) group.push_back(&c);
  }
  return group;
}

std::string GroupHelp(const std::vector<const Command*>& group) {
  std::string text = "Commands:\n";
  for (const Command* c : group) {
    absl::StrAppend(&text, "  suanli ", c->path, c->usage.empty() ? "" : " ", c->usage, "  ",
                    c->summary, "\n");
  }
  return text;
}

int Usage(std::ostream& err, absl::string_view prefix, absl::string_view message) {
  err << "suanli: " << prefix << message << "\n";
  return kExitUsage;
}

// Prints a failed command's status and returns its exit code.
int Report(const Context& ctx, const absl::Status& status) {
  const std::string& name = ctx.command.path;
  if (IsUsageError(status)) {
    ctx.err << "suanli: " << name << ": " << status.message() << " (suanli " << name
            << " --help)\n";
    return kExitUsage;
  }
  ctx.err << "suanli: " << name << ": " << absl::StatusCodeToString(status.code()) << ": "
          << status.message() << "\n";
  if (std::optional<v1::Rejection> rejection = RejectionOf(status)) {
    const std::string hint = RejectionHint(*rejection);
    if (!hint.empty()) ctx.err << "suanli: " << name << ": what would work: " << hint << "\n";
    return kExitRejected;
  }
  if (status.code() == absl::StatusCode::kUnavailable) {
    ctx.err << "suanli: " << name << ": is the broker running at " << ctx.server
            << "? (--server, SUANLI_SERVER" << (ctx.tls ? "" : "; a TLS broker needs --ca-file")
            << ")\n";
    if (!ctx.command.retry_safe) {
      ctx.err << "suanli: " << name << ": the broker may have applied this before the connection "
              << "failed; check before running it again\n";
    }
  } else if (status.code() == absl::StatusCode::kUnauthenticated) {
    ctx.err << "suanli: " << name << ": check the API key (--key, SUANLI_KEY)\n";
  }
  return kExitError;
}

}  // namespace

int Run(const std::vector<std::string>& args, const GetEnv& getenv, std::ostream& out,
        std::ostream& err) {
  absl::StatusOr<CommandLine> line = SplitCommandLine(args, AllFlags());
  if (!line.ok()) return Usage(err, "", absl::StrCat(line.status().message(), " (suanli --help)"));
  std::vector<std::string>& words = line->words;
  const bool help = line->flags.Switch("help");
  if (!words.empty() && words[0] == "help") {
    words.erase(words.begin());
    if (words.empty()) {
      out << MainHelp();
      return kExitOk;
    }
    size_t taken = 0;
    if (const Command* c = FindCommand(words, &taken)) {
      out << CommandHelp(*c);
      return kExitOk;
    }
  }
  if (words.empty()) {
    if (help) {
      out << MainHelp();
      return kExitOk;
    }
    err << MainHelp();
    return kExitUsage;
  }
  size_t taken = 0;
  const Command* command = FindCommand(words, &taken);
  if (command == nullptr) {
    const std::vector<const Command*> group = Group(words[0]);
    if (group.empty()) {
      return Usage(err, "", absl::StrCat("unknown command \"", words[0], "\" (suanli --help)"));
    }
    if (help && words.size() == 1) {
      out << GroupHelp(group);
      return kExitOk;
    }
    err << "suanli: " << words[0]
        << (words.size() == 1 ? ": missing subcommand\n" : ": unknown subcommand\n")
        << GroupHelp(group);
    return kExitUsage;
  }
  if (help) {
    out << CommandHelp(*command);
    return kExitOk;
  }
  const std::string prefix = absl::StrCat(command->path, ": ");
  for (const std::string& name : line->flags.Names()) {
    auto known = [&](const std::vector<FlagSpec>& specs) {
      return std::any_of(specs.begin(), specs.end(),
                         [&](const FlagSpec& f) { return f.name == name; });
    };
    if (!known(GlobalFlags()) && !known(command->flags)) {
      return Usage(err, prefix,
                   absl::StrCat("no flag --", name, " here (suanli ", command->path, " --help)"));
    }
  }
  std::vector<std::string> rest(words.begin() + static_cast<std::ptrdiff_t>(taken), words.end());
  if (rest.size() < command->min_args || rest.size() > command->max_args) {
    return Usage(err, prefix,
                 absl::StrCat(command->usage.empty() ? "takes no arguments"
                                                     : absl::StrCat("expects ", command->usage),
                              "; got ", rest.empty() ? "none" : absl::StrJoin(rest, " "),
                              " (suanli ", command->path, " --help)"));
  }

  // Where and who.
  auto setting = [&](absl::string_view flag, const std::string& env,
                     absl::string_view fallback) -> std::string {
    if (std::optional<std::string> v = line->flags.Value(flag)) return *v;
    if (std::optional<std::string> v = getenv(env); v.has_value() && !v->empty()) return *v;
    return static_cast<std::string>(fallback);
  };
  ClientOptions options;
  options.target = setting("server", "SUANLI_SERVER", kDefaultServer);
  options.api_key =
      static_cast<std::string>(absl::StripAsciiWhitespace(setting("key", "SUANLI_KEY", "")));
  options.ca_file = setting("ca-file", "SUANLI_CA_FILE", "");
  if (std::optional<std::string> t = line->flags.Value("timeout")) {
    absl::StatusOr<absl::Duration> timeout = ParseDuration(*t);
    if (!timeout.ok())
      return Usage(err, prefix, absl::StrCat("--timeout: ", timeout.status().message()));
    if (*timeout <= absl::ZeroDuration())
      return Usage(err, prefix, "--timeout must be more than 0");
    options.timeout = *timeout;
  }
  const std::string output = line->flags.ValueOr("output", "table");
  if (output != "table" && output != "json" && output != "csv") {
    return Usage(err, prefix, "--output must be table, json or csv");
  }
  const std::set<std::string> csv_commands = {"stats", "ops stats", "ops report", "statement",
                                              "invoice"};
  if (output == "csv" && csv_commands.count(command->path) == 0) {
    return Usage(err, prefix,
                 "--output=csv is for stats, ops report, statement and invoice; use table or json "
                 "here");
  }
  if (options.api_key.empty()) {
    return Usage(err, prefix, "no API key: pass --key=sk_... or set SUANLI_KEY");
  }
  const std::string server = options.target;
  const bool tls = !options.ca_file.empty();
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(std::move(options));
  if (!client.ok()) {
    // Only the options can make Connect fail: a bad key, timeout or CA file.
    err << "suanli: " << prefix << client.status().message() << "\n";
    return kExitUsage;
  }

  Context ctx{*command,
              std::move(rest),
              line->flags,
              client->get(),
              output == "json",
              output == "csv",
              server,
              tls,
              absl::Now(),
              out,
              err};
  const absl::Status status = command->run(ctx);
  if (status.ok()) return kExitOk;
  if (ctx.json && !ctx.printed) {
    if (std::optional<v1::Rejection> rejection = RejectionOf(status)) PrintJson(ctx, *rejection);
  }
  return Report(ctx, status);
}

}  // namespace suanli::cli
