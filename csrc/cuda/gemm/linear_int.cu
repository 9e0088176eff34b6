// Weight-only integer GEMM on the GPU (W8A16 / W4A16): out[M, N] = x[M, K] @
// dequant(W)^T (+ bias) (+ residual) for the small M of decoding (1-64 rows),
// codes in the layout of cuda/gemm/int_layout.h.
//
// A SIMT kernel, written for correctness first (NEVER RUN: no GPU was lent
// while it was written; tests/test_cuda.py has the checks ready): a block of 8
// warps owns 8 * CW output columns; K is walked in chunks of kChunk inputs whose
// activations (fp32, in the codes' input order perm) are staged in shared
// memory for all rows; each lane takes 8 consecutive inputs of a column per
// step (one 32-bit load of int4 codes, 64-bit of int8), dequantizes them in
// registers (q * s - s z, fp32) and accumulates every row; the lanes' partial
// sums are reduced with shuffles at the end. Exact fp32 products of the
// dequantized weights. Weights without act-order whose K and group are
// multiples of 64 take the tensor-core path instead (gemm_mixed_sm90.cuh:
// CUTLASS mixed-input, bf16 dequantization).
#include <algorithm>
#include <stdexcept>

#include "core/caching_allocator.h"
#include "cuda/gemm/gemm_sm90.h"

#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"
#include "fastdllm/error.h"

namespace fastdllm::cuda {

namespace {

constexpr int kWarps = 8;
constexpr int kChunk = 512;  // inputs staged per step: rows x 512 fp32 <= 128 KiB for 64 rows

template <int BITS, int MT, int CW, class TX>
__global__ void __launch_bounds__(kWarps * 32)
    int_gemm_kernel(const TX* __restrict__ x, const int32_t* __restrict__ perm, const uint8_t* __restrict__ codes,
                    const float* __restrict__ scales, const float* __restrict__ zs, const float* __restrict__ bias,
                    const float* residual, float* out, int m, int n, int k, int group) {
  extern __shared__ float xs[];  // [MT][kChunk]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int col0 = (blockIdx.x * kWarps + warp) * CW;
  const int groups = k / group;
  const int64_t row_bytes = int64_t(k) * BITS / 8;
  float acc[CW][MT];
#pragma unroll
  for (int c = 0; c < CW; ++c)
#pragma unroll
    for (int r = 0; r < MT; ++r) acc[c][r] = 0.f;
  for (int k0 = 0; k0 < k; k0 += kChunk) {
    const int kc = min(kChunk, k - k0);
    __syncthreads();
    for (int i = threadIdx.x; i < m * kc; i += blockDim.x) {
      const int r = i / kc, c = i - r * kc;
      const int src = perm ? perm[k0 + c] : k0 + c;
      xs[r * kChunk + c] = to_f32(x[int64_t(r) * k + src]);
    }
    __syncthreads();
#pragma unroll
    for (int c = 0; c < CW; ++c) {
      const int col = col0 + c;
      if (col >= n) break;
      const uint8_t* wrow = codes + int64_t(col) * row_bytes;
      for (int kk = lane * 8; kk < kc; kk += 32 * 8) {
        const int kg = k0 + kk;
        const int g = kg / group;  // 8 inputs never straddle a group (group % 8 == 0)
        const float s = scales[int64_t(col) * groups + g], sz = zs[int64_t(col) * groups + g];
        float w[8];
        if constexpr (BITS == 4) {
          const uint32_t v = *reinterpret_cast<const uint32_t*>(wrow + kg / 2);
#pragma unroll
          for (int j = 0; j < 8; ++j) w[j] = fmaf(float((v >> (4 * j)) & 0xFu), s, -sz);
        } else {
          const uint2 v = *reinterpret_cast<const uint2*>(wrow + kg);
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            w[j] = fmaf(float((v.x >> (8 * j)) & 0xFFu), s, -sz);
            w[4 + j] = fmaf(float((v.y >> (8 * j)) & 0xFFu), s, -sz);
          }
        }
#pragma unroll
        for (int r = 0; r < MT; ++r) {
          if (r >= m) break;
          const float* xr = xs + r * kChunk + kk;
          float t = acc[c][r];
#pragma unroll
          for (int j = 0; j < 8; ++j) t = fmaf(xr[j], w[j], t);
          acc[c][r] = t;
        }
      }
    }
  }
#pragma unroll
  for (int c = 0; c < CW; ++c) {
    const int col = col0 + c;
#pragma unroll
    for (int r = 0; r < MT; ++r) {
      const float v = warp_sum(acc[c][r]);  // every lane takes part in the shuffles
      if (lane == 0 && r < m && col < n) {
        float o = v;
        if (bias) o += bias[col];
        if (residual) o += residual[int64_t(r) * n + col];  // read before the write: aliasing is fine
        out[int64_t(r) * n + col] = o;
      }
    }
  }
}

template <int BITS, int MT, int CW, class TX>
void launch(const TX* x, const IntGemmArgs& a) {
  const int cols_per_block = kWarps * CW;
  const unsigned blocks = unsigned((a.n + cols_per_block - 1) / cols_per_block);
  const size_t smem = size_t(MT) * kChunk * sizeof(float);
  auto kern = int_gemm_kernel<BITS, MT, CW, TX>;
  const cudaError_t rc = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  FDL_CHECK(rc == cudaSuccess, "linear (integer weights) on cuda: ", smem, " bytes of shared memory refused (",
            cudaGetErrorString(rc), ")");
  kern<<<blocks, kWarps * 32, smem, stream()>>>(x, a.perm, a.codes, a.scales, a.zero_scales, a.bias, a.residual,
                                                a.out, int(a.m), int(a.n), int(a.k), int(a.group));
}

template <int BITS, class TX>
void by_rows(const TX* x, const IntGemmArgs& a) {
  // Rows padded to the tile; fewer columns per warp as rows grow (registers).
  if (a.m <= 8)
    launch<BITS, 8, 4>(x, a);
  else if (a.m <= 16)
    launch<BITS, 16, 2>(x, a);
  else if (a.m <= 32)
    launch<BITS, 32, 1>(x, a);
  else
    launch<BITS, 64, 1>(x, a);
}

}  // namespace

namespace {

template <class TX>
__global__ void to_bf16_kernel(const TX* __restrict__ x, __nv_bfloat16* __restrict__ out, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __float2bfloat16_rn(to_f32(x[i]));
}

// The tensor-core path (gemm_mixed_sm90.cuh) where it applies: codes with the
// bf16 scale / zero terms, no act-order, K and the group multiples of 64.
bool tensor_core_mixed(const void* x, DType x_dtype, const IntGemmArgs& a) {
  if (!a.aux || a.perm || a.k % 64 || a.group % 64 || a.n % 4) return false;
  const int64_t groups = a.k / a.group;
  DeviceScratch xb(device_allocator(), x_dtype == DType::BF16 ? 0 : size_t(a.m * a.k) * 2);
  const void* xa = x;
  if (x_dtype != DType::BF16) {  // the mainloop multiplies bf16: round the activations once
    by_act_dtype(x_dtype, [&](auto zx) {
      using TX = decltype(zx);
      to_bf16_kernel<TX><<<grid_for(a.m * a.k), 256, 0, stream()>>>(static_cast<const TX*>(x),
                                                                     xb.as<__nv_bfloat16>(), a.m * a.k);
    });
    check_launch("linear/int4_to_bf16");
    xa = xb.get();
  }
  GemmMixedSm90Args g;
  g.x = xa;
  g.w = a.codes;
  g.scale = a.aux;
  g.zero = a.aux + a.n * groups;
  g.group = a.group;
  g.bias = a.bias;
  g.residual = a.residual;
  g.out = a.out;
  g.m = a.m;
  g.n = a.n;
  g.k = a.k;
  if ((a.bits == 4 ? gemm_w4a16_sm90(g) : gemm_w8a16_sm90(g)) != 0) throw std::runtime_error(gemm_last_error());
  check_launch("linear/mixed_input_gemm");
  return true;
}

}  // namespace

void linear_int(const void* x, DType x_dtype, const IntGemmArgs& args) {
  FDL_CHECK(args.k % 8 == 0 && args.group % 8 == 0, "linear (integer weights) on cuda: in_features ", args.k,
            " and group size ", args.group, " must be multiples of 8");
  if (args.m == 0 || args.n == 0) return;
  if (tensor_core_mixed(x, x_dtype, args)) return;
  // Up to 64 rows per launch (the kernel's register tile); a prefill's rows run
  // in chunks that each stream the weights again (correct, not fast).
  for (int64_t r0 = 0; r0 < args.m; r0 += 64) {
    IntGemmArgs a = args;
    a.m = std::min<int64_t>(64, args.m - r0);
    a.out = args.out + r0 * args.n;
    a.residual = args.residual ? args.residual + r0 * args.n : nullptr;
    by_act_dtype(x_dtype, [&](auto zx) {
      using TX = decltype(zx);
      const TX* xr = static_cast<const TX*>(x) + r0 * args.k;
      if (a.bits == 4)
        by_rows<4>(xr, a);
      else
        by_rows<8>(xr, a);
    });
    check_launch("linear/int_gemm");
  }
}

}  // namespace fastdllm::cuda
