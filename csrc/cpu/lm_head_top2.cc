// The lm_head fused with the vocabulary reduction greedy decoding needs: per
// row of x, the first maximum of x @ w^T (index and softmax probability), the
// first maximum among the other entries (what the "never write the mask token"
// rule and margin rules use), the softmax entropy (entropy rules: log Z
// minus the probability-weighted mean logit, one more accumulator) and the
// tail mass 1 - p1 (float64 confidence rules: it keeps its precision where p1
// rounds to 1 in fp32), without writing the [M, V] logits to memory.
//
// Threads take contiguous column chunks of the vocabulary; each chunk's logits
// are computed by the ordinary linear kernel into a per-thread buffer that stays
// in L2, reduced at once (max, sum of exp in double, top-2), and the per-thread
// states are merged in column order so that ties go to the lowest index, as
// torch.argmax does. A chunk is a whole number of 16-row panels, so for packed
// weights it is a contiguous slice of the packed matrix.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/fast_exp.h"
#include "cpu/int_weights.h"
#include "cpu/kernels.h"
#include "cpu/load_row.h"
#include "cpu/packed_weights.h"

namespace fastdllm::cpu {

namespace {

constexpr int64_t kChunkCols = 2048;  // [64 rows x 2048] fp32 = 512 KB: fits a Zen 4 / Skylake-SP L2

struct RowState {
  float v1 = -INFINITY, v2 = -INFINITY;  // best value, best among the other indices
  int64_t i1 = -1, i2 = -1;
  float mx = -INFINITY;  // the sums below are relative to mx
  double sum = 0.0;      // sum of exp(l - mx)
  double tsum = 0.0;     // sum of exp(l - mx) * (l - mx)

  // Candidates arrive in increasing index order within one state: strict '>' keeps the first.
  void offer(float v, int64_t i) {
    if (i1 < 0 || v > v1) {
      v2 = v1; i2 = i1;
      v1 = v; i1 = i;
    } else if (i2 < 0 || v > v2) {
      v2 = v; i2 = i;
    }
  }
  // Adds a chunk's sums, taken relative to its own maximum m
  // (exp(l - mx) = f exp(l - m) and l - mx = (l - m) + (m - mx)).
  void add_sum(float m, double s, double t) {
    if (s == 0.0) return;
    if (m > mx) {
      if (sum == 0.0) {
        tsum = t, sum = s;
      } else {
        const double f = std::exp(double(mx) - double(m));
        tsum = f * (tsum + (double(mx) - double(m)) * sum) + t;
        sum = sum * f + s;
      }
      mx = m;
    } else {
      const double f = std::exp(double(m) - double(mx));
      tsum += f * (t + (double(m) - double(mx)) * s);
      sum += s * f;
    }
  }
  // Merges a state covering higher column indices than this one.
  void merge_after(const RowState& o) {
    add_sum(o.mx, o.sum, o.tsum);
    if (o.i1 >= 0) offer(o.v1, o.i1);
    if (o.i2 >= 0) offer(o.v2, o.i2);
  }
};

// Reduces one row of a chunk's logits (columns col0 ..) into st.
void reduce_chunk_row(const float* l, int64_t cols, int64_t col0, RowState& st) {
  float cm = -INFINITY;
#pragma omp simd reduction(max : cm)
  for (int64_t j = 0; j < cols; ++j) cm = l[j] > cm ? l[j] : cm;
  double s = 0.0, t = 0.0;
#pragma omp simd reduction(+ : s, t)
  for (int64_t j = 0; j < cols; ++j) {
    const float d = l[j] - cm, e = fast_exp(d);
    s += double(e);
    t += double(e * d);
  }
  st.add_sum(cm, s, t);
  // The scalar top-2 scan runs only when this chunk can change the top two.
  if (st.i2 >= 0 && !(cm > st.v2)) return;
  for (int64_t j = 0; j < cols; ++j)
    if (st.i2 < 0 || l[j] > st.v2) st.offer(l[j], col0 + j);
}

// The chunked reduction; chunk_logits(col0, cols, buf) writes the logits of
// vocabulary columns [col0, col0 + cols) for all m rows into buf [m, cols].
template <class ChunkLogits>
void reduce_top2(int64_t m, int64_t n, int32_t* index, float* prob, const ChunkLogits& chunk_logits) {
  const int64_t chunks = (n + kChunkCols - 1) / kChunkCols;
  const int nt = omp_get_max_threads();
  // Grown once and reused: nothing is allocated per decode step.
  // (thread_local: the worker threads below reach it through `all`, the caller's copy.)
  thread_local std::vector<RowState> states;
  states.assign(size_t(nt) * size_t(m), RowState{});
  RowState* const all = states.data();
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), nthr = omp_get_num_threads();
    RowState* st = all + size_t(t) * size_t(m);
    float* buf = scratch_floats(m * kChunkCols, 1);
    // Contiguous chunk ranges per thread keep the column order for the merge.
    const int64_t c0 = chunks * t / nthr, c1 = chunks * (t + 1) / nthr;
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t col0 = c * kChunkCols, cols = std::min(kChunkCols, n - col0);
      // Inside this parallel region the kernel's own parallel loop runs on this thread alone.
      chunk_logits(col0, cols, buf);
      for (int64_t r = 0; r < m; ++r) reduce_chunk_row(buf + r * cols, cols, col0, st[r]);
    }
  }
  for (int64_t r = 0; r < m; ++r) {
    RowState acc = all[r];
    for (int t = 1; t < nt; ++t) acc.merge_after(all[size_t(t) * size_t(m) + size_t(r)]);
    // mx is the row maximum, v1 == mx.
    index[2 * r] = int32_t(acc.i1);
    index[2 * r + 1] = int32_t(acc.i2);
    prob[4 * r] = float(1.0 / acc.sum);
    prob[4 * r + 1] = acc.i2 >= 0 ? float(std::exp(double(acc.v2) - double(acc.mx)) / acc.sum) : 0.f;
    prob[4 * r + 2] = float(std::log(acc.sum) - acc.tsum / acc.sum);
    prob[4 * r + 3] = float((acc.sum - 1.0) / acc.sum);  // 1 - p1, exact where p1 rounds to 1 in fp32
  }
}

}  // namespace

void lm_head_top2(const float* x, const void* w, DType wt, bool packed, int64_t m, int64_t n, int64_t k,
                  int32_t* index, float* prob) {
  // A chunk is a whole number of 16-row panels: for packed weights a contiguous slice.
  reduce_top2(m, n, index, prob, [&](int64_t col0, int64_t cols, float* buf) {
    const void* wc = packed
                         ? static_cast<const void*>(static_cast<const uint16_t*>(w) + packed_elems(col0, k))
                         : static_cast<const void*>(static_cast<const char*>(w) + col0 * k * dtype_size(wt));
    linear(x, DType::F32, wc, wt, packed, nullptr, DType::F32, nullptr, buf, m, cols, k);
  });
}

void lm_head_top2_int(const float* x, const WeightView& w, int64_t m, int32_t* index, float* prob) {
  const int64_t k = w.cols(), groups = w.groups(), bits = format_traits(w.format).bits;
  // Chunks of whole panels: contiguous slices of the codes and of the per-panel scales.
  reduce_top2(m, w.rows(), index, prob, [&](int64_t col0, int64_t cols, float* buf) {
    const int64_t panel0 = col0 / kPanelRows;
    WeightView c = w;
    c.values = TensorView(w.values.ptr<uint8_t>() + panel0 * (k / 2) * int_pair_bytes(int(bits)), DType::U8,
                          {cols, k});
    c.scales = TensorView(w.scales.ptr<float>() + panel0 * groups * kPanelRows, DType::F32,
                          {int_param_floats(cols, groups)});
    c.zero_scales = TensorView(w.zero_scales.ptr<float>() + panel0 * groups * kPanelRows, DType::F32,
                               {int_param_floats(cols, groups)});
    linear_int(x, DType::F32, c, nullptr, DType::F32, nullptr, buf, m, false);
  });
}

}  // namespace fastdllm::cpu
