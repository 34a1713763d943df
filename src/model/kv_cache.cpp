#include <slm/error.h>
#include <slm/kv_cache.h>
#include <slm/model.h>

#include "model/decoder.h"

#include <algorithm>

namespace slm {

namespace {

uint64_t hash_block(uint64_t parent, std::span<const int32_t> tokens) {
  // FNV-1a over the parent's hash and the token ids, then a final mix.
  uint64_t h = 1469598103934665603ull ^ parent;
  for (int32_t t : tokens) {
    h ^= static_cast<uint32_t>(t);
    h *= 1099511628211ull;
  }
  h ^= h >> 31;
  return h == 0 ? 1 : h;  // 0 marks a block that is not reusable
}

}  // namespace

KVCache::KVCache(const ModelConfig& config, int64_t capacity_tokens, DType dtype, int64_t block_tokens, Device device)
    : block_tokens_(block_tokens), workspace_(std::make_unique<decoder::Workspace>()) {
  if (capacity_tokens <= 0) fail("KV cache capacity must be positive, got ", capacity_tokens);
  if (block_tokens <= 0) fail("KV cache block size must be positive, got ", block_tokens);
  if (is_quantized(dtype)) fail("--kv-dtype: expected f32, f16 or bf16, got ", dtype_name(dtype));
  block_count_ = (capacity_tokens + block_tokens - 1) / block_tokens;
  if (block_count_ > (int64_t{1} << 30)) fail("KV cache of ", capacity_tokens, " tokens is too large");
  const std::vector<int64_t> shape{config.num_hidden_layers, block_count_, config.num_key_value_heads, block_tokens,
                                   config.head_dim};
  keys_ = Tensor::zeros(dtype, shape, device);
  values_ = Tensor::zeros(dtype, shape, device);
  layer_bytes_ = keys_.nbytes() / static_cast<size_t>(config.num_hidden_layers);
  blocks_.resize(static_cast<size_t>(block_count_));
  for (int32_t b = 0; b < static_cast<int32_t>(block_count_); ++b) push_back(b, free_head_, free_tail_, free_count_);
}

KVCache::KVCache(KVCache&&) noexcept = default;
KVCache& KVCache::operator=(KVCache&&) noexcept = default;
KVCache::~KVCache() = default;

KVCache::Sequence& KVCache::sequence(int32_t seq) {
  if (seq < 0) fail("KV cache: sequence id ", seq, " is negative");
  if (static_cast<size_t>(seq) >= sequences_.size()) sequences_.resize(static_cast<size_t>(seq) + 1);
  return sequences_[static_cast<size_t>(seq)];
}

int64_t KVCache::length(int32_t seq) const {
  return seq >= 0 && static_cast<size_t>(seq) < sequences_.size() ? sequences_[static_cast<size_t>(seq)].length : 0;
}

const int32_t* KVCache::block_table(int32_t seq) const { return sequences_.at(static_cast<size_t>(seq)).blocks.data(); }

int64_t KVCache::blocks_needed(int32_t seq, int64_t length) const {
  const int64_t held = seq >= 0 && static_cast<size_t>(seq) < sequences_.size()
                           ? static_cast<int64_t>(sequences_[static_cast<size_t>(seq)].blocks.size())
                           : 0;
  return std::max<int64_t>(0, (length + block_tokens_ - 1) / block_tokens_ - held);
}

bool KVCache::reserve(int32_t seq, int64_t length) {
  const int64_t needed = blocks_needed(seq, length);
  if (needed > free_blocks()) return false;
  Sequence& s = sequence(seq);
  for (int64_t i = 0; i < needed; ++i) s.blocks.push_back(take_block());
  return true;
}

void KVCache::set_length(int64_t length, int32_t seq) {
  Sequence& s = sequence(seq);
  if (length < 0 || length > s.length) fail("KV cache length ", length, " outside [0, ", s.length, "]");
  const auto keep = static_cast<size_t>((length + block_tokens_ - 1) / block_tokens_);
  while (s.blocks.size() > keep) {
    release_block(s.blocks.back());
    s.blocks.pop_back();
  }
  const int64_t used = length % block_tokens_;
  if (used != 0) {
    // The block that now ends the sequence will be written again: it must be
    // this sequence's alone and no longer promise its old tokens.
    int32_t& last = s.blocks.back();
    if (blocks_[static_cast<size_t>(last)].refs > 1) {
      const int32_t copy = take_block();
      const size_t block_bytes = layer_bytes_ / static_cast<size_t>(block_count_);
      for (const Tensor* t : {&keys_, &values_}) {
        auto* base = static_cast<uint8_t*>(t->data());
        for (size_t l = 0; l < keys_.nbytes() / layer_bytes_; ++l) {
          std::copy_n(base + l * layer_bytes_ + static_cast<size_t>(last) * block_bytes, block_bytes,
                      base + l * layer_bytes_ + static_cast<size_t>(copy) * block_bytes);
        }
      }
      Block& old = blocks_[static_cast<size_t>(last)];
      s.partial.assign(old.tokens.begin(), old.tokens.begin() + used);
      release_block(last);
      last = copy;
    } else {
      Block& b = blocks_[static_cast<size_t>(last)];
      if (!b.tokens.empty()) s.partial.assign(b.tokens.begin(), b.tokens.begin() + used);  // it was full
      forget_hash(last);
      b.tokens.clear();
      s.partial.resize(static_cast<size_t>(used));
    }
  } else {
    s.partial.clear();
  }
  s.length = length;
}

int64_t KVCache::reuse_prefix(int32_t seq, std::span<const int32_t> tokens, uint64_t context) {
  Sequence& s = sequence(seq);
  if (s.length != 0) fail("KV cache: reuse_prefix on sequence ", seq, ", which is not empty");
  uint64_t chain = context;
  int32_t parent = -1;
  int64_t reused = 0;
  const auto bt = static_cast<size_t>(block_tokens_);
  while (static_cast<size_t>(reused) + bt < tokens.size()) {
    const std::span<const int32_t> block_tokens = tokens.subspan(static_cast<size_t>(reused), bt);
    const uint64_t h = hash_block(chain, block_tokens);
    const auto it = cached_.find(h);
    if (it == cached_.end()) break;
    Block& b = blocks_[static_cast<size_t>(it->second)];
    if (b.parent != parent || b.context != context ||
        !std::equal(block_tokens.begin(), block_tokens.end(), b.tokens.begin())) {
      break;
    }
    if (b.refs == 0) unlink(it->second, evictable_head_, evictable_tail_, evictable_count_);
    ++b.refs;
    s.blocks.push_back(it->second);
    parent = it->second;
    chain = h;
    reused += block_tokens_;
  }
  s.length = reused;
  reused_tokens_ += reused;
  return reused;
}

void KVCache::append(int32_t seq, std::span<const int32_t> tokens, uint64_t context) {
  Sequence& s = sequence(seq);
  const int64_t end = s.length + static_cast<int64_t>(tokens.size());
  if (end > static_cast<int64_t>(s.blocks.size()) * block_tokens_) {
    fail("KV cache: sequence ", seq, " holds ", s.blocks.size(), " blocks, too few for ", end, " positions");
  }
  for (int32_t t : tokens) {
    s.partial.push_back(t);
    ++s.length;
    if (static_cast<int64_t>(s.partial.size()) < block_tokens_) continue;
    const size_t index = static_cast<size_t>(s.length / block_tokens_ - 1);
    const int32_t id = s.blocks[index];
    const int32_t parent = index > 0 ? s.blocks[index - 1] : -1;
    const uint64_t chain = parent >= 0 ? blocks_[static_cast<size_t>(parent)].hash : context;
    Block& b = blocks_[static_cast<size_t>(id)];
    b.tokens = s.partial;
    // Reusable only after a reusable parent (a chain is matched from its
    // start) of the same context.
    if (parent < 0 || (chain != 0 && blocks_[static_cast<size_t>(parent)].context == context)) {
      const uint64_t h = hash_block(chain, s.partial);
      if (cached_.emplace(h, id).second) {
        b.hash = h;
        b.parent = parent;
        b.context = context;
      }
    }
    s.partial.clear();
  }
}

int32_t KVCache::take_block() {
  int32_t b = free_head_;
  if (b >= 0) {
    unlink(b, free_head_, free_tail_, free_count_);
  } else {
    b = evictable_head_;  // the least recently released prefix
    if (b < 0) fail("KV cache: no free block");
    unlink(b, evictable_head_, evictable_tail_, evictable_count_);
    forget_hash(b);
  }
  Block& taken = blocks_[static_cast<size_t>(b)];
  taken.refs = 1;
  taken.tokens.clear();
  return b;
}

void KVCache::release_block(int32_t block) {
  Block& b = blocks_[static_cast<size_t>(block)];
  if (--b.refs > 0) return;
  if (b.hash != 0) {
    push_back(block, evictable_head_, evictable_tail_, evictable_count_);
  } else {
    push_back(block, free_head_, free_tail_, free_count_);
  }
}

void KVCache::forget_hash(int32_t block) {
  Block& b = blocks_[static_cast<size_t>(block)];
  if (b.hash == 0) return;
  cached_.erase(b.hash);
  b.hash = 0;
  b.parent = -1;
}

void KVCache::unlink(int32_t block, int32_t& head, int32_t& tail, int64_t& count) {
  Block& b = blocks_[static_cast<size_t>(block)];
  (b.prev >= 0 ? blocks_[static_cast<size_t>(b.prev)].next : head) = b.next;
  (b.next >= 0 ? blocks_[static_cast<size_t>(b.next)].prev : tail) = b.prev;
  b.prev = b.next = -1;
  --count;
}

void KVCache::push_back(int32_t block, int32_t& head, int32_t& tail, int64_t& count) {
  Block& b = blocks_[static_cast<size_t>(block)];
  b.prev = tail;
  b.next = -1;
  (tail >= 0 ? blocks_[static_cast<size_t>(tail)].next : head) = block;
  tail = block;
  ++count;
}

}  // namespace slm
