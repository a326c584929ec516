// The single writer of DESIGN.md §4. Request threads hand the engine commands; one engine thread
// takes what has queued up as a batch, moves the market's clock (expiries, activations, lapses)
// and applies the commands in order; a writer thread then writes the batch's rows to the store in
// one transaction and only then answers the batch's callers. The two overlap: while batch N is
// being committed, batch N+1 is decided (on a market that includes N's changes), so the store's
// flush latency no longer stops decisions. Batches commit in the order they were decided, and a
// batch's callers are answered only after it and every batch before it are durable: no answer
// ever shows a change that could still be lost. When a commit fails, its callers and those of
// every batch decided after it get UNAVAILABLE, and the market is rebuilt from the store, so
// that memory never runs ahead of what is durable for long and never for an answer. After each
// commit the writer publishes the catalog snapshot built with the batch (for searches) and hands
// its changed allocations to watchers.
//
//   Engine engine(std::move(store), &keys);
//   absl::StatusOr<std::string> new_admin_key = engine.Start(admin_key);
//   absl::StatusOr<v1::Allocation> a = engine.Run<v1::Allocation>(
//       [&](Market& m, absl::Time now, storage::Batch* b) { return m.Allocate(p, req, now, b); });
//   engine.Stop();  // finishes what is queued, commits it, closes the store
#ifndef SUANLI_BROKER_ENGINE_H_
#define SUANLI_BROKER_ENGINE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "broker/auth.h"
#include "broker/market.h"
#include "storage/store.h"

namespace suanli::broker {

// Allocation changes fanned out to watchers (WatchAllocations streams).
class Hub {
 public:
  struct Subscriber {
    std::string buyer;
    bool include_ended = false;
    absl::Mutex mu;
    std::deque<v1::Allocation> queue ABSL_GUARDED_BY(mu);
    bool closed ABSL_GUARDED_BY(mu) = false;
    bool overflowed ABSL_GUARDED_BY(mu) = false;
    // The engine batch it subscribed in: it gets the changes of that batch and later ones.
    uint64_t first_batch = 0;
  };
  // Most changes a subscriber may have waiting; past that it is closed as too slow.
  static constexpr size_t kMaxQueued = 100'000;

  std::shared_ptr<Subscriber> Subscribe(const std::string& buyer, bool include_ended);
  void Unsubscribe(const std::shared_ptr<Subscriber>& s);
  // Hands the changes of engine batch `batch` to the subscribers of that batch or earlier ones.
  void Publish(const std::vector<v1::Allocation>& changed, uint64_t batch);
  // The batch the engine is deciding (engine thread): subscribers made now start with it.
  void SetDeciding(uint64_t batch);
  // Whether anyone is watching.
  bool HasSubscribers();
  // Closes every subscriber, and every later one at once (shutdown).
  void CloseAll();
  // Sends each subscriber of `buyer`-s every allocation `current` gives for it (after the market
  // was rebuilt, when the changes in between are not known one by one).
  void Resync(const std::function<std::vector<v1::Allocation>(const std::string& buyer,
                                                              bool include_ended)>& current);

 private:
  absl::Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t deciding_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_set<std::shared_ptr<Subscriber>> subs_ ABSL_GUARDED_BY(mu_);
};

class Engine {
 public:
  struct Options {
    int max_batch = 4096;  // most commands decided in one batch (one commit)
    // Searches see capacity at most this old.
    absl::Duration catalog_refresh = absl::Milliseconds(100);
    // The broker's commission on every sale, in basis points (0..10000): 800 is 8%.
    int commission_bps = kDefaultCommissionBps;
  };
  // What the engine has done since it started (batches: decided batches).
  struct Stats {
    int64_t batches = 0;
    int64_t commands = 0;
    int64_t commit_failures = 0;
    // Batches that were decided while an earlier one was still being committed.
    int64_t overlapped = 0;
    // Commits (store transactions); fewer than batches when batches were merged.
    int64_t commits = 0;
  };

  Engine(std::unique_ptr<storage::Store> store, KeyRing* keys, Options options);
  Engine(std::unique_ptr<storage::Store> store, KeyRing* keys);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Loads the store, makes sure an admin can log in (see Market::Bootstrap) and starts the engine
  // thread. Returns a newly made admin key to hand to the person starting the broker, or "".
  absl::StatusOr<std::string> Start(const std::optional<NewKey>& admin_key);
  // Stops taking commands (they get UNAVAILABLE), decides and commits what is queued, stops the
  // thread and closes the store. Idempotent.
  void Stop();
  // The first step of a stop, before calls in flight are waited for: a rebuild from a store that
  // cannot be read gives up (its callers get UNAVAILABLE) instead of retrying for ever.
  void BeginStop();

  // Runs `fn` on the engine thread in the next batch and returns its result once the batch is
  // durable (UNAVAILABLE when the batch could not be committed, or the engine is stopping).
  // `fn` must change nothing and write no rows when it returns an error.
  template <typename T>
  absl::StatusOr<T> Run(std::function<absl::StatusOr<T>(Market&, absl::Time, storage::Batch*)> fn);
  // The same without blocking the caller: `done` gets the result on an engine thread once the
  // batch is durable (or at once, on the caller's thread, when the engine takes no calls). It
  // must not block.
  template <typename T>
  void Submit(std::function<absl::StatusOr<T>(Market&, absl::Time, storage::Batch*)> fn,
              std::function<void(absl::StatusOr<T>)> done);

  // The latest catalog snapshot (never null after Start).
  std::shared_ptr<const CatalogSnapshot> Catalog() const;
  Hub& hub() { return hub_; }
  Stats stats() const;
  std::string StoreDescription() const;

 private:
  struct Command {
    virtual ~Command() = default;
    std::function<bool(Market&, absl::Time, storage::Batch*)> apply;  // true: the call succeeded
    std::function<void(const absl::Status&)> finish;                  // after the commit
    bool owned = false;  // made by Submit: deleted by the engine after `finish`
  };
  template <typename T>
  struct AsyncCommand;
  // Calls c->finish(s), then deletes c when the engine owns it.
  static void Finish(Command* c, const absl::Status& s);
  // Decided batches on their way to the store: one, or several merged into one commit while
  // the writer was busy with an earlier one.
  struct Decided {
    std::vector<Command*> commands;
    storage::Batch rows;
    // For watchers, after the commit: each batch's changes with its number.
    std::vector<std::pair<uint64_t, std::vector<v1::Allocation>>> changed;
    std::shared_ptr<const CatalogSnapshot> catalog;  // to publish after the commit, or null
  };

  // OK, or UNAVAILABLE (saying why) when the engine takes no commands: stopping, or rebuilding
  // from a store it cannot reach.
  absl::Status Enqueue(Command* c);
  void Loop();
  // The writer thread: commits decided batches in order and answers their callers.
  void WriteLoop();
  // Hands a decided batch to the writer. While the writer is busy, batches decided meanwhile are
  // merged into one waiting commit (group commit), up to max_batch calls; past that this waits.
  void Hand(std::unique_ptr<Decided> d);
  // Rebuilds the market from the store after a failed commit, retrying until it works or the
  // engine stops.
  void Reload();
  // Rebuilds the market; `changed` (when given) gets the allocations the rebuild itself changed.
  absl::Status LoadMarket(absl::Time now, std::vector<v1::Allocation>* changed = nullptr);

  std::unique_ptr<storage::Store> store_;
  KeyRing* keys_;
  Options options_;
  std::unique_ptr<Market> market_;  // engine thread only (and Start before the thread runs)
  Hub hub_;
  absl::Time last_now_ = absl::InfinitePast();
  absl::Time catalog_built_ = absl::InfinitePast();
  bool broken_ = false;  // the store could not be reloaded before a stop

  mutable absl::Mutex mu_;
  std::deque<Command*> queue_ ABSL_GUARDED_BY(mu_);
  bool accepting_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool give_up_reload_ ABSL_GUARDED_BY(mu_) = false;
  bool reloading_ ABSL_GUARDED_BY(mu_) = false;  // rebuilding after a failed commit
  std::shared_ptr<const CatalogSnapshot> catalog_ ABSL_GUARDED_BY(mu_);
  Stats stats_ ABSL_GUARDED_BY(mu_);
  // Between the threads: batches decided and not yet taken by the writer, whether it is
  // committing one, whether a commit failed (every later batch fails until the engine has rebuilt
  // the market), and whether the engine thread has finished (the writer stops when drained).
  std::deque<std::unique_ptr<Decided>> decided_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool commit_failed_ ABSL_GUARDED_BY(mu_) = false;
  bool engine_done_ ABSL_GUARDED_BY(mu_) = false;
  // The engine thread is applying commands it took from the queue. The writer waits for that
  // batch before it takes the waiting one, so that a commit carries every call decided by then:
  // fewer, larger commits (each commit has a fixed cost: the flush, the WAL header, checkpoints).
  bool applying_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_seq_ = 1;  // engine thread
  std::thread thread_;
  std::thread writer_;
};

template <typename T>
absl::StatusOr<T> Engine::Run(
    std::function<absl::StatusOr<T>(Market&, absl::Time, storage::Batch*)> fn) {
  std::optional<absl::StatusOr<T>> result;
  absl::Notification done;
  Command c;
  c.apply = [&](Market& m, absl::Time now, storage::Batch* b) {
    result = fn(m, now, b);
    return result->ok();
  };
  c.finish = [&](const absl::Status& commit) {
    if (!commit.ok()) result = commit;
    done.Notify();
  };
  if (absl::Status s = Enqueue(&c); !s.ok()) return s;
  done.WaitForNotification();
  return *std::move(result);
}

template <typename T>
struct Engine::AsyncCommand : Engine::Command {
  std::function<absl::StatusOr<T>(Market&, absl::Time, storage::Batch*)> fn;
  std::function<void(absl::StatusOr<T>)> done;
  std::optional<absl::StatusOr<T>> result;
};

template <typename T>
void Engine::Submit(std::function<absl::StatusOr<T>(Market&, absl::Time, storage::Batch*)> fn,
                    std::function<void(absl::StatusOr<T>)> done) {
  auto* c = new AsyncCommand<T>();
  c->owned = true;
  c->fn = std::move(fn);
  c->done = std::move(done);
  c->apply = [c](Market& m, absl::Time now, storage::Batch* b) {
    c->result = c->fn(m, now, b);
    return c->result->ok();
  };
  c->finish = [c](const absl::Status& commit) {
    if (!commit.ok()) c->result = commit;
    c->done(*std::move(c->result));
  };
  if (absl::Status s = Enqueue(c); !s.ok()) {
    std::function<void(absl::StatusOr<T>)> d = std::move(c->done);
    delete c;
    d(s);
  }
}

}  // namespace suanli::broker

#endif  // SUANLI_BROKER_ENGINE_H_
