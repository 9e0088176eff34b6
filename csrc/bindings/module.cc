// pybind11 module fastdllm_rt._C: conversions between numpy / buffers and
// TensorView, and one line per exported call. The GIL is released around every
// call that runs kernels.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <unordered_map>

#include <omp.h>

#include "core/caching_allocator.h"
#include "core/cpu_features.h"
#include "cpu/packed_weights.h"
#include "core/cuda_runtime.h"
#include "core/device_memory.h"
#include "core/profiler.h"
#include "fastdllm/error.h"
#include "fastdllm/generation.h"
#include "fastdllm/kv_cache.h"
#include "fastdllm/model.h"
#include "fastdllm/ops.h"
#include "ops/launch_plans.h"
#include "runtime/graph_cache.h"
#include "runtime/sampling.h"

namespace py = pybind11;
using namespace fastdllm;

namespace {

// A C-contiguous numpy array as a CPU TensorView. dtype overrides the array's
// own type for 16-bit floats, which numpy carries as uint16 ("bfloat16"/"float16").
TensorView as_view(const py::array& a, const std::string& dtype = "") {
  FDL_CHECK(a.flags() & py::array::c_style, "array must be C-contiguous");
  DType t;
  if (!dtype.empty()) {
    t = dtype_from_name(dtype.c_str());
  } else if (py::isinstance<py::array_t<float>>(a)) {
    t = DType::F32;
  } else if (py::isinstance<py::array_t<int32_t>>(a)) {
    t = DType::I32;
  } else if (py::isinstance<py::array_t<uint8_t>>(a) || py::isinstance<py::array_t<bool>>(a)) {
    t = DType::U8;
  } else if (a.dtype().kind() == 'f' && a.itemsize() == 2) {
    t = DType::F16;
  } else {
    throw InvalidArgument("unsupported array dtype " + std::string(py::str(a.dtype())));
  }
  FDL_CHECK(size_t(a.itemsize()) == dtype_size(t), "array itemsize ", a.itemsize(), " does not match dtype ",
            dtype_name(t));
  FDL_CHECK(a.ndim() <= kMaxDims, "array rank ", a.ndim(), " is too large");
  TensorView v;
  v.data = const_cast<void*>(a.data());
  v.dtype = t;
  v.ndim = int(a.ndim());
  for (int i = 0; i < v.ndim; ++i) v.shape[size_t(i)] = a.shape(i);
  return v;
}

// A packed bf16 matrix (1-d array from pack_bf16) viewed as its logical [rows, cols].
TensorView packed_view(TensorView t, int64_t rows, int64_t cols) {
  FDL_CHECK(t.dtype == DType::BF16 && t.numel() == cpu::packed_elems(rows, cols),
            "packed weight does not hold a packed bfloat16 [", rows, ", ", cols, "] matrix");
  TensorView v(t.data, DType::BF16, {rows, cols});
  v.packed = true;
  return v;
}

TensorView opt_view(const py::object& o, const std::string& dtype = "") {
  return o.is_none() ? TensorView() : as_view(o.cast<py::array>(), dtype);
}

py::array_t<float> empty_f32(std::vector<py::ssize_t> shape) { return py::array_t<float>(shape); }

// An op's out in out_dtype: float32, or a half type as its raw bits (uint16),
// the form in which a producer hands a GEMM its operand.
py::array operand_out(std::vector<py::ssize_t> shape, const std::string& out_dtype) {
  const bool half = out_dtype == "bfloat16" || out_dtype == "float16";
  FDL_CHECK(half || out_dtype == "float32", "out_dtype must be 'float32', 'bfloat16' or 'float16', got '", out_dtype,
            "'");
  return half ? py::array(py::array_t<uint16_t>(shape)) : py::array(empty_f32(shape));
}

py::dict cuda_status_dict() {
  const cuda::Status s = cuda::status();
  py::dict d;
  d["built"] = s.built;
  d["available"] = s.built && s.device_count > 0;
  d["runtime_version"] = s.runtime_version;
  d["driver_version"] = s.driver_version;
  d["device_count"] = s.device_count;
  d["devices"] = s.devices;
  d["message"] = s.message;
  return d;
}

ModelConfig config_from_dict(const py::dict& d) {
  ModelConfig c;
  auto get_i = [&](const char* k) {
    FDL_CHECK(d.contains(k), "model config is missing '", k, "'");
    return d[k].cast<int64_t>();
  };
  c.vocab_size = get_i("vocab_size");
  c.hidden_size = get_i("hidden_size");
  c.intermediate_size = get_i("intermediate_size");
  c.num_layers = int(get_i("num_hidden_layers"));
  c.num_heads = int(get_i("num_attention_heads"));
  c.num_kv_heads = int(get_i("num_key_value_heads"));
  c.head_dim = int(get_i("head_dim"));
  c.rope_theta = d["rope_theta"].cast<float>();
  c.rms_norm_eps = d["rms_norm_eps"].cast<float>();
  c.tie_word_embeddings = d["tie_word_embeddings"].cast<bool>();
  return c;
}

// ForwardArgs over numpy arrays, which it keeps alive for the call.
struct ForwardCall {
  using I32 = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
  I32 tokens, positions, lim, rows;
  py::array_t<uint8_t, py::array::c_style | py::array::forcecast> msk;
  ForwardArgs a;

  ForwardCall(I32 tok, I32 pos, PageTable& cache, int64_t write_start, int64_t n_kv, const py::object& kv_limit,
              const py::object& mask, const py::object& logit_rows)
      : tokens(std::move(tok)), positions(std::move(pos)) {
    FDL_CHECK(tokens.ndim() == 1 && positions.ndim() == 1 && tokens.size() == positions.size(),
              "forward: tokens and positions must be 1-d arrays of equal length");
    a.n = tokens.size();
    a.tokens = tokens.data();
    a.positions = positions.data();
    a.pool = cache.pool();
    a.page_table = cache.pages().data();
    a.num_pages = int(cache.pages().size());
    a.write_start = write_start;
    a.n_kv = n_kv;
    if (!kv_limit.is_none()) {
      lim = kv_limit;
      FDL_CHECK(lim.ndim() == 1 && lim.size() == a.n, "forward: kv_limit needs one entry per token");
      a.kv_limit = lim.data();
    }
    if (!mask.is_none()) {
      msk = mask;
      FDL_CHECK(msk.ndim() == 2 && msk.shape(0) == a.n && msk.shape(1) == n_kv, "forward: mask must be [",
                a.n, ", ", n_kv, "]");
      a.mask = msk.data();
    }
    if (logit_rows.is_none()) {
      rows = I32(a.n);
      for (int64_t i = 0; i < a.n; ++i) rows.mutable_data()[i] = int32_t(i);
    } else {
      rows = logit_rows;
      FDL_CHECK(rows.ndim() == 1, "forward: logit_rows must be 1-d");
    }
    a.logit_rows = rows.data();
    a.n_logits = rows.size();
  }
};

py::array_t<float> model_forward(Model& m, ForwardCall::I32 tokens, ForwardCall::I32 positions, PageTable& cache,
                                 int64_t write_start, int64_t n_kv, const py::object& kv_limit,
                                 const py::object& mask, const py::object& logit_rows) {
  ForwardCall c(std::move(tokens), std::move(positions), cache, write_start, n_kv, kv_limit, mask, logit_rows);
  auto out = empty_f32({py::ssize_t(c.a.n_logits), py::ssize_t(m.config().vocab_size)});
  float* dst = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    m.forward(c.a, dst);
  }
  return out;
}

// Greedy decoding's forward: (index, prob), each [rows, 2] (Model::forward_top2).
py::tuple model_forward_top2(Model& m, ForwardCall::I32 tokens, ForwardCall::I32 positions, PageTable& cache,
                             int64_t write_start, int64_t n_kv, const py::object& kv_limit,
                             const py::object& logit_rows) {
  ForwardCall c(std::move(tokens), std::move(positions), cache, write_start, n_kv, kv_limit, py::none(), logit_rows);
  py::array_t<int32_t> idx({py::ssize_t(c.a.n_logits), py::ssize_t(2)});
  auto prob = empty_f32({py::ssize_t(c.a.n_logits), 2});
  int32_t* ip = idx.mutable_data();
  float* pp = prob.mutable_data();
  {
    py::gil_scoped_release nogil;
    m.forward_top2(c.a, ip, pp);
  }
  return py::make_tuple(idx, prob);
}

// Sampling's forward: (stats [rows, 2], count [rows], candidates [rows, V, 2]),
// what Model::forward_candidates brought to the host (rows past count unset).
py::tuple model_forward_candidates(Model& m, ForwardCall::I32 tokens, ForwardCall::I32 positions, PageTable& cache,
                                   int64_t write_start, int64_t n_kv, const py::object& kv_limit,
                                   const py::object& logit_rows, float temperature, float top_p, int top_k,
                                   int32_t exclude) {
  ForwardCall c(std::move(tokens), std::move(positions), cache, write_start, n_kv, kv_limit, py::none(), logit_rows);
  SamplingCandidates out;
  {
    py::gil_scoped_release nogil;
    m.forward_candidates(c.a, {temperature, top_p, top_k, exclude}, &out);
  }
  const py::ssize_t rows = c.a.n_logits, vocab = m.config().vocab_size;
  py::array_t<float> stats({rows, py::ssize_t(2)}, out.stats.data());
  py::array_t<int32_t> count(rows, out.count.data());
  py::array_t<int32_t> cand({rows, vocab, py::ssize_t(2)}, out.pairs.data());
  return py::make_tuple(stats, count, cand);
}

void model_set_weight(Model& m, const std::string& name, const py::buffer& buf, const std::string& dtype,
                      const std::vector<int64_t>& shape) {
  const py::buffer_info info = buf.request();
  const DType t = dtype_from_name(dtype.c_str());
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  FDL_CHECK(size_t(info.size * info.itemsize) == size_t(n) * dtype_size(t), "tensor '", name, "': ",
            info.size * info.itemsize, " bytes of data for ", n, " elements of ", dtype_name(t));
  py::gil_scoped_release nogil;
  m.set_weight(name, info.ptr, t, shape);
}

// Runs one op on a device for the tests: inputs are uploaded, outputs are
// registered and copied back into their numpy arrays by finish().
struct OnDevice {
  Device dev;
  std::vector<Buffer> bufs;
  std::vector<std::pair<TensorView, TensorView>> outs;

  explicit OnDevice(const std::string& name) {
    FDL_CHECK(name == "cpu" || name == "cuda", "device must be 'cpu' or 'cuda', got '", name, "'");
    dev = name == "cuda" ? Device::CUDA : Device::CPU;
  }
  TensorView in(const TensorView& host) {
    if (dev == Device::CPU || !host.defined()) return host;
    bufs.emplace_back(host.nbytes(), dev);
    copy_bytes(bufs.back().data(), host.data, host.nbytes(), dev);
    TensorView v = host;
    v.data = bufs.back().data();
    v.device = dev;
    return v;
  }
  TensorView out(const TensorView& host) {
    TensorView v = in(host);
    outs.emplace_back(host, v);
    return v;
  }
  // Layer 0 of a pool through a page table that lives where the op runs.
  PagedKV layer0(const PagePool& pool, std::vector<int32_t>& table) {
    const TensorView t = in(TensorView(table.data(), DType::I32, {int64_t(table.size())}));
    return pool.layer(0, t.ptr<int32_t>(), int(table.size()));
  }
  void finish() {
    if (dev == Device::CPU) return;
    for (auto& hv : outs) copy_bytes(hv.first.data, hv.second.data, hv.first.nbytes(), dev);
  }
};

void bind_ops(py::module_& m) {
  // Thin numpy wrappers used by the kernel tests; each allocates its output.
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
    sample_rows(c, rows, vocab - (exclude >= 0 ? 1 : 0), o, rng, token.mutable_data(), prob.mutable_data());
    return py::make_tuple(token, prob);
  }, py::arg("logits"), py::arg("temperature"), py::arg("top_p") = 1.f, py::arg("top_k") = 0,
     py::arg("exclude") = -1, py::arg("seed") = 0, py::arg("device") = "cpu");
  // One denoising forward's decisions on a copy of state: returns (state after, staging).
  m.def("denoise_decide", [](py::array_t<int32_t, py::array::c_style | py::array::forcecast> state, py::array index,
                             py::array prob, int64_t staging_len, std::vector<int> shape, int32_t ran,
                             const std::string& device) {
    FDL_CHECK(shape.size() == 5, "shape must be (block, sub, pages, rows_full, rows_sub)");
    py::array_t<int32_t> st(state.size());
    std::memcpy(st.mutable_data(), state.data(), size_t(state.size()) * 4);
    py::array_t<int32_t> staging(staging_len);
    std::fill(staging.mutable_data(), staging.mutable_data() + staging_len, -7);
    OnDevice d(device);
    ops::denoise_decide(d.out(as_view(st)), d.in(as_view(index)), d.in(as_view(prob)), d.out(as_view(staging)),
                        {shape[0], shape[1], shape[2], shape[3], shape[4]}, ran);
    d.finish();
    return py::make_tuple(st, staging);
  }, py::arg("state"), py::arg("index"), py::arg("prob"), py::arg("staging_len"), py::arg("shape"), py::arg("ran"),
     py::arg("device") = "cpu");
  m.def("lm_head_top2", [](py::array x, py::object w, const std::string& dt, bool packed, const std::string& device) {
    const TensorView wv = packed ? [&] {  // w is pack_bf16's (packed, N, K)
      auto t = w.cast<py::tuple>();
      return packed_view(as_view(t[0].cast<py::array>(), dt), t[1].cast<int64_t>(), t[2].cast<int64_t>());
    }() : as_view(w.cast<py::array>(), dt);
    py::array_t<int32_t> idx({x.shape(0), py::ssize_t(2)});
    auto prob = empty_f32({x.shape(0), 2});
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
  // The fused QKV split + RoPE + cache append; returns q with RoPE.
  m.def("qkv_rope_append", [](py::array qkv, py::array pos, py::array inv_freq, int64_t heads, PagePool& pool,
                              std::vector<int32_t> table, int64_t start) {
    const int64_t hd = pool.geometry().head_dim;
    auto q = empty_f32({qkv.shape(0), py::ssize_t(heads), py::ssize_t(hd)});
    OnDevice d(device_name(pool.device()));
    ops::qkv_rope_append(d.in(as_view(qkv)), d.in(as_view(pos)), d.in(as_view(inv_freq)), d.layer0(pool, table), start,
                         d.out(as_view(q)));
    d.finish();
    return q;
  });
  // Attention over what a pool already holds (no write).
  m.def("attend", [](py::array q, PagePool& pool, std::vector<int32_t> table, int64_t n_kv, float scale) {
    OnDevice d(device_name(pool.device()));
    auto out = empty_f32({q.shape(0), q.shape(1) * q.shape(2)});
    ops::attention(d.in(as_view(q)), d.layer0(pool, table), n_kv, scale, TensorView(),
                   TensorView(), d.out(as_view(out)));
    d.finish();
    return out;
  });
  // Attention over a paged cache built from dense k, v [n_kv, kv_heads, hd]
  // scattered into the pool pages listed in page_table.
  m.def("paged_attention", [](py::array q, py::array k, py::array v, PagePool& pool, std::vector<int32_t> table,
                              float scale, py::object kv_limit, py::object mask, const std::string& out_dtype) {
    py::array out = operand_out({q.shape(0), q.shape(1) * q.shape(2)}, out_dtype);  // checked before K/V are written
    // The pool's device decides where the op runs; the page table goes with it.
    OnDevice d(device_name(pool.device()));
    const PagedKV kv = d.layer0(pool, table);
    ops::kv_write(kv, d.in(as_view(k)), d.in(as_view(v)), 0);
    ops::attention(d.in(as_view(q)), kv, k.shape(0), scale, d.in(opt_view(kv_limit)), d.in(opt_view(mask, "uint8")),
                   d.out(as_view(out, out_dtype)));
    d.finish();
    return out;
  }, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("pool"), py::arg("page_table"), py::arg("scale"),
     py::arg("kv_limit") = py::none(), py::arg("mask") = py::none(), py::arg("out_dtype") = "float32");
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastdllm_rt native runtime";
  py::register_exception<BudgetExceeded>(m, "MemoryBudgetError", PyExc_MemoryError);

  m.def("cuda_status", &cuda_status_dict, "Whether the CUDA backend was built and which devices it sees.");
  m.def("cpu_isa", [] { return std::string(cpu::isa_name(cpu::isa())); },
        "The CPU kernel ISA chosen at run time (honours FASTDLLM_ISA=avx2).");

  m.def("set_num_threads", [](int n) {
    FDL_CHECK(n > 0, "threads must be > 0, got ", n);
    omp_set_num_threads(n);
  });
  m.def("get_num_threads", [] { return omp_get_max_threads(); });
  m.def("profile_start", [] {
    profiler::take();
    profiler::set_enabled(true);
  }, "Start timing each op of model forwards (for benchmarks).");
  m.def("profile_stop", [] {
    profiler::set_enabled(false);
    py::dict d;
    for (const auto& kv : profiler::take())
      d[py::str(kv.first)] = py::make_tuple(kv.second.calls, kv.second.seconds);
    return d;
  }, "Stop timing; returns {op: (calls, seconds)}.");

  py::module_ plans_m = m.def_submodule("plans", "The CUDA kernels' host-side launch decisions (ops/launch_plans.h)");
  plans_m.def("choose_gemm", [](const std::string& dtype, int64_t m, int64_t n, int64_t k) {
    return std::string(plans::gemm_kind_name(plans::choose_gemm(dtype_from_name(dtype.c_str()), m, n, k)));
  }, py::arg("weight_dtype"), py::arg("m"), py::arg("n"), py::arg("k"));
  plans_m.def("attention", [](int64_t len_q, int64_t kv_heads, int64_t n_kv, int64_t target_ctas) {
    const auto p = plans::plan_attention(len_q, kv_heads, n_kv, target_ctas);
    py::dict d;
    d["query_tiles"] = p.query_tiles;
    d["splits"] = p.splits;
    d["keys_per_split"] = p.keys_per_split;
    return d;
  }, py::arg("len_q"), py::arg("kv_heads"), py::arg("n_kv"), py::arg("target_ctas") = 264);
  plans_m.def("logit_rows_bucket", &plans::logit_rows_bucket, py::arg("n_logits"), py::arg("n"));

  py::module_ ops_m = m.def_submodule("ops", "Single ops on numpy arrays (for tests and tools)");
  bind_ops(ops_m);

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
  // The graph cache's policy over a fake backend (capture runs the body and
  // returns a handle; launches and destroys are counted), for tests in CI.
  struct GraphCacheProbe {
    int64_t captures = 0, guarded_captures = 0, launches = 0, destroys = 0, body_runs = 0, next = 1;
    static GraphKey key(int64_t n, int64_t n_logits, int output, int64_t pages) {
      GraphKey k;
      k.n = n;
      k.n_logits = n_logits;
      k.output = output;
      k.pages = pages;
      return k;
    }
    GraphCache cache;
    explicit GraphCacheProbe(size_t max_entries)
        : cache(GraphCache::Backend{[this](const std::function<void()>& body) -> void* {
                                      ++captures;
                                      body();
                                      return reinterpret_cast<void*>(next++);
                                    },
                                    [this](void*) { ++launches; }, [this](void*) { ++destroys; },
                                    [this](const int32_t*, int32_t, const std::function<void()>& body) -> void* {
                                      ++guarded_captures;
                                      body();
                                      return reinterpret_cast<void*>(next++);
                                    }},
                max_entries) {}
  };
  py::class_<GraphCacheProbe>(m, "GraphCacheProbe")
      .def(py::init<size_t>(), py::arg("max_entries"))
      .def("run", [](GraphCacheProbe& g, int64_t n, int64_t n_logits, bool top2, int64_t pages, uint64_t epoch,
                     bool guarded) {
        const GraphKey k = GraphCacheProbe::key(n, n_logits, guarded ? 3 : top2 ? 1 : 0, pages);
        static const int32_t flag = 1;
        const GraphCache::Guard guard{&flag, 1};
        const auto r = g.cache.run(k, epoch, [&g] { ++g.body_runs; }, guarded ? &guard : nullptr);
        return std::string(r == GraphCache::Run::Eager ? "eager" : r == GraphCache::Run::Captured ? "captured" : "replayed");
      }, py::arg("n"), py::arg("n_logits"), py::arg("top2"), py::arg("pages"), py::arg("epoch") = 0,
         py::arg("guarded") = false)
      .def("replay", [](GraphCacheProbe& g, int64_t n, int64_t n_logits, int64_t pages, uint64_t epoch) {
        return g.cache.replay(GraphCacheProbe::key(n, n_logits, 3, pages), epoch);
      }, py::arg("n"), py::arg("n_logits"), py::arg("pages"), py::arg("epoch") = 0)
      .def_property_readonly("size", [](const GraphCacheProbe& g) { return g.cache.size(); })
      .def_property_readonly("counts", [](const GraphCacheProbe& g) {
        py::dict d;
        d["captures"] = g.captures;
        d["guarded_captures"] = g.guarded_captures;
        d["launches"] = g.launches;
        d["destroys"] = g.destroys;
        d["body_runs"] = g.body_runs;
        return d;
      });
  py::class_<HostBackedAllocator>(m, "HostCachingAllocator")
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

  py::class_<PagePool>(m, "PagePool")
      .def(py::init([](int num_layers, int num_kv_heads, int head_dim, int page_size, int64_t max_pages,
                       const std::string& device) {
             KVGeometry g{num_layers, num_kv_heads, head_dim, page_size};
             return new PagePool(g, max_pages, OnDevice(device).dev);
           }),
           py::arg("num_layers"), py::arg("num_kv_heads"), py::arg("head_dim"), py::arg("page_size"),
           py::arg("max_pages"), py::arg("device") = "cpu")
      .def_property_readonly("capacity", &PagePool::capacity)
      .def_property_readonly("pages_in_use", &PagePool::pages_in_use)
      .def_property_readonly("page_bytes", [](const PagePool& p) { return p.geometry().page_bytes(); })
      .def_property_readonly("page_size", [](const PagePool& p) { return p.geometry().page_size; })
      .def("refcount", &PagePool::refcount);

  py::class_<PageTable>(m, "PageTable")
      .def(py::init<PagePool*>(), py::keep_alive<1, 2>(), py::arg("pool"))
      .def("reserve_tokens", &PageTable::reserve_tokens)
      .def("share_from", &PageTable::share_from)
      .def("clear", &PageTable::clear)
      .def_property_readonly("pages", &PageTable::pages)
      .def_property_readonly("capacity_tokens", &PageTable::capacity_tokens);

  py::class_<Model>(m, "Model")
      .def(py::init([](const py::dict& cfg, const std::string& dtype, const std::string& device) {
             FDL_CHECK(device == "cpu" || device == "cuda", "device must be 'cpu' or 'cuda', got '", device, "'");
             return new Model(config_from_dict(cfg), dtype_from_name(dtype.c_str()),
                              device == "cuda" ? Device::CUDA : Device::CPU);
           }),
           py::arg("config"), py::arg("dtype"), py::arg("device") = "cpu")
      .def_property_readonly("device", [](const Model& mdl) { return std::string(device_name(mdl.device())); })
      .def("expected_weights", &Model::expected_weights)
      .def("set_weight", &model_set_weight)
      .def("finalize", &Model::finalize)
      .def_property_readonly("ready", &Model::ready)
      .def_property_readonly("dtype", [](const Model& mdl) { return std::string(dtype_name(mdl.weight_dtype())); })
      .def("make_pool", [](const Model& mdl, int page_size, int64_t max_pages) {
             return new PagePool(mdl.kv_geometry(page_size), max_pages, mdl.device());
           }, py::arg("page_size"), py::arg("max_pages"))
      .def("forward", &model_forward, py::arg("tokens"), py::arg("positions"), py::arg("cache"),
           py::arg("write_start"), py::arg("n_kv"), py::arg("kv_limit") = py::none(), py::arg("mask") = py::none(),
           py::arg("logit_rows") = py::none())
      .def_property_readonly("graph_runs", [](const Model& mdl) {
        const auto r = mdl.graph_runs();
        py::dict d;
        d["eager"] = r.eager;
        d["captured"] = r.captured;
        d["replayed"] = r.replayed;
        d["speculative"] = r.speculative;  // device decisions' launches queued ahead (runtime/device_decisions.h)
        return d;
      })
      .def("forward_top2", &model_forward_top2, py::arg("tokens"), py::arg("positions"), py::arg("cache"),
           py::arg("write_start"), py::arg("n_kv"), py::arg("kv_limit") = py::none(),
           py::arg("logit_rows") = py::none())
      .def("forward_candidates", &model_forward_candidates, py::arg("tokens"), py::arg("positions"),
           py::arg("cache"), py::arg("write_start"), py::arg("n_kv"), py::arg("kv_limit") = py::none(),
           py::arg("logit_rows") = py::none(), py::arg("temperature") = 1.f, py::arg("top_p") = 1.f,
           py::arg("top_k") = 0, py::arg("exclude") = -1);

  py::class_<GenerationParams>(m, "GenerationParams")
      .def(py::init<>())
      .def_readwrite("max_new_tokens", &GenerationParams::max_new_tokens)
      .def_readwrite("block_size", &GenerationParams::block_size)
      .def_readwrite("sub_block_size", &GenerationParams::sub_block_size)
      .def_readwrite("threshold", &GenerationParams::threshold)
      .def_readwrite("use_block_cache", &GenerationParams::use_block_cache)
      .def_readwrite("mask_id", &GenerationParams::mask_id)
      .def_readwrite("stop_id", &GenerationParams::stop_id)
      .def_readwrite("temperature", &GenerationParams::temperature)
      .def_readwrite("top_p", &GenerationParams::top_p)
      .def_readwrite("top_k", &GenerationParams::top_k)
      .def_readwrite("seed", &GenerationParams::seed)
      .def_readwrite("max_seq_len", &GenerationParams::max_seq_len)
      .def_readwrite("device_decisions", &GenerationParams::device_decisions);

  py::class_<Generation>(m, "Generation")
      .def(py::init<Model&, PagePool&, std::vector<int32_t>, const GenerationParams&>(), py::keep_alive<1, 2>(),
           py::keep_alive<1, 3>(), py::arg("model"), py::arg("pool"), py::arg("prompt"), py::arg("params"))
      .def("step", [](Generation& g) {
        py::gil_scoped_release nogil;
        return g.step();
      }, "Runs one model forward; False once generation has finished.")
      .def("run", [](Generation& g) {
        py::gil_scoped_release nogil;
        while (g.step()) {
        }
      }, "Runs to the end.")
      .def_property_readonly("done", &Generation::done)
      .def_property_readonly("tokens", &Generation::tokens)
      .def_property_readonly("prompt_len", &Generation::prompt_len)
      .def_property_readonly("decoded_prefix", &Generation::decoded_prefix)
      .def_property_readonly("output", &Generation::output)
      .def_property_readonly("num_forwards", &Generation::num_forwards)
      .def_property_readonly("decisions_on_device", &Generation::decisions_on_device)
      .def_property_readonly("finish_reason", &Generation::finish_reason)
      .def_property_readonly("last_step", [](const Generation& g) {
        switch (g.last_step()) {
          case StepKind::Prefill: return "prefill";
          case StepKind::Denoise: return "denoise";
          case StepKind::DenoiseSubBlock: return "denoise_sub_block";
          case StepKind::Commit: return "commit";
          default: return "";
        }
      });
}
