#include "runtime/sequence.h"

#include <cmath>

#include "fastdllm/error.h"
#include "runtime/block_diffusion_sequence.h"
#include "runtime/full_attention_sequence.h"

namespace fastdllm {

const char* family_name(ModelFamily f) {
  switch (f) {
    case ModelFamily::LLaDA: return "llada";
    case ModelFamily::Dream: return "dream";
    default: return "fast_dllm_v2";
  }
}

const char* cache_name(CacheMode c) {
  switch (c) {
    case CacheMode::Prefix: return "prefix";
    case CacheMode::Dual: return "dual";
    default: return "none";
  }
}

const char* step_kind_name(StepKind k) {
  switch (k) {
    case StepKind::Prefill: return "prefill";
    case StepKind::Denoise: return "denoise";
    case StepKind::DenoiseSubBlock: return "denoise_sub_block";
    case StepKind::Commit: return "commit";
    case StepKind::Full: return "full";
    case StepKind::PrefixCached: return "prefix_cached";
    case StepKind::DualCached: return "dual_cached";
    default: return "";
  }
}

void GenerationParams::validate(int64_t vocab) const {
  FDL_CHECK(max_new_tokens >= 0, "max_new_tokens must be >= 0, got ", max_new_tokens);
  FDL_CHECK(block_size > 0, "block_size must be > 0, got ", block_size);
  FDL_CHECK(mask_id >= 0 && mask_id < vocab, "mask_token_id ", mask_id, " is outside the vocabulary [0, ", vocab, ")");
  FDL_CHECK(stop_id < vocab, "stop_token_id ", stop_id, " is outside the vocabulary [0, ", vocab, ")");
  FDL_CHECK(stop_id != mask_id, "stop_token_id and mask_token_id are both ", stop_id,
            "; a stop token that is also the mask would end every block at once");
  FDL_CHECK(temperature >= 0.f && std::isfinite(temperature), "temperature must be >= 0, got ", temperature);
  FDL_CHECK(top_p > 0.f && top_p <= 1.f, "top_p must be in (0, 1], got ", top_p);
  FDL_CHECK(top_k >= 0, "top_k must be >= 0, got ", top_k);
  FDL_CHECK(max_seq_len >= 0, "max_seq_len must be >= 0, got ", max_seq_len);
  FDL_CHECK(steps >= 0, "steps must be >= 0, got ", steps);
  FDL_CHECK(threshold >= 0.0 && threshold <= 1.0, "threshold must be in [0, 1], got ", threshold);
  FDL_CHECK(steps <= kMaxSteps, "steps must be at most ", kMaxSteps, ", got ", steps);
  FDL_CHECK(std::isfinite(entropy_threshold) && entropy_threshold >= 0.0,
            "entropy_threshold must be a finite number >= 0 (nats), got ", entropy_threshold);
  FDL_CHECK(!std::isnan(delimiter_threshold), "delimiter_threshold must be a number (inf: fixed blocks), got NaN");
  for (int32_t d : delimiter_ids)
    FDL_CHECK(d >= 0 && d < vocab, "delimiter_ids: token ", d, " is outside the vocabulary [0, ", vocab, ")");
}

std::unique_ptr<Sequence> make_sequence(int64_t id, std::vector<int32_t> prompt, const GenerationParams& params,
                                        const ModelConfig& model, int page_size) {
  if (params.family == ModelFamily::FastDllmV2)
    return std::make_unique<BlockDiffusionSequence>(id, std::move(prompt), params, model, page_size);
  return std::make_unique<FullAttentionSequence>(id, std::move(prompt), params, model, page_size);
}

}  // namespace fastdllm
