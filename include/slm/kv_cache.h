// The paged KV cache: keys and values of every layer for many sequences at
// once, in one pool of fixed-size blocks allocated when the cache is made.
// A sequence holds a list of blocks, grows a block at a time and gives its
// blocks back when cleared. A full block is remembered by the tokens that
// filled it (and every token before them), so a later sequence that starts
// with the same tokens takes the block instead of computing it again (prefix
// caching); blocks are reference-counted, and one that no sequence holds stays
// reusable until the pool needs its space.
#pragma once

#include <slm/tensor.h>

#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

namespace slm {

struct ModelConfig;

namespace decoder {
struct Workspace;
}

class KVCache {
 public:
  // Tokens per block unless asked otherwise: one tile of flash attention's keys.
  static constexpr int64_t kDefaultBlockTokens = 64;

  // A pool of at least `capacity_tokens` positions (rounded up to whole
  // blocks), in f32, f16 or bf16, in memory of `device` (the model's).
  KVCache(const ModelConfig& config, int64_t capacity_tokens, DType dtype = DType::F32,
          int64_t block_tokens = kDefaultBlockTokens, Device device = Device::CPU);
  KVCache(KVCache&&) noexcept;
  KVCache& operator=(KVCache&&) noexcept;
  ~KVCache();

  int64_t capacity() const { return block_count_ * block_tokens_; }  // positions the pool holds
  int64_t block_tokens() const { return block_tokens_; }
  int64_t block_count() const { return block_count_; }
  // Blocks no sequence holds (never used, or kept for prefix reuse).
  int64_t free_blocks() const { return free_count_ + evictable_count_; }
  DType dtype() const { return keys_.dtype(); }
  size_t bytes() const { return keys_.nbytes() + values_.nbytes(); }

  // Sequences are named by the caller with small non-negative ids (as
  // llama.cpp's seq_id); a sequence never seen has length 0.
  int64_t length(int32_t seq = 0) const;
  // Keeps the first `length` positions and frees the blocks past them.
  void set_length(int64_t length, int32_t seq = 0);
  void clear(int32_t seq = 0) { set_length(0, seq); }
  // Blocks `seq` must still take to hold `length` positions.
  int64_t blocks_needed(int32_t seq, int64_t length) const;
  // Takes the blocks `seq` needs to hold `length` positions; false, with
  // nothing taken, when the pool has too few.
  bool reserve(int32_t seq, int64_t length);

  // Keys and values depend on the tokens and on a `context`: what else shaped
  // them (the adapter that computed them, Adapter::id(); 0 for the base).
  // Blocks are reused only within the same context.
  //
  // For an empty `seq` about to hold `tokens`: takes every cached full block
  // that begins those tokens and returns how many positions they hold. At
  // least one token is always left to compute (its logits are needed).
  int64_t reuse_prefix(int32_t seq, std::span<const int32_t> tokens, uint64_t context = 0);
  // Records that positions [length(seq), length(seq) + tokens.size()) now
  // hold `tokens`, whose keys and values forward has written in `context`;
  // blocks they fill become reusable by later sequences.
  void append(int32_t seq, std::span<const int32_t> tokens, uint64_t context = 0);

  // Where layer l's blocks live: [block][kv_heads][block_tokens][head_dim],
  // in dtype(), and the block list of a sequence.
  void* keys(int64_t layer) const { return static_cast<uint8_t*>(keys_.data()) + layer * layer_bytes_; }
  void* values(int64_t layer) const { return static_cast<uint8_t*>(values_.data()) + layer * layer_bytes_; }
  const int32_t* block_table(int32_t seq) const;

  // Positions reused through prefix caching since the cache was made.
  int64_t reused_tokens() const { return reused_tokens_; }

  // The scratch memory of forward passes over this cache: a cache is the
  // state of one caller, so a model shared by several callers keeps none.
  decoder::Workspace& workspace() const { return *workspace_; }

 private:
  struct Sequence {
    std::vector<int32_t> blocks;
    int64_t length = 0;
    std::vector<int32_t> partial;  // tokens of the block being filled
  };
  struct Block {
    int32_t refs = 0;
    // Once the block is full: its tokens, and while it is reusable the hash of
    // them and of every token before them (0: not reusable) and the block
    // before it, which a match compares too, so a hash collision cannot hand
    // out wrong keys, and the context they were computed in.
    std::vector<int32_t> tokens;
    uint64_t hash = 0;
    int32_t parent = -1;
    uint64_t context = 0;
    int32_t prev = -1, next = -1;  // in the free or evictable list
  };
  Sequence& sequence(int32_t seq);
  int32_t take_block();
  void release_block(int32_t block);
  void unlink(int32_t block, int32_t& head, int32_t& tail, int64_t& count);
  void push_back(int32_t block, int32_t& head, int32_t& tail, int64_t& count);
  void forget_hash(int32_t block);

  int64_t block_tokens_;
  int64_t block_count_;
  size_t layer_bytes_;
  Tensor keys_, values_;
  std::vector<Sequence> sequences_;
  std::vector<Block> blocks_;
  // Never-used (or forgotten) blocks, and blocks no sequence holds that keep
  // a reusable prefix, least recently released first.
  int32_t free_head_ = -1, free_tail_ = -1, evictable_head_ = -1, evictable_tail_ = -1;
  int64_t free_count_ = 0, evictable_count_ = 0;
  std::unordered_map<uint64_t, int32_t> cached_;  // prefix hash -> block
  int64_t reused_tokens_ = 0;
  std::unique_ptr<decoder::Workspace> workspace_;
};

}  // namespace slm
