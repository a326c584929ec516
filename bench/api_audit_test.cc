#include "bench/api_audit.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sdk/format.h"

namespace suanli::bench {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

class ApiAuditTest : public testing::Test {
 protected:
  ApiAuditTest() : market_(MakeStdMarket(8192, 1, kT0)) {}

  // A grant of `gpus` GPUs (one slice per node, gpus_per_node each) on the first nodes of domain
  // `d`, starting now for `hours`, as the broker would answer it, and what the bench asked.
  v1::Allocation Grant(const std::string& id, size_t d, int32_t nodes, int32_t gpus_per_node,
                       int hours, absl::Time start = kT0) {
    const scheduler::DomainSpec& dom = market_.domains[d];
    const scheduler::OfferSpec& offer = market_.offers[d];
    v1::Allocation a;
    a.set_id(id);
    a.set_buyer_id("acc-buyer");
    a.set_state(v1::ALLOCATION_STATE_ACTIVE);
    *a.mutable_start() = ToProtoTime(start);
    *a.mutable_end() = ToProtoTime(start + absl::Hours(hours));
    int64_t rate = 0;
    std::string model;
    for (const scheduler::NodeSpec& n : market_.nodes) {
      if (a.slices_size() == nodes) break;
      if (n.center_id != dom.center_id || n.domain_id != dom.id) continue;
      v1::Slice& s = *a.add_slices();
      s.set_node_id(n.id);
      s.set_center_id(n.center_id);
      s.set_domain_id(n.domain_id);
      s.set_model(n.model);
      s.set_gpus(gpus_per_node);
      s.set_price_micros_per_gpu_hour(offer.price_per_gpu_hour);
      s.set_offer_id(offer.id);
      rate += int64_t{gpus_per_node} * offer.price_per_gpu_hour;
      model = n.model;
    }
    a.set_total_price_micros(scheduler::PriceFor(rate, absl::Hours(hours)));
    AskedGrant g;
    g.request.add_models(model);
    g.request.set_gpus(nodes * gpus_per_node);
    g.request.set_gpus_per_node(gpus_per_node);
    g.request.set_locality(nodes == 1 ? v1::LOCALITY_NODE : v1::LOCALITY_DOMAIN);
    g.request.set_max_price_micros_per_gpu_hour(offer.price_per_gpu_hour);
    *g.request.mutable_duration() = ToProtoDuration(absl::Hours(hours));
    g.buyer_id = "acc-buyer";
    g.sent = start - absl::Milliseconds(1);
    g.received = start + absl::Milliseconds(1);
    asked_[id] = g;
    return a;
  }

  AuditResult Audit() {
    AuditInput in;
    in.market = &market_;
    in.asked = &asked_;
    in.listed = &listed_;
    return AuditAllocations(in);
  }

  StdMarket market_;
  absl::flat_hash_map<std::string, AskedGrant> asked_;
  std::vector<v1::Allocation> listed_;
};

TEST_F(ApiAuditTest, GrantsThatFitPass) {
  listed_.push_back(Grant("1", 0, 1, 4, 2));
  listed_.push_back(Grant("2", 0, 1, 4, 2));  // the other half of the same node
  listed_.push_back(Grant("3", 1, 4, 8, 24));
  const AuditResult r = Audit();
  EXPECT_EQ(r.violations, 0) << testing::PrintToString(r.problems);
  EXPECT_EQ(r.allocations, 3);
  EXPECT_EQ(r.slices, 6);
}

TEST_F(ApiAuditTest, OversoldNodeIsAViolation) {
  listed_.push_back(Grant("1", 0, 1, 8, 2));
  listed_.push_back(Grant("2", 0, 1, 4, 2, kT0 + absl::Hours(1)));  // overlaps the first hour
  asked_["2"].sent = kT0 + absl::Hours(1);
  asked_["2"].received = kT0 + absl::Hours(1);
  const AuditResult r = Audit();
  EXPECT_EQ(r.violations, 1);
  EXPECT_THAT(r.problems, testing::Contains(testing::HasSubstr("12 GPUs sold")));
}

TEST_F(ApiAuditTest, BackToBackIntervalsDoNotOverlap) {
  listed_.push_back(Grant("1", 0, 1, 8, 2));
  listed_.push_back(Grant("2", 0, 1, 8, 2, kT0 + absl::Hours(2)));
  asked_["2"].sent = kT0 + absl::Hours(2);
  asked_["2"].received = kT0 + absl::Hours(2);
  EXPECT_EQ(Audit().violations, 0);
}

TEST_F(ApiAuditTest, GrantThatBreaksItsRequestIsAViolation) {
  listed_.push_back(Grant("1", 1, 2, 8, 24));
  asked_["1"].request.set_max_price_micros_per_gpu_hour(1);  // the ceiling was lower
  listed_.push_back(Grant("2", 2, 1, 8, 24));
  asked_["2"].request.clear_models();
  asked_["2"].request.add_models("no-such-model");
  listed_.push_back(Grant("3", 3, 1, 8, 24));
  asked_["3"].request.set_gpus(16);
  const AuditResult r = Audit();
  EXPECT_EQ(r.violations, 4) << testing::PrintToString(r.problems);  // two slices over the ceiling
  EXPECT_THAT(r.problems, testing::Contains(testing::HasSubstr("above the ceiling")));
  EXPECT_THAT(r.problems, testing::Contains(testing::HasSubstr("not among those asked")));
  EXPECT_THAT(r.problems, testing::Contains(testing::HasSubstr("8 GPUs, asked 16")));
}

TEST_F(ApiAuditTest, WrongDurationOrPriceIsAViolation) {
  v1::Allocation a = Grant("1", 0, 1, 8, 2);
  *a.mutable_end() = ToProtoTime(kT0 + absl::Hours(3));
  listed_.push_back(a);
  const AuditResult r = Audit();
  EXPECT_EQ(r.violations, 2) << testing::PrintToString(r.problems);  // lasts 3h; price of 2h
}

TEST_F(ApiAuditTest, ReleasedEarlyIsFineOnlyWhenTheBenchReleasedIt) {
  v1::Allocation a = Grant("1", 0, 1, 8, 2);
  a.set_state(v1::ALLOCATION_STATE_ENDED);
  a.set_end_reason(v1::END_REASON_RELEASED);
  *a.mutable_end() = ToProtoTime(kT0 + absl::Hours(1));
  a.set_total_price_micros(a.total_price_micros() / 2);
  listed_.push_back(a);
  EXPECT_EQ(Audit().violations, 1);  // nobody released it
  asked_["1"].released = true;
  EXPECT_EQ(Audit().violations, 0);
}

TEST_F(ApiAuditTest, LostOrUnknownGrantsAreViolations) {
  Grant("1", 0, 1, 8, 2);  // granted, never listed
  v1::Allocation stranger = Grant("2", 1, 1, 8, 2);
  asked_.erase("2");  // listed, never granted
  listed_.push_back(stranger);
  const AuditResult r = Audit();
  EXPECT_EQ(r.violations, 2);
  EXPECT_THAT(r.problems, testing::Contains(testing::HasSubstr("not listed")));
  EXPECT_THAT(r.problems, testing::Contains(testing::HasSubstr("never granted")));
}

TEST_F(ApiAuditTest, GangAcrossDomainsIsAViolation) {
  v1::Allocation a = Grant("1", 0, 2, 8, 2);
  v1::Allocation b = Grant("x", 1, 1, 8, 2);
  *a.mutable_slices(1) = b.slices(0);
  asked_.erase("x");
  a.set_total_price_micros(scheduler::PriceFor(
      8 * (a.slices(0).price_micros_per_gpu_hour() + a.slices(1).price_micros_per_gpu_hour()),
      absl::Hours(2)));
  listed_.push_back(a);
  const AuditResult r = Audit();
  EXPECT_THAT(r.problems, testing::Contains(testing::HasSubstr("more than one fabric domain")));
}

}  // namespace
}  // namespace suanli::bench
