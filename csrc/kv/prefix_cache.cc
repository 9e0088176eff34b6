#include "fastdllm/prefix_cache.h"

#include <algorithm>

#include "fastdllm/error.h"
#include "fastdllm/kv_cache.h"

namespace fastdllm {

PrefixCache::~PrefixCache() { clear(); }

// splitmix64 over the words: parent key, block size, tokens.
uint64_t PrefixCache::key(uint64_t parent, int block, const int32_t* tokens) {
  auto mix = [](uint64_t h, uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    return h ^ (h >> 31);
  };
  uint64_t h = mix(parent, uint64_t(uint32_t(block)) | (uint64_t(1) << 40));
  for (int i = 0; i < block; ++i) h = mix(h, uint32_t(tokens[i]));
  return h;
}

const PrefixCache::Entry* PrefixCache::find(uint64_t parent, int block, const int32_t* tokens,
                                            uint64_t* key_out) const {
  const uint64_t k = key(parent, block, tokens);
  *key_out = k;
  const auto it = entries_.find(k);
  if (it == entries_.end()) return nullptr;
  const Entry& e = it->second;
  if (e.parent != parent || e.block != block || !std::equal(e.tokens.begin(), e.tokens.end(), tokens)) return nullptr;
  return &e;
}

PrefixCache::Match PrefixCache::lookup(const int32_t* tokens, int64_t max_blocks, int block) const {
  Match m;
  if (!enabled_) return m;
  uint64_t parent = 0;
  for (int64_t b = 0; b < max_blocks; ++b) {
    uint64_t k = 0;
    const Entry* e = find(parent, block, tokens + b * block, &k);
    if (!e) break;
    m.blocks = b + 1;
    m.pages.insert(m.pages.end(), e->pages.begin(), e->pages.end());
    m.next_token = e->next_token;
    parent = k;
  }
  return m;
}

void PrefixCache::touch(const int32_t* tokens, int64_t blocks, int block) {
  if (!enabled_) return;
  ++tick_;
  uint64_t parent = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    uint64_t k = 0;
    if (!find(parent, block, tokens + b * block, &k)) break;
    entries_[k].last_use = tick_;
    parent = k;
  }
}

void PrefixCache::insert(const int32_t* tokens, int64_t blocks, int block, const int32_t* pages,
                         const int32_t* next_tokens) {
  if (!enabled_) return;
  const int64_t per_block = block / pool_->geometry().page_size;
  ++tick_;
  uint64_t parent = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    uint64_t k = 0;
    const int32_t* bt = tokens + b * block;
    if (find(parent, block, bt, &k)) {
      Entry& e = entries_[k];
      if (e.next_token < 0 && next_tokens) e.next_token = next_tokens[b];
      e.last_use = tick_;
      parent = k;
      continue;
    }
    if (entries_.count(k)) break;  // the key holds another chain's block (a hash collision): stop here
    Entry e;
    e.parent = parent;
    e.block = block;
    e.depth = b;
    e.tokens.assign(bt, bt + block);
    e.pages.assign(pages + b * per_block, pages + (b + 1) * per_block);
    for (int32_t p : e.pages) pool_->retain(p);
    e.next_token = next_tokens ? next_tokens[b] : -1;
    e.last_use = tick_;
    entries_.emplace(k, std::move(e));
    parent = k;
  }
}

int64_t PrefixCache::evictable_pages() const {
  int64_t n = 0;
  for (const auto& kv : entries_)
    if (pool_->refcount(kv.second.pages[0]) == 1) n += int64_t(kv.second.pages.size());
  return n;
}

bool PrefixCache::evict_one() {
  auto victim = entries_.end();
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (pool_->refcount(it->second.pages[0]) != 1) continue;  // a running sequence reads it
    if (victim == entries_.end() || it->second.last_use < victim->second.last_use ||
        (it->second.last_use == victim->second.last_use && it->second.depth > victim->second.depth))
      victim = it;
  }
  if (victim == entries_.end()) return false;
  for (int32_t p : victim->second.pages) pool_->release(p);
  entries_.erase(victim);
  return true;
}

void PrefixCache::clear() {
  for (auto& kv : entries_)
    for (int32_t p : kv.second.pages) pool_->release(p);
  entries_.clear();
}

}  // namespace fastdllm
