// The runtime API of fastdllm_rt._C: the model (weights handed over from the
// Python loader), generation parameters, and the engine loop with its request
// handles. The GIL is released around every call that runs kernels or waits.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "bindings/bindings.h"
#include "bindings/numpy_views.h"
#include "fastdllm/model.h"
#include "runtime/engine_loop.h"

namespace fastdllm::bindings {

namespace {

ModelConfig config_from_dict(const py::dict& d) {
  ModelConfig c;
  auto get = [&](const char* k) -> py::handle {
    FDL_CHECK(d.contains(k), "model config is missing '", k, "'");
    return d[k];
  };
  c.vocab_size = get("vocab_size").cast<int64_t>();
  c.hidden_size = get("hidden_size").cast<int64_t>();
  c.intermediate_size = get("intermediate_size").cast<int64_t>();
  c.num_layers = get("num_hidden_layers").cast<int>();
  c.num_heads = get("num_attention_heads").cast<int>();
  c.num_kv_heads = get("num_key_value_heads").cast<int>();
  c.head_dim = get("head_dim").cast<int>();
  c.rope_theta = get("rope_theta").cast<float>();
  c.rms_norm_eps = get("rms_norm_eps").cast<float>();
  c.tie_word_embeddings = get("tie_word_embeddings").cast<bool>();
  return c;
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

using U8Array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;
using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;
using I32Array = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

// Canonical codes of one layer matrix (fastdllm/weight_format.h): q [rows, K]
// uint8, scales and zeros [rows, groups] float32, perm [K] int32 or None.
void model_set_quantized(Model& m, const std::string& name, const U8Array& q, const F32Array& scales,
                         const F32Array& zeros, const std::optional<I32Array>& perm) {
  FDL_CHECK(q.ndim() == 2, "tensor '", name, "': codes must be 2-D [rows, in_features], got ", q.ndim(), "-D");
  const int64_t rows = q.shape(0), k = q.shape(1);
  FDL_CHECK(scales.ndim() == 2 && zeros.ndim() == 2 && scales.shape(0) == rows && zeros.shape(0) == rows &&
                scales.shape(1) == zeros.shape(1),
            "tensor '", name, "': scales and zeros must both be [", rows, ", groups]");
  const int64_t groups = scales.shape(1);
  const LayerWeightFormat& f = m.layer_format();
  const int64_t gs = name == "lm_head.weight" ? 0 : f.group_size;  // an int8 lm_head: one scale per row
  const int64_t expect_groups = gs ? k / gs : 1;
  FDL_CHECK(groups == expect_groups, "tensor '", name, "': ", groups, " groups of scales, expected ", expect_groups,
            " (group size ", gs ? gs : k, " over ", k, " inputs)");
  const int32_t* p = nullptr;
  if (perm) {
    FDL_CHECK(perm->ndim() == 1 && perm->shape(0) == k, "tensor '", name, "': perm must be [", k, "]");
    p = perm->data();
  }
  py::gil_scoped_release nogil;
  m.set_quantized_weight(name, q.data(), scales.data(), zeros.data(), p, {rows, k});
}

py::dict state_dict(const RequestState& s) {
  py::dict d;
  d["version"] = s.version;
  d["decoded"] = s.decoded;
  d["done"] = s.done;
  d["finish_reason"] = s.finish_reason;
  d["error"] = s.error;
  d["output"] = s.output;
  d["commit_steps"] = s.commit_steps;
  d["prompt_len"] = s.prompt_len;
  d["block_lengths"] = s.block_lengths;
  d["num_forwards"] = s.num_forwards;
  d["prefix_hit_tokens"] = s.prefix_hit_tokens;
  d["submitted_s"] = s.submitted_s;
  d["first_forward_s"] = s.first_forward_s;
  d["finished_s"] = s.finished_s;
  return d;
}

}  // namespace

DType kv_dtype_from_name(const std::string& name) {
  FDL_CHECK(name == "float32" || name == "bfloat16", "kv_dtype must be 'float32' or 'bfloat16', got '", name, "'");
  return dtype_from_name(name.c_str());
}

SchedulerConfig scheduler_config(int page_size, int64_t max_pages, const std::string& kv_dtype, bool prefix_cache,
                                 int max_batch_size, int64_t max_batch_tokens) {
  SchedulerConfig c;
  c.page_size = page_size;
  c.max_pages = max_pages;
  c.kv_dtype = kv_dtype_from_name(kv_dtype);
  c.prefix_cache = prefix_cache;
  c.max_batch_size = max_batch_size;
  c.max_batch_tokens = max_batch_tokens;
  return c;
}

py::dict stats_dict(const SchedulerStats& s) {
  py::dict d;
  d["model_forwards"] = s.model_forwards;
  d["sequence_forwards"] = s.sequence_forwards;
  d["batch_tokens"] = s.batch_tokens;
  py::dict hist;
  for (const auto& kv : s.batch_size_histogram) hist[py::int_(kv.first)] = kv.second;
  d["batch_size_histogram"] = hist;
  d["prefix_cache_hit_tokens"] = s.prefix_cache_hit_tokens;
  d["pages_in_use"] = s.pages_in_use;
  d["pages_cached"] = s.pages_cached;
  d["pages_reserved"] = s.pages_reserved;
  d["pages_total"] = s.pages_total;
  d["requests_waiting"] = s.waiting;
  d["requests_running"] = s.running;
  d["requests_finished"] = s.finished;
  d["requests_failed"] = s.failed;
  d["requests_cancelled"] = s.cancelled;
  d["tokens_generated"] = s.tokens_generated;
  return d;
}

void bind_runtime(py::module_& m) {
  m.def("checkpoint_tensors", [](const py::dict& cfg) { return Model::checkpoint_tensors(config_from_dict(cfg)); },
        py::arg("config"), "The tensor names and shapes a checkpoint of this config holds (nothing is allocated).");
  py::class_<Model, std::shared_ptr<Model>>(m, "Model")
      .def(py::init([](const py::dict& cfg, const std::string& dtype, const std::string& device,
                       const std::string& weight_format, int64_t group_size, const std::string& lm_head_format) {
             LayerWeightFormat f;
             f.format = weight_format_from_name(weight_format.c_str());
             f.group_size = group_size;
             f.lm_head = weight_format_from_name(lm_head_format.c_str());
             return std::make_shared<Model>(config_from_dict(cfg), dtype_from_name(dtype.c_str()),
                                            device_from_name(device), f);
           }),
           py::arg("config"), py::arg("dtype"), py::arg("device") = "cpu", py::arg("weight_format") = "dense",
           py::arg("group_size") = 0, py::arg("lm_head_format") = "dense")
      .def_property_readonly("lm_head_format",
                             [](const Model& mdl) { return std::string(format_traits(mdl.layer_format().lm_head).name); })
      .def_property_readonly("weight_format",
                             [](const Model& mdl) { return std::string(format_traits(mdl.layer_format().format).name); })
      .def_property_readonly("group_size", [](const Model& mdl) { return mdl.layer_format().group_size; })
      .def_property_readonly("weight_bytes", &Model::weight_bytes)
      .def("set_quantized_weight", &model_set_quantized, py::arg("name"), py::arg("codes"), py::arg("scales"),
           py::arg("zeros"), py::arg("perm") = py::none())
      .def_property_readonly("device", [](const Model& mdl) { return std::string(device_name(mdl.device())); })
      .def_property_readonly("dtype", [](const Model& mdl) { return std::string(dtype_name(mdl.weight_dtype())); })
      .def("expected_weights", &Model::expected_weights)
      .def("set_weight", &model_set_weight)
      .def("finalize", &Model::finalize)
      .def_property_readonly("ready", &Model::ready)
      .def_property_readonly("graph_runs", [](const Model& mdl) {
        const auto r = mdl.graph_runs();
        py::dict d;
        d["eager"] = r.eager;
        d["captured"] = r.captured;
        d["replayed"] = r.replayed;
        return d;
      });

  py::class_<GenerationParams>(m, "GenerationParams")
      .def(py::init<>())
      .def_readwrite("max_new_tokens", &GenerationParams::max_new_tokens)
      .def_property("length_rule",
                    [](const GenerationParams& p) {
                      return std::string(p.length_rule == LengthRule::Tokens ? "tokens" : "upstream");
                    },
                    [](GenerationParams& p, const std::string& v) {
                      FDL_CHECK(v == "tokens" || v == "upstream", "length_rule must be 'tokens' or 'upstream', got '",
                                v, "'");
                      p.length_rule = v == "tokens" ? LengthRule::Tokens : LengthRule::Upstream;
                    })
      .def_readwrite("block_size", &GenerationParams::block_size)
      .def_readwrite("sub_block_size", &GenerationParams::sub_block_size)
      .def_readwrite("threshold", &GenerationParams::threshold)
      .def_readwrite("sampler", &GenerationParams::sampler)
      .def_readwrite("entropy_threshold", &GenerationParams::entropy_threshold)
      .def_readwrite("margin_threshold", &GenerationParams::margin_threshold)
      .def_readwrite("factor", &GenerationParams::factor)
      .def_readwrite("steps", &GenerationParams::steps)
      .def_readwrite("delimiter_ids", &GenerationParams::delimiter_ids)
      .def_readwrite("delimiter_threshold", &GenerationParams::delimiter_threshold)
      .def_property(
          "family", [](const GenerationParams& p) { return std::string(family_name(p.family)); },
          [](GenerationParams& p, const std::string& v) {
            if (v == "fast_dllm_v2") p.family = ModelFamily::FastDllmV2;
            else if (v == "llada") p.family = ModelFamily::LLaDA;
            else if (v == "dream") p.family = ModelFamily::Dream;
            else throw InvalidArgument("family must be 'fast_dllm_v2', 'llada' or 'dream', got '" + v + "'");
          })
      .def_property(
          "cache", [](const GenerationParams& p) { return std::string(cache_name(p.cache)); },
          [](GenerationParams& p, const std::string& v) {
            if (v == "none") p.cache = CacheMode::None;
            else if (v == "prefix") p.cache = CacheMode::Prefix;
            else if (v == "dual") p.cache = CacheMode::Dual;
            else throw InvalidArgument("cache must be 'none', 'prefix' or 'dual', got '" + v + "'");
          })
      .def_readwrite("use_block_cache", &GenerationParams::use_block_cache)
      .def_readwrite("mask_id", &GenerationParams::mask_id)
      .def_readwrite("stop_id", &GenerationParams::stop_id)
      .def_readwrite("temperature", &GenerationParams::temperature)
      .def_readwrite("top_p", &GenerationParams::top_p)
      .def_readwrite("top_k", &GenerationParams::top_k)
      .def_readwrite("seed", &GenerationParams::seed)
      .def_readwrite("max_seq_len", &GenerationParams::max_seq_len);

  py::class_<Request, std::shared_ptr<Request>>(m, "Request")
      .def_property_readonly("id", &Request::id)
      .def("wait", [](const Request& r, uint64_t seen, double timeout_s) {
        py::gil_scoped_release nogil;
        return r.wait(seen, timeout_s);
      }, py::arg("seen"), py::arg("timeout_s") = -1.0,
         "Blocks until the state's version passes `seen` or timeout_s passes; returns the version.")
      .def("snapshot", [](const Request& r) { return state_dict(r.snapshot()); })
      .def("cancel", [](Request& r) {
        py::gil_scoped_release nogil;
        r.cancel();
      }, "Drops the request and frees its KV pages; returns once they are free.");

  py::class_<EngineLoop, std::shared_ptr<EngineLoop>>(m, "EngineLoop")
      .def(py::init([](std::shared_ptr<Model> model, int page_size, int64_t max_pages, const std::string& kv_dtype,
                       bool prefix_cache, int max_batch_size, int64_t max_batch_tokens, int threads) {
             return std::make_shared<EngineLoop>(
                 std::move(model),
                 scheduler_config(page_size, max_pages, kv_dtype, prefix_cache, max_batch_size, max_batch_tokens),
                 threads);
           }),
           py::arg("model"), py::arg("page_size"), py::arg("max_pages"), py::arg("kv_dtype") = "float32",
           py::arg("prefix_cache") = true, py::arg("max_batch_size") = 16, py::arg("max_batch_tokens") = 4096,
           py::arg("threads") = 0)
      .def("submit", [](EngineLoop& l, std::vector<int32_t> prompt, const GenerationParams& p) {
        return l.submit(std::move(prompt), p);
      }, py::keep_alive<0, 1>(), py::arg("prompt"), py::arg("params"))
      .def("stats", [](const EngineLoop& l) { return stats_dict(l.stats()); })
      .def("logits", [](EngineLoop& l, const std::vector<int32_t>& tokens, int block_size) {
        std::vector<float> v;
        {
          py::gil_scoped_release nogil;
          v = l.logits(tokens, block_size);
        }
        const py::ssize_t n = py::ssize_t(tokens.size()), V = py::ssize_t(v.size() / std::max<size_t>(1, tokens.size()));
        py::array_t<float> out({n, V});
        std::memcpy(out.mutable_data(), v.data(), v.size() * sizeof(float));
        return out;
      }, py::arg("tokens"), py::arg("block_size"))
      .def("wait_progress", [](const EngineLoop& l, uint64_t seen, double timeout_s) {
        py::gil_scoped_release nogil;
        return l.wait_progress(seen, timeout_s);
      }, py::arg("seen"), py::arg("timeout_s") = -1.0)
      .def_property_readonly("page_bytes",
                             [](const EngineLoop& l) { return l.scheduler().kv().pool().geometry().page_bytes(); })
      .def("close", [](EngineLoop& l) {
        py::gil_scoped_release nogil;
        l.close();
      });
}

}  // namespace fastdllm::bindings
