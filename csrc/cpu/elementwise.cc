// Row-wise and elementwise kernels. Plain loops with `omp simd`: at fp32 and
// these sizes the compiler's AVX2 code is as fast as intrinsics, and the
// reductions keep fp32 statistics as the spec requires.
#include <cmath>
#include <cstring>

#include "cpu/kernels.h"
#include "cpu/fast_exp.h"
#include "cpu/load_row.h"
#include "cpu/packed_weights.h"

namespace fastdllm::cpu {

void embedding(const void* table, DType t, bool packed, int64_t vocab, int64_t hidden, const int32_t* ids,
               int64_t n, float* out) {
  (void)vocab;
#pragma omp parallel for schedule(static) if (n * hidden > 32768)
  for (int64_t i = 0; i < n; ++i) {
    if (packed) {  // a few rows: strided reads of the panel layout are cheap
      const uint16_t* w = static_cast<const uint16_t*>(table);
      for (int64_t c = 0; c < hidden; ++c) out[i * hidden + c] = bf16_to_f32(w[packed_index(ids[i], c, hidden)]);
    } else {
      load_row_f32(table, t, int64_t(ids[i]) * hidden, hidden, out + i * hidden);
    }
  }
}

void rms_norm(const float* x, const void* w, DType wt, int64_t rows, int64_t hidden, float eps, void* out,
              DType out_dtype) {
  const bool bf16 = out_dtype == DType::BF16;
#pragma omp parallel if (rows * hidden > 32768)
  {
    float* wf = scratch_floats(2 * hidden);
    float* tmp = wf + hidden;  // the fp32 row before rounding, for a bf16 out
    load_row_f32(w, wt, 0, hidden, wf);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * hidden;
      float* o = bf16 ? tmp : static_cast<float*>(out) + r * hidden;
      float ss = 0.f;
#pragma omp simd reduction(+ : ss)
      for (int64_t i = 0; i < hidden; ++i) ss += xr[i] * xr[i];
      const float inv = 1.0f / std::sqrt(ss / float(hidden) + eps);
#pragma omp simd
      for (int64_t i = 0; i < hidden; ++i) o[i] = wf[i] * (xr[i] * inv);
      if (bf16) store_bf16(tmp, hidden, static_cast<uint16_t*>(out) + r * hidden);
    }
  }
}

void rope(float* x, int64_t len, int64_t heads, int64_t head_dim, const int32_t* positions,
          const float* inv_freq) {
  const int64_t half = head_dim / 2;
#pragma omp parallel if (len * heads * head_dim > 32768)
  {
    float* cs = scratch_floats(2 * half);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < len; ++t) {
      rope_cos_sin(positions[t], inv_freq, half, cs);
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x + (t * heads + h) * head_dim;
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          const float a = v[i], b = v[half + i];
          v[i] = a * cs[i] - b * cs[half + i];
          v[half + i] = b * cs[i] + a * cs[half + i];
        }
      }
    }
  }
}

void silu_mul(const float* gate_up, void* out, DType out_dtype, int64_t rows, int64_t inter) {
  const bool bf16 = out_dtype == DType::BF16;
#pragma omp parallel if (rows * inter > 32768)
  {
    float* tmp = bf16 ? scratch_floats(inter) : nullptr;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* __restrict g = gate_up + r * 2 * inter;
      const float* __restrict u = g + inter;
      float* __restrict o = bf16 ? tmp : static_cast<float*>(out) + r * inter;
#pragma omp simd
      for (int64_t i = 0; i < inter; ++i) o[i] = g[i] / (1.0f + fast_exp(-g[i])) * u[i];
      if (bf16) store_bf16(tmp, inter, static_cast<uint16_t*>(out) + r * inter);
    }
  }
}

void add(const float* a, const float* b, float* out, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void argmax_prob(const float* logits, int64_t rows, int64_t vocab, int32_t* index, float* prob) {
#pragma omp parallel for schedule(static) if (rows * vocab > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const float* l = logits + r * vocab;
    int64_t best = 0;
    float mx = l[0];
    for (int64_t i = 1; i < vocab; ++i)
      if (l[i] > mx) { mx = l[i]; best = i; }  // strict: the first maximum wins, as torch.argmax
    // The sum runs over ~150k terms: accumulate in double so that the
    // confidence compared against the threshold is as exact as the reference's.
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < vocab; ++i) sum += double(fast_exp(l[i] - mx));
    index[r] = int32_t(best);
    prob[r] = float(1.0 / sum);
  }
}

void gather_rows(const float* x, const int32_t* rows, int64_t n_rows, int64_t cols, float* out) {
  for (int64_t i = 0; i < n_rows; ++i) std::memcpy(out + i * cols, x + int64_t(rows[i]) * cols, size_t(cols) * 4);
}

}  // namespace fastdllm::cpu
