// The denoising decisions of fast_dllm_v2.md section 4 inside one block, written
// once for the host loop (runtime/generation.cc) and for the decide kernels that
// take them on the model's device (ops::denoise_decide; cpu/denoise_decide.cc,
// cuda/vocab/denoise_decide.cu), so that both paths commit the same tokens:
//   - which positions a forward unmasks (confidence > threshold, and always the
//     most confident one, ties within kTieRel going to the first);
//   - what comes next in the block: stop rule (A), commit, or the next
//     denoising forward, whole block or sub-block only (the sub-block cache);
//   - the step inputs (model/step_inputs.h layout) of that next forward.
//
// On the device the block lives in one int32 array, the "denoise state":
//   DenoiseHeader (kHeaderWords) | block tokens [block] | page table [pages]
// uploaded by the host before a launch it decides itself and updated by the
// decide kernel after every forward that the device decided.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define FDL_DENOISE_HD __host__ __device__
#else
#define FDL_DENOISE_HD
#endif

namespace fastdllm::denoise {

// Denoising forwards in the official code do not pass block_size to forward(),
// whose default (32) sets the block-causal granularity of their mask (spec 3).
constexpr int32_t kMaskBlock = 32;
// Relative width within which confidences count as tied (fp32 rounding noise of
// a forward is ~1e-6 relative); deviation 2 in docs/decoding.md.
constexpr float kTieRel = 1e-5f;

// What follows in a block. kFull / kSub are also the two forward kinds.
enum : int32_t { kNone = 0, kFull = 1, kSub = 2, kCommit = 3, kStop = 4 };

struct DenoiseHeader {
  int32_t go;           // kind of the forward that may run next (kFull / kSub); kNone: the host decides
  int32_t forwards;     // denoising forwards decided so far (a launch that left it unchanged was skipped)
  int32_t sub_block;    // the sub-block the next forward denoises
  int32_t cache_valid;  // the block cache holds the whole block's K/V
  int32_t c;            // tokens before the block: its first position
  int32_t pb_off;       // stop rule (A) scans the block from here (the prompt's tail precedes it)
  int32_t mask_id, stop_id;  // stop_id < 0: none
  int32_t use_block_cache;
  float threshold;
  int32_t block, sub;   // B, S
  int32_t pages;        // page-table entries (padded to the pool's capacity)
  int32_t rows_full, rows_sub;  // output rows of each kind (>= S: a GPU buckets them)
};
constexpr int kHeaderWords = int(sizeof(DenoiseHeader) / sizeof(int32_t));
static_assert(sizeof(DenoiseHeader) == 15 * sizeof(int32_t), "the header is 15 int32 words, no padding");

FDL_DENOISE_HD inline int32_t* block_tokens(int32_t* state) { return state + kHeaderWords; }
FDL_DENOISE_HD inline const int32_t* block_tokens(const int32_t* state) { return state + kHeaderWords; }
FDL_DENOISE_HD inline int64_t state_words(int block, int pages) { return kHeaderWords + int64_t(block) + pages; }

struct Next {
  int32_t kind;       // kFull, kSub, kCommit or kStop
  int32_t sub_block;  // for kFull / kSub
};

// The checks of spec 4 in its order, from the block's tokens alone: (A) a stop
// token at or after pb_off with no mask before it ends generation; a block
// without masks is committed; otherwise the first sub-block holding a mask is
// denoised, by the sub-block alone once the block cache is valid and the
// sub-block's first token is known (its K/V then need no refresh), else by the
// whole block.
FDL_DENOISE_HD inline Next next_in_block(const int32_t* blk, int block, int sub, int pb_off, int32_t mask_id,
                                         int32_t stop_id, bool use_block_cache, bool cache_valid) {
  for (int i = pb_off; i < block; ++i) {
    if (blk[i] == stop_id) return {kStop, 0};  // checked first: upstream's order when mask_id == stop_id
    if (blk[i] == mask_id) break;
  }
  int first = 0;
  while (first < block && blk[first] != mask_id) ++first;
  if (first == block) return {kCommit, 0};
  const int s = first / sub;
  const bool sub_only = use_block_cache && cache_valid && blk[s * sub] != mask_id;
  return {sub_only ? kSub : kFull, s};
}

// The forward's output row that predicts block position j (token shift:
// position j reads output j - 1, the forward's first position its own).
FDL_DENOISE_HD inline int32_t output_row(int j, int first) { return j == first ? 0 : j - first - 1; }

// Greedy choice for a masked position from the fused top-2 (ops::lm_head_top2):
// a denoising step never writes the mask token (deviation 1 in docs/decoding.md;
// the fallback is the best other token, with its probability under the full softmax).
FDL_DENOISE_HD inline void greedy_choice(const int32_t* index2, const float* prob2, int32_t mask_id, int32_t* token,
                                         float* conf) {
  const int k = index2[0] == mask_id ? 1 : 0;
  *token = index2[k];
  *conf = prob2[k];
}

// The always-unmask-one rule: the first of n confidences within kTieRel of the
// largest.
FDL_DENOISE_HD inline int first_best(int n, const float* conf) {
  float top = conf[0];
  for (int k = 1; k < n; ++k) top = conf[k] > top ? conf[k] : top;
  int best = 0;
  while (conf[best] < top * (1.0f - kTieRel)) ++best;
  return best;
}
FDL_DENOISE_HD inline bool unmasks(float conf, float threshold, bool is_best) { return conf > threshold || is_best; }

// Key limit of block query q in a whole-block denoising forward: the 32-granular
// block-causal mask, capped at the block's end c + block.
FDL_DENOISE_HD inline int32_t full_block_limit(int32_t c, int32_t block, int32_t q) {
  const int32_t lim = ((c + q) / kMaskBlock + 1) * kMaskBlock;
  return lim < c + block ? lim : c + block;
}

// Length and element i of the step inputs (model/step_inputs.h) of a forward
// of `kind` on sub-block h.sub_block:
//   kFull: the whole block at positions c .. c+B-1, key limits of the 32-granular
//          block-causal mask capped at c + B, output rows for the sub-block's S positions;
//   kSub:  the sub-block at positions c+s*S .., every key limit c + B (prefix and
//          the whole block cache, spec 4.1), output rows for its S positions.
// Output rows beyond S (the GPU's bucket) repeat the last one.
FDL_DENOISE_HD inline int64_t step_inputs_len(const DenoiseHeader& h, int32_t kind) {
  const int64_t n = kind == kFull ? h.block : h.sub;
  return 3 * n + (kind == kFull ? h.rows_full : h.rows_sub) + h.pages;
}
// Room for the step inputs of either kind (the staging both graphs read).
FDL_DENOISE_HD inline int64_t max_step_inputs_len(int block, int sub, int pages, int rows_full, int rows_sub) {
  const int64_t full = 3 * int64_t(block) + rows_full, part = 3 * int64_t(sub) + rows_sub;
  return (full > part ? full : part) + pages;
}
FDL_DENOISE_HD inline int32_t step_input(const DenoiseHeader& h, const int32_t* blk, const int32_t* table,
                                         int32_t kind, int64_t i) {
  const bool full = kind == kFull;
  const int64_t n = full ? h.block : h.sub, rows = full ? h.rows_full : h.rows_sub;
  const int32_t lo = h.sub_block * h.sub;       // the sub-block's first block position
  const int32_t first = full ? 0 : lo;          // block position of the forward's first token
  if (i < n) return blk[first + i];                               // tokens
  if (i < 2 * n) return h.c + first + int32_t(i - n);             // positions
  if (i < 3 * n)                                                  // key limits
    return full ? full_block_limit(h.c, h.block, int32_t(i - 2 * n)) : h.c + h.block;
  if (i < 3 * n + rows) {                                         // output rows
    const int32_t r = int32_t(i - 3 * n);
    return output_row(lo + (r < h.sub ? r : h.sub - 1), first);
  }
  return table[i - 3 * n - rows];                                 // page table
}

FDL_DENOISE_HD inline const int32_t* page_table(const int32_t* state) {
  return state + kHeaderWords + reinterpret_cast<const DenoiseHeader*>(state)->block;
}
// The whole step-input array of the next forward, sequentially (host, CPU kernel).
inline void write_step_inputs(const int32_t* state, int32_t kind, int32_t* out) {
  const DenoiseHeader& h = *reinterpret_cast<const DenoiseHeader*>(state);
  const int64_t len = step_inputs_len(h, kind);
  for (int64_t i = 0; i < len; ++i) out[i] = step_input(h, block_tokens(state), page_table(state), kind, i);
}

// The decisions after a forward of kind `ran` on sub-block h->sub_block, given
// its top-2 results for the sub-block's S positions (rows 0..S-1): unmask, then
// find what comes next. Returns the kind of forward that may follow without
// the host (kFull / kSub), or kNone. Sequential (one thread of the kernel);
// pos / tok / conf are scratch for S entries.
FDL_DENOISE_HD inline int32_t decide(int32_t* state, const int32_t* index, const float* prob, int32_t ran,
                                     int32_t* pos, int32_t* tok, float* conf) {
  DenoiseHeader& h = *reinterpret_cast<DenoiseHeader*>(state);
  int32_t* blk = block_tokens(state);
  const int32_t lo = h.sub_block * h.sub;
  int n = 0;
  for (int32_t j = lo; j < lo + h.sub; ++j)
    if (blk[j] == h.mask_id) {
      pos[n] = j;
      greedy_choice(index + 2 * (j - lo), prob + 2 * (j - lo), h.mask_id, &tok[n], &conf[n]);
      ++n;
    }
  if (n > 0) {  // always, for a forward this rule chose
    const int best = first_best(n, conf);
    for (int k = 0; k < n; ++k)
      if (unmasks(conf[k], h.threshold, k == best)) blk[pos[k]] = tok[k];
  }
  if (ran == kFull && h.use_block_cache) h.cache_valid = 1;
  ++h.forwards;
  const Next nx = next_in_block(blk, h.block, h.sub, h.pb_off, h.mask_id, h.stop_id, h.use_block_cache != 0,
                                h.cache_valid != 0);
  if (nx.kind == kFull || nx.kind == kSub) h.sub_block = nx.sub_block;
  h.go = nx.kind == kFull || nx.kind == kSub ? nx.kind : kNone;
  return h.go;
}

}  // namespace fastdllm::denoise
