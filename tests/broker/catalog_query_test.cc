#include "broker/catalog_query.h"

#include <string>

#include "gtest/gtest.h"

namespace suanli::broker {
namespace {

CatalogEntryView H100East() {
  CatalogEntryView e;
  e.model = "H100-SXM5-80G";
  e.region = "cn-east-2";
  e.center_id = "ctr-7";
  e.center_type = "carrier";
  e.fabric = "infiniband";
  e.tags = {"data-in-cn"};
  e.free_gpus = 512;
  e.free_nodes = 60;
  e.gpus_per_node = 8;
  e.gbps = 400;
  e.price_micros = 27'500'000;
  return e;
}

bool Match(const std::string& query, const CatalogEntryView& e = H100East()) {
  absl::StatusOr<CatalogQuery> q = ParseCatalogQuery(query);
  EXPECT_TRUE(q.ok()) << query << ": " << q.status();
  return q.ok() && q->Matches(e);
}

std::string Error(const std::string& query) {
  absl::StatusOr<CatalogQuery> q = ParseCatalogQuery(query);
  EXPECT_FALSE(q.ok()) << query;
  EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument) << query;
  return {q.status().message().data(), q.status().message().size()};
}

TEST(CatalogQuery, TheDocumentedExampleMatches) {
  EXPECT_TRUE(
      Match("model=H100-SXM5-80G,H800-SXM5-80G free_gpus>=64 region=cn-east-2 fabric=infiniband "
            "price<=30"));
}

TEST(CatalogQuery, EmptyQueryMatchesEverything) {
  EXPECT_TRUE(Match(""));
  EXPECT_TRUE(Match("   "));
}

TEST(CatalogQuery, EveryTermMustHold) {
  EXPECT_TRUE(Match("region=cn-east-2 free_nodes>59"));
  EXPECT_FALSE(Match("region=cn-east-2 free_nodes>60"));
}

TEST(CatalogQuery, ListsAreAnyOfAndNoneOf) {
  EXPECT_TRUE(Match("region=cn-north-1,cn-east-2"));
  EXPECT_FALSE(Match("region!=cn-north-1,cn-east-2"));
  EXPECT_TRUE(Match("model!=A100-SXM4-80G"));
  EXPECT_TRUE(Match("tag=gov-cloud,data-in-cn"));
  EXPECT_FALSE(Match("tag!=data-in-cn"));
}

TEST(CatalogQuery, EnumNamesIgnoreCase) {
  EXPECT_TRUE(Match("fabric=InfiniBand type=CARRIER"));
  EXPECT_FALSE(Match("type=government"));
}

TEST(CatalogQuery, PricesAreExactInMicroUnits) {
  EXPECT_TRUE(Match("price=27.5"));
  EXPECT_TRUE(Match("price=27.500000"));
  EXPECT_TRUE(Match("price<27.500001"));
  EXPECT_FALSE(Match("price<27.5"));
  EXPECT_TRUE(Match("price>=27"));
}

TEST(CatalogQuery, NumberOperatorsCompare) {
  EXPECT_TRUE(Match("gpus_per_node=8 gbps>=400 gbps<=400 free_gpus!=0 free_gpus<513"));
  EXPECT_FALSE(Match("gpus_per_node!=8"));
}

TEST(CatalogQuery, ErrorsSayWhereAndWhat) {
  EXPECT_EQ(Error("colour=red"),
            "catalog query, column 1: unknown field 'colour'; fields are model, region, center, "
            "type, fabric, tag, free_gpus, free_nodes, gpus_per_node, gbps, price");
  EXPECT_EQ(Error("region=cn-east-2 free_gpus"),
            "catalog query, column 27: expected an operator (=, !=, <, <=, >, >=) after "
            "'free_gpus'");
  EXPECT_EQ(Error("model>H100"),
            "catalog query, column 6: 'model' takes = or != (it is not a number)");
  EXPECT_EQ(Error("price<=30.1234567"),
            "catalog query, column 8: expected a price such as 30 or 25.50 (at most six "
            "decimals), got '30.1234567'");
  EXPECT_EQ(Error("free_gpus>=lots"),
            "catalog query, column 12: expected a whole number, got 'lots'");
  EXPECT_EQ(Error("region="), "catalog query, column 8: expected a value after 'region='");
  EXPECT_EQ(Error("region=a,,b"),
            "catalog query, column 10: expected a value here (empty list item)");
  EXPECT_EQ(Error("model=H100;drop"),
            "catalog query, column 11: unexpected character ';' (values use letters, digits, . - "
            "_)");
  EXPECT_EQ(Error("=5"),
            "catalog query, column 1: expected a field name (model, region, "
            "center, type, fabric, tag, free_gpus, free_nodes, gpus_per_node, "
            "gbps, price)");
}

}  // namespace
}  // namespace suanli::broker
