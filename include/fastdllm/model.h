// The Qwen2 / Fast-dLLM v2 decoder on one device, over a ragged batch: the
// tokens of many sequences in one forward, each sequence with its own pages in
// the KV store (fastdllm/paged_kv.h), its own positions and key limits, and
// its own output rows. The model knows no decode rule and no page ownership:
// the runtime's scheduler says which tokens run, which slots they write and
// which rows it wants back, in which form.
//
// Weights are handed over one tensor at a time (from the Python loader's memory
// maps) and copied once into the model's own storage (model/qwen2_weights.h).
// A forward is planned from the batch's composition, then run
// (model/forward_plan.h, model/forward_runner.h).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fastdllm/ops.h"
#include "fastdllm/paged_kv.h"
#include "fastdllm/tensor.h"
#include "fastdllm/weight_format.h"

namespace fastdllm {

class Qwen2Weights;
class ForwardRunner;
struct ForwardPlan;
struct PlanContext;
struct EncodeOutputs;

// The format of the layers' matrices (q/k/v/o, gate/up/down); the embedding,
// lm_head, norms and biases stay in the model's float dtype. group_size 0: one
// group per row (per-output-channel scales).
struct LayerWeightFormat {
  WeightFormat format = WeightFormat::Dense;
  int64_t group_size = 0;
  // The lm_head's own format: Dense (the model dtype) or Int8 (one scale per
  // row): the largest single matrix of a small model, read by every forward.
  WeightFormat lm_head = WeightFormat::Dense;
};

struct ModelConfig {
  int64_t vocab_size = 0, hidden_size = 0, intermediate_size = 0;
  int num_layers = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0;
  float rope_theta = 10000.f, rms_norm_eps = 1e-6f;
  bool tie_word_embeddings = false;
  void validate() const;  // throws InvalidArgument naming the config key
};

// One forward (host arrays). Sequence s owns tokens [qo_indptr[s],
// qo_indptr[s+1]) and the pages kv_indices[kv_indptr[s] .. kv_indptr[s+1]);
// its token i writes its K/V to slot write_offset[s] + (i - qo_indptr[s]) and
// sees slots [0, kv_limit[i]). Output rows are batch token indices:
//   greedy_rows   the top-2 tokens and probabilities (ops::lm_head_top2);
//   sample_rows   sampling's candidates under sample_options[r] (per row; a
//                 sequence's rows share one);
//   logit_rows    the raw fp32 logits (scoring, tests).
struct ForwardBatch {
  int num_seqs = 0;
  int64_t num_tokens = 0;
  const int32_t* tokens = nullptr;
  const int32_t* positions = nullptr;
  const int32_t* kv_limit = nullptr;
  const int32_t* qo_indptr = nullptr;
  const int32_t* kv_indptr = nullptr;
  const int32_t* kv_indices = nullptr;
  const int32_t* write_offset = nullptr;
  const int32_t* greedy_rows = nullptr;
  int64_t num_greedy = 0;
  const int32_t* sample_rows = nullptr;
  const ops::SamplingOptions* sample_options = nullptr;
  int64_t num_sample = 0;
  const int32_t* logit_rows = nullptr;
  int64_t num_logits = 0;
};

// Packs sequences into a ForwardBatch's CSR arrays (the scheduler's steps, the
// tests' forwards); keeps its storage between steps. Output rows are the caller's.
class ForwardBatchBuilder {
 public:
  void clear();
  // Appends a sequence (one position and key limit per token); returns the
  // batch index of its first token.
  int32_t add(const std::vector<int32_t>& tokens, const std::vector<int32_t>& positions,
              const std::vector<int32_t>& kv_limit, const std::vector<int32_t>& pages, int32_t write_offset);
  ForwardBatch batch() const;  // the sequences so far, no output rows

 private:
  std::vector<int32_t> tokens_, positions_, limits_, qo_{0}, kv_indptr_{0}, kv_indices_, write_offset_;
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

// Where a forward's results go (host memory), sized by the batch's row counts.
struct ForwardOutputs {
  int32_t* top2_index = nullptr;  // [num_greedy, 2]
  float* top2_prob = nullptr;     // [num_greedy, 2]
  SamplingCandidates* candidates = nullptr;  // resized to num_sample rows
  float* logits = nullptr;        // [num_logits, vocab_size]
};

// What a plan chose, for tests and tools (Model::describe_plan).
struct PlanSummary {
  int64_t tokens = 0, seqs = 0;          // as run (padded for a replayable graph)
  int64_t greedy_rows = 0;               // as run
  bool replayable = false;               // a CUDA graph of this shape may serve it
  int64_t attention_work = 0, attention_splits_max = 0, keys_per_split = 0;
  std::string gemm;                      // plans::GemmKind of the layers' GEMMs for these rows
};

class Model {
 public:
  Model(const ModelConfig& config, DType weight_dtype, Device device = Device::CPU,
        const LayerWeightFormat& layer_format = LayerWeightFormat());
  ~Model();

  const ModelConfig& config() const { return config_; }
  DType weight_dtype() const { return weight_dtype_; }
  Device device() const { return device_; }
  // The KV pages this model reads and writes; kv_dtype float32 or bfloat16.
  KVGeometry kv_geometry(int page_size, DType kv_dtype) const;

  // Names and shapes the checkpoint must provide (lm_head.weight only when untied).
  const std::map<std::string, std::vector<int64_t>>& expected_weights() const;
  // The same for a config, before anything is allocated (so that a loader can
  // check a checkpoint's headers against the config first).
  static std::map<std::string, std::vector<int64_t>> checkpoint_tensors(const ModelConfig& config);
  // Copies (and converts) one checkpoint tensor; data is row-major in src_dtype.
  void set_weight(const std::string& name, const void* data, DType src_dtype, const std::vector<int64_t>& shape);
  // One layer matrix of an integer-format model in the canonical form
  // (fastdllm/weight_format.h): codes q [rows, K] one per byte in perm's input
  // order, scales and zero points [rows, K / group_size] fp32, perm [K] or null.
  void set_quantized_weight(const std::string& name, const uint8_t* q, const float* scales, const float* zeros,
                            const int32_t* perm, const std::vector<int64_t>& shape);
  const LayerWeightFormat& layer_format() const;
  int64_t weight_bytes() const;  // what the stored weights take on the device
  // Checks that every expected weight was set; throws naming the first missing one.
  void finalize();
  bool ready() const;

  // One forward of a ragged batch over the pages of `kv` (validated first:
  // a bad batch throws InvalidArgument before anything runs).
  void forward(const ForwardBatch& batch, const KVStore& kv, const ForwardOutputs& out);
  // The plan forward() would make for this batch.
  PlanSummary describe_plan(const ForwardBatch& batch, const KVStore& kv) const;

  // On CUDA, greedy forwards replay captured graphs keyed by (token bucket,
  // sequence bucket, output rows) (model/graph_cache.h; FASTDLLM_CUDA_GRAPHS=0
  // turns them off): how many ran eagerly, were captured, were replayed. All
  // zero on the CPU.
  struct GraphRuns {
    int64_t eager = 0, captured = 0, replayed = 0;
  };
  GraphRuns graph_runs() const;

 private:
  friend class ForwardRunner;
  void check_batch(const ForwardBatch& b, const KVStore& kv) const;
  PlanContext plan_context() const;  // what planning needs to know of this model and its runner
  // The forward's launches, reading every per-step array from the step inputs
  // (so that a captured graph of them can be replayed for the next step).
  void encode(const ForwardPlan& plan, const int32_t* step, const KVStore& kv, float* const* arena,
              const EncodeOutputs& out) const;

  ModelConfig config_;
  DType weight_dtype_;
  Device device_;
  std::unique_ptr<Qwen2Weights> weights_;
  std::unique_ptr<ForwardRunner> runner_;
};

}  // namespace fastdllm
