#include "model/forward_runner.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <iterator>

#include "core/cuda_runtime.h"
#include "core/device_memory.h"
#include "fastdllm/error.h"
#include "model/qwen2_weights.h"

namespace fastdllm {

namespace {
// Every row's first kCandidatePrefix sampling candidates come down with the
// stats in one wait (for a trained model's nucleus that is all of them); longer
// rows follow.
constexpr int64_t kCandidatePrefix = 1024;
}  // namespace

ForwardRunner::ForwardRunner(const Model& model) : model_(model) {
  const Device d = model.device();
  act_ = Buffer(64, d);
  staging_ = Buffer(64, d);
  outputs_ = Buffer(64, d);
  const char* g = std::getenv("FASTDLLM_CUDA_GRAPHS");
  if (d == Device::CUDA && !(g && g[0] == '0'))
    graphs_ = std::make_unique<GraphCache>(GraphCache::Backend{cuda::graph_capture, cuda::graph_launch,
                                                               cuda::graph_destroy});
}

ForwardRunner::~ForwardRunner() = default;

void ForwardRunner::reserve_arena(int64_t n, int64_t rows, int64_t logit_rows) {
  const ModelConfig& c = model_.config();
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim, V = c.vocab_size;
  const int64_t nq = int64_t(c.num_heads) * hd, qkv = nq + 2 * int64_t(c.num_kv_heads) * hd;
  const int64_t gate_up = model_.weights_->fused_mlp() ? 0 : n * 2 * I;
  const int64_t sizes[kSlots] = {n * H, n * H, n * qkv, n * nq, n * nq, gate_up, n * I, rows * H, logit_rows * V};
  int64_t total = 0;
  for (int64_t s : sizes) total += (s + 15) / 16 * 16;
  act_.reserve(size_t(total) * 4);
  float* base = static_cast<float*>(act_.data());
  for (int i = 0; i < kSlots; ++i) {
    slot_[i] = base;
    base += (sizes[i] + 15) / 16 * 16;
  }
}

uint64_t ForwardRunner::graph_epoch() const {
  return (buffers_epoch_ << 32) ^ cuda::device_allocator().generation();
}

void ForwardRunner::run(const ForwardPlan& plan, const KVStore& kv, const ForwardOutputs& out) {
  const Device dev = model_.device();
  const int64_t V = model_.config().vocab_size;
  const int64_t R = plan.greedy_run, NS = plan.sampled, NL = plan.logits;
  FDL_CHECK(NS == 0 || out.candidates, "forward: sampled rows need a candidates output");
  if (NS > 0) out.candidates->resize(NS, V);

  // Everything a forward touches sits at addresses that stay fixed while the
  // shapes repeat; growth of any of these buffers moves them (a new epoch drops
  // the graphs that point into them).
  const void* before[] = {act_.data(), staging_.data(), outputs_.data()};
  reserve_arena(plan.tokens_run, R + NS + NL, NS + NL);
  // outputs_ on a GPU: top-2 [R, 4] | stats [NS, 2] + count [NS] + candidates [NS, V, 2]
  const size_t top2_bytes = size_t(R) * 24, cand_bytes = size_t(NS) * 12 + size_t(NS * V) * 8;
  if (dev != Device::CPU) {
    staging_.reserve(size_t(plan.at.total) * 4);
    outputs_.reserve(top2_bytes + cand_bytes);
  }
  const void* after[] = {act_.data(), staging_.data(), outputs_.data()};
  if (!std::equal(std::begin(before), std::end(before), std::begin(after))) ++buffers_epoch_;

  const int32_t* step = plan.step.data();
  EncodeOutputs eo;
  if (dev == Device::CPU) {  // the kernels read the step inputs in place and write the caller's buffers
    eo.top2_index = out.top2_index;
    eo.top2_prob = out.top2_prob;
    if (NS > 0) {
      eo.cand_stats = out.candidates->stats.data();
      eo.cand_count = out.candidates->count.data();
      eo.cand_pairs = out.candidates->pairs.data();
    }
  } else {
    int32_t* s32 = static_cast<int32_t*>(staging_.data());
    // One upload per forward, not waited for: the forward follows it on the stream.
    cuda::upload_async(s32, plan.step.data(), plan.step.size() * 4);
    step = s32;
    char* o = static_cast<char*>(outputs_.data());
    eo.top2_index = reinterpret_cast<int32_t*>(o);
    eo.top2_prob = reinterpret_cast<float*>(o) + 2 * R;
    if (NS > 0) {
      eo.cand_stats = reinterpret_cast<float*>(o + top2_bytes);
      eo.cand_count = reinterpret_cast<int32_t*>(eo.cand_stats + 2 * NS);
      eo.cand_pairs = eo.cand_count + NS;
    }
  }
  float* const* arena = slot_;
  const auto body = [&] { model_.encode(plan, step, kv, arena, eo); };
  if (graphs_ && plan.replayable) {
    const GraphKey key{plan.tokens_run, plan.seqs_run, plan.greedy_run, kv.base};
    const GraphCache::Run r = graphs_->run(key, graph_epoch(), body);
    if (r == GraphCache::Run::Eager) ++runs_.eager;
    else if (r == GraphCache::Run::Captured) ++runs_.captured;
    else ++runs_.replayed;
  } else {
    body();
    if (dev != Device::CPU) ++runs_.eager;
  }

  const float* logits = arena[kLogits] + NS * V;  // the returned rows' logits follow the sampled rows'
  if (dev == Device::CPU) {
    if (NL > 0) std::memcpy(out.logits, logits, size_t(NL * V) * 4);
    return;
  }
  // Results come down (each synchronous copy waits for the forward).
  if (plan.greedy > 0) {  // index [R, 2] and prob [R, 4] sit back to back: one copy, one wait
    top2_host_.resize(size_t(6 * R));
    copy_bytes(top2_host_.data(), eo.top2_index, size_t(R) * 24, dev);
    std::memcpy(out.top2_index, top2_host_.data(), size_t(plan.greedy) * 8);
    std::memcpy(out.top2_prob, top2_host_.data() + 2 * R, size_t(plan.greedy) * 16);
  }
  if (NS > 0) {
    SamplingCandidates& c = *out.candidates;
    const size_t pitch = size_t(V) * 8, prefix = size_t(std::min(V, kCandidatePrefix)) * 8;
    cuda::download_async(c.stats.data(), eo.cand_stats, size_t(NS) * 8);
    cuda::download_async(c.count.data(), eo.cand_count, size_t(NS) * 4);
    cuda::copy_rows(c.pairs.data(), pitch, eo.cand_pairs, pitch, prefix, size_t(NS));
    for (int64_t r = 0; r < NS; ++r)
      if (c.count[size_t(r)] > kCandidatePrefix) {
        const size_t at = size_t(r) * pitch + prefix;
        copy_bytes(reinterpret_cast<char*>(c.pairs.data()) + at, reinterpret_cast<const char*>(eo.cand_pairs) + at,
                   size_t(c.count[size_t(r)] - kCandidatePrefix) * 8, dev);
      }
  }
  if (NL > 0) copy_bytes(out.logits, logits, size_t(NL * V) * 4, dev);
}

}  // namespace fastdllm
