#include "broker/auth.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <cstdint>
#include <cstdlib>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace suanli::broker {
namespace {

std::string RandomHex(int bytes) {
  std::string raw(static_cast<size_t>(bytes), '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), bytes) != 1) {
    // Without randomness no key is safe to make; this never happens on Linux with /dev/urandom.
    std::abort();
  }
  return absl::BytesToHexString(raw);
}

bool IsLowerHex(absl::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

std::string Sha256(absl::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof(digest));
}

NewKey MakeKey() {
  NewKey k;
  k.key_id = RandomHex(8);
  const std::string secret = RandomHex(32);
  k.key = absl::StrCat("sk_", k.key_id, "_", secret);
  k.secret_hash = Sha256(secret);
  return k;
}

absl::StatusOr<NewKey> ParseKey(absl::string_view key) {
  // sk_ + 16 hex + _ + 64 hex
  if (key.size() != 3 + 16 + 1 + 64 || !absl::StartsWith(key, "sk_") || key[19] != '_') {
    return absl::InvalidArgumentError("an API key looks like sk_<16 hex digits>_<64 hex digits>");
  }
  const absl::string_view id = key.substr(3, 16), secret = key.substr(20);
  if (!IsLowerHex(id) || !IsLowerHex(secret)) {
    return absl::InvalidArgumentError("an API key looks like sk_<16 hex digits>_<64 hex digits>");
  }
  NewKey k;
  k.key.assign(key.data(), key.size());
  k.key_id.assign(id.data(), id.size());
  k.secret_hash = Sha256(secret);
  return k;
}

void KeyRing::Put(const std::string& key_id, const std::string& secret_hash,
                  const Principal& principal, bool revoked) {
  absl::MutexLock lock(&mu_);
  keys_[key_id] = Entry{secret_hash, principal, revoked};
}

void KeyRing::Clear() {
  absl::MutexLock lock(&mu_);
  keys_.clear();
}

void KeyRing::ReplaceAll(const std::vector<Key>& keys) {
  absl::flat_hash_map<std::string, Entry> fresh;
  for (const Key& k : keys) fresh[k.key_id] = Entry{k.secret_hash, k.principal, k.revoked};
  absl::MutexLock lock(&mu_);
  keys_.swap(fresh);
}

absl::StatusOr<Principal> KeyRing::Authenticate(absl::string_view authorization) const {
  if (authorization.empty()) {
    return absl::UnauthenticatedError(
        "no API key: send the header 'authorization: Bearer sk_...' (the CLI takes --key or "
        "SUANLI_KEY)");
  }
  if (!absl::StartsWith(authorization, "Bearer ")) {
    return absl::UnauthenticatedError("the authorization header must be 'Bearer sk_...'");
  }
  absl::StatusOr<NewKey> k = ParseKey(authorization.substr(7));
  if (!k.ok()) return absl::UnauthenticatedError(k.status().message());
  absl::MutexLock lock(&mu_);
  auto it = keys_.find(k->key_id);
  if (it == keys_.end() || it->second.secret_hash.size() != k->secret_hash.size() ||
      CRYPTO_memcmp(it->second.secret_hash.data(), k->secret_hash.data(), k->secret_hash.size()) !=
          0) {
    return absl::UnauthenticatedError("unknown API key");
  }
  if (it->second.revoked) {
    return absl::UnauthenticatedError(absl::StrCat("API key ", k->key_id, " has been revoked"));
  }
  return it->second.principal;
}

}  // namespace suanli::broker
