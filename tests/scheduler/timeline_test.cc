// Tests of scheduler/timeline.h: the heap that drops events with nothing left to do a few at a
// time. Random operations are checked against a reference multiset.
#include "scheduler/timeline.h"

#include <cstdint>
#include <random>
#include <set>
#include <tuple>

#include "gtest/gtest.h"

namespace suanli::scheduler {
namespace {

struct Ev {
  int64_t t;
  int64_t id;
  bool operator>(const Ev& o) const { return std::tie(t, id) > std::tie(o.t, o.id); }
  bool operator<(const Ev& o) const { return std::tie(t, id) < std::tie(o.t, o.id); }
  bool operator==(const Ev& o) const { return t == o.t && id == o.id; }
};

TEST(Timeline, PopsInTimeOrder) {
  Timeline<Ev> tl;
  for (int64_t t : {5, 1, 4, 2, 3}) tl.push({t, t});
  for (int64_t want = 1; want <= 5; ++want) {
    ASSERT_FALSE(tl.empty());
    EXPECT_EQ(tl.front().t, want);
    tl.pop();
  }
  EXPECT_TRUE(tl.empty());
}

TEST(Timeline, TidyDropsOnlyWhatKeepRefusesAndOnlyPastTheLimit) {
  Timeline<Ev> tl;
  for (int64_t i = 0; i < 10; ++i) tl.push({i, i});
  auto odd_dead = [](const Ev& e) { return e.id % 2 == 0; };
  tl.Tidy(/*limit=*/10, /*step=*/100, odd_dead);  // not past the limit: nothing moves
  EXPECT_EQ(tl.size(), 10u);
  tl.Tidy(/*limit=*/9, /*step=*/100, odd_dead);
  EXPECT_EQ(tl.size(), 5u);
  for (int64_t want = 0; want < 10; want += 2) {
    EXPECT_EQ(tl.front().id, want);
    tl.pop();
  }
  EXPECT_TRUE(tl.empty());
}

// Pushes, pops and small tidy steps interleaved, so that pops happen while a pass is halfway:
// the front is always the earliest event not dropped, and only dead events are ever dropped.
TEST(Timeline, MatchesAReferenceWhilePassesAreHalfway) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE(seed);
    std::mt19937_64 rng(seed);
    Timeline<Ev> tl;
    std::multiset<Ev> ref;
    std::set<int64_t> dead;
    int64_t next_id = 0, now = 0, drops = 0, passes_cut = 0;
    for (int step = 0; step < 20'000; ++step) {
      const int op = static_cast<int>(rng() % 10);
      if (op < 5) {
        const Ev ev{now + static_cast<int64_t>(rng() % 1000), next_id++};
        tl.push(ev);
        ref.insert(ev);
        if (rng() % 3 != 0) dead.insert(ev.id);  // most events end up with nothing to do
      } else if (op < 8) {
        if (ref.empty()) continue;
        ASSERT_FALSE(tl.empty());
        const Ev front = tl.front();
        ASSERT_EQ(front, *ref.begin());
        now = front.t;
        tl.pop();
        ref.erase(ref.begin());
      } else {
        const size_t before = tl.size();
        tl.Tidy(/*limit=*/64, /*step=*/1 + rng() % 8, [&](const Ev& e) {
          if (dead.count(e.id) == 0) return true;
          EXPECT_EQ(ref.erase(e), 1u);
          ++drops;
          return false;
        });
        if (tl.size() < before && tl.size() > 64) ++passes_cut;
      }
      ASSERT_EQ(tl.size(), ref.size());
    }
    while (!ref.empty()) {
      ASSERT_EQ(tl.front(), *ref.begin());
      tl.pop();
      ref.erase(ref.begin());
    }
    EXPECT_TRUE(tl.empty());
    EXPECT_GT(drops, 0);
    EXPECT_GT(passes_cut, 0);  // some pops did happen in the middle of a pass
  }
}

}  // namespace
}  // namespace suanli::scheduler
