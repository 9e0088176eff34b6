// Automatic prefix caching for block-diffusion decoding: committed KV blocks
// whose contents are fully determined by identical token prefixes are shared
// between sequences (reference-counted pages), kept after their sequence ends,
// and evicted least-recently-used when the pool needs pages.
//
// What is safe to share. Fast-dLLM v2 commits K/V in whole blocks of B tokens
// (the prefill's first floor(P0/B)*B prompt tokens, then one block per commit
// forward), and both write them under the same rule: a token sees every key of
// its own block and of all blocks before it (block-causal at granularity B).
// Above layer 0 a token's K/V therefore depend on the later tokens of its own
// block, so a page is determined by (B, every token up to the end of its block),
// never by a shorter prefix: entries are whole blocks, keyed by a hash chain
// over (B, the block's tokens, the previous block's key), and the same tokens
// under another B are another entry. Blocks are compared token for token on
// lookup, so a hash collision can never share the wrong pages. The pool is the
// model's (one geometry, one KV dtype), so nothing else enters the key. Shared
// pages are only ever read: the sequences that share them write their own
// blocks into pages of their own.
//
// An entry also keeps the block's "next token" when the forward that wrote it
// computed one (the greedy argmax at the block's last position: the prefill's or
// commit's AR token), so a fully cached prompt needs no forward at all.
#pragma once
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace fastdllm {

class PagePool;

class PrefixCache {
 public:
  PrefixCache(PagePool* pool, bool enabled) : pool_(pool), enabled_(enabled) {}
  ~PrefixCache();
  PrefixCache(const PrefixCache&) = delete;
  PrefixCache& operator=(const PrefixCache&) = delete;

  bool enabled() const { return enabled_; }

  struct Match {
    int64_t blocks = 0;          // leading blocks found
    std::vector<int32_t> pages;  // their pages, in token order (blocks * B / page_size)
    int32_t next_token = -1;     // the last matched block's next token, -1 when unknown
  };
  // The longest run of leading blocks of tokens [0, max_blocks * block) that is
  // cached. Touches nothing.
  Match lookup(const int32_t* tokens, int64_t max_blocks, int block) const;
  // Marks a match as used now (least-recently-used order).
  void touch(const int32_t* tokens, int64_t blocks, int block);

  // Registers committed blocks [0, blocks) of a sequence's cache (tokens: the
  // tokens whose K/V the pages hold, in order; pages: blocks * B / page_size;
  // next_tokens: per block, -1 when unknown). Blocks already cached keep their
  // entry (a known next token is added to it); new ones retain the pages.
  void insert(const int32_t* tokens, int64_t blocks, int block, const int32_t* pages, const int32_t* next_tokens);

  // Cached pages that only the cache holds: free to evict.
  int64_t evictable_pages() const;
  // Releases the least recently used block that nobody else holds (deepest
  // first among equals, so chains shrink from the end). False when none.
  bool evict_one();
  void clear();  // releases every entry's pages

 private:
  struct Entry {
    uint64_t parent = 0;
    int block = 0;
    int64_t depth = 0;
    std::vector<int32_t> tokens;
    std::vector<int32_t> pages;
    int32_t next_token = -1;
    uint64_t last_use = 0;
  };
  static uint64_t key(uint64_t parent, int block, const int32_t* tokens);
  // The entry of block `b` of a chain whose previous key is `parent`, or null.
  const Entry* find(uint64_t parent, int block, const int32_t* tokens, uint64_t* key_out) const;

  PagePool* pool_;
  bool enabled_;
  std::unordered_map<uint64_t, Entry> entries_;
  uint64_t tick_ = 0;
};

}  // namespace fastdllm
