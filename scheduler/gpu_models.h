// The canonical GPU models the market trades, with their dense BF16/FP16 tensor TFLOPS so that
// capacity can be stated in PFLOPS. Names are exact and case-sensitive.
//
//   const GpuModel* m = FindGpuModel("H100-SXM5-80G");  // nullptr when unknown
//   double pflops = gpus * m->dense_tflops / 1000.0;
#ifndef SUANLI_SCHEDULER_GPU_MODELS_H_
#define SUANLI_SCHEDULER_GPU_MODELS_H_

#include <cstdint>
#include <string_view>
#include <vector>

namespace suanli::scheduler {

using ModelId = uint8_t;  // index into AllGpuModels(); at most 64 models

struct GpuModel {
  ModelId id;
  std::string_view name;
  std::string_view family;  // substitutable class, e.g. "H100/H800"
  int32_t memory_gib;
  int32_t dense_tflops;  // dense BF16 (FP16 where BF16 is not offered) tensor TFLOPS
};

// Every canonical model, indexed by id.
const std::vector<GpuModel>& AllGpuModels();

// The model with this exact name, or nullptr.
const GpuModel* FindGpuModel(std::string_view name);

}  // namespace suanli::scheduler

#endif  // SUANLI_SCHEDULER_GPU_MODELS_H_
