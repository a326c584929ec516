// SQLite's page cache, with one of its costs taken out (see page_cache.cc for what and why).
#ifndef SUANLI_STORAGE_SQLITE_PAGE_CACHE_H_
#define SUANLI_STORAGE_SQLITE_PAGE_CACHE_H_

#include <cstdint>

namespace suanli::storage {

// Makes every SQLite connection of the process use SQLite's own page cache through a thin layer
// that keeps the cache's notion of its highest page number from jumping to the locking page
// when a b-tree rebalance parks a page there. Takes effect only when called before SQLite
// starts (before the first connection opens); later calls, and calls after one that worked, do
// nothing. Returns whether the layer is in place.
bool InstallSqlitePageCache();

// How many times, since the process started, a page was parked at the locking page's number
// (and kept under key 0 instead). For tests and diagnostics.
int64_t SqlitePagesParked();

}  // namespace suanli::storage

#endif  // SUANLI_STORAGE_SQLITE_PAGE_CACHE_H_
