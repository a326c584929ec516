#include "broker/engine.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "broker/log.h"

namespace suanli::broker {

// ------------------------------------------------------------------------------------ Hub

std::shared_ptr<Hub::Subscriber> Hub::Subscribe(const std::string& buyer, bool include_ended) {
  auto s = std::make_shared<Subscriber>();
  s->buyer = buyer;
  s->include_ended = include_ended;
  absl::MutexLock lock(&mu_);
  if (closed_) {
    absl::MutexLock sl(&s->mu);
    s->closed = true;
  }
  subs_.insert(s);
  return s;
}

void Hub::Unsubscribe(const std::shared_ptr<Subscriber>& s) {
  absl::MutexLock lock(&mu_);
  subs_.erase(s);
}

bool Hub::HasSubscribers() {
  absl::MutexLock lock(&mu_);
  return !subs_.empty();
}

void Hub::Publish(const std::vector<v1::Allocation>& changed) {
  if (changed.empty()) return;
  absl::MutexLock lock(&mu_);
  for (const std::shared_ptr<Subscriber>& s : subs_) {
    absl::MutexLock sl(&s->mu);
    if (s->closed) continue;
    for (const v1::Allocation& a : changed) {
      if (a.buyer_id() != s->buyer) continue;
      if (s->queue.size() >= kMaxQueued) {
        s->overflowed = true;
        s->closed = true;
        break;
      }
      s->queue.push_back(a);
    }
  }
}

void Hub::Resync(
    const std::function<std::vector<v1::Allocation>(const std::string&, bool)>& current) {
  absl::MutexLock lock(&mu_);
  for (const std::shared_ptr<Subscriber>& s : subs_) {
    std::vector<v1::Allocation> all = current(s->buyer, s->include_ended);
    absl::MutexLock sl(&s->mu);
    if (s->closed) continue;
    for (v1::Allocation& a : all) {
      if (s->queue.size() >= kMaxQueued) {
        s->overflowed = true;
        s->closed = true;
        break;
      }
      s->queue.push_back(std::move(a));
    }
  }
}

void Hub::CloseAll() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
  for (const std::shared_ptr<Subscriber>& s : subs_) {
    absl::MutexLock sl(&s->mu);
    s->closed = true;
  }
}

// ------------------------------------------------------------------------------------ Engine

Engine::Engine(std::unique_ptr<storage::Store> store, KeyRing* keys, Options options)
    : store_(std::move(store)), keys_(keys), options_(options) {}

Engine::Engine(std::unique_ptr<storage::Store> store, KeyRing* keys)
    : Engine(std::move(store), keys, Options()) {}

Engine::~Engine() { Stop(); }

absl::Status Engine::LoadMarket(absl::Time now, std::vector<v1::Allocation>* changed) {
  absl::StatusOr<storage::Contents> contents = store_->Load();
  if (!contents.ok()) return contents.status();
  auto market = std::make_unique<Market>(keys_, MarketOptions{options_.commission_bps});
  storage::Batch batch;
  if (absl::Status s = market->Load(*contents, now, &batch); !s.ok()) return s;
  market->Seal(&batch);
  if (!batch.empty()) {
    if (absl::Status s = store_->Commit(batch); !s.ok()) return s;
  }
  market_ = std::move(market);
  std::vector<v1::Allocation> made = market_->TakeChanged();
  if (changed != nullptr) *changed = std::move(made);
  return absl::OkStatus();
}

absl::StatusOr<std::string> Engine::Start(const std::optional<NewKey>& admin_key) {
  const absl::Time now = absl::Now();
  last_now_ = now;
  if (absl::Status s = LoadMarket(now); !s.ok()) return s;
  storage::Batch batch;
  absl::StatusOr<std::string> made = market_->Bootstrap(admin_key, now, &batch);
  if (!made.ok()) return made.status();
  if (!batch.empty()) {
    if (absl::Status s = store_->Commit(batch); !s.ok()) return s;
  }
  std::shared_ptr<const CatalogSnapshot> snap = market_->BuildCatalog(now);
  market_->TakeCatalogDirty();
  catalog_built_ = now;
  {
    absl::MutexLock lock(&mu_);
    catalog_ = std::move(snap);
    accepting_ = true;
  }
  thread_ = std::thread([this] { Loop(); });
  return made;
}

void Engine::Stop() {
  {
    absl::MutexLock lock(&mu_);
    accepting_ = false;
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  hub_.CloseAll();
  store_.reset();
}

void Engine::BeginStop() {
  absl::MutexLock lock(&mu_);
  give_up_reload_ = true;
}

absl::Status Engine::Enqueue(Command* c) {
  absl::MutexLock lock(&mu_);
  if (!accepting_) {
    return absl::UnavailableError("the broker is shutting down; retry against a running broker");
  }
  if (reloading_) {
    return absl::UnavailableError(
        "the broker cannot reach its store and is waiting for it; nothing was changed; retry");
  }
  queue_.push_back(c);
  return absl::OkStatus();
}

std::shared_ptr<const CatalogSnapshot> Engine::Catalog() const {
  absl::MutexLock lock(&mu_);
  return catalog_;
}

Engine::Stats Engine::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

std::string Engine::StoreDescription() const { return store_ ? store_->Describe() : ""; }

void Engine::Reload() {
  // Callers are told at once that the store is away, instead of waiting for it: queued calls
  // and new ones get UNAVAILABLE until the rebuild has worked.
  std::deque<Command*> waiting;
  {
    absl::MutexLock lock(&mu_);
    reloading_ = true;
    waiting.swap(queue_);
  }
  const absl::Status away = absl::UnavailableError(
      "the broker cannot reach its store and is waiting for it; nothing was changed; retry");
  for (Command* c : waiting) c->finish(away);
  struct Done {
    Engine* e;
    ~Done() {
      absl::MutexLock lock(&e->mu_);
      e->reloading_ = false;
    }
  } done{this};
  absl::Duration backoff = absl::Milliseconds(50);
  for (int attempt = 1;; ++attempt) {
    const absl::Time now = std::max(last_now_, absl::Now());
    std::vector<v1::Allocation> changed;
    absl::Status s = LoadMarket(now, &changed);
    if (s.ok()) {
      Log(absl::StrCat("market rebuilt from the store after a failed commit (attempt ", attempt,
                       ")"));
      // What changed between the last published batch and the rebuild is not known one by one:
      // every watcher gets its buyer's current allocations again.
      hub_.Resync([this](const std::string& buyer, bool include_ended) {
        return market_->AllocationsOf({buyer, v1::ROLE_BUYER}, include_ended);
      });
      hub_.Publish(changed);  // what the rebuild ended (expiries while the store was out)
      return;
    }
    Log(absl::StrCat("cannot rebuild the market from the store yet: ", s.ToString(),
                     "; retrying in ", absl::FormatDuration(backoff)));
    absl::MutexLock lock(&mu_);
    // Wake early only to stop; commands keep waiting meanwhile.
    auto stop = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_ || give_up_reload_; };
    if (mu_.AwaitWithTimeout(absl::Condition(&stop), backoff)) {
      // Stopping: the market in memory may be ahead of the store, but nothing more will be
      // decided from it.
      broken_ = true;
      return;
    }
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

void Engine::Loop() {
  std::vector<Command*> batch_cmds;
  for (;;) {
    bool stop = false;
    {
      absl::MutexLock lock(&mu_);
      absl::Time wake = std::min(market_->NextEventTime(), absl::Now() + absl::Seconds(1));
      if (catalog_built_ + options_.catalog_refresh > absl::Now()) {
        // A refresh may be due later even when nothing else is.
        wake = std::min(wake, catalog_built_ + options_.catalog_refresh);
      }
      auto ready = [this]()
                       ABSL_SHARED_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stopping_; };
      mu_.AwaitWithDeadline(absl::Condition(&ready), wake);
      const size_t n = std::min(queue_.size(), static_cast<size_t>(options_.max_batch));
      batch_cmds.assign(queue_.begin(), queue_.begin() + static_cast<ptrdiff_t>(n));
      queue_.erase(queue_.begin(), queue_.begin() + static_cast<ptrdiff_t>(n));
      stop = stopping_ && queue_.empty();
    }
    const absl::Time now = std::max(last_now_, absl::Now());
    last_now_ = now;
    storage::Batch batch;
    absl::Status committed = absl::OkStatus();
    if (broken_) {
      committed = absl::UnavailableError("the broker lost its store and is stopping; retry");
      for (Command* c : batch_cmds) c->finish(committed);
      if (stop) return;
      continue;
    }
    market_->Advance(now, &batch);
    for (Command* c : batch_cmds) c->apply(*market_, now, &batch);
    market_->Seal(&batch);
    if (!batch.empty()) committed = store_->Commit(batch);
    if (!committed.ok()) {
      Log(absl::StrCat("commit of a batch of ", batch_cmds.size(),
                       " calls failed: ", committed.ToString()));
      committed = absl::UnavailableError(absl::StrCat("the broker could not store the change (",
                                                      committed.message(),
                                                      "); nothing was changed; retry"));
      Reload();
    }
    for (Command* c : batch_cmds) c->finish(committed);
    {
      absl::MutexLock lock(&mu_);
      ++stats_.batches;
      stats_.commands += static_cast<int64_t>(batch_cmds.size());
      if (!committed.ok()) ++stats_.commit_failures;
    }
    if (committed.ok()) {
      // A watcher subscribes on the engine thread, so none can appear between the check and the
      // publication.
      if (hub_.HasSubscribers()) {
        hub_.Publish(market_->TakeChanged());
      } else {
        market_->ForgetChanged();
      }
    }
    if (now >= catalog_built_ + options_.catalog_refresh && market_->TakeCatalogDirty()) {
      std::shared_ptr<const CatalogSnapshot> snap = market_->BuildCatalog(now);
      catalog_built_ = now;
      absl::MutexLock lock(&mu_);
      catalog_ = std::move(snap);
    }
    batch_cmds.clear();
    if (stop) return;
  }
}

}  // namespace suanli::broker
