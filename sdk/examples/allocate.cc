// A buyer's program: 16 H100 GPUs as 2 nodes of 8 in one fabric domain, for 4 hours, at no more
// than 30.00 per GPU-hour. Reads the broker's address and the API key from SUANLI_SERVER and
// SUANLI_KEY. Exit code 0 when granted, 3 when no capacity fits, 1 on other errors.
#include <cstdlib>
#include <iostream>
#include <string>

#include "sdk/client.h"
#include "sdk/format.h"

int main() {
  suanli::ClientOptions options;
  if (const char* server = std::getenv("SUANLI_SERVER")) options.target = server;
  if (const char* key = std::getenv("SUANLI_KEY")) options.api_key = key;
  absl::StatusOr<std::unique_ptr<suanli::Client>> client = suanli::Client::Connect(options);
  if (!client.ok()) {
    std::cerr << client.status() << "\n";
    return 1;
  }

  suanli::v1::AllocateRequest call;
  suanli::v1::AllocationRequest& request = *call.mutable_request();
  request.add_models("H100-SXM5-80G");
  request.set_gpus(16);
  request.set_gpus_per_node(8);
  request.set_locality(suanli::v1::LOCALITY_DOMAIN);
  request.set_max_price_micros_per_gpu_hour(30 * suanli::kMicrosPerUnit);
  *request.mutable_duration() = suanli::ToProtoDuration(absl::Hours(4));
  absl::StatusOr<suanli::v1::Allocation> allocation = (*client)->Allocate(call);

  if (!allocation.ok()) {
    std::cerr << allocation.status() << "\n";
    if (auto rejection = suanli::RejectionOf(allocation.status())) {
      std::cerr << "what would work: " << suanli::RejectionHint(*rejection) << "\n";
      return 3;
    }
    return 1;
  }
  std::cout << "allocation " << allocation->id() << ", total "
            << suanli::FormatMoney(allocation->total_price_micros()) << "\n";
  for (const suanli::v1::Slice& slice : allocation->slices()) {
    std::cout << "  " << slice.node_id() << ": " << slice.gpus() << " x " << slice.model() << " at "
              << suanli::FormatMoney(slice.price_micros_per_gpu_hour()) << "/GPU-h\n";
  }
  return 0;
}
