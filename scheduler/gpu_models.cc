#include "scheduler/gpu_models.h"

namespace suanli::scheduler {

const std::vector<GpuModel>& AllGpuModels() {
  static const auto* models = new std::vector<GpuModel>{
      {0, "H100-SXM5-80G", "H100/H800", 80, 989},    {1, "H800-SXM5-80G", "H100/H800", 80, 989},
      {2, "H200-SXM5-141G", "H200", 141, 989},       {3, "H20-96G", "H20", 96, 148},
      {4, "A100-SXM4-80G", "A100/A800", 80, 312},    {5, "A800-SXM4-80G", "A100/A800", 80, 312},
      {6, "A100-PCIE-40G", "A100/A800", 40, 312},    {7, "L40S-48G", "L40S/RTX4090", 48, 362},
      {8, "RTX4090-24G", "L40S/RTX4090", 24, 165},   {9, "L20-48G", "L20", 48, 119},
      {10, "Ascend910B-64G", "Ascend910B", 64, 320}, {11, "V100-SXM2-32G", "V100", 32, 125},
      {12, "B200-SXM-192G", "B200", 192, 2250},      {13, "MI300X-192G", "MI300X", 192, 1307},
  };
  return *models;
}

const GpuModel* FindGpuModel(std::string_view name) {
  for (const GpuModel& m : AllGpuModels()) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

}  // namespace suanli::scheduler
