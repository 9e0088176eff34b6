#include "ops/kernel_table.h"

#include "cpu/kernels.h"

namespace fastdllm::ops {

static KernelTable make_cpu_table() {
  KernelTable t;
  t.embedding = cpu::embedding;
  t.rms_norm = cpu::rms_norm;
  t.rope = cpu::rope;
  t.linear = cpu::linear;
  t.silu_mul = cpu::silu_mul;
  t.add = cpu::add;
  t.kv_write = cpu::kv_write;
  t.attention = cpu::attention;
  t.argmax_prob = cpu::argmax_prob;
  return t;
}

const KernelTable& kernels(Device device) {
  static const KernelTable cpu_table = make_cpu_table();
  // The CUDA backend has only its GEMM so far (csrc/cuda/gemm); until the
  // elementwise and attention kernels land, every op on CUDA reports that it
  // is not implemented rather than running half on each device.
  static const KernelTable cuda_table{};
  return device == Device::CPU ? cpu_table : cuda_table;
}

}  // namespace fastdllm::ops
