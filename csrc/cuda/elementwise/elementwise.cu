// Row-wise and elementwise CUDA kernels on fp32 activations: embedding gather,
// RMSNorm (fp32 statistics), RoPE (non-interleaved halves, absolute positions),
// SiLU*mul, add, row gather, and the vocabulary reduction (first argmax + its softmax
// probability, no softmax tensor). Weights may be fp32, fp16 or bf16 (row-major;
// the CPU's packed layout is not used on the GPU). One block per row where a
// row needs a reduction; grid-stride loops elsewhere. RMSNorm and SiLU*mul may
// write bf16: the rounded operand of the following GEMM, so that no separate
// conversion pass runs before it. Limits: hidden sizes up
// to 2^31; the vocabulary reduction accumulates its sum in double.
#include <cfloat>

#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"
#include "fastdllm/error.h"

namespace fastdllm::cuda {

void check_launch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(detail::concat("CUDA kernel ", kernel, " failed: ", cudaGetErrorString(err)));
}

namespace {

template <class T>
__global__ void embedding_kernel(const T* table, int64_t hidden, const int32_t* ids, float* out) {
  const int64_t i = blockIdx.x;
  const T* row = table + int64_t(ids[i]) * hidden;
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) out[i * hidden + c] = to_f32(row[c]);
}

template <class T, class TO>
__global__ void rms_norm_kernel(const float* x, const T* w, int64_t hidden, float eps, TO* out) {
  const int64_t r = blockIdx.x;
  const float* xr = x + r * hidden;
  float ss = 0.f;
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) ss += xr[c] * xr[c];
  ss = block_sum(ss);
  const float inv = rsqrtf(ss / float(hidden) + eps);
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) store_as(out + r * hidden + c, to_f32(w[c]) * (xr[c] * inv));
}

__global__ void rope_kernel(float* x, int64_t heads, int64_t head_dim, const int32_t* positions,
                            const float* inv_freq) {
  const int64_t t = blockIdx.x / heads, half = head_dim / 2;
  float* v = x + int64_t(blockIdx.x) * head_dim;
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    float s, c;
    sincosf(float(positions[t]) * inv_freq[i], &s, &c);
    const float a = v[i], b = v[half + i];
    v[i] = a * c - b * s;
    v[half + i] = b * c + a * s;
  }
}

template <class TO>
__global__ void silu_mul_kernel(const float* gate_up, TO* out, int64_t rows, int64_t inter) {
  const int64_t n = rows * inter;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / inter, c = i % inter;
    const float g = gate_up[r * 2 * inter + c], u = gate_up[r * 2 * inter + inter + c];
    store_as(out + i, g / (1.f + __expf(-g)) * u);
  }
}

__global__ void add_kernel(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = a[i] + b[i];
}

// One block per row: first maximum (lowest index among equal values), then the
// softmax denominator relative to it.
__global__ void argmax_prob_kernel(const float* logits, int64_t vocab, int32_t* index, float* prob) {
  __shared__ float s_val[32];
  __shared__ int64_t s_idx[32];
  __shared__ double s_sum[32];
  const float* l = logits + int64_t(blockIdx.x) * vocab;
  float best = -FLT_MAX;
  int64_t bi = vocab;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
    if (l[i] > best) { best = l[i]; bi = i; }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
  }
  if (lane == 0) { s_val[warp] = best; s_idx[warp] = bi; }
  __syncthreads();
  if (warp == 0) {
    best = lane < nw ? s_val[lane] : -FLT_MAX;
    bi = lane < nw ? s_idx[lane] : vocab;
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, best, o);
      const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
    }
    if (lane == 0) { s_val[0] = best; s_idx[0] = bi; }
  }
  __syncthreads();
  const float mx = s_val[0];
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) sum += double(expf(l[i] - mx));
  sum = warp_sum_d(sum);
  if (lane == 0) s_sum[warp] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0.0;
    for (int w = 0; w < nw; ++w) t += s_sum[w];
    index[blockIdx.x] = int32_t(s_idx[0]);
    prob[blockIdx.x] = float(1.0 / t);
  }
}

__global__ void gather_rows_kernel(const float* x, const int32_t* rows, int64_t cols, float* out) {
  const float* src = x + int64_t(rows[blockIdx.x]) * cols;
  float* dst = out + int64_t(blockIdx.x) * cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = src[c];
}

}  // namespace

void gather_rows(const float* x, const int32_t* rows, int64_t n_rows, int64_t cols, float* out) {
  if (n_rows == 0) return;
  gather_rows_kernel<<<unsigned(n_rows), 256, 0, stream()>>>(x, rows, cols, out);
  check_launch("gather_rows");
}

void embedding(const void* table, DType t, bool packed, int64_t vocab, int64_t hidden, const int32_t* ids,
               int64_t n, float* out) {
  FDL_CHECK(!packed, "embedding: the packed weight layout is CPU-only");
  if (n == 0) return;
  by_dtype(t, [&](auto z) {
    using T = decltype(z);
    embedding_kernel<T><<<unsigned(n), 256, 0, stream()>>>(static_cast<const T*>(table), hidden, ids, out);
  });
  check_launch("embedding");
}

void rms_norm(const float* x, const void* w, DType wt, int64_t rows, int64_t hidden, float eps, void* out,
              DType out_dtype) {
  if (rows == 0) return;
  by_dtype(wt, [&](auto z) {
    by_act_dtype(out_dtype, [&](auto zo) {
      using T = decltype(z);
      using TO = decltype(zo);
      rms_norm_kernel<T, TO><<<unsigned(rows), 256, 0, stream()>>>(x, static_cast<const T*>(w), hidden, eps,
                                                                   static_cast<TO*>(out));
    });
  });
  check_launch("rms_norm");
}

void rope(float* x, int64_t len, int64_t heads, int64_t head_dim, const int32_t* positions, const float* inv_freq) {
  if (len == 0) return;
  rope_kernel<<<unsigned(len * heads), 64, 0, stream()>>>(x, heads, head_dim, positions, inv_freq);
  check_launch("rope");
}

void silu_mul(const float* gate_up, void* out, DType out_dtype, int64_t rows, int64_t inter) {
  if (rows * inter == 0) return;
  by_act_dtype(out_dtype, [&](auto zo) {
    using TO = decltype(zo);
    silu_mul_kernel<TO><<<grid_for(rows * inter), 256, 0, stream()>>>(gate_up, static_cast<TO*>(out), rows, inter);
  });
  check_launch("silu_mul");
}

void add(const float* a, const float* b, float* out, int64_t n) {
  if (n == 0) return;
  add_kernel<<<grid_for(n), 256, 0, stream()>>>(a, b, out, n);
  check_launch("add");
}

void argmax_prob(const float* logits, int64_t rows, int64_t vocab, int32_t* index, float* prob) {
  if (rows == 0) return;
  argmax_prob_kernel<<<unsigned(rows), 1024, 0, stream()>>>(logits, vocab, index, prob);
  check_launch("argmax_prob");
}

}  // namespace fastdllm::cuda
