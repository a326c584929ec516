#include "storage/sqlite/sqlite_config.h"

#include <sqlite3.h>

#include <atomic>
#include <cstdint>
#include <mutex>

namespace suanli::storage {
namespace {

// Memory statistics: with them on (SQLite's default) every sqlite3_malloc and sqlite3_free takes
// a global mutex to count; they were ~5% of the committing thread's SQLite time under load, and
// nothing here reads them.
//
// The page cache layer. When SQLite rebalances a b-tree it may swap the page numbers of two new
// pages so that they stay in ascending order, and it parks one of them at a page number no data
// page ever has: the locking page (PENDING_BYTE / page size + 1; 262,145 for 4 KiB pages). Its
// default page cache (pcache1) remembers the highest key it has held and never lowers it except
// in a truncation, and every COMMIT truncates the cache to the database's size. A truncation
// whose highest key is further above the limit than the cache has hash buckets walks every
// bucket and every page: with a 64 MiB cache, ~16,000 buckets and ~14,000 pages on each commit
// that split an index page, which is nearly every commit of a busy broker.
//
// This layer hands every call to SQLite's own cache unchanged, except that the locking page's
// number is stored under key 0, which no page has either (pages are numbered from 1). Key 0
// never raises the highest key, so a commit's truncation looks at only the buckets above the
// database's end. Nothing else changes: the parked page is fetched, moved and dropped exactly as
// before, under another key.

sqlite3_pcache_methods2 base;  // SQLite's own cache, to which every call goes
std::atomic<int64_t> parked{0};

struct Cache {
  sqlite3_pcache* inner;
  unsigned locking_page;  // PENDING_BYTE / page size + 1
};

Cache* Outer(sqlite3_pcache* p) { return reinterpret_cast<Cache*>(p); }

unsigned Key(const Cache* c, unsigned page) { return page == c->locking_page ? 0 : page; }

sqlite3_pcache* Create(int page_size, int extra, int purgeable) {
  sqlite3_pcache* inner = base.xCreate(page_size, extra, purgeable);
  if (inner == nullptr) return nullptr;
  auto* c = static_cast<Cache*>(sqlite3_malloc(sizeof(Cache)));
  if (c == nullptr) {
    base.xDestroy(inner);
    return nullptr;
  }
  // SQLite's locking byte offset. Only a test-only control (SQLITE_TESTCTRL_PENDING_BYTE) moves
  // it, which nothing in this program uses: a moved one would put a data page under key 0.
  constexpr unsigned kPendingByte = 0x40000000;
  c->inner = inner;
  c->locking_page = kPendingByte / static_cast<unsigned>(page_size) + 1;
  return reinterpret_cast<sqlite3_pcache*>(c);
}

void Cachesize(sqlite3_pcache* p, int n) { base.xCachesize(Outer(p)->inner, n); }

int Pagecount(sqlite3_pcache* p) { return base.xPagecount(Outer(p)->inner); }

sqlite3_pcache_page* Fetch(sqlite3_pcache* p, unsigned key, int create) {
  Cache* c = Outer(p);
  return base.xFetch(c->inner, Key(c, key), create);
}

void Unpin(sqlite3_pcache* p, sqlite3_pcache_page* page, int discard) {
  base.xUnpin(Outer(p)->inner, page, discard);
}

void Rekey(sqlite3_pcache* p, sqlite3_pcache_page* page, unsigned old_key, unsigned new_key) {
  Cache* c = Outer(p);
  const unsigned to = Key(c, new_key);
  if (to == 0) parked.fetch_add(1, std::memory_order_relaxed);
  base.xRekey(c->inner, page, Key(c, old_key), to);
}

// A truncation never meets a parked page: a rebalance moves it on to its new number at once,
// while it holds the page.
void Truncate(sqlite3_pcache* p, unsigned limit) { base.xTruncate(Outer(p)->inner, limit); }

void Destroy(sqlite3_pcache* p) {
  Cache* c = Outer(p);
  base.xDestroy(c->inner);
  sqlite3_free(c);
}

void Shrink(sqlite3_pcache* p) { base.xShrink(Outer(p)->inner); }

}  // namespace

int64_t SqlitePagesParked() { return parked.load(std::memory_order_relaxed); }

bool ConfigureSqlite() {
  static bool installed = false;
  static std::once_flag once;
  std::call_once(once, [] {
    if (sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) != SQLITE_OK ||
        sqlite3_config(SQLITE_CONFIG_GETPCACHE2, &base) != SQLITE_OK || base.xCreate == nullptr) {
      return;
    }
    sqlite3_pcache_methods2 layer = base;  // same version, xInit/xShutdown and their argument
    layer.xCreate = Create;
    layer.xCachesize = Cachesize;
    layer.xPagecount = Pagecount;
    layer.xFetch = Fetch;
    layer.xUnpin = Unpin;
    layer.xRekey = Rekey;
    layer.xTruncate = Truncate;
    layer.xDestroy = Destroy;
    layer.xShrink = Shrink;
    installed = sqlite3_config(SQLITE_CONFIG_PCACHE2, &layer) == SQLITE_OK;
  });
  return installed;
}

}  // namespace suanli::storage
