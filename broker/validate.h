// Checks what callers send and turns it into the allocation core's types. Every check that can
// fail says which field is wrong and what would be accepted, so that a person can fix the call.
// Pure functions: no state, no I/O; fuzzed (tests/fuzz/validate_fuzz.cc).
//
// The promise the fuzz target checks: a request that passes ValidateAllocationRequest is never
// refused as malformed (INVALID_ARGUMENT) by the core.
#ifndef SUANLI_BROKER_VALIDATE_H_
#define SUANLI_BROKER_VALIDATE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "scheduler/types.h"
#include "suanli/v1/admin.pb.h"
#include "suanli/v1/common.pb.h"

namespace suanli::broker {

// Ids of centers, domains, nodes and offers: 1..64 characters of [a-z0-9-_.], starting with a
// letter or digit.
absl::Status CheckId(absl::string_view field, absl::string_view id);

// A timestamp or duration field, checked to be in the range protobuf defines.
absl::StatusOr<absl::Time> FromProto(absl::string_view field, const google::protobuf::Timestamp& t);
absl::StatusOr<absl::Duration> FromProto(absl::string_view field,
                                         const google::protobuf::Duration& d);
google::protobuf::Timestamp ToProto(absl::Time t);
google::protobuf::Duration ToProto(absl::Duration d);

// The period [from, to) of a report from its optional `from` and `to` fields (nullptr: not
// given): `to` defaults to `now`, `from` to 24 hours before `to`. INVALID_ARGUMENT when a field is
// not a valid timestamp or from >= to.
struct Period {
  absl::Time from;
  absl::Time to;
};
absl::StatusOr<Period> ValidatePeriod(const google::protobuf::Timestamp* from,
                                      const google::protobuf::Timestamp* to, absl::Time now);

// A buyer's request for capacity, for the core. The start stays unset when the request leaves it
// unset; a start more than 10 years after `now` is refused.
absl::StatusOr<scheduler::Request> ValidateAllocationRequest(const v1::AllocationRequest& r,
                                                             absl::string_view buyer,
                                                             absl::Time now);
// A binding quote's hold: (0, 1h].
absl::StatusOr<absl::Duration> ValidateHold(const google::protobuf::Duration& hold);

absl::StatusOr<scheduler::CenterSpec> ValidateCenter(const v1::Center& c,
                                                     absl::string_view operator_id);
absl::StatusOr<scheduler::DomainSpec> ValidateDomain(const v1::FabricDomain& d);
absl::StatusOr<scheduler::NodeSpec> ValidateNode(const v1::Node& n);
// An offer; an unset `from` means `now`.
absl::StatusOr<scheduler::OfferSpec> ValidateOffer(const v1::Offer& o, absl::Time now);
absl::StatusOr<scheduler::Health> ValidateHealth(v1::Health h);
// An account name: 1..200 printable characters.
absl::Status ValidateAccountName(absl::string_view name);
// A known role (admin, operator or buyer).
absl::Status ValidateRole(v1::Role role);
// An idempotency key: at most 128 printable ASCII characters (empty: none).
absl::Status ValidateIdempotencyKey(absl::string_view key);

// Conversions of enums between the API and the core (valid values only).
v1::CenterType ToProto(scheduler::CenterType t);
v1::Fabric ToProto(scheduler::Fabric f);
v1::Health ToProto(scheduler::Health h);
v1::RejectReason ToProto(scheduler::RejectReason r);
// Lower-case names as the catalog query language uses them ("government", "infiniband").
std::string LowerName(v1::CenterType t);
std::string LowerName(v1::Fabric f);
const char* RoleName(v1::Role r);  // "admin", "operator", "buyer"

}  // namespace suanli::broker

#endif  // SUANLI_BROKER_VALIDATE_H_
