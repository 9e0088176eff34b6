// The Qwen2 / Fast-dLLM v2 decoder on one device. Weights are handed over one
// tensor at a time (from the Python loader's memory maps) and copied once into
// the model's own storage in the compute dtype; q/k/v and gate/up are fused into
// one matrix each so that a forward reads every weight once.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "fastdllm/kv_cache.h"
#include "fastdllm/ops.h"
#include "fastdllm/tensor.h"

namespace fastdllm {

class GraphCache;
struct StepInputs;

struct ModelConfig {
  int64_t vocab_size = 0, hidden_size = 0, intermediate_size = 0;
  int num_layers = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0;
  float rope_theta = 10000.f, rms_norm_eps = 1e-6f;
  bool tie_word_embeddings = false;
  void validate() const;  // throws InvalidArgument naming the config key
};

// One forward: n new tokens at absolute positions, their K/V written to tokens
// [write_start, write_start + n) of the page table, attention over the first
// n_kv tokens with an optional per-query key limit and/or boolean mask, logits
// for the requested rows only.
struct ForwardArgs {
  const int32_t* tokens = nullptr;
  const int32_t* positions = nullptr;
  int64_t n = 0;
  const PagePool* pool = nullptr;
  const int32_t* page_table = nullptr;
  int num_pages = 0;
  int64_t write_start = 0;
  int64_t n_kv = 0;
  const int32_t* kv_limit = nullptr;  // [n] or null
  const uint8_t* mask = nullptr;      // [n, n_kv] or null
  const int32_t* logit_rows = nullptr;
  int64_t n_logits = 0;
};

// Sampling's forward result per requested row (host memory): what
// ops::sampling_candidates leaves, row r's count[r] (token, logit bits) pairs
// at row(r). runtime/sampling.h draws from them.
struct SamplingCandidates {
  std::vector<float> stats;    // [rows, 2]: maximum logit, softmax denominator
  std::vector<int32_t> count;  // [rows]
  std::vector<int32_t> pairs;  // [rows, stride, 2]
  int64_t stride = 0;          // pairs per row (the vocabulary size)
  const int32_t* row(int64_t r) const { return pairs.data() + 2 * r * stride; }
  void resize(int64_t rows, int64_t vocab) {  // keeps the storage when the size repeats
    stride = vocab;
    stats.resize(size_t(2 * rows));
    count.resize(size_t(rows));
    pairs.resize(size_t(2 * rows * vocab));
  }
};

class Model {
 public:
  Model(const ModelConfig& config, DType weight_dtype, Device device = Device::CPU);
  ~Model();

  const ModelConfig& config() const { return config_; }
  DType weight_dtype() const { return weight_dtype_; }
  Device device() const { return device_; }
  KVGeometry kv_geometry(int page_size) const;

  // Names and shapes the checkpoint must provide (lm_head.weight only when untied).
  const std::map<std::string, std::vector<int64_t>>& expected_weights() const { return expected_; }
  // Copies (and converts) one checkpoint tensor; data is row-major in src_dtype.
  void set_weight(const std::string& name, const void* data, DType src_dtype,
                  const std::vector<int64_t>& shape);
  // Checks that every expected weight was set; throws naming the first missing one.
  void finalize();
  bool ready() const { return ready_; }

  // Writes n_logits x vocab_size fp32 logits to out (host memory).
  void forward(const ForwardArgs& args, float* logits_out);
  // Greedy decoding's forward: per requested row, index/prob [n_logits, 2] (host)
  // get the top-1 token and the best other token with their softmax
  // probabilities (ops::lm_head_top2); the logits are never materialised.
  void forward_top2(const ForwardArgs& args, int32_t* index_out, float* prob_out);
  // Sampling's forward: the lm_head and ops::sampling_candidates run on the
  // model's device; only the candidates come to the host (on a GPU: one wait
  // for every row's first kCandidatePrefix candidates, one more per row beyond).
  void forward_candidates(const ForwardArgs& args, const ops::SamplingOptions& options, SamplingCandidates* out);
  static constexpr int64_t kCandidatePrefix = 1024;

  // Denoising forwards whose threshold decisions stay on the model's device
  // (ops/denoise_rule.h; the decode loop in runtime/generation.cc uses them).
  // denoise_begin puts a block's state (denoise header, block tokens, page
  // table; the header's `go` names the forward to run) and that forward's step
  // inputs on the device. Each denoise_launch queues one forward of `kind` (the
  // lm_head's greedy top-2 for the sub-block's positions) that runs only if the
  // device's state names that kind when it is reached, then the decisions
  // (ops::denoise_decide), then a copy of the header and block tokens into
  // `result` (denoise::kHeaderWords + block words of host memory, page-locked
  // on a GPU), complete once `event` has been waited for (on the CPU at once).
  // The first launch after a begin must be of the kind it names. Speculative
  // launches, queued before the host has read the previous result, replay
  // captured graphs only and return false (queueing nothing) where there is
  // none, or when another owner's state has been put on the device since.
  void denoise_begin(const void* owner, const int32_t* state, const PagePool* pool);
  bool denoise_launch(const void* owner, int32_t kind, bool speculative, int32_t* result, void* event);

  // On CUDA, forwards without a mask replay captured graphs (runtime/graph_cache.h;
  // FASTDLLM_CUDA_GRAPHS=0 turns them off): how many ran eagerly, were captured,
  // were replayed. All zero on the CPU.
  struct GraphRuns {
    int64_t eager = 0, captured = 0, replayed = 0, speculative = 0;
  };
  GraphRuns graph_runs() const { return {graph_runs_[0], graph_runs_[1], graph_runs_[2], graph_runs_[3]}; }

 private:
  struct Layer {
    Buffer qkv_w, qkv_b, o_w, gate_up_w, down_w, in_norm, post_norm;
  };
  Buffer matrix_buffer(int64_t rows, int64_t cols, bool packed) const;
  TensorView weight_view(const Buffer& b, std::initializer_list<int64_t> dims, bool packed) const;
  void check_forward(const ForwardArgs& a) const;
  // Where a forward writes its result: logits, the greedy top-2 (index, prob),
  // or sampling's candidates (the logits then being scratch).
  struct Output {
    float* logits = nullptr;
    int32_t* index = nullptr;
    float* prob = nullptr;
    float* stats = nullptr;
    int32_t* count = nullptr;
    int32_t* cand = nullptr;
    ops::SamplingOptions sampling;
  };
  struct Arena {
    static constexpr int kSlots = 8;
    float* slot[kSlots];
  };
  Arena arena(int64_t n, int64_t n_logits);
  void run(const ForwardArgs& args, const Output& out);
  void download_candidates(const Output& dev, const Output& out, int64_t rows);
  void encode(const ForwardArgs& args, const Arena& arena, const int32_t* step, const uint8_t* mask,
              const Output& out);

  ModelConfig config_;
  DType weight_dtype_;
  Device device_;
  bool packed_ = false;     // bf16 matrices in the packed layout
  bool fused_mlp_ = false;  // gate/up interleaved; SiLU*mul in the gate/up GEMM's epilogue
  Buffer embed_, lm_head_, final_norm_, inv_freq_;
  std::vector<Layer> layers_;
  std::map<std::string, std::vector<int64_t>> make_expected_weights() const;
  std::map<std::string, std::vector<int64_t>> expected_;  // name -> shape, from the config once
  std::set<std::string> loaded_;
  bool ready_ = false;
  // Activation arena, grown to the largest forward seen and reused; on a GPU
  // also the staging of per-forward host arrays and the logits before download.
  Buffer act_;
  Buffer staging_, logits_dev_;
  std::unique_ptr<StepInputs> step_;
  std::vector<int32_t> top2_host_;  // the greedy results as they come down from a GPU
  std::unique_ptr<GraphCache> graphs_;  // CUDA only
  uint64_t buffers_epoch_ = 0;          // bumped when act_/staging_/logits_dev_/denoise_state_ move
  uint64_t graph_epoch() const;
  void grow_buffers(const std::function<void()>& grow);  // runs grow; a moved buffer starts a new epoch
  int64_t graph_runs_[4] = {0, 0, 0, 0};
  // Device decisions: the state on the device, whose it is, its shape
  // (the header as begun) and the pool the forwards write to.
  Buffer denoise_state_;
  const void* denoise_owner_ = nullptr;
  std::vector<int32_t> denoise_header_;
  const PagePool* denoise_pool_ = nullptr;
  bool guarded_graphs_failed_ = false;  // the driver refused a conditional graph: launches stay eager
};

}  // namespace fastdllm
