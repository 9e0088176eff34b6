// The linear (GEMM) kernel, written once over a vector-ISA trait and compiled
// per ISA: linear_avx2.cc includes it with VecAvx2 (x86-64-v3 flags),
// linear_avx512.cc with VecAvx512 (AVX-512 flags). Which one runs is decided at
// run time (cpu::isa()).
//
// out[M, N] = x[M, K] @ w[N, K]^T (+ bias) (+ residual), fp32 accumulate.
// Layout: x and out row-major fp32; w row-major [N, K] as stored in safetensors
// (fp32, bf16 or fp16, upcast in registers). Register tile: MR rows of x by NR
// rows of w; each w element is loaded once per x tile from L1/L2, and threads
// split N so that no two threads write the same cache line of out except at the
// boundaries of their column ranges.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "fastdllm/dtype.h"

namespace fastdllm::cpu {

template <class V, class WT>
struct WeightLoad;

template <class V>
struct WeightLoad<V, float> {
  static typename V::reg load(const float* p) { return V::load(p); }
  static float scalar(const float* p) { return *p; }
};
template <class V>
struct WeightLoad<V, uint16_t> {  // bf16
  static typename V::reg load(const uint16_t* p) { return V::load_bf16(p); }
  static float scalar(const uint16_t* p) { return bf16_to_f32(*p); }
};
struct Half { uint16_t bits; };
template <class V>
struct WeightLoad<V, Half> {
  static typename V::reg load(const Half* p) { return V::load_f16(&p->bits); }
  static float scalar(const Half* p) { return _cvtsh_ss(p->bits); }
};

template <class V, class WT, int MR, int NR>
inline void linear_tile(const float* x, int64_t k, const WT* w, int64_t ldw, float (&acc)[MR][NR]) {
  typename V::reg a[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) a[i][j] = V::zero();
  const int64_t kv = k / V::width * V::width;
  for (int64_t p = 0; p < kv; p += V::width) {
    typename V::reg wr[NR];
    for (int j = 0; j < NR; ++j) wr[j] = WeightLoad<V, WT>::load(w + j * ldw + p);
    for (int i = 0; i < MR; ++i) {
      const typename V::reg xr = V::load(x + i * k + p);
      for (int j = 0; j < NR; ++j) a[i][j] = V::fma(xr, wr[j], a[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      float s = V::reduce(a[i][j]);
      for (int64_t p = kv; p < k; ++p) s += x[i * k + p] * WeightLoad<V, WT>::scalar(w + j * ldw + p);
      acc[i][j] = s;
    }
}

template <class V, class WT, int MR, int NR>
inline void linear_block(const float* x, const WT* w, const float* bias, const float* residual,
                         float* out, int64_t m0, int64_t n0, int64_t n, int64_t k) {
  float acc[MR][NR];
  linear_tile<V, WT, MR, NR>(x + m0 * k, k, w + n0 * k, k, acc);
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      const int64_t idx = (m0 + i) * n + n0 + j;
      float v = acc[i][j];
      if (bias) v += bias[n0 + j];
      if (residual) v += residual[idx];
      out[idx] = v;
    }
}

// Full MR-row tiles, then the M tail one row at a time.
template <class V, class WT, int MR, int NR>
inline void linear_rows(const float* x, const WT* w, const float* bias, const float* residual,
                        float* out, int64_t m, int64_t n0, int64_t n, int64_t k) {
  int64_t m0 = 0;
  for (; m0 + MR <= m; m0 += MR) linear_block<V, WT, MR, NR>(x, w, bias, residual, out, m0, n0, n, k);
  for (; m0 < m; ++m0) linear_block<V, WT, 1, NR>(x, w, bias, residual, out, m0, n0, n, k);
}

template <class V, class WT>
void linear_impl(const float* x, const WT* w, const float* bias, const float* residual,
                 float* out, int64_t m, int64_t n, int64_t k) {
  constexpr int NR = V::nr;
  constexpr int MR = V::mr;
  const int64_t n_tiles = n / NR;
#pragma omp parallel
  {
#pragma omp for schedule(static) nowait
    for (int64_t t = 0; t < n_tiles; ++t)
      linear_rows<V, WT, MR, NR>(x, w, bias, residual, out, m, t * NR, n, k);
#pragma omp for schedule(static)
    for (int64_t c = n_tiles * NR; c < n; ++c)
      linear_rows<V, WT, MR, 1>(x, w, bias, residual, out, m, c, n, k);
  }
}

template <class V>
void linear_dispatch(const float* x, const void* w, DType wt, const float* bias,
                     const float* residual, float* out, int64_t m, int64_t n, int64_t k) {
  switch (wt) {
    case DType::F32:
      return linear_impl<V, float>(x, static_cast<const float*>(w), bias, residual, out, m, n, k);
    case DType::BF16:
      return linear_impl<V, uint16_t>(x, static_cast<const uint16_t*>(w), bias, residual, out, m, n, k);
    case DType::F16:
      return linear_impl<V, Half>(x, static_cast<const Half*>(w), bias, residual, out, m, n, k);
    default:
      return;
  }
}

}  // namespace fastdllm::cpu
