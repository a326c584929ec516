// suanli-core-bench: drives the allocation core in-process with the std workload of
// shared/WORKLOAD.md on one thread and reports decision throughput, latency percentiles, peak
// memory and the end-of-run audit.
//
//   suanli-core-bench --gpus=1048576 --requests=1000000 --seed=1 --json
//
// The clock is simulated: it advances one second per request, and allocations expire at their end
// as in production. Whenever GPUs sold now exceed 80% of the GPUs on offer, live allocations are
// released, uniformly at random, until they no longer do. Latency is measured around each
// Matcher::Allocate call (which includes the expiries that the clock's advance causes);
// releases are timed apart.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/workload.h"
#include "scheduler/matcher.h"

ABSL_FLAG(int64_t, gpus, 1 << 20, "GPUs in the std market (scaled as WORKLOAD.md says)");
ABSL_FLAG(int64_t, requests, 1'000'000, "allocation requests to decide");
ABSL_FLAG(uint64_t, seed, 1, "seed of the market and the request stream");
ABSL_FLAG(bool, json, false, "print one JSON object instead of a human summary");

namespace suanli::bench {
namespace {

using scheduler::Allocation;
using scheduler::Matcher;
using scheduler::Request;

using Clock = std::chrono::steady_clock;

double PeakRssMib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

// Checks that a grant satisfies its request's shape; the Matcher's audit checks the rest.
bool SatisfiesShape(const Matcher& m, const Request& r, const Allocation& a,
                    const std::vector<std::string>& node_domain) {
  if (a.gpus() != r.gpus) return false;
  for (const auto& s : a.slices) {
    if (r.gpus_per_node > 0 && s.gpus != r.gpus_per_node) return false;
    if (s.price_per_gpu_hour > r.max_price_per_gpu_hour) return false;
  }
  if (r.locality == scheduler::Locality::kNode && a.slices.size() != 1) return false;
  if (r.locality == scheduler::Locality::kDomain) {
    for (const auto& s : a.slices) {
      if (node_domain[s.node] != node_domain[a.slices[0].node]) return false;
    }
  }
  return true;
}

int Run() {
  const int64_t gpus = absl::GetFlag(FLAGS_gpus);
  const int64_t requests = absl::GetFlag(FLAGS_requests);
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  const absl::Time t0 = absl::FromUnixSeconds(1'800'000'000);

  const auto setup_start = Clock::now();
  StdMarket market = MakeStdMarket(gpus, seed, t0);
  Matcher m;
  for (const auto& c : market.centers) {
    if (!m.AddCenter(c).ok()) return 2;
  }
  for (const auto& d : market.domains) {
    if (!m.AddDomain(d).ok()) return 2;
  }
  if (absl::Status st = m.AddNodes(market.nodes); !st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    return 2;
  }
  for (const auto& o : market.offers) {
    if (absl::Status st = m.AddOffer(o, t0); !st.ok()) {
      std::fprintf(stderr, "%s\n", st.ToString().c_str());
      return 2;
    }
  }
  std::vector<std::string> node_domain(market.nodes.size());
  for (size_t i = 0; i < market.nodes.size(); ++i) {
    node_domain[i] = absl::StrCat(market.nodes[i].center_id, "/", market.nodes[i].domain_id);
  }
  const double setup_sec = std::chrono::duration<double>(Clock::now() - setup_start).count();

  RequestStream stream(market, seed);
  std::mt19937_64 release_rng(seed * 7919 + 1);
  std::vector<uint32_t> lat_ns;
  lat_ns.reserve(static_cast<size_t>(requests));
  std::vector<scheduler::AllocationId> pool;  // live allocations the driver may release
  std::map<std::string, int64_t> rejected_by;
  // Latency by outcome and by request kind, for the profile.
  std::map<std::string, std::vector<uint32_t>> lat_by;
  int64_t granted = 0, rejected = 0, releases = 0, shape_violations = 0, errors = 0;
  double release_sec = 0;
  const int64_t offered = market.gpus;
  absl::Time now = t0;

  const auto run_start = Clock::now();
  for (int64_t i = 0; i < requests; ++i) {
    now += absl::Seconds(1);
    RequestKind kind;
    const Request r = stream.Next(now, &kind);
    const auto t1 = Clock::now();
    absl::StatusOr<scheduler::Decision> d = m.Allocate(r, now);
    const auto t2 = Clock::now();
    lat_ns.push_back(static_cast<uint32_t>(std::min<int64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(t2 - t1).count(), UINT32_MAX)));
    if (!d.ok()) {
      ++errors;
      continue;
    }
    const std::string outcome =
        d->granted ? "granted" : scheduler::RejectReasonName(d->rejection.reason);
    lat_by[absl::StrCat(RequestKindName(kind), r.start.has_value() ? "/future/" : "/now/", outcome)]
        .push_back(lat_ns.back());
    if (d->granted) {
      ++granted;
      if (!SatisfiesShape(m, r, d->allocation, node_domain)) ++shape_violations;
      pool.push_back(d->allocation.id);
    } else {
      ++rejected;
      ++rejected_by[scheduler::RejectReasonName(d->rejection.reason)];
    }
    // Keep the market busy but not full.
    if (m.Totals().sold_gpus_now * 10 > offered * 8) {
      const auto r1 = Clock::now();
      while (!pool.empty() && m.Totals().sold_gpus_now * 10 > offered * 8) {
        const size_t k = release_rng() % pool.size();
        const scheduler::AllocationId id = pool[k];
        pool[k] = pool.back();
        pool.pop_back();
        if (m.Release(id, now).ok()) ++releases;  // NOT_FOUND: it had already expired
      }
      release_sec += std::chrono::duration<double>(Clock::now() - r1).count();
    }
    m.TakeEvents();
  }
  const double run_sec = std::chrono::duration<double>(Clock::now() - run_start).count();

  const scheduler::AuditReport audit = m.Audit();
  const int64_t violations = audit.violations + shape_violations + errors;
  double decide_sec = 0;
  for (uint32_t ns : lat_ns) decide_sec += ns * 1e-9;
  std::sort(lat_ns.begin(), lat_ns.end());
  auto pct = [&](double p) -> double {
    if (lat_ns.empty()) return 0;
    const auto k = static_cast<size_t>(std::llround(p * static_cast<double>(lat_ns.size() - 1)));
    return lat_ns[k] / 1000.0;
  };
  const double dps = decide_sec > 0 ? static_cast<double>(requests) / decide_sec : 0;
  const double wall_dps = run_sec > 0 ? static_cast<double>(requests) / run_sec : 0;
  const scheduler::MarketTotals tot = m.Totals();

  std::string reasons;
  for (const auto& [k, v] : rejected_by) {
    absl::StrAppend(&reasons, reasons.empty() ? "" : ",", "\"", k, "\":", v);
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::printf(
        "{\"gpus\":%lld,\"nodes\":%lld,\"requests\":%lld,\"granted\":%lld,\"rejected\":%lld,"
        "\"rejected_by_reason\":{%s},\"releases\":%lld,\"decisions_per_sec\":%.0f,"
        "\"wall_decisions_per_sec\":%.0f,\"p50_us\":%.2f,\"p99_us\":%.2f,\"p999_us\":%.2f,"
        "\"max_us\":%.2f,\"peak_rss_mib\":%.1f,\"setup_sec\":%.3f,\"release_sec\":%.3f,"
        "\"sold_gpus_at_end\":%lld,"
        "\"live_allocations_at_end\":%lld,\"violations\":%lld,\"seed\":%llu}\n",
        static_cast<long long>(market.gpus), static_cast<long long>(market.nodes.size()),
        static_cast<long long>(requests), static_cast<long long>(granted),
        static_cast<long long>(rejected), reasons.c_str(), static_cast<long long>(releases), dps,
        wall_dps, pct(0.50), pct(0.99), pct(0.999), lat_ns.empty() ? 0.0 : lat_ns.back() / 1000.0,
        PeakRssMib(), setup_sec, release_sec, static_cast<long long>(tot.sold_gpus_now),
        static_cast<long long>(tot.live_allocations), static_cast<long long>(violations),
        static_cast<unsigned long long>(seed));
  } else {
    std::printf("market: %lld GPUs on %zu nodes, %zu centers (setup %.2f s)\n",
                static_cast<long long>(market.gpus), market.nodes.size(), market.centers.size(),
                setup_sec);
    std::printf("requests: %lld  granted: %lld  rejected: %lld  releases: %lld (%.2f s)\n",
                static_cast<long long>(requests), static_cast<long long>(granted),
                static_cast<long long>(rejected), static_cast<long long>(releases), release_sec);
    for (const auto& [k, v] : rejected_by) {
      std::printf("  rejected %-22s %lld\n", k.c_str(), static_cast<long long>(v));
    }
    std::printf("decisions/s: %.0f (engine time only; %.0f counting the driver and releases)\n",
                dps, wall_dps);
    std::printf("latency us: p50 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n", pct(0.50), pct(0.99),
                pct(0.999), lat_ns.empty() ? 0.0 : lat_ns.back() / 1000.0);
    std::printf("peak RSS: %.1f MiB   violations: %lld\n", PeakRssMib(),
                static_cast<long long>(violations));
    for (const std::string& p : audit.problems) std::printf("  audit: %s\n", p.c_str());
    std::printf(
        "latency by kind/start/outcome (count, share of engine time, mean, p50, p99, max us):\n");
    for (auto& [k, v] : lat_by) {
      std::sort(v.begin(), v.end());
      double sum = 0;
      for (uint32_t ns : v) sum += ns * 1e-9;
      std::printf("  %-40s %8zu %5.1f%% %8.2f %8.2f %8.2f %8.2f\n", k.c_str(), v.size(),
                  100.0 * sum / decide_sec, sum * 1e6 / static_cast<double>(v.size()),
                  v[v.size() / 2] / 1000.0,
                  v[static_cast<size_t>(0.99 * static_cast<double>(v.size() - 1))] / 1000.0,
                  v.back() / 1000.0);
    }
  }
  return violations == 0 ? 0 : 1;
}

}  // namespace
}  // namespace suanli::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Drives the allocation core with the std workload and reports throughput, latency, memory "
      "and the audit.\nExample: suanli-core-bench --gpus=1048576 --requests=1000000 --seed=1 "
      "--json");
  absl::ParseCommandLine(argc, argv);
  return suanli::bench::Run();
}
