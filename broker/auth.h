// API keys and who a caller is.
//
// A key is "sk_<key id>_<secret>": the key id (16 hex digits) is public and names the key; the
// secret (64 hex digits, 256 random bits) is shown once when the key is made and stored only as
// its SHA-256. A call authenticates with the header `authorization: Bearer <key>`.
#ifndef SUANLI_BROKER_AUTH_H_
#define SUANLI_BROKER_AUTH_H_

#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "suanli/v1/admin.pb.h"

namespace suanli::broker {

// Who is calling.
struct Principal {
  std::string account_id;
  v1::Role role = v1::ROLE_UNSPECIFIED;
};

// A freshly made key: the whole key (for the caller, once) and what is stored.
struct NewKey {
  std::string key;          // "sk_<key_id>_<secret>"
  std::string key_id;       // public
  std::string secret_hash;  // SHA-256 of the secret, 32 raw bytes
};

// A new random key (from the operating system's random source).
NewKey MakeKey();
// SHA-256 of `data`, 32 raw bytes.
std::string Sha256(absl::string_view data);
// Splits a key into its id and the SHA-256 of its secret; INVALID_ARGUMENT when malformed.
absl::StatusOr<NewKey> ParseKey(absl::string_view key);

// The keys that authenticate, shared by every request thread; changed by the engine thread.
class KeyRing {
 public:
  // Adds or replaces a key (a revoked key is kept so that its state can be told apart).
  void Put(const std::string& key_id, const std::string& secret_hash, const Principal& principal,
           bool revoked);
  void Clear();
  // Replaces every key at once (callers never see a ring half rebuilt).
  struct Key {
    std::string key_id;
    std::string secret_hash;
    Principal principal;
    bool revoked = false;
  };
  void ReplaceAll(const std::vector<Key>& keys);
  // The principal of a header value "Bearer sk_..."; UNAUTHENTICATED with a reason otherwise.
  absl::StatusOr<Principal> Authenticate(absl::string_view authorization) const;

 private:
  struct Entry {
    std::string secret_hash;
    Principal principal;
    bool revoked = false;
  };
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> keys_ ABSL_GUARDED_BY(mu_);
};

}  // namespace suanli::broker

#endif  // SUANLI_BROKER_AUTH_H_
