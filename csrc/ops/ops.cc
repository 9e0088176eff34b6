// Op front-ends: check every argument, then call the kernel for the device.
// Messages name the op, the argument and what was expected, since they reach
// Python users verbatim.
#include "fastdllm/ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "fastdllm/error.h"
#include "cpu/int_weights.h"
#ifdef FASTDLLM_WITH_CUDA
#include "cuda/gemm/int_layout.h"
#endif
#include "cpu/packed_weights.h"
#include "ops/kernel_table.h"

namespace fastdllm::ops {

namespace {

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

// An integer-format weight: U8 codes with the logical shape [N, K] matching x,
// F32 scales and zero_scales of the backend's size, an even group size dividing
// K, and an optional I32 permutation of K entries.
void expect_int_weight(const TensorView& x, const WeightView& w, const char* op) {
  expect(w.values, op, "weight", 2);
  FDL_CHECK(w.values.dtype == DType::U8, op, ": ", format_traits(w.format).name, " codes must be uint8, got ",
            w.values.describe());
  FDL_CHECK(w.values.shape[1] == x.shape[1], op, ": weight ", w.values.describe(), " does not match x ",
            x.describe(), " (in_features)");
  FDL_CHECK(w.group_size > 0 && w.group_size % 2 == 0 && w.cols() % w.group_size == 0, op, ": group size ",
            w.group_size, " must be even and divide in_features ", w.cols());
  same_device(x, w.values, op);
  const IntWeightLayout lay = int_weight_layout(x.device, w.format, w.rows(), w.cols(), w.group_size);
  for (const TensorView* t : {&w.scales, &w.zero_scales}) {
    FDL_CHECK(t->defined() && t->dtype == DType::F32 && t->numel() == lay.param_floats, op,
              ": weight scales / zero_scales must be float32 with ", lay.param_floats, " entries, got ",
              t->describe());
    same_device(x, *t, op);
  }
  if (w.perm.defined()) {
    FDL_CHECK(w.perm.dtype == DType::I32 && w.perm.ndim == 1 && w.perm.shape[0] == w.cols(), op,
              ": weight perm must be int32 [", w.cols(), "], got ", w.perm.describe());
    same_device(x, w.perm, op);
  }
}

// An fp8 weight: E4M3 bytes [N, K] matching x and one F32 scale per row.
void expect_fp8_weight(const TensorView& x, const WeightView& w, const char* op) {
  expect(w.values, op, "weight", 2);
  FDL_CHECK(w.values.dtype == DType::U8, op, ": fp8 weight bytes must be uint8, got ", w.values.describe());
  FDL_CHECK(w.values.shape[1] == x.shape[1], op, ": weight ", w.values.describe(), " does not match x ",
            x.describe(), " (in_features)");
  FDL_CHECK(w.scales.defined() && w.scales.dtype == DType::F32 && w.scales.numel() == w.rows(), op,
            ": fp8 weight scales must be float32 [", w.rows(), "], got ", w.scales.describe());
  same_device(x, w.values, op);
  same_device(x, w.scales, op);
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

void linear(const TensorView& x, const WeightView& wv, const TensorView& bias,
            const TensorView& residual, const TensorView& out) {
  const char* op = "linear";
  const TensorView& w = wv.values;
  expect(x, op, "x", 2);
  expect(out, op, "out", 2);
  expect_operand(x, op, "x");
  expect_dtype(out, op, "out", DType::F32);
  if (is_integer_format(wv.format))
    expect_int_weight(x, wv, op);
  else if (wv.format == WeightFormat::Fp8)
    expect_fp8_weight(x, wv, op);
  else
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
  if (is_integer_format(wv.format)) {
    need(kernels(x.device).linear_int, "linear (integer weights)", x.device)(
        x.data, x.dtype, wv, bias.data, bias.dtype, residual.ptr<float>(), out.ptr<float>(), x.shape[0], false);
    return;
  }
  if (wv.format == WeightFormat::Fp8) {
    need(kernels(x.device).linear_fp8, "linear (fp8 weights, W8A8)", x.device)(
        x.data, x.dtype, wv, bias.data, bias.dtype, residual.ptr<float>(), out.ptr<float>(), x.shape[0]);
    return;
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
  FDL_CHECK(kv.base != nullptr, op, ": the KV cache is not set up");
  FDL_CHECK(kv.dtype == DType::F32 || kv.dtype == DType::BF16, op, ": KV cache pages must be float32 or bfloat16, got ",
            dtype_name(kv.dtype));
  FDL_CHECK(kv.page_size > 0 && kv.head_dim > 0 && kv.num_kv_heads > 0 && kv.num_pages > 0, op,
            ": bad KV cache geometry");
}

// The batch's arrays, where the host can read them (on a GPU the model checked
// its host copies before the upload): CSR ranges in order, every token's
// sequence, pages, key limit and write slot inside its sequence's table.
static void check_batch(const PagedKV& kv, const KVBatch& b, const char* op) {
  FDL_CHECK(b.num_tokens >= 0 && b.num_seqs >= 0, op, ": negative batch size");
  if (b.num_tokens == 0) return;
  FDL_CHECK(b.num_seqs > 0 && b.token_seq && b.positions && b.kv_limit && b.qo_indptr && b.kv_indptr &&
                b.kv_indices && b.write_offset,
            op, ": the batch arrays are incomplete");
  if (kv.device == Device::CPU) check_kv_batch(b, kv.page_size, kv.num_pages, op);
}

void kv_write(const PagedKV& kv, const KVBatch& b, const TensorView& k, const TensorView& v) {
  const char* op = "kv_write";
  check_kv(kv, op);
  check_batch(kv, b, op);
  expect(k, op, "k", 3);
  expect(v, op, "v", 3);
  expect_dtype(k, op, "k", DType::F32);
  expect_dtype(v, op, "v", DType::F32);
  FDL_CHECK(k.shape == v.shape, op, ": k ", k.describe(), " and v ", v.describe(), " differ");
  FDL_CHECK(k.shape[0] == b.num_tokens && k.shape[1] == kv.num_kv_heads && k.shape[2] == kv.head_dim, op, ": k ",
            k.describe(), " must be [", b.num_tokens, ", ", kv.num_kv_heads, ", ", kv.head_dim, "]");
  FDL_CHECK(k.device == kv.device, op, ": k is on ", device_name(k.device), ", the cache on ", device_name(kv.device));
  need(kernels(kv.device).kv_write, op, kv.device)(kv, b, k.ptr<float>(), v.ptr<float>());
}

void qkv_rope_append(const TensorView& qkv, const TensorView& inv_freq, const PagedKV& kv, const KVBatch& b,
                     const TensorView& q_out) {
  const char* op = "qkv_rope_append";
  check_kv(kv, op);
  check_batch(kv, b, op);
  expect(qkv, op, "qkv", 2);
  expect(inv_freq, op, "inv_freq", 1);
  expect(q_out, op, "q_out", 3);
  expect_dtype(qkv, op, "qkv", DType::F32);
  expect_dtype(inv_freq, op, "inv_freq", DType::F32);
  expect_dtype(q_out, op, "q_out", DType::F32);
  const int64_t len = qkv.shape[0], heads = q_out.shape[1], hd = kv.head_dim;
  FDL_CHECK(len == b.num_tokens, op, ": qkv ", qkv.describe(), " must have one row per batch token (", b.num_tokens,
            ")");
  FDL_CHECK(q_out.shape[0] == len && q_out.shape[2] == hd, op, ": q_out ", q_out.describe(), " must be [", len,
            ", heads, ", hd, "]");
  FDL_CHECK(qkv.shape[1] == (heads + 2 * kv.num_kv_heads) * hd, op, ": qkv ", qkv.describe(), " must have (",
            heads, " + 2 x ", kv.num_kv_heads, ") x ", hd, " columns");
  FDL_CHECK(hd % 2 == 0 && inv_freq.shape[0] == hd / 2, op, ": inv_freq ", inv_freq.describe(),
            " must have head_dim/2 entries");
  same_device(qkv, q_out, op);
  FDL_CHECK(qkv.device == kv.device, op, ": qkv is on ", device_name(qkv.device), ", the cache on ",
            device_name(kv.device));
  need(kernels(qkv.device).qkv_rope_append, op, qkv.device)(qkv.ptr<float>(), heads, inv_freq.ptr<float>(), kv, b,
                                                            q_out.ptr<float>());
}

void attention(const TensorView& q, const PagedKV& kv, const KVBatch& b, float scale, const TensorView& out,
               const AttentionPlanView& plan) {
  const char* op = "attention";
  check_kv(kv, op);
  check_batch(kv, b, op);
  expect(q, op, "q", 3);
  expect(out, op, "out", 2);
  expect_dtype(q, op, "q", DType::F32);
  expect_operand(out, op, "out");
  same_device(q, out, op);
  FDL_CHECK(q.device == kv.device, op, ": q is on ", device_name(q.device), ", the cache on ", device_name(kv.device));
  const int64_t lq = q.shape[0], heads = q.shape[1];
  FDL_CHECK(lq == b.num_tokens, op, ": q ", q.describe(), " must have one row per batch token (", b.num_tokens, ")");
  FDL_CHECK(q.shape[2] == kv.head_dim, op, ": q ", q.describe(), " head_dim differs from the cache's ",
            kv.head_dim);
  FDL_CHECK(heads % kv.num_kv_heads == 0, op, ": ", heads, " query heads are not a multiple of ",
            kv.num_kv_heads, " kv heads");
  FDL_CHECK(out.shape[0] == lq && out.shape[1] == heads * kv.head_dim, op, ": out ", out.describe(),
            " must be [", lq, ", ", heads * kv.head_dim, "]");
  FDL_CHECK(q.device == Device::CPU || (plan.work && plan.work_count && plan.part_base && plan.part_count), op,
            ": on ", device_name(q.device), " attention needs a plan (plans::plan_attention)");
  need(kernels(q.device).attention, op, q.device)(q.ptr<float>(), heads, kv, b, scale, plan, out.data, out.dtype);
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

void lm_head_top2(const TensorView& x, const WeightView& wv, const TensorView& index, const TensorView& prob) {
  const char* op = "lm_head_top2";
  const TensorView& w = wv.values;
  expect(x, op, "x", 2);
  expect(index, op, "index", 2);
  expect(prob, op, "prob", 2);
  expect_dtype(x, op, "x", DType::F32);
  expect_dtype(index, op, "index", DType::I32);
  expect_dtype(prob, op, "prob", DType::F32);
  if (is_integer_format(wv.format))
    expect_int_weight(x, wv, op);
  else
    expect_weight(x, w, op);
  FDL_CHECK(w.shape[0] > 0, op, ": empty vocabulary");
  FDL_CHECK(index.shape[0] == x.shape[0] && index.shape[1] == 2 && prob.shape[0] == x.shape[0] && prob.shape[1] == 4,
            op, ": index must be [", x.shape[0], ", 2] and prob [", x.shape[0], ", 4], got ", index.describe(), " and ",
            prob.describe());
  same_device(x, index, op);
  same_device(x, prob, op);
  if (is_integer_format(wv.format)) {
    need(kernels(x.device).lm_head_top2_int, "lm_head_top2 (integer weights)", x.device)(
        x.ptr<float>(), wv, x.shape[0], index.ptr<int32_t>(), prob.ptr<float>());
    return;
  }
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

void linear_silu_mul(const TensorView& x, const WeightView& wv, const TensorView& out) {
  const char* op = "linear_silu_mul";
  const TensorView& w = wv.values;
  expect(x, op, "x", 2);
  expect(out, op, "out", 2);
  expect_dtype(x, op, "x", DType::F32);
  expect_dtype(out, op, "out", DType::F32);
  FDL_CHECK(wv.format != WeightFormat::Fp8, op, ": fp8 weights have no fused SiLU*mul GEMM (CUDA runs linear, then silu_mul)");
  if (is_integer_format(wv.format))
    expect_int_weight(x, wv, op);
  else {
    expect_weight(x, w, op);
    FDL_CHECK(w.packed && w.dtype == DType::BF16, op, ": weight must be the packed bfloat16 gate/up matrix, got ",
              w.describe());
  }
  FDL_CHECK(w.shape[0] % 32 == 0, op, ": weight ", w.describe(), " must have 2 x a multiple of 16 rows");
  FDL_CHECK(out.shape[0] == x.shape[0] && out.shape[1] == w.shape[0] / 2, op, ": out ", out.describe(),
            " must be [", x.shape[0], ", ", w.shape[0] / 2, "]");
  same_device(x, out, op);
  if (is_integer_format(wv.format)) {
    need(kernels(x.device).linear_int, "linear_silu_mul (integer weights)", x.device)(
        x.data, x.dtype, wv, nullptr, DType::F32, nullptr, out.ptr<float>(), x.shape[0], true);
    return;
  }
  need(kernels(x.device).linear_silu_mul, op, x.device)(x.ptr<float>(), static_cast<const uint16_t*>(w.data),
                                                        out.ptr<float>(), x.shape[0], w.shape[0] / 2, x.shape[1]);
}

WeightPacking weight_packing(Device device, DType dtype, int64_t intermediate_size) {
  WeightPacking w;
  w.packed = device == Device::CPU && dtype == DType::BF16;
  w.fused_mlp = w.packed && intermediate_size % cpu::kPanelRows == 0;
  return w;
}

int64_t packed_weight_elems(int64_t rows, int64_t cols) { return cpu::packed_elems(rows, cols); }

void pack_weight_rows(const uint16_t* src, int64_t rows, int64_t row0, int64_t cols, uint16_t* dst) {
  cpu::pack_bf16_rows(src, rows, row0, cols, dst);
}

void pack_gate_up_rows(const uint16_t* src, int64_t rows, int64_t row0, int64_t inter, int64_t cols, uint16_t* dst) {
  FDL_CHECK(inter % cpu::kPanelRows == 0, "pack_gate_up_rows: the intermediate size ", inter,
            " is not a multiple of ", cpu::kPanelRows);
  cpu::pack_gate_up_rows(src, rows, row0, inter, cols, dst);
}

IntWeightLayout int_weight_layout(Device device, WeightFormat format, int64_t rows, int64_t cols, int64_t group_size) {
  FDL_CHECK(is_integer_format(format), "int_weight_layout: ", format_traits(format).name, " is not an integer format");
  FDL_CHECK(group_size > 0 && group_size % 2 == 0 && cols % group_size == 0, "group size ", group_size,
            " must be even and divide in_features ", cols);
  const int bits = format_traits(format).bits;
  IntWeightLayout l;
  if (device == Device::CPU) {
    l.code_bytes = cpu::int_code_bytes(bits, rows, cols);
    l.param_floats = cpu::int_param_floats(rows, cols / group_size);
    return l;
  }
#ifdef FASTDLLM_WITH_CUDA
  FDL_CHECK(cols % 8 == 0 && group_size % 8 == 0, "integer weights on cuda need in_features (", cols,
            ") and the group size (", group_size, ") to be multiples of 8");
  l.code_bytes = cuda::int_code_bytes(bits, rows, cols);
  l.param_floats = cuda::int_param_floats(rows, cols / group_size);
  l.aux_bytes = cuda::int_aux_bytes(bits, rows, cols / group_size);
  return l;
#else
  throw InvalidArgument(detail::concat("integer weight formats (", format_traits(format).name,
                                       ") are not implemented for device ", device_name(device), " in this build"));
#endif
}

void pack_int_weight_rows(Device device, const uint8_t* q, const float* scales, const float* zeros, int64_t rows,
                          int64_t row0, int64_t gate_up_inter, const WeightView& w) {
  const int bits = format_traits(w.format).bits;
  if (device == Device::CPU) {
    FDL_CHECK(gate_up_inter == 0 || gate_up_inter % cpu::kPanelRows == 0,
              "pack_int_weight_rows: the intermediate size ", gate_up_inter, " is not a multiple of ",
              cpu::kPanelRows);
    cpu::IntPackTarget t;
    t.codes = w.values.ptr<uint8_t>();
    t.scales = w.scales.ptr<float>();
    t.zero_scales = w.zero_scales.ptr<float>();
    t.bits = bits;
    t.k = w.cols();
    t.groups = w.groups();
    cpu::pack_int_rows(q, scales, zeros, rows, row0, gate_up_inter, t);
    return;
  }
#ifdef FASTDLLM_WITH_CUDA
  FDL_CHECK(gate_up_inter == 0, "pack_int_weight_rows: the gate/up interleave is CPU-only");
  cuda::pack_int_rows_host(q, scales, zeros, rows, row0, bits, w.cols(), w.groups(), w.values.ptr<uint8_t>(),
                           w.scales.ptr<float>(), w.zero_scales.ptr<float>(),
                           w.aux.defined() ? w.aux.ptr<uint16_t>() : nullptr, w.rows());
#else
  throw InvalidArgument(detail::concat("pack_int_weight_rows: no layout for device ", device_name(device),
                                       " in this build"));
#endif
}

}  // namespace fastdllm::ops
