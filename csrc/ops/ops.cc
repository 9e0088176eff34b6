// Op front-ends: check every argument, then call the kernel for the device.
// Messages name the op, the argument and what was expected, since they reach
// Python users verbatim.
#include "fastdllm/ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "fastdllm/error.h"
#include "ops/denoise_rule.h"
#include "ops/kernel_table.h"

namespace fastdllm::ops {

namespace {

bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

void expect(const TensorView& t, const char* op, const char* name, int ndim) {
  FDL_CHECK(t.defined(), op, ": '", name, "' is missing");
  FDL_CHECK(t.ndim == ndim, op, ": '", name, "' must have ", ndim, " dimensions, got ", t.describe());
  for (int i = 0; i < ndim; ++i) FDL_CHECK(t.shape[i] >= 0, op, ": '", name, "' has a negative size");
}

void expect_dtype(const TensorView& t, const char* op, const char* name, DType d) {
  FDL_CHECK(t.dtype == d, op, ": '", name, "' must be ", dtype_name(d), ", got ", t.describe());
}

// Activations handed to a GEMM may be float32 or their rounding to the GEMM's
// half type: bfloat16 on either backend, float16 on CUDA (the CPU's GEMMs take
// fp16 weights with fp32 activations, so nothing there produces fp16 ones).
void expect_operand(const TensorView& t, const char* op, const char* name) {
  FDL_CHECK(t.dtype == DType::F32 || t.dtype == DType::BF16 || (t.dtype == DType::F16 && t.device == Device::CUDA),
            op, ": '", name, "' must be float32 or bfloat16 (or float16 on cuda), got ", t.describe());
}

void same_device(const TensorView& a, const TensorView& b, const char* op) {
  FDL_CHECK(a.device == b.device, op, ": tensors on different devices (", a.describe(), " vs ",
            b.describe(), ")");
}

// The weight w [N, K] of a product x @ w^T: a float matrix (packed only as
// bfloat16) on x's device with x's K columns.
void expect_weight(const TensorView& x, const TensorView& w, const char* op) {
  expect(w, op, "weight", 2);
  FDL_CHECK(is_float(w.dtype), op, ": weight must be a float type, got ", w.describe());
  FDL_CHECK(!w.packed || w.dtype == DType::BF16, op, ": packed weights must be bfloat16, got ", w.describe());
  FDL_CHECK(w.shape[1] == x.shape[1], op, ": weight ", w.describe(), " does not match x ", x.describe(),
            " (in_features)");
  same_device(x, w, op);
}

template <class F>
F need(F fn, const char* op, Device d) {
  FDL_CHECK(fn != nullptr, op, " is not implemented for device ", device_name(d));
  return fn;
}

}  // namespace

void embedding(const TensorView& table, const TensorView& ids, const TensorView& out) {
  const char* op = "embedding";
  expect(table, op, "table", 2);
  expect(ids, op, "ids", 1);
  expect(out, op, "out", 2);
  FDL_CHECK(is_float(table.dtype), op, ": table must be a float type, got ", table.describe());
  expect_dtype(ids, op, "ids", DType::I32);
  expect_dtype(out, op, "out", DType::F32);
  FDL_CHECK(out.shape[0] == ids.shape[0] && out.shape[1] == table.shape[1], op, ": out ",
            out.describe(), " does not match ids ", ids.describe(), " and table ", table.describe());
  same_device(table, out, op);
  if (ids.device == Device::CPU) {
    const int32_t* p = ids.ptr<int32_t>();
    for (int64_t i = 0; i < ids.shape[0]; ++i)
      FDL_CHECK(p[i] >= 0 && p[i] < table.shape[0], op, ": token id ", p[i], " at index ", i,
                " is outside the vocabulary [0, ", table.shape[0], ")");
  }
  FDL_CHECK(!table.packed || table.dtype == DType::BF16, op, ": packed tables must be bfloat16");
  need(kernels(out.device).embedding, op, out.device)(table.data, table.dtype, table.packed, table.shape[0],
                                                       table.shape[1], ids.ptr<int32_t>(), ids.shape[0],
                                                       out.ptr<float>());
}

void rms_norm(const TensorView& x, const TensorView& weight, float eps, const TensorView& out) {
  const char* op = "rms_norm";
  expect(x, op, "x", 2);
  expect(weight, op, "weight", 1);
  expect(out, op, "out", 2);
  expect_dtype(x, op, "x", DType::F32);
  expect_operand(out, op, "out");
  FDL_CHECK(is_float(weight.dtype), op, ": weight must be a float type, got ", weight.describe());
  FDL_CHECK(weight.shape[0] == x.shape[1], op, ": weight ", weight.describe(), " does not match x ", x.describe());
  FDL_CHECK(out.shape == x.shape, op, ": out ", out.describe(), " does not match x ", x.describe());
  FDL_CHECK(eps >= 0.f, op, ": eps must be >= 0, got ", eps);
  same_device(x, weight, op);
  same_device(x, out, op);
  need(kernels(x.device).rms_norm, op, x.device)(x.ptr<float>(), weight.data, weight.dtype, x.shape[0],
                                                 x.shape[1], eps, out.data, out.dtype);
}

void rope(const TensorView& x, const TensorView& positions, const TensorView& inv_freq) {
  const char* op = "rope";
  expect(x, op, "x", 3);
  expect(positions, op, "positions", 1);
  expect(inv_freq, op, "inv_freq", 1);
  expect_dtype(x, op, "x", DType::F32);
  expect_dtype(positions, op, "positions", DType::I32);
  expect_dtype(inv_freq, op, "inv_freq", DType::F32);
  FDL_CHECK(x.shape[2] % 2 == 0, op, ": head_dim must be even, got ", x.describe());
  FDL_CHECK(positions.shape[0] == x.shape[0], op, ": positions ", positions.describe(),
            " does not match x ", x.describe());
  FDL_CHECK(inv_freq.shape[0] == x.shape[2] / 2, op, ": inv_freq ", inv_freq.describe(),
            " must have head_dim/2 entries for x ", x.describe());
  need(kernels(x.device).rope, op, x.device)(x.ptr<float>(), x.shape[0], x.shape[1], x.shape[2],
                                             positions.ptr<int32_t>(), inv_freq.ptr<float>());
}

void linear(const TensorView& x, const TensorView& w, const TensorView& bias,
            const TensorView& residual, const TensorView& out) {
  const char* op = "linear";
  expect(x, op, "x", 2);
  expect(out, op, "out", 2);
  expect_operand(x, op, "x");
  expect_dtype(out, op, "out", DType::F32);
  expect_weight(x, w, op);
  FDL_CHECK(out.shape[0] == x.shape[0] && out.shape[1] == w.shape[0], op, ": out ", out.describe(),
            " must be [", x.shape[0], ", ", w.shape[0], "]");
  same_device(x, out, op);
  if (bias.defined()) {
    expect(bias, op, "bias", 1);
    FDL_CHECK(is_float(bias.dtype), op, ": bias must be a float type, got ", bias.describe());
    FDL_CHECK(bias.shape[0] == w.shape[0], op, ": bias ", bias.describe(), " does not match weight ", w.describe());
  }
  if (residual.defined()) {
    expect_dtype(residual, op, "residual", DType::F32);
    FDL_CHECK(residual.shape == out.shape, op, ": residual ", residual.describe(), " does not match out ",
              out.describe());
  }
  need(kernels(x.device).linear, op, x.device)(
      x.data, x.dtype, w.data, w.dtype, w.packed, bias.data, bias.dtype, residual.ptr<float>(), out.ptr<float>(),
      x.shape[0], w.shape[0], x.shape[1]);
}

void silu_mul(const TensorView& gate_up, const TensorView& out) {
  const char* op = "silu_mul";
  expect(gate_up, op, "gate_up", 2);
  expect(out, op, "out", 2);
  expect_dtype(gate_up, op, "gate_up", DType::F32);
  expect_operand(out, op, "out");
  FDL_CHECK(gate_up.shape[1] == 2 * out.shape[1] && gate_up.shape[0] == out.shape[0], op, ": gate_up ",
            gate_up.describe(), " must be [M, 2*I] for out ", out.describe());
  same_device(gate_up, out, op);
  need(kernels(out.device).silu_mul, op, out.device)(gate_up.ptr<float>(), out.data, out.dtype, out.shape[0],
                                                      out.shape[1]);
}

void add(const TensorView& a, const TensorView& b, const TensorView& out) {
  const char* op = "add";
  FDL_CHECK(a.defined() && b.defined() && out.defined(), op, ": missing tensor");
  expect_dtype(a, op, "a", DType::F32);
  expect_dtype(b, op, "b", DType::F32);
  expect_dtype(out, op, "out", DType::F32);
  FDL_CHECK(a.numel() == b.numel() && a.numel() == out.numel(), op, ": sizes differ: ", a.describe(), ", ",
            b.describe(), ", ", out.describe());
  need(kernels(out.device).add, op, out.device)(a.ptr<float>(), b.ptr<float>(), out.ptr<float>(), out.numel());
}

static void check_kv(const PagedKV& kv, const char* op) {
  FDL_CHECK(kv.base != nullptr && kv.page_table != nullptr, op, ": the KV cache is not set up");
  FDL_CHECK(kv.dtype == DType::F32, op, ": KV cache pages must be float32, got ", dtype_name(kv.dtype));
  FDL_CHECK(kv.page_size > 0 && kv.head_dim > 0 && kv.num_kv_heads > 0, op, ": bad KV cache geometry");
}

void kv_write(const PagedKV& kv, const TensorView& k, const TensorView& v, int64_t start) {
  const char* op = "kv_write";
  check_kv(kv, op);
  expect(k, op, "k", 3);
  expect(v, op, "v", 3);
  expect_dtype(k, op, "k", DType::F32);
  expect_dtype(v, op, "v", DType::F32);
  FDL_CHECK(k.shape == v.shape, op, ": k ", k.describe(), " and v ", v.describe(), " differ");
  FDL_CHECK(k.shape[1] == kv.num_kv_heads && k.shape[2] == kv.head_dim, op, ": k ", k.describe(),
            " must be [L, ", kv.num_kv_heads, ", ", kv.head_dim, "]");
  FDL_CHECK(start >= 0 && start + k.shape[0] <= kv.capacity(), op, ": tokens [", start, ", ",
            start + k.shape[0], ") exceed the ", kv.capacity(), " tokens of the page table");
  need(kernels(kv.device).kv_write, op, kv.device)(kv, k.ptr<float>(), v.ptr<float>(), k.shape[0], start);
}

void qkv_rope_append(const TensorView& qkv, const TensorView& positions, const TensorView& inv_freq,
                     const PagedKV& kv, int64_t start, const TensorView& q_out) {
  const char* op = "qkv_rope_append";
  check_kv(kv, op);
  expect(qkv, op, "qkv", 2);
  expect(positions, op, "positions", 1);
  expect(inv_freq, op, "inv_freq", 1);
  expect(q_out, op, "q_out", 3);
  expect_dtype(qkv, op, "qkv", DType::F32);
  expect_dtype(positions, op, "positions", DType::I32);
  expect_dtype(inv_freq, op, "inv_freq", DType::F32);
  expect_dtype(q_out, op, "q_out", DType::F32);
  const int64_t len = qkv.shape[0], heads = q_out.shape[1], hd = kv.head_dim;
  FDL_CHECK(q_out.shape[0] == len && q_out.shape[2] == hd, op, ": q_out ", q_out.describe(), " must be [", len,
            ", heads, ", hd, "]");
  FDL_CHECK(qkv.shape[1] == (heads + 2 * kv.num_kv_heads) * hd, op, ": qkv ", qkv.describe(), " must have (",
            heads, " + 2 x ", kv.num_kv_heads, ") x ", hd, " columns");
  FDL_CHECK(hd % 2 == 0 && inv_freq.shape[0] == hd / 2, op, ": inv_freq ", inv_freq.describe(),
            " must have head_dim/2 entries");
  FDL_CHECK(positions.shape[0] == len, op, ": positions ", positions.describe(), " does not match qkv ",
            qkv.describe());
  if (start == kSlotsFromPositions) {
    if (positions.device == Device::CPU) {  // on a GPU the positions are device data: the caller guarantees them
      const int32_t* pp = positions.ptr<int32_t>();
      for (int64_t t = 0; t < len; ++t)
        FDL_CHECK(pp[t] >= 0 && pp[t] < kv.capacity(), op, ": position ", pp[t], " at index ", t,
                  " is outside the ", kv.capacity(), " tokens of the page table");
    }
  } else {
    FDL_CHECK(start >= 0 && start + len <= kv.capacity(), op, ": tokens [", start, ", ", start + len,
              ") exceed the ", kv.capacity(), " tokens of the page table");
  }
  need(kernels(qkv.device).qkv_rope_append, op, qkv.device)(qkv.ptr<float>(), len, heads, positions.ptr<int32_t>(),
                                                            inv_freq.ptr<float>(), kv, start, q_out.ptr<float>());
}

void attention(const TensorView& q, const PagedKV& kv, int64_t n_kv, float scale,
               const TensorView& kv_limit, const TensorView& mask, const TensorView& out) {
  const char* op = "attention";
  check_kv(kv, op);
  expect(q, op, "q", 3);
  expect(out, op, "out", 2);
  expect_dtype(q, op, "q", DType::F32);
  expect_operand(out, op, "out");
  same_device(q, out, op);
  const int64_t lq = q.shape[0], heads = q.shape[1];
  FDL_CHECK(q.shape[2] == kv.head_dim, op, ": q ", q.describe(), " head_dim differs from the cache's ",
            kv.head_dim);
  FDL_CHECK(heads % kv.num_kv_heads == 0, op, ": ", heads, " query heads are not a multiple of ",
            kv.num_kv_heads, " kv heads");
  FDL_CHECK(out.shape[0] == lq && out.shape[1] == heads * kv.head_dim, op, ": out ", out.describe(),
            " must be [", lq, ", ", heads * kv.head_dim, "]");
  FDL_CHECK(n_kv >= 0 && n_kv <= kv.capacity(), op, ": n_kv=", n_kv, " exceeds the ", kv.capacity(),
            " tokens of the page table");
  if (kv_limit.defined()) {
    expect(kv_limit, op, "kv_limit", 1);
    expect_dtype(kv_limit, op, "kv_limit", DType::I32);
    FDL_CHECK(kv_limit.shape[0] == lq, op, ": kv_limit ", kv_limit.describe(), " needs one entry per query");
  }
  if (mask.defined()) {
    expect(mask, op, "mask", 2);
    expect_dtype(mask, op, "mask", DType::U8);
    FDL_CHECK(mask.shape[0] == lq && mask.shape[1] == n_kv, op, ": mask ", mask.describe(), " must be [",
              lq, ", ", n_kv, "]");
  }
  need(kernels(q.device).attention, op, q.device)(q.ptr<float>(), lq, heads, kv, n_kv, scale,
                                                  kv_limit.ptr<int32_t>(), mask.ptr<uint8_t>(),
                                                  out.data, out.dtype);
}

void argmax_prob(const TensorView& logits, const TensorView& index, const TensorView& prob) {
  const char* op = "argmax_prob";
  expect(logits, op, "logits", 2);
  expect(index, op, "index", 1);
  expect(prob, op, "prob", 1);
  expect_dtype(logits, op, "logits", DType::F32);
  expect_dtype(index, op, "index", DType::I32);
  expect_dtype(prob, op, "prob", DType::F32);
  FDL_CHECK(logits.shape[1] > 0, op, ": empty vocabulary");
  FDL_CHECK(index.shape[0] == logits.shape[0] && prob.shape[0] == logits.shape[0], op,
            ": index/prob need one entry per row of ", logits.describe());
  need(kernels(logits.device).argmax_prob, op, logits.device)(logits.ptr<float>(), logits.shape[0],
                                                              logits.shape[1], index.ptr<int32_t>(),
                                                              prob.ptr<float>());
}

void lm_head_top2(const TensorView& x, const TensorView& w, const TensorView& index, const TensorView& prob) {
  const char* op = "lm_head_top2";
  expect(x, op, "x", 2);
  expect(index, op, "index", 2);
  expect(prob, op, "prob", 2);
  expect_dtype(x, op, "x", DType::F32);
  expect_dtype(index, op, "index", DType::I32);
  expect_dtype(prob, op, "prob", DType::F32);
  expect_weight(x, w, op);
  FDL_CHECK(w.shape[0] > 0, op, ": empty vocabulary");
  FDL_CHECK(index.shape[0] == x.shape[0] && index.shape[1] == 2 && prob.shape == index.shape, op,
            ": index and prob must be [", x.shape[0], ", 2], got ", index.describe(), " and ", prob.describe());
  same_device(x, index, op);
  same_device(x, prob, op);
  need(kernels(x.device).lm_head_top2, op, x.device)(x.ptr<float>(), w.data, w.dtype, w.packed, x.shape[0],
                                                      w.shape[0], x.shape[1], index.ptr<int32_t>(),
                                                      prob.ptr<float>());
}

void sampling_candidates(const TensorView& logits, const SamplingOptions& s, const TensorView& stats,
                         const TensorView& count, const TensorView& cand) {
  const char* op = "sampling_candidates";
  expect(logits, op, "logits", 2);
  expect(stats, op, "stats", 2);
  expect(count, op, "count", 1);
  expect(cand, op, "candidates", 3);
  expect_dtype(logits, op, "logits", DType::F32);
  expect_dtype(stats, op, "stats", DType::F32);
  expect_dtype(count, op, "count", DType::I32);
  expect_dtype(cand, op, "candidates", DType::I32);
  const int64_t rows = logits.shape[0], vocab = logits.shape[1];
  FDL_CHECK(vocab > 0, op, ": empty vocabulary");
  const bool shapes_ok = stats.shape[0] == rows && stats.shape[1] == 2 && count.shape[0] == rows &&
                        cand.shape[0] == rows && cand.shape[1] == vocab && cand.shape[2] == 2;
  FDL_CHECK(shapes_ok, op, ": stats must be [", rows, ", 2], count [", rows, "] and candidates [", rows, ", ", vocab,
            ", 2], got ", stats.describe(), ", ", count.describe(), " and ", cand.describe());
  FDL_CHECK(s.temperature > 0.f && std::isfinite(s.temperature), op, ": temperature must be > 0, got ",
            s.temperature);
  FDL_CHECK(s.top_p > 0.f && s.top_p <= 1.f, op, ": top_p must be in (0, 1], got ", s.top_p);
  FDL_CHECK(s.top_k >= 0, op, ": top_k must be >= 0, got ", s.top_k);
  FDL_CHECK(s.exclude < vocab, op, ": exclude ", s.exclude, " is outside the vocabulary [0, ", vocab, ")");
  same_device(logits, stats, op);
  same_device(logits, count, op);
  same_device(logits, cand, op);
  need(kernels(logits.device).sampling_candidates, op, logits.device)(
      logits.ptr<float>(), rows, vocab, s.temperature, s.top_p, s.top_k, s.exclude, stats.ptr<float>(),
      count.ptr<int32_t>(), cand.ptr<int32_t>());
}

void denoise_decide(const TensorView& state, const TensorView& index, const TensorView& prob,
                    const TensorView& staging, const DenoiseShape& d, int32_t ran) {
  const char* op = "denoise_decide";
  expect(state, op, "state", 1);
  expect(index, op, "index", 2);
  expect(prob, op, "prob", 2);
  expect(staging, op, "staging", 1);
  expect_dtype(state, op, "state", DType::I32);
  expect_dtype(index, op, "index", DType::I32);
  expect_dtype(prob, op, "prob", DType::F32);
  expect_dtype(staging, op, "staging", DType::I32);
  FDL_CHECK(ran == denoise::kFull || ran == denoise::kSub, op, ": ran must be kFull (1) or kSub (2), got ", ran);
  FDL_CHECK(d.block > 0 && d.sub > 0 && d.block % d.sub == 0 && d.pages >= 0, op, ": block (", d.block,
            ") must be a positive multiple of sub (", d.sub, ")");
  FDL_CHECK(d.rows_full >= d.sub && d.rows_sub >= d.sub, op, ": rows_full (", d.rows_full, ") and rows_sub (",
            d.rows_sub, ") must be >= sub (", d.sub, ")");
  FDL_CHECK(state.shape[0] == denoise::state_words(d.block, d.pages), op, ": state must hold ",
            denoise::state_words(d.block, d.pages), " words (header + block + page table), got ", state.describe());
  const int64_t rows = ran == denoise::kFull ? d.rows_full : d.rows_sub;
  FDL_CHECK(index.shape[0] >= rows && index.shape[1] == 2 && prob.shape == index.shape, op,
            ": index and prob must be [>= ", rows, ", 2], got ", index.describe(), " and ", prob.describe());
  const int64_t need_len = denoise::max_step_inputs_len(d.block, d.sub, d.pages, d.rows_full, d.rows_sub);
  FDL_CHECK(staging.shape[0] >= need_len, op, ": staging must hold >= ", need_len, " words, got ",
            staging.describe());
  same_device(state, index, op);
  same_device(state, prob, op);
  same_device(state, staging, op);
  if (state.device == Device::CPU) {  // the header must agree with the shape (a GPU's is not readable here)
    const auto& h = *reinterpret_cast<const denoise::DenoiseHeader*>(state.ptr<int32_t>());
    FDL_CHECK(h.block == d.block && h.sub == d.sub && h.pages == d.pages && h.rows_full == d.rows_full &&
                  h.rows_sub == d.rows_sub && h.sub_block >= 0 && h.sub_block < d.block / d.sub &&
                  h.pb_off >= 0 && h.pb_off <= d.block,
              op, ": the state's header does not match the shape (block ", h.block, ", sub ", h.sub, ", pages ",
              h.pages, ", sub_block ", h.sub_block, ")");
  }
  need(kernels(state.device).denoise_decide, op, state.device)(state.ptr<int32_t>(), index.ptr<int32_t>(),
                                                               prob.ptr<float>(), staging.ptr<int32_t>(), ran, d.sub);
}

void set_graph_condition(uint64_t condition, const TensorView& flag, int32_t value) {
  const char* op = "set_graph_condition";
  expect_dtype(flag, op, "flag", DType::I32);
  FDL_CHECK(flag.numel() >= 1, op, ": flag is empty");
  need(kernels(flag.device).set_graph_condition, op, flag.device)(condition, flag.ptr<int32_t>(), value);
}

void gather_rows(const TensorView& x, const TensorView& rows, const TensorView& out) {
  const char* op = "gather_rows";
  expect(x, op, "x", 2);
  expect(rows, op, "rows", 1);
  expect(out, op, "out", 2);
  expect_dtype(x, op, "x", DType::F32);
  expect_dtype(rows, op, "rows", DType::I32);
  expect_dtype(out, op, "out", DType::F32);
  FDL_CHECK(out.shape[0] == rows.shape[0] && out.shape[1] == x.shape[1], op, ": out ", out.describe(),
            " must be [", rows.shape[0], ", ", x.shape[1], "]");
  same_device(x, rows, op);
  same_device(x, out, op);
  if (rows.device == Device::CPU) {
    const int32_t* r = rows.ptr<int32_t>();
    for (int64_t i = 0; i < rows.shape[0]; ++i)
      FDL_CHECK(r[i] >= 0 && r[i] < x.shape[0], op, ": row ", r[i], " at index ", i, " is outside [0, ",
                x.shape[0], ")");
  }
  need(kernels(x.device).gather_rows, op, x.device)(x.ptr<float>(), rows.ptr<int32_t>(), rows.shape[0], x.shape[1],
                                                    out.ptr<float>());
}

void linear_silu_mul(const TensorView& x, const TensorView& w, const TensorView& out) {
  const char* op = "linear_silu_mul";
  expect(x, op, "x", 2);
  expect(out, op, "out", 2);
  expect_dtype(x, op, "x", DType::F32);
  expect_dtype(out, op, "out", DType::F32);
  expect_weight(x, w, op);
  FDL_CHECK(w.packed && w.dtype == DType::BF16, op, ": weight must be the packed bfloat16 gate/up matrix, got ",
            w.describe());
  FDL_CHECK(w.shape[0] % 32 == 0, op, ": weight ", w.describe(), " must have 2 x a multiple of 16 rows");
  FDL_CHECK(out.shape[0] == x.shape[0] && out.shape[1] == w.shape[0] / 2, op, ": out ", out.describe(),
            " must be [", x.shape[0], ", ", w.shape[0] / 2, "]");
  same_device(x, out, op);
  need(kernels(x.device).linear_silu_mul, op, x.device)(x.ptr<float>(), static_cast<const uint16_t*>(w.data),
                                                        out.ptr<float>(), x.shape[0], w.shape[0] / 2, x.shape[1]);
}

}  // namespace fastdllm::ops
