// A brute-force model of the allocation core for small markets, used by the property test. It
// keeps the market in the plainest form (lists of nodes, offers and sold intervals) and decides by
// enumerating: every subset of nodes for fixed-size slices, every candidate ceiling and start time
// for the hints. It shares no code with the Matcher beyond the value types.
#ifndef SUANLI_TESTS_SCHEDULER_REFERENCE_MATCHER_H_
#define SUANLI_TESTS_SCHEDULER_REFERENCE_MATCHER_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "scheduler/types.h"

namespace suanli::scheduler::testing {

// The policy key of an allocation (see matcher.h): compared lexicographically.
struct PolicyKey {
  int64_t rate = 0, dsum = 0, bsum = 0, lsum = 0;
  uint64_t rsum = 0;
  std::vector<NodeIndex> nodes;  // sorted
  bool operator<(const PolicyKey& o) const;
  bool operator==(const PolicyKey& o) const;
};

struct RefTake {
  NodeIndex node;
  int32_t gpus;
  int offer;
};

struct RefResult {
  bool feasible = false;
  PolicyKey key;
  std::vector<RefTake> takes;  // sorted by node
  bool exhaustive = true;      // false when a subset enumeration was cut short
};

class ReferenceMatcher {
 public:
  struct Center {
    std::string id;
    std::string op;
    std::string region;
    CenterType type;
    std::vector<std::string> tags;
  };
  struct Domain {
    int center;
    std::string id;
    Fabric fabric;
  };
  struct Node {
    std::string id;
    int domain;
    std::string model;
    int cap;
    Health health = Health::kHealthy;
    bool removed = false;
  };
  struct Offer {
    std::string id;
    std::vector<NodeIndex> nodes;
    int64_t from, until, min_lease;
    Micros price;
    bool whole_only;
    bool withdrawn = false;
  };
  struct Sold {
    int64_t start, end;
    std::vector<RefTake> takes;
    bool held = false;
  };

  // Mirrors of the Matcher's capacity calls, applied only after the Matcher accepted them.
  void AddCenter(const CenterSpec& s);
  void AddDomain(const DomainSpec& s);
  void AddNode(const NodeSpec& s);
  void RemoveNode(NodeIndex n) { nodes_[n].removed = true; }
  void SetHealth(NodeIndex n, Health h) { nodes_[n].health = h; }
  void AddOffer(const OfferSpec& s);
  void WithdrawOffer(const std::string& id);

  // GPUs free on node n over [s, e), by evaluating usage at every boundary.
  int FreeOver(NodeIndex n, int64_t s, int64_t e) const;
  // The offer of node n whose window holds [s, e), or -1.
  int CoveringOffer(NodeIndex n, int64_t s, int64_t e) const;

  // The best allocation for `r` starting at `s` (microseconds), with or without its ceiling.
  // `extra` lengthens the interval held past the duration (a start-now hold's ttl); offers'
  // minimum lease is still checked against the duration.
  RefResult Best(const Request& r, int64_t s, bool check_price, int64_t max_subsets = 200000,
                 int64_t extra = 0) const;
  bool AnyStaticMatch(const Request& r, int64_t now) const;
  std::optional<Micros> MinCeiling(const Request& r, int64_t s, int64_t extra = 0) const;
  int32_t LargestBlock(const Request& r, int64_t s, int64_t extra = 0) const;
  std::optional<int64_t> EarliestStart(const Request& r, int64_t s, int64_t extra = 0) const;

  // Records what the Matcher sold (after checking it) and the sale's effect on last-sale order.
  void RecordSale(uint64_t id, int64_t start, int64_t end, const std::vector<RefTake>& takes,
                  bool held);
  void End(uint64_t id) { sold_.erase(id); }
  void SetInterval(uint64_t id, int64_t start, int64_t end);
  void Unhold(uint64_t id) { sold_[id].held = false; }
  // After a restart the Matcher knows the operators' recency only from the restored
  // allocations, restored in id order: do the same.
  void ResetRecency();

  // Number of (node, instant) pairs where more GPUs are sold than the node has.
  int64_t Oversold() const;
  // Drops sold intervals that ended by `now` (expiry) and holds that lapsed, as the Matcher does.
  const std::map<uint64_t, Sold>& sold() const { return sold_; }
  const Node& node(NodeIndex n) const { return nodes_[n]; }
  const Offer& offer(int i) const { return offers_[i]; }
  int OfferIndex(const std::string& id) const;
  size_t node_count() const { return nodes_.size(); }

 private:
  bool NodeStatic(NodeIndex n, const Request& r, int x, bool fixed) const;
  int Group(NodeIndex n, Locality l) const;
  bool DomainLive(int domain) const;

  std::vector<Center> centers_;
  std::vector<Domain> domains_;
  std::vector<Node> nodes_;
  std::vector<Offer> offers_;
  std::map<uint64_t, Sold> sold_;
  std::map<std::string, uint64_t> op_last_sale_;
  uint64_t sale_seq_ = 0;
};

}  // namespace suanli::scheduler::testing

#endif  // SUANLI_TESTS_SCHEDULER_REFERENCE_MATCHER_H_
