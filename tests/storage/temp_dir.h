// A fresh directory for one test, removed with everything in it when the object goes.
#ifndef SUANLI_TESTS_STORAGE_TEMP_DIR_H_
#define SUANLI_TESTS_STORAGE_TEMP_DIR_H_

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

namespace suanli::storage {

class TempDir {
 public:
  // Under $TMPDIR, or /tmp. path() is empty when the directory could not be made.
  TempDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/suanli-store-XXXXXX";
    if (mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace suanli::storage

#endif  // SUANLI_TESTS_STORAGE_TEMP_DIR_H_
