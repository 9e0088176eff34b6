// fastdllm_rt._C._testing: helpers for the tests and benchmarks, kept out of
// the runtime API. Single ops on numpy arrays (on the CPU or uploaded to the
// GPU and back), the launch plans, pools and page tables, one model forward
// over a batch described in Python, a scheduler stepped by hand, and the graph
// cache and caching allocator over fake backends.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <unordered_map>

#include "bindings/bindings.h"
#include "bindings/numpy_views.h"
#include "core/caching_allocator.h"
#include "core/launch_plans.h"
#include "cpu/packed_weights.h"
#include "fastdllm/kv_cache.h"
#include "fastdllm/model.h"
#include "fastdllm/ops.h"
#include "model/graph_cache.h"
#include "runtime/sampling.h"
#include "runtime/transfer_rules.h"
#include "runtime/scheduler.h"

namespace fastdllm::bindings {

namespace {

// A packed bf16 matrix (1-d array from pack_bf16) viewed as its logical [rows, cols].
TensorView packed_view(TensorView t, int64_t rows, int64_t cols) {
  FDL_CHECK(t.dtype == DType::BF16 && t.numel() == cpu::packed_elems(rows, cols),
            "packed weight does not hold a packed bfloat16 [", rows, ", ", cols, "] matrix");
  TensorView v(t.data, DType::BF16, {rows, cols});
  v.packed = true;
  return v;
}

// A ragged batch's cache addressing from numpy arrays (token_seq derived),
// kept alive (and uploaded where the op runs) for one call.
struct BatchArrays {
  std::vector<int32_t> token_seq, positions, kv_limit, qo, kv_indptr, kv_indices, write_offset;
  KVBatch on(OnDevice& d) {
    KVBatch b;
    b.num_seqs = int(qo.size()) - 1;
    b.num_tokens = b.num_seqs >= 0 && !qo.empty() ? qo.back() : 0;
    b.token_seq = d.ints(token_seq);
    b.positions = d.ints(positions);
    b.kv_limit = d.ints(kv_limit);
    b.qo_indptr = d.ints(qo);
    b.kv_indptr = d.ints(kv_indptr);
    b.kv_indices = d.ints(kv_indices);
    b.write_offset = d.ints(write_offset);
    return b;
  }
};

std::vector<int32_t> to_ints(const py::object& o) {
  if (o.is_none()) return {};
  I32Array a = o.cast<I32Array>();
  return std::vector<int32_t>(a.data(), a.data() + a.size());
}

BatchArrays batch_arrays(const py::object& qo, const py::object& kv_indptr, const py::object& kv_indices,
                         const py::object& write_offset, const py::object& positions, const py::object& kv_limit) {
  BatchArrays b;
  b.qo = to_ints(qo);
  b.kv_indptr = to_ints(kv_indptr);
  b.kv_indices = to_ints(kv_indices);
  FDL_CHECK(b.qo.size() >= 2 && b.kv_indptr.size() == b.qo.size(), "qo_indptr and kv_indptr need one entry per sequence + 1");
  const int64_t n = b.qo.back();
  b.write_offset = write_offset.is_none() ? std::vector<int32_t>(b.qo.size() - 1, 0) : to_ints(write_offset);
  b.positions = positions.is_none() ? std::vector<int32_t>(size_t(n), 0) : to_ints(positions);
  b.kv_limit = kv_limit.is_none() ? std::vector<int32_t>(size_t(n), 0) : to_ints(kv_limit);
  FDL_CHECK(int64_t(b.positions.size()) == n && int64_t(b.kv_limit.size()) == n &&
                b.write_offset.size() == b.qo.size() - 1,
            "positions and kv_limit need one entry per token, write_offset one per sequence");
  b.token_seq.assign(size_t(n), 0);
  for (size_t s = 0; s + 1 < b.qo.size(); ++s)
    for (int32_t t = std::max(b.qo[s], 0); t < std::min<int64_t>(b.qo[s + 1], n); ++t) b.token_seq[size_t(t)] = int32_t(s);
  return b;
}

// The attention work list of a batch: plans::plan_attention over each
// sequence's longest key limit.
plans::AttentionPlan plan_batch(const BatchArrays& b, int64_t kv_heads, int64_t target_ctas) {
  std::vector<int32_t> kv_len(b.qo.size() - 1, 0);
  for (size_t t = 0; t < b.token_seq.size(); ++t)
    kv_len[size_t(b.token_seq[t])] = std::max(kv_len[size_t(b.token_seq[t])], b.kv_limit[t]);
  plans::AttentionPlan plan;
  plans::plan_attention(b.qo.data(), kv_len.data(), int(kv_len.size()), kv_heads, &plan, target_ctas);
  return plan;
}

// The work items as the kernels read them: (q0, nq, k0, k1, split) each.
std::vector<int32_t> flat_work(const plans::AttentionPlan& p) {
  std::vector<int32_t> work;
  for (const auto& w : p.work) work.insert(work.end(), {w.q0, w.nq, w.k0, w.k1, w.split});
  return work;
}

// A batch's plan, kept alive and on the op's device for a call.
struct PlanOnDevice {
  plans::AttentionPlan plan;
  std::vector<int32_t> work, count;
  AttentionPlanView view;
  PlanOnDevice(const BatchArrays& b, OnDevice& d, int64_t kv_heads, int64_t target_ctas) {
    if (d.dev == Device::CPU) return;  // the CPU attention runs per query
    plan = plan_batch(b, kv_heads, target_ctas);
    work = flat_work(plan);
    count.assign(1, int32_t(plan.work.size()));
    view.work = d.ints(work);
    view.num_work = int64_t(plan.work.size());
    view.work_count = d.ints(count);
    view.part_base = d.ints(plan.part_base);
    view.part_count = d.ints(plan.part_count);
    view.num_parts = plan.num_parts;
  }
};

// The CUDA attention's split / merge over a plan, emulated in scalar fp32 on
// the CPU's pages: checks that a plan (plans::plan_attention) covers every
// key of every query exactly once, and that the partial slots line up.
py::array_t<float> attention_by_plan(py::array q, PagePool& pool, const BatchArrays& b, float scale,
                                     const plans::AttentionPlan& plan) {
  FDL_CHECK(pool.device() == Device::CPU, "attention_by_plan emulates on the CPU");
  const TensorView qv = as_view(q);
  const int64_t n = qv.shape[0], heads = qv.shape[1], hd = qv.shape[2];
  const PagedKV kv = pool.layer(0);
  const int64_t group = heads / kv.num_kv_heads;
  const float* qp = qv.ptr<float>();
  auto elem = [&](int32_t seq, int64_t slot, int64_t head, bool is_k, int64_t e) {
    const int32_t page = b.kv_indices[size_t(b.kv_indptr[size_t(seq)] + slot / kv.page_size)];
    const int64_t r = slot % kv.page_size;
    const int64_t off = page * kv.page_stride + (is_k ? kv.k_offset : kv.v_offset) + head * kv.head_stride +
                        (is_k ? e * kv.page_size + r : r * hd + e);
    return kv.dtype == DType::BF16 ? bf16_to_f32(static_cast<const uint16_t*>(kv.base)[off])
                                   : static_cast<const float*>(kv.base)[off];
  };
  std::vector<float> acc(size_t(plan.num_parts * heads * hd), 0.f), ml(size_t(plan.num_parts * heads * 2), 0.f);
  std::vector<int32_t> written(size_t(plan.num_parts * kv.num_kv_heads), 0);  // per (slot, kv head)
  for (const plans::AttentionWork& w : plan.work)
    for (int64_t g = 0; g < kv.num_kv_heads; ++g)
      for (int32_t t = w.q0; t < w.q0 + w.nq; ++t) {
        const int32_t s = b.token_seq[size_t(t)];
        const int32_t part = plan.part_base[size_t(t)] + w.split;
        ++written[size_t(part * kv.num_kv_heads + g)];
        const int64_t k1 = std::min<int64_t>(w.k1, b.kv_limit[size_t(t)]);
        for (int64_t h = g * group; h < (g + 1) * group; ++h) {
          float m = -std::numeric_limits<float>::max(), l = 0.f;
          std::vector<float> o(size_t(hd), 0.f);
          for (int64_t j = w.k0; j < k1; ++j) {
            float d = 0.f;
            for (int64_t e = 0; e < hd; ++e) d += qp[(t * heads + h) * hd + e] * scale * elem(s, j, g, true, e);
            const float mn = std::max(m, d), corr = std::exp(m - mn), p = std::exp(d - mn);
            for (int64_t e = 0; e < hd; ++e) o[size_t(e)] = o[size_t(e)] * corr + p * elem(s, j, g, false, e);
            l = l * corr + p;
            m = mn;
          }
          std::copy(o.begin(), o.end(), acc.begin() + (part * heads + h) * hd);
          ml[size_t((part * heads + h) * 2)] = m;
          ml[size_t((part * heads + h) * 2 + 1)] = l;
        }
      }
  for (size_t p = 0; p < written.size(); ++p)
    FDL_CHECK_RT(written[p] == 1, "attention plan: partial slot ", p / size_t(kv.num_kv_heads), " (kv head ",
                 p % size_t(kv.num_kv_heads), ") written ", written[p], " times");
  auto out = empty_f32({py::ssize_t(n), py::ssize_t(heads * hd)});
  float* op = out.mutable_data();
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < heads; ++h) {
      const int32_t base = plan.part_base[size_t(t)], cnt = plan.part_count[size_t(t)];
      float M = -std::numeric_limits<float>::max();
      for (int32_t k = 0; k < cnt; ++k) {
        const float* m2 = &ml[size_t(((base + k) * heads + h) * 2)];
        if (m2[1] > 0.f) M = std::max(M, m2[0]);
      }
      float L = 0.f;
      std::vector<float> o(size_t(hd), 0.f);
      for (int32_t k = 0; k < cnt; ++k) {
        const float* m2 = &ml[size_t(((base + k) * heads + h) * 2)];
        if (m2[1] <= 0.f) continue;
        const float wgt = std::exp(m2[0] - M);
        L += m2[1] * wgt;
        for (int64_t e = 0; e < hd; ++e) o[size_t(e)] += acc[size_t(((base + k) * heads + h) * hd + e)] * wgt;
      }
      for (int64_t e = 0; e < hd; ++e) op[(t * heads + h) * hd + e] = L > 0.f ? o[size_t(e)] / L : 0.f;
    }
  return out;
}

// One model forward over sequences described in Python: a list of dicts with
// "tokens", "pages", and optionally "positions" (default write_offset + i),
// "write_offset" (0; -1 writes nothing), "kv_limit" (default: everything up to
// the end of the written tokens), "rows" (local output rows, default all).
struct PyForward {
  ForwardBatchBuilder builder;
  std::vector<int32_t> rows;
  ForwardBatch batch;
  explicit PyForward(const py::list& seqs) {
    for (const py::handle& h : seqs) {
      const py::dict d = h.cast<py::dict>();
      const std::vector<int32_t> tok = to_ints(d["tokens"]);
      const int32_t wo = d.contains("write_offset") ? d["write_offset"].cast<int32_t>() : 0;
      const int64_t n = int64_t(tok.size());
      std::vector<int32_t> pos = d.contains("positions") ? to_ints(d["positions"]) : std::vector<int32_t>();
      if (pos.empty())
        for (int64_t i = 0; i < n; ++i) pos.push_back(int32_t(std::max(wo, 0) + i));
      std::vector<int32_t> lim = d.contains("kv_limit") ? to_ints(d["kv_limit"]) : std::vector<int32_t>();
      if (lim.empty()) lim.assign(size_t(n), int32_t(std::max(wo, 0) + n));
      const int32_t base = builder.add(tok, pos, lim, to_ints(d["pages"]), wo);
      if (d.contains("rows")) {
        for (int32_t r : to_ints(d["rows"])) rows.push_back(base + r);
      } else {
        for (int64_t i = 0; i < n; ++i) rows.push_back(int32_t(base + i));
      }
    }
    batch = builder.batch();
  }
};

py::dict plan_dict(const plans::AttentionPlan& p) {
  py::dict d;
  d["keys_per_split"] = p.keys_per_split;
  d["work"] = flat_work(p);
  d["part_base"] = p.part_base;
  d["part_count"] = p.part_count;
  d["num_parts"] = p.num_parts;
  return d;
}

// The graph cache's policy over a fake backend (capture runs the body and
// returns a handle; launches and destroys are counted).
struct GraphCacheProbe {
  int64_t captures = 0, launches = 0, destroys = 0, body_runs = 0, next = 1;
  GraphCache cache;
  explicit GraphCacheProbe(size_t max_entries)
      : cache(GraphCache::Backend{[this](const std::function<void()>& body) -> void* {
                                    ++captures;
                                    body();
                                    return reinterpret_cast<void*>(next++);
                                  },
                                  [this](void*) { ++launches; }, [this](void*) { ++destroys; }},
              max_entries) {}
};

// A scheduler stepped by hand (deterministic interleavings for the tests).
struct SchedulerProbe {
  std::unique_ptr<Scheduler> s;
  int64_t next_id = 1;
  Scheduler::Report report;
};

}  // namespace

void bind_testing(py::module_& t) {
  py::module_ m = t.def_submodule("ops", "Single ops on numpy arrays");
  m.def("embedding", [](py::array table, py::array ids, const std::string& dt, bool packed, int64_t rows,
                        int64_t cols, const std::string& device) {
    TensorView t = as_view(table, dt);
    if (packed) t = packed_view(t, rows, cols);
    auto out = empty_f32({ids.shape(0), py::ssize_t(t.shape[1])});
    OnDevice d(device);
    ops::embedding(d.in(t), d.in(as_view(ids)), d.out(as_view(out)));
    d.finish();
    return out;
  }, py::arg("table"), py::arg("ids"), py::arg("table_dtype") = "", py::arg("packed") = false,
     py::arg("rows") = 0, py::arg("cols") = 0, py::arg("device") = "cpu");
  m.def("pack_bf16", [](py::array_t<uint16_t, py::array::c_style> w) {
    FDL_CHECK(w.ndim() == 2, "pack_bf16: weight must be 2-d");
    const int64_t n = w.shape(0), k = w.shape(1);
    py::array_t<uint16_t> out(cpu::packed_elems(n, k));
    std::memset(out.mutable_data(), 0, size_t(out.nbytes()));
    cpu::pack_bf16_rows(w.data(), n, 0, k, out.mutable_data());
    // Logical shape travels with the array so linear() can recover it.
    return py::make_tuple(out, n, k);
  }, "Packs a bf16 (uint16) [N, K] matrix into the CPU GEMM layout: (packed, N, K).");
  m.def("pack_gate_up", [](py::array_t<uint16_t, py::array::c_style> gate, py::array_t<uint16_t, py::array::c_style> up) {
    FDL_CHECK(gate.ndim() == 2 && up.ndim() == 2 && gate.shape(0) == up.shape(0) && gate.shape(1) == up.shape(1),
              "pack_gate_up: gate and up must be 2-d and of one shape");
    const int64_t inter = gate.shape(0), k = gate.shape(1);
    FDL_CHECK(inter % cpu::kPanelRows == 0, "pack_gate_up: rows must be a multiple of ", cpu::kPanelRows);
    py::array_t<uint16_t> out(cpu::packed_elems(2 * inter, k));
    std::memset(out.mutable_data(), 0, size_t(out.nbytes()));
    cpu::pack_gate_up_rows(gate.data(), inter, 0, inter, k, out.mutable_data());
    cpu::pack_gate_up_rows(up.data(), inter, inter, inter, k, out.mutable_data());
    return py::make_tuple(out, 2 * inter, k);
  }, "Packs gate and up (bf16 [I, K] each) into the interleaved layout of linear_silu_mul: (packed, 2I, K).");
  m.def("linear_silu_mul", [](py::array x, py::tuple w, const std::string& device) {
    const TensorView wv = packed_view(as_view(w[0].cast<py::array>(), "bfloat16"), w[1].cast<int64_t>(),
                                      w[2].cast<int64_t>());
    auto out = empty_f32({x.shape(0), py::ssize_t(wv.shape[0] / 2)});
    OnDevice d(device);
    ops::linear_silu_mul(d.in(as_view(x)), d.in(wv), d.out(as_view(out)));
    d.finish();
    return out;
  }, py::arg("x"), py::arg("weight"), py::arg("device") = "cpu");
  // out_dtype "bfloat16" / "float16" (the latter CUDA only): the result as half
  // bits (uint16), the GEMM-operand form.
  m.def("rms_norm", [](py::array x, py::array w, float eps, const std::string& dt, const std::string& out_dtype,
                       const std::string& device) -> py::array {
    py::array out = operand_out({x.shape(0), x.shape(1)}, out_dtype);
    OnDevice d(device);
    ops::rms_norm(d.in(as_view(x)), d.in(as_view(w, dt)), eps, d.out(as_view(out, out_dtype)));
    d.finish();
    return out;
  }, py::arg("x"), py::arg("weight"), py::arg("eps"), py::arg("weight_dtype") = "", py::arg("out_dtype") = "float32",
     py::arg("device") = "cpu");
  m.def("rope", [](py::array x, py::array pos, py::array inv_freq, const std::string& device) {
    // rope works in place: run it on a copy.
    py::array_t<float> y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
    std::memcpy(y.mutable_data(), x.data(), size_t(x.nbytes()));
    OnDevice d(device);
    ops::rope(d.out(as_view(y)), d.in(as_view(pos)), d.in(as_view(inv_freq)));
    d.finish();
    return y;
  }, py::arg("x"), py::arg("positions"), py::arg("inv_freq"), py::arg("device") = "cpu");
  m.def("linear", [](py::array x, py::object w, py::object bias, py::object residual, const std::string& dt,
                     const std::string& bias_dt, bool packed, const std::string& x_dt, const std::string& device) {
    TensorView wv;
    if (packed) {  // w is pack_bf16's (packed, N, K)
      auto t = w.cast<py::tuple>();
      wv = packed_view(as_view(t[0].cast<py::array>(), dt), t[1].cast<int64_t>(), t[2].cast<int64_t>());
    } else {
      wv = as_view(w.cast<py::array>(), dt);
    }
    auto out = empty_f32({x.shape(0), py::ssize_t(wv.shape[0])});
    OnDevice d(device);
    const TensorView xv = d.in(as_view(x, x_dt)), bv = d.in(opt_view(bias, bias_dt)), rv = d.in(opt_view(residual)),
                     ov = d.out(as_view(out)), wd = d.in(wv);
    {
      py::gil_scoped_release nogil;
      ops::linear(xv, wd, bv, rv, ov);
    }
    d.finish();
    return out;
  }, py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(), py::arg("residual") = py::none(),
     py::arg("weight_dtype") = "", py::arg("bias_dtype") = "", py::arg("packed") = false, py::arg("x_dtype") = "",
     py::arg("device") = "cpu");
  // Integer-format linear: canonical codes q [N, K] (uint8, in perm's input order),
  // scales / zeros [N, K / group] packed with ops::pack_int_weight_rows, then
  // ops::linear, or ops::linear_silu_mul when silu (q is then [gate; up], 2I rows).
  // Integer-format linear: canonical codes q [N, K] (uint8, in perm's input order),
  // scales / zeros [N, K / group] packed with ops::pack_int_weight_rows in the
  // device's layout, then ops::linear, or ops::linear_silu_mul when silu (CPU;
  // q is then [gate; up], 2I rows).
  m.def("linear_int", [](py::array x, py::array_t<uint8_t, py::array::c_style | py::array::forcecast> q,
                         py::array_t<float, py::array::c_style | py::array::forcecast> scales,
                         py::array_t<float, py::array::c_style | py::array::forcecast> zeros, py::object perm,
                         const std::string& format, int64_t group, py::object bias, py::object residual, bool silu,
                         const std::string& x_dt, const std::string& device) {
    const int64_t n = q.shape(0), k = q.shape(1);
    OnDevice d(device);
    WeightView w;
    w.format = weight_format_from_name(format.c_str());
    w.group_size = group;
    const ops::IntWeightLayout lay = ops::int_weight_layout(d.dev, w.format, n, k, group);
    std::vector<uint8_t> codes(size_t(lay.code_bytes), 0);
    std::vector<float> sc(size_t(lay.param_floats), 0.f), zs(size_t(lay.param_floats), 0.f);
    std::vector<uint8_t> aux(size_t(lay.aux_bytes), 0);
    std::vector<int32_t> pv;
    w.values = TensorView(codes.data(), DType::U8, {n, k});
    w.scales = TensorView(sc.data(), DType::F32, {lay.param_floats});
    w.zero_scales = TensorView(zs.data(), DType::F32, {lay.param_floats});
    if (lay.aux_bytes) w.aux = TensorView(aux.data(), DType::U8, {lay.aux_bytes});
    if (!perm.is_none()) {
      pv = to_ints(perm);
      w.perm = TensorView(pv.data(), DType::I32, {int64_t(pv.size())});
    }
    FDL_CHECK(scales.ndim() == 2 && scales.shape(0) == n && scales.shape(1) == w.groups() &&
                  zeros.ndim() == 2 && zeros.shape(0) == n && zeros.shape(1) == w.groups(),
              "linear_int: scales and zeros must be [", n, ", ", w.groups(), "]");
    ops::pack_int_weight_rows(d.dev, q.data(), scales.data(), zeros.data(), n, 0, silu ? n / 2 : 0, w);
    // the codes take code_bytes (not the logical [N, K] bytes): copied flat
    w.values = TensorView(d.in(TensorView(codes.data(), DType::U8, {lay.code_bytes})).data, DType::U8, {n, k}, d.dev);
    w.scales = d.in(w.scales);
    w.zero_scales = d.in(w.zero_scales);
    if (w.aux.defined()) w.aux = d.in(w.aux);
    if (w.perm.defined()) w.perm = d.in(w.perm);
    auto out = empty_f32({x.shape(0), py::ssize_t(silu ? n / 2 : n)});
    const TensorView xv = d.in(as_view(x, x_dt)), bv = d.in(opt_view(bias)), rv = d.in(opt_view(residual)),
                     ov = d.out(as_view(out));
    {
      py::gil_scoped_release nogil;
      if (silu)
        ops::linear_silu_mul(xv, w, ov);
      else
        ops::linear(xv, w, bv, rv, ov);
    }
    d.finish();
    return out;
  }, py::arg("x"), py::arg("codes"), py::arg("scales"), py::arg("zeros"), py::arg("perm") = py::none(),
     py::arg("format") = "int4", py::arg("group_size") = 128, py::arg("bias") = py::none(),
     py::arg("residual") = py::none(), py::arg("silu") = false, py::arg("x_dtype") = "", py::arg("device") = "cpu");
  // Dream's fp32 schedule: torch.linspace(1, 1e-3, steps + 1) as the samplers compute it.
  m.def("dream_timesteps", [](int64_t steps) {
    std::vector<float> t(size_t(steps + 1));
    for (int64_t i = 0; i <= steps; ++i) t[size_t(i)] = rules::dream_timestep(steps, i);
    return t;
  });
  // W8A8 fp8 linear: E4M3 bytes [N, K] with one scale per row (ops::linear, CUDA).
  m.def("linear_fp8", [](py::array x, py::array_t<uint8_t, py::array::c_style | py::array::forcecast> wq,
                         py::array_t<float, py::array::c_style | py::array::forcecast> scales, py::object bias,
                         py::object residual, const std::string& x_dt, const std::string& device) {
    FDL_CHECK(wq.ndim() == 2 && scales.ndim() == 1 && scales.shape(0) == wq.shape(0),
              "linear_fp8: weight bytes must be [N, K] and scales [N]");
    const int64_t n = wq.shape(0), k = wq.shape(1);
    OnDevice d(device);
    WeightView w;
    w.format = WeightFormat::Fp8;
    w.group_size = k;
    w.values = d.in(TensorView(const_cast<uint8_t*>(wq.data()), DType::U8, {n, k}));
    w.scales = d.in(TensorView(const_cast<float*>(scales.data()), DType::F32, {n}));
    auto out = empty_f32({x.shape(0), py::ssize_t(n)});
    const TensorView xv = d.in(as_view(x, x_dt)), bv = d.in(opt_view(bias)), rv = d.in(opt_view(residual)),
                     ov = d.out(as_view(out));
    {
      py::gil_scoped_release nogil;
      ops::linear(xv, w, bv, rv, ov);
    }
    d.finish();
    return out;
  }, py::arg("x"), py::arg("weight"), py::arg("scales"), py::arg("bias") = py::none(),
     py::arg("residual") = py::none(), py::arg("x_dtype") = "", py::arg("device") = "cpu");
  m.def("silu_mul", [](py::array gu, const std::string& out_dtype, const std::string& device) -> py::array {
    py::array out = operand_out({gu.shape(0), gu.shape(1) / 2}, out_dtype);
    OnDevice d(device);
    ops::silu_mul(d.in(as_view(gu)), d.out(as_view(out, out_dtype)));
    d.finish();
    return out;
  }, py::arg("gate_up"), py::arg("out_dtype") = "float32", py::arg("device") = "cpu");
  m.def("add", [](py::array a, py::array b, const std::string& device) {
    auto out = empty_f32(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
    OnDevice d(device);
    ops::add(d.in(as_view(a)), d.in(as_view(b)), d.out(as_view(out)));
    d.finish();
    return out;
  }, py::arg("a"), py::arg("b"), py::arg("device") = "cpu");
  m.def("gather_rows", [](py::array x, py::array rows, const std::string& device) {
    auto out = empty_f32({rows.shape(0), x.shape(1)});
    OnDevice d(device);
    ops::gather_rows(d.in(as_view(x)), d.in(as_view(rows)), d.out(as_view(out)));
    d.finish();
    return out;
  }, py::arg("x"), py::arg("rows"), py::arg("device") = "cpu");
  m.def("argmax_prob", [](py::array logits, const std::string& device) {
    py::array_t<int32_t> idx(logits.shape(0));
    auto prob = empty_f32({logits.shape(0)});
    OnDevice d(device);
    ops::argmax_prob(d.in(as_view(logits)), d.out(as_view(idx)), d.out(as_view(prob)));
    d.finish();
    return py::make_tuple(idx, prob);
  }, py::arg("logits"), py::arg("device") = "cpu");
  m.def("sampling_candidates", [](py::array logits, float temperature, float top_p, int top_k, int32_t exclude,
                                  const std::string& device) {
    const py::ssize_t rows = logits.shape(0), vocab = logits.shape(1);
    auto stats = empty_f32({rows, 2});
    py::array_t<int32_t> count(rows), cand({rows, vocab, py::ssize_t(2)});
    OnDevice d(device);
    ops::sampling_candidates(d.in(as_view(logits)), {temperature, top_p, top_k, exclude}, d.out(as_view(stats)),
                             d.out(as_view(count)), d.out(as_view(cand)));
    d.finish();
    return py::make_tuple(stats, count, cand);
  }, py::arg("logits"), py::arg("temperature"), py::arg("top_p") = 1.f, py::arg("top_k") = 0,
     py::arg("exclude") = -1, py::arg("device") = "cpu");
  // The whole sampling path for rows of logits: candidates on the device, then
  // one draw per row from one random stream (runtime/sampling.h).
  m.def("sample", [](py::array logits, float temperature, float top_p, int top_k, int32_t exclude, uint64_t seed,
                     const std::string& device) {
    const py::ssize_t rows = logits.shape(0), vocab = logits.shape(1);
    thread_local SamplingCandidates c;  // reused, as the engine reuses its own
    c.resize(rows, vocab);
    const ops::SamplingOptions o{temperature, top_p, top_k, exclude};
    {
      OnDevice d(device);
      ops::sampling_candidates(d.in(as_view(logits)), o, d.out(TensorView(c.stats.data(), DType::F32, {rows, 2})),
                               d.out(TensorView(c.count.data(), DType::I32, {rows})),
                               d.out(TensorView(c.pairs.data(), DType::I32, {rows, vocab, 2})));
      d.finish();
    }
    py::array_t<int32_t> token(rows);
    auto prob = empty_f32({rows});
    std::mt19937_64 rng(seed);
    sample_rows(c, 0, rows, vocab - (exclude >= 0 ? 1 : 0), o, rng, token.mutable_data(), prob.mutable_data());
    return py::make_tuple(token, prob);
  }, py::arg("logits"), py::arg("temperature"), py::arg("top_p") = 1.f, py::arg("top_k") = 0,
     py::arg("exclude") = -1, py::arg("seed") = 0, py::arg("device") = "cpu");
  m.def("lm_head_top2", [](py::array x, py::object w, const std::string& dt, bool packed, const std::string& device) {
    const TensorView wv = packed ? [&] {  // w is pack_bf16's (packed, N, K)
      auto t = w.cast<py::tuple>();
      return packed_view(as_view(t[0].cast<py::array>(), dt), t[1].cast<int64_t>(), t[2].cast<int64_t>());
    }() : as_view(w.cast<py::array>(), dt);
    py::array_t<int32_t> idx({x.shape(0), py::ssize_t(2)});
    auto prob = empty_f32({x.shape(0), 4});
    OnDevice d(device);
    const TensorView xv = d.in(as_view(x)), wd = d.in(wv), iv = d.out(as_view(idx)), pv = d.out(as_view(prob));
    {
      py::gil_scoped_release nogil;
      ops::lm_head_top2(xv, wd, iv, pv);
    }
    d.finish();
    return py::make_tuple(idx, prob);
  }, py::arg("x"), py::arg("weight"), py::arg("weight_dtype") = "", py::arg("packed") = false,
     py::arg("device") = "cpu");

  // ---- the paged cache over ragged batches ----
  m.def("kv_write", [](PagePool& pool, py::array k, py::array v, py::object qo, py::object kv_indptr,
                       py::object kv_indices, py::object write_offset) {
    BatchArrays ba = batch_arrays(qo, kv_indptr, kv_indices, write_offset, py::none(), py::none());
    OnDevice d(pool.device());
    const KVBatch b = ba.on(d);
    ops::kv_write(pool.layer(0), b, d.in(as_view(k)), d.in(as_view(v)));
    d.finish();
  }, py::arg("pool"), py::arg("k"), py::arg("v"), py::arg("qo_indptr"), py::arg("kv_indptr"), py::arg("kv_indices"),
     py::arg("write_offset"));
  // The fused QKV split + RoPE + cache append into layer 0; returns q with RoPE.
  m.def("qkv_rope_append", [](py::array qkv, py::array inv_freq, int64_t heads, PagePool& pool, py::object positions,
                              py::object qo, py::object kv_indptr, py::object kv_indices, py::object write_offset) {
    BatchArrays ba = batch_arrays(qo, kv_indptr, kv_indices, write_offset, positions, py::none());
    const int64_t hd = pool.geometry().head_dim;
    auto q = empty_f32({qkv.shape(0), py::ssize_t(heads), py::ssize_t(hd)});
    OnDevice d(pool.device());
    const KVBatch b = ba.on(d);
    ops::qkv_rope_append(d.in(as_view(qkv)), d.in(as_view(inv_freq)), pool.layer(0), b, d.out(as_view(q)));
    d.finish();
    return q;
  }, py::arg("qkv"), py::arg("inv_freq"), py::arg("heads"), py::arg("pool"), py::arg("positions"),
     py::arg("qo_indptr"), py::arg("kv_indptr"), py::arg("kv_indices"), py::arg("write_offset"));
  // Attention of a ragged batch over what layer 0 of the pool holds (the GPU
  // gets its split plan from plans::plan_attention).
  m.def("attention", [](py::array q, PagePool& pool, py::object kv_limit, py::object qo, py::object kv_indptr,
                        py::object kv_indices, float scale, const std::string& out_dtype, int64_t target_ctas) {
    BatchArrays ba = batch_arrays(qo, kv_indptr, kv_indices, py::none(), py::none(), kv_limit);
    py::array out = operand_out({q.shape(0), q.shape(1) * q.shape(2)}, out_dtype);
    OnDevice d(pool.device());
    const KVBatch b = ba.on(d);
    const PlanOnDevice pv(ba, d, pool.geometry().num_kv_heads, target_ctas);
    ops::attention(d.in(as_view(q)), pool.layer(0), b, scale, d.out(as_view(out, out_dtype)), pv.view);
    d.finish();
    return out;
  }, py::arg("q"), py::arg("pool"), py::arg("kv_limit"), py::arg("qo_indptr"), py::arg("kv_indptr"),
     py::arg("kv_indices"), py::arg("scale"), py::arg("out_dtype") = "float32",
     py::arg("target_ctas") = plans::kAttnTargetCtas);
  // One sequence: dense k, v [n_kv, kv_heads, hd] scattered into the pages,
  // then q attends with the optional per-query key limit (default: all keys).
  m.def("paged_attention", [](py::array q, py::array k, py::array v, PagePool& pool, std::vector<int32_t> table,
                              float scale, py::object kv_limit, const std::string& out_dtype) {
    const int64_t lq = q.shape(0), n_kv = k.shape(0);
    py::array out = operand_out({q.shape(0), q.shape(1) * q.shape(2)}, out_dtype);  // checked before K/V are written
    BatchArrays w = batch_arrays(py::cast(std::vector<int32_t>{0, int32_t(n_kv)}),
                                 py::cast(std::vector<int32_t>{0, int32_t(table.size())}), py::cast(table),
                                 py::cast(std::vector<int32_t>{0}), py::none(), py::none());
    std::vector<int32_t> lim = kv_limit.is_none() ? std::vector<int32_t>(size_t(lq), int32_t(n_kv)) : to_ints(kv_limit);
    BatchArrays r = batch_arrays(py::cast(std::vector<int32_t>{0, int32_t(lq)}),
                                 py::cast(std::vector<int32_t>{0, int32_t(table.size())}), py::cast(table),
                                 py::cast(std::vector<int32_t>{-1}), py::none(), py::cast(lim));
    OnDevice d(pool.device());
    const KVBatch wb = w.on(d), rb = r.on(d);
    ops::kv_write(pool.layer(0), wb, d.in(as_view(k)), d.in(as_view(v)));
    const PlanOnDevice pv(r, d, pool.geometry().num_kv_heads, plans::kAttnTargetCtas);
    ops::attention(d.in(as_view(q)), pool.layer(0), rb, scale, d.out(as_view(out, out_dtype)), pv.view);
    d.finish();
    return out;
  }, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("pool"), py::arg("page_table"), py::arg("scale"),
     py::arg("kv_limit") = py::none(), py::arg("out_dtype") = "float32");

  py::module_ pl = t.def_submodule("plans", "The CUDA kernels' host-side launch decisions (core/launch_plans.h)");
  pl.def("choose_gemm", [](const std::string& dtype, int64_t m, int64_t n, int64_t k) {
    return std::string(plans::gemm_kind_name(plans::choose_gemm(dtype_from_name(dtype.c_str()), m, n, k)));
  }, py::arg("weight_dtype"), py::arg("m"), py::arg("n"), py::arg("k"));
  pl.def("attention", [](std::vector<int32_t> qo, std::vector<int32_t> kv_len, int64_t kv_heads, int64_t target) {
    FDL_CHECK(qo.size() == kv_len.size() + 1, "qo_indptr needs one entry per sequence + 1");
    plans::AttentionPlan p;
    plans::plan_attention(qo.data(), kv_len.data(), int(kv_len.size()), kv_heads, &p, target);
    return plan_dict(p);
  }, py::arg("qo_indptr"), py::arg("kv_len"), py::arg("kv_heads"), py::arg("target_ctas") = plans::kAttnTargetCtas);
  pl.def("work_capacity", [](int64_t tokens, int64_t seqs, int64_t kv_heads, int64_t target) {
    return plans::attention_work_capacity(tokens, seqs, kv_heads, target);
  }, py::arg("tokens"), py::arg("seqs"), py::arg("kv_heads"), py::arg("target_ctas") = plans::kAttnTargetCtas);
  pl.def("parts_capacity", [](int64_t tokens, int64_t kv_heads, int64_t target) {
    return plans::attention_parts_capacity(tokens, kv_heads, target);
  }, py::arg("tokens"), py::arg("kv_heads"), py::arg("target_ctas") = plans::kAttnTargetCtas);
  pl.def("logit_rows_bucket", &plans::logit_rows_bucket, py::arg("n_logits"), py::arg("n"));
  pl.def("token_bucket", &plans::token_bucket, py::arg("tokens"));
  pl.def("seq_bucket", &plans::seq_bucket, py::arg("seqs"));
  t.def("attention_by_plan", [](py::array q, PagePool& pool, py::object kv_limit, py::object qo, py::object kv_indptr,
                                py::object kv_indices, float scale, int64_t target_ctas) {
    BatchArrays ba = batch_arrays(qo, kv_indptr, kv_indices, py::none(), py::none(), kv_limit);
    const plans::AttentionPlan p = plan_batch(ba, pool.geometry().num_kv_heads, target_ctas);
    return py::make_tuple(attention_by_plan(q, pool, ba, scale, p), plan_dict(p));
  }, py::arg("q"), py::arg("pool"), py::arg("kv_limit"), py::arg("qo_indptr"), py::arg("kv_indptr"),
     py::arg("kv_indices"), py::arg("scale"), py::arg("target_ctas") = plans::kAttnTargetCtas);

  py::class_<PagePool>(t, "PagePool")
      .def(py::init([](int num_layers, int num_kv_heads, int head_dim, int page_size, int64_t max_pages,
                       const std::string& device, const std::string& kv_dtype) {
             KVGeometry g{num_layers, num_kv_heads, head_dim, page_size, kv_dtype_from_name(kv_dtype)};
             return new PagePool(g, max_pages, device_from_name(device));
           }),
           py::arg("num_layers"), py::arg("num_kv_heads"), py::arg("head_dim"), py::arg("page_size"),
           py::arg("max_pages"), py::arg("device") = "cpu", py::arg("kv_dtype") = "float32")
      .def_property_readonly("capacity", &PagePool::capacity)
      .def_property_readonly("pages_in_use", &PagePool::pages_in_use)
      .def_property_readonly("page_bytes", [](const PagePool& p) { return p.geometry().page_bytes(); })
      .def_property_readonly("page_size", [](const PagePool& p) { return p.geometry().page_size; })
      .def("allocate", &PagePool::allocate)
      .def("release", &PagePool::release)
      .def("refcount", &PagePool::refcount);
  t.def("make_pool", [](const Model& mdl, int page_size, int64_t max_pages, const std::string& kv_dtype) {
    return new PagePool(mdl.kv_geometry(page_size, kv_dtype_from_name(kv_dtype)), max_pages, mdl.device());
  }, py::arg("model"), py::arg("page_size"), py::arg("max_pages"), py::arg("kv_dtype") = "float32");

  py::class_<PageTable>(t, "PageTable")
      .def(py::init<PagePool*>(), py::keep_alive<1, 2>(), py::arg("pool"))
      .def("reserve_tokens", &PageTable::reserve_tokens)
      .def("share", &PageTable::share)
      .def("clear", &PageTable::clear)
      .def_property_readonly("pages", &PageTable::pages)
      .def_property_readonly("capacity_tokens", &PageTable::capacity_tokens);

  // One forward: output "logits" -> [rows, V]; "top2" -> (index, prob) [rows, 2];
  // "candidates" -> (stats, count, candidates) under the sampling options.
  t.def("forward", [](Model& model, PagePool& pool, const py::list& seqs, const std::string& output,
                      float temperature, float top_p, int top_k, int32_t exclude) -> py::object {
    PyForward f(seqs);
    const int64_t R = int64_t(f.rows.size()), V = model.config().vocab_size;
    ForwardOutputs out;
    std::vector<ops::SamplingOptions> opts(size_t(R), ops::SamplingOptions{temperature, top_p, top_k, exclude});
    if (output == "logits") {
      f.batch.logit_rows = f.rows.data();
      f.batch.num_logits = R;
      auto logits = empty_f32({py::ssize_t(R), py::ssize_t(V)});
      out.logits = logits.mutable_data();
      {
        py::gil_scoped_release nogil;
        model.forward(f.batch, pool.store(), out);
      }
      return logits;
    }
    if (output == "top2") {
      f.batch.greedy_rows = f.rows.data();
      f.batch.num_greedy = R;
      py::array_t<int32_t> idx({py::ssize_t(R), py::ssize_t(2)});
      auto prob = empty_f32({py::ssize_t(R), 4});
      out.top2_index = idx.mutable_data();
      out.top2_prob = prob.mutable_data();
      {
        py::gil_scoped_release nogil;
        model.forward(f.batch, pool.store(), out);
      }
      return py::make_tuple(idx, prob);
    }
    FDL_CHECK(output == "candidates", "output must be 'logits', 'top2' or 'candidates', got '", output, "'");
    f.batch.sample_rows = f.rows.data();
    f.batch.sample_options = opts.data();
    f.batch.num_sample = R;
    SamplingCandidates c;
    out.candidates = &c;
    {
      py::gil_scoped_release nogil;
      model.forward(f.batch, pool.store(), out);
    }
    py::array_t<float> stats({py::ssize_t(R), py::ssize_t(2)}, c.stats.data());
    py::array_t<int32_t> count(R, c.count.data());
    py::array_t<int32_t> cand({py::ssize_t(R), py::ssize_t(V), py::ssize_t(2)}, c.pairs.data());
    return py::make_tuple(stats, count, cand);
  }, py::arg("model"), py::arg("pool"), py::arg("seqs"), py::arg("output") = "logits", py::arg("temperature") = 1.f,
     py::arg("top_p") = 1.f, py::arg("top_k") = 0, py::arg("exclude") = -1);
  t.def("describe_plan", [](const Model& model, PagePool& pool, const py::list& seqs) {
    PyForward f(seqs);
    f.batch.greedy_rows = f.rows.data();
    f.batch.num_greedy = int64_t(f.rows.size());
    const PlanSummary s = model.describe_plan(f.batch, pool.store());
    py::dict d;
    d["tokens"] = s.tokens;
    d["seqs"] = s.seqs;
    d["greedy_rows"] = s.greedy_rows;
    d["replayable"] = s.replayable;
    d["attention_work"] = s.attention_work;
    d["attention_splits_max"] = s.attention_splits_max;
    d["keys_per_split"] = s.keys_per_split;
    d["gemm"] = s.gemm;
    return d;
  }, py::arg("model"), py::arg("pool"), py::arg("seqs"));

  py::class_<SchedulerProbe>(t, "Scheduler")
      .def(py::init([](std::shared_ptr<Model> model, int page_size, int64_t max_pages, const std::string& kv_dtype,
                       bool prefix_cache, int max_batch_size, int64_t max_batch_tokens) {
             auto p = new SchedulerProbe;
             p->s = std::make_unique<Scheduler>(std::move(model), scheduler_config(page_size, max_pages, kv_dtype,
                                                                                   prefix_cache, max_batch_size,
                                                                                   max_batch_tokens));
             return p;
           }),
           py::arg("model"), py::arg("page_size") = 16, py::arg("max_pages") = 256, py::arg("kv_dtype") = "float32",
           py::arg("prefix_cache") = true, py::arg("max_batch_size") = 16, py::arg("max_batch_tokens") = 4096)
      .def("add", [](SchedulerProbe& p, std::vector<int32_t> prompt, const GenerationParams& params) {
        const int64_t id = p.next_id++;
        p.s->enqueue(p.s->make_sequence(id, std::move(prompt), params));
        return id;
      }, py::arg("prompt"), py::arg("params"))
      .def("cancel", [](SchedulerProbe& p, int64_t id) { return p.s->cancel(id); })
      // One step: {"ran": bool, "progressed": [ids], "finished": {id: (output, num_forwards, finish_reason)},
      // "failed": {id: message}}.
      .def("step", [](SchedulerProbe& p) {
        {
          py::gil_scoped_release nogil;
          p.s->step(&p.report);
        }
        py::dict d;
        d["ran"] = p.report.ran_forward;
        py::list prog;
        for (Sequence* s : p.report.progressed) prog.append(s->id());
        d["progressed"] = prog;
        py::dict fin;
        for (auto& s : p.report.finished)
          fin[py::int_(s->id())] = py::make_tuple(s->output(), s->num_forwards(), std::string(s->finish_reason()));
        d["finished"] = fin;
        py::dict failed;
        for (auto& f : p.report.failed) failed[py::int_(f.first->id())] = f.second;
        d["failed"] = failed;
        p.report.finished.clear();
        p.report.failed.clear();
        return d;
      })
      .def_property_readonly("idle", [](const SchedulerProbe& p) { return p.s->idle(); })
      .def("stats", [](const SchedulerProbe& p) { return stats_dict(p.s->stats()); });

  py::class_<GraphCacheProbe>(t, "GraphCacheProbe")
      .def(py::init<size_t>(), py::arg("max_entries"))
      .def("run", [](GraphCacheProbe& g, int64_t tokens, int64_t seqs, int64_t rows, uint64_t epoch) {
        const GraphKey k{tokens, seqs, rows, nullptr};
        const auto r = g.cache.run(k, epoch, [&g] { ++g.body_runs; });
        return std::string(r == GraphCache::Run::Eager ? "eager" : r == GraphCache::Run::Captured ? "captured" : "replayed");
      }, py::arg("tokens"), py::arg("seqs"), py::arg("rows"), py::arg("epoch") = 0)
      .def_property_readonly("size", [](const GraphCacheProbe& g) { return g.cache.size(); })
      .def_property_readonly("counts", [](const GraphCacheProbe& g) {
        py::dict d;
        d["captures"] = g.captures;
        d["launches"] = g.launches;
        d["destroys"] = g.destroys;
        d["body_runs"] = g.body_runs;
        return d;
      });

  // The device caching allocator's logic over host memory with a byte budget
  // (a raw allocation beyond it fails as cudaMalloc would), for tests in CI.
  struct HostBackedAllocator {
    size_t budget, used = 0;
    std::unordered_map<void*, size_t> sizes;
    CachingAllocator alloc;
    explicit HostBackedAllocator(size_t b)
        : budget(b),
          alloc([this](size_t n) -> void* {
                  if (used + n > budget) throw BudgetExceeded(detail::concat("host test budget of ", budget, " bytes"));
                  void* p = std::malloc(n);
                  sizes[p] = n;
                  used += n;
                  return p;
                },
                [this](void* p) {
                  used -= sizes[p];
                  sizes.erase(p);
                  std::free(p);
                }) {}
  };
  py::class_<HostBackedAllocator>(t, "HostCachingAllocator")
      .def(py::init<size_t>(), py::arg("budget_bytes"))
      .def("allocate", [](HostBackedAllocator& h, size_t n) { return reinterpret_cast<uintptr_t>(h.alloc.allocate(n)); })
      .def("release", [](HostBackedAllocator& h, uintptr_t p) { h.alloc.release(reinterpret_cast<void*>(p)); })
      .def("empty_cache", [](HostBackedAllocator& h) { h.alloc.empty_cache(); })
      .def_property_readonly("raw_bytes", [](const HostBackedAllocator& h) { return h.used; })
      .def("stats", [](const HostBackedAllocator& h) {
        const auto s = h.alloc.stats();
        py::dict d;
        d["in_use_bytes"] = s.in_use_bytes;
        d["cached_bytes"] = s.cached_bytes;
        d["raw_allocs"] = s.raw_allocs;
        d["raw_frees"] = s.raw_frees;
        d["cache_hits"] = s.cache_hits;
        return d;
      })
      .def_static("round_size", &CachingAllocator::round_size);

}

}  // namespace fastdllm::bindings
