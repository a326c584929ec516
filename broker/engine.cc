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
  s->first_batch = deciding_;
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

void Hub::SetDeciding(uint64_t batch) {
  absl::MutexLock lock(&mu_);
  deciding_ = batch;
}

void Hub::Publish(const std::vector<v1::Allocation>& changed, uint64_t batch) {
  if (changed.empty()) return;
  absl::MutexLock lock(&mu_);
  for (const std::shared_ptr<Subscriber>& s : subs_) {
    // A later subscriber's first state already shows this batch's changes.
    if (s->first_batch > batch) continue;
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
  writer_ = std::thread([this] { WriteLoop(); });
  thread_ = std::thread([this] { Loop(); });
  return made;
}

void Engine::Stop() {
  {
    absl::MutexLock lock(&mu_);
    accepting_ = false;
    stopping_ = true;
  }
  // The engine thread hands its last batch to the writer and ends; the writer ends once it has
  // committed and answered everything it was handed.
  if (thread_.joinable()) thread_.join();
  if (writer_.joinable()) writer_.join();
  hub_.CloseAll();
  store_.reset();
}

void Engine::BeginStop() {
  absl::MutexLock lock(&mu_);
  give_up_reload_ = true;
}

void Engine::Finish(Command* c, const absl::Status& s) {
  // A command that Run made lives on its caller's stack and may be gone once `finish` returns.
  const bool owned = c->owned;
  c->finish(s);
  if (owned) delete c;
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
  for (Command* c : waiting) Finish(c, away);
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
      // What the rebuild ended (expiries while the store was out); no batch is in flight now.
      hub_.Publish(changed, next_seq_);
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
  struct Done {
    Engine* e;
    ~Done() {
      absl::MutexLock lock(&e->mu_);
      e->engine_done_ = true;
    }
  } done{this};
  for (;;) {
    std::vector<Command*> batch_cmds;
    bool stop = false;
    bool failed = false;
    {
      absl::MutexLock lock(&mu_);
      absl::Time wake = std::min(market_->NextEventTime(), absl::Now() + absl::Seconds(1));
      if (catalog_built_ + options_.catalog_refresh > absl::Now()) {
        // A refresh may be due later even when nothing else is.
        wake = std::min(wake, catalog_built_ + options_.catalog_refresh);
      }
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return !queue_.empty() || stopping_ || commit_failed_;
      };
      mu_.AwaitWithDeadline(absl::Condition(&ready), wake);
      failed = commit_failed_;
      if (failed) {
        // The market holds changes that are not in the store. Wait until the writer has failed
        // every batch decided on them, then rebuild from the store (the writer is idle then, so
        // the store has one user).
        auto drained = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
          return decided_.empty() && !writing_;
        };
        mu_.Await(absl::Condition(&drained));
      } else {
        const size_t n = std::min(queue_.size(), static_cast<size_t>(options_.max_batch));
        batch_cmds.assign(queue_.begin(), queue_.begin() + static_cast<ptrdiff_t>(n));
        queue_.erase(queue_.begin(), queue_.begin() + static_cast<ptrdiff_t>(n));
        stop = stopping_ && queue_.empty();
        applying_ = n > 0;
      }
    }
    if (failed) {
      Reload();
      absl::MutexLock lock(&mu_);
      commit_failed_ = false;
      continue;
    }
    if (broken_) {
      {
        absl::MutexLock lock(&mu_);
        applying_ = false;
      }
      const absl::Status lost =
          absl::UnavailableError("the broker lost its store and is stopping; retry");
      for (Command* c : batch_cmds) Finish(c, lost);
      if (stop) return;
      continue;
    }
    const absl::Time now = std::max(last_now_, absl::Now());
    last_now_ = now;
    auto d = std::make_unique<Decided>();
    const uint64_t seq = next_seq_++;
    hub_.SetDeciding(seq);
    market_->Advance(now, &d->rows);
    for (Command* c : batch_cmds) c->apply(*market_, now, &d->rows);
    market_->Seal(&d->rows);
    d->commands = std::move(batch_cmds);
    // A watcher subscribes on the engine thread, so none can appear between the check and the
    // hand-over; the writer publishes the changes once they are durable.
    if (hub_.HasSubscribers()) {
      d->changed.emplace_back(seq, market_->TakeChanged());
    } else {
      market_->ForgetChanged();
    }
    if (now >= catalog_built_ + options_.catalog_refresh && market_->TakeCatalogDirty()) {
      d->catalog = market_->BuildCatalog(now);
      catalog_built_ = now;
    }
    Hand(std::move(d));
    if (stop) return;
  }
}

void Engine::Hand(std::unique_ptr<Decided> d) {
  absl::MutexLock lock(&mu_);
  applying_ = false;
  ++stats_.batches;
  if (writing_) ++stats_.overlapped;
  if (!decided_.empty()) {
    Decided& waiting = *decided_.back();
    if (waiting.commands.size() + d->commands.size() <=
        static_cast<size_t>(std::max(options_.max_batch, 1))) {
      storage::Append(&waiting.rows, std::move(d->rows));
      waiting.commands.insert(waiting.commands.end(), d->commands.begin(), d->commands.end());
      for (auto& part : d->changed) waiting.changed.push_back(std::move(part));
      if (d->catalog != nullptr) waiting.catalog = std::move(d->catalog);
      return;
    }
  }
  auto room = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return decided_.empty(); };
  mu_.Await(absl::Condition(&room));
  decided_.push_back(std::move(d));
}

void Engine::WriteLoop() {
  for (;;) {
    std::unique_ptr<Decided> d;
    bool failed_before = false;
    {
      absl::MutexLock lock(&mu_);
      // A batch the engine is applying now joins the waiting one first (see applying_).
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return (!decided_.empty() && !applying_) || engine_done_;
      };
      mu_.Await(absl::Condition(&ready));
      if (decided_.empty()) return;  // the engine thread has ended and everything is answered
      d = std::move(decided_.front());
      decided_.pop_front();
      writing_ = true;
      failed_before = commit_failed_;
    }
    absl::Status committed = absl::OkStatus();
    if (failed_before) {
      // Decided on a market that included a batch the store refused.
      committed = absl::UnavailableError(
          "the broker could not store an earlier change this one depended on; nothing was "
          "changed; retry");
    } else if (!d->rows.empty()) {
      {
        absl::MutexLock lock(&mu_);
        ++stats_.commits;
      }
      committed = store_->Commit(d->rows);
      if (!committed.ok()) {
        Log(absl::StrCat("commit of a batch of ", d->commands.size(),
                         " calls failed: ", committed.ToString()));
        committed = absl::UnavailableError(absl::StrCat("the broker could not store the change (",
                                                        committed.message(),
                                                        "); nothing was changed; retry"));
      }
    }
    if (committed.ok()) {
      for (const auto& [seq, changed] : d->changed) hub_.Publish(changed, seq);
      if (d->catalog != nullptr) {
        absl::MutexLock lock(&mu_);
        catalog_ = std::move(d->catalog);
      }
    } else {
      // New calls are told at once that the store is away (see Reload), from now on.
      absl::MutexLock lock(&mu_);
      reloading_ = true;
      commit_failed_ = true;
    }
    for (Command* c : d->commands) Finish(c, committed);
    absl::MutexLock lock(&mu_);
    stats_.commands += static_cast<int64_t>(d->commands.size());
    if (!committed.ok() && !failed_before) ++stats_.commit_failures;
    writing_ = false;
  }
}

}  // namespace suanli::broker
