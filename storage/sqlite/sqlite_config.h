// SQLite's process-wide configuration for the store: what must be set before SQLite starts.
#ifndef SUANLI_STORAGE_SQLITE_SQLITE_CONFIG_H_
#define SUANLI_STORAGE_SQLITE_SQLITE_CONFIG_H_

#include <cstdint>

namespace suanli::storage {

// Configures SQLite for every connection of the process (see sqlite_config.cc for why):
// - no memory statistics (sqlite3_memory_used() stays 0), so that allocations take no global
//   mutex;
// - SQLite's own page cache through a thin layer that keeps the cache's notion of its highest page
//   number from jumping to the locking page when a b-tree rebalance parks a page there.
// Takes effect only when called before SQLite starts (before the first connection opens) and
// while no other thread uses SQLite; later calls, and calls after one that worked, do nothing.
// Returns whether it is in effect. Without it SQLite works the same, only with slower commits.
// SqliteStore::Open calls it; suanlid calls it first thing in main.
bool ConfigureSqlite();

// How many times, since the process started, a page was parked at the locking page's number and
// kept under key 0 instead. For tests and diagnostics.
int64_t SqlitePagesParked();

}  // namespace suanli::storage

#endif  // SUANLI_STORAGE_SQLITE_SQLITE_CONFIG_H_
