// A min-heap of events that may hold events with nothing left to do, and drops those a few at a
// time, so that no single call pays for all of them.
//
// The allocation core keeps its activations, ends and lapses here; a sale released before its end
// leaves its end behind, and in a busy market most ends are such leftovers. Tidy(limit, step,
// keep) starts a pass once more than `limit` events are held: the first heap's leaves (removing a
// leaf keeps a heap) move, each checked with keep(event) and dropped when it returns false, to a
// second heap, which also takes every new event, until the first is empty; each call moves at
// most `step`. Pops always take the earliest event of the two heaps.
//
// `Event` needs operator> (a strict weak order: earlier events compare smaller).
#ifndef SUANLI_SCHEDULER_TIMELINE_H_
#define SUANLI_SCHEDULER_TIMELINE_H_

#include <algorithm>
#include <cstddef>
#include <functional>
#include <vector>

namespace suanli::scheduler {

template <typename Event>
class Timeline {
 public:
  bool empty() const { return a_.empty() && b_.empty(); }
  size_t size() const { return a_.size() + b_.size(); }
  // The earliest event held; not empty.
  const Event& front() const { return FromA() ? a_.front() : b_.front(); }
  // Removes front(); not empty.
  void pop() { Pop(FromA() ? a_ : b_); }
  void push(const Event& ev) { Push(draining_ ? b_ : a_, ev); }
  // When more than `limit` events are held, starts a pass; during a pass, checks up to `step`
  // events with keep(event) and drops those it returns false for.
  template <typename Keep>
  void Tidy(size_t limit, size_t step, Keep keep) {
    if (!draining_ && size() > limit) draining_ = true;
    if (!draining_) return;
    for (size_t k = 0; k < step && !a_.empty(); ++k) {
      const Event ev = a_.back();
      a_.pop_back();
      if (keep(ev)) Push(b_, ev);
    }
    if (a_.empty()) {
      a_.swap(b_);
      draining_ = false;
    }
  }

 private:
  bool FromA() const { return b_.empty() || (!a_.empty() && b_.front() > a_.front()); }
  static void Push(std::vector<Event>& heap, const Event& ev) {
    heap.push_back(ev);
    std::push_heap(heap.begin(), heap.end(), std::greater<Event>());
  }
  static void Pop(std::vector<Event>& heap) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<Event>());
    heap.pop_back();
  }

  std::vector<Event> a_, b_;  // min-heaps under std::greater
  bool draining_ = false;     // a pass is moving a_ into b_
};

}  // namespace suanli::scheduler

#endif  // SUANLI_SCHEDULER_TIMELINE_H_
