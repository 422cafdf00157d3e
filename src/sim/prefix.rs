//! The simulator's prefix-cache model, in pure code. As vLLM's automatic prefix caching does,
//! a prompt is cut into blocks of `block` tokens, each block named by a hash chained over every
//! token before it (so a block only matches when the whole prefix up to it does); the blocks
//! seen recently are kept in an LRU of a fixed number of blocks. A request's cached tokens are
//! its leading blocks found in the LRU, at most the prompt minus one token (vLLM always computes
//! the last prompt token, to produce the first output). Its blocks then enter the LRU. Cached
//! tokens cost `hit_cost` of an uncached token's prefill time.
//!
//! Tokens are the simulator's own (`model::count_tokens`'s rules: a run of ASCII letters and
//! digits is one token per started 4 characters, every other non-blank character one token),
//! hashed by their text; a chat prompt adds its template tokens per message as
//! `model::chat_prompt_tokens` counts them, so `chat_tokens(..).len()` is the prompt's count.
//!
//! Not here: when the lookup happens (at admission, `job`), the counters (`metrics`).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use super::model::{LatencyModel, CHAT_TOKENS_PER_MESSAGE, CHAT_TOKENS_PER_PROMPT};

/// A stable 64-bit hash (SipHash with fixed keys: the same in every process and run).
fn hash<T: Hash + ?Sized>(x: &T) -> u64 {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    x.hash(&mut h);
    h.finish()
}

/// Appends the token hashes of `text` to `out`, one per token as `count_tokens` counts them.
pub fn push_text_tokens(text: &str, out: &mut Vec<u64>) {
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut Vec<u64>| {
        let bytes = run.as_bytes();
        for piece in bytes.chunks(4) {
            out.push(hash(piece));
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            run.push(c);
            continue;
        }
        flush(&mut run, out);
        if !c.is_whitespace() {
            out.push(hash(&c));
        }
    }
    flush(&mut run, out);
}

/// The token hashes of a chat prompt: per message its template tokens (role-specific) around
/// its content, then the template's assistant prompt.
pub fn chat_tokens<'a>(messages: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<u64> {
    let mut out = Vec::new();
    for (role, content) in messages {
        let half = CHAT_TOKENS_PER_MESSAGE / 2;
        for i in 0..half {
            out.push(hash(&("<|im_start|>", role, i)));
        }
        push_text_tokens(content, &mut out);
        for i in half..CHAT_TOKENS_PER_MESSAGE {
            out.push(hash(&("<|im_end|>", i)));
        }
    }
    for i in 0..CHAT_TOKENS_PER_PROMPT {
        out.push(hash(&("<|assistant|>", i)));
    }
    out
}

/// The chained hashes of the full blocks of `tokens` (a partial last block has none).
pub fn block_hashes(tokens: &[u64], block: u32) -> Vec<u64> {
    let mut prev = 0u64;
    tokens
        .chunks_exact(block.max(1) as usize)
        .map(|b| {
            prev = hash(&(prev, b));
            prev
        })
        .collect()
}

/// The LRU of block hashes.
#[derive(Debug, Default)]
pub struct PrefixCache {
    capacity: usize,
    tick: u64,
    /// Block hash -> the tick it was last used at.
    used: HashMap<u64, u64>,
    /// Tick -> block hash, oldest first.
    order: BTreeMap<u64, u64>,
}

impl PrefixCache {
    /// A cache of `capacity` blocks (0: nothing is ever cached).
    pub fn new(capacity: usize) -> Self {
        Self { capacity, ..Self::default() }
    }

    /// How many of `blocks`' leading blocks are cached; then all of them are marked used
    /// (entering the cache, the least recently used leaving it beyond its capacity).
    pub fn lookup_insert(&mut self, blocks: &[u64]) -> usize {
        let hits = blocks.iter().take_while(|b| self.used.contains_key(b)).count();
        if self.capacity == 0 {
            return 0;
        }
        for &b in blocks {
            self.tick += 1;
            if let Some(old) = self.used.insert(b, self.tick) {
                self.order.remove(&old);
            }
            self.order.insert(self.tick, b);
        }
        while self.used.len() > self.capacity {
            let Some((_, b)) = self.order.pop_first() else { break };
            self.used.remove(&b);
        }
        hits
    }

    /// Blocks held.
    pub fn len(&self) -> usize {
        self.used.len()
    }

    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }
}

/// Cached tokens of a prompt of `prompt_tokens` whose first `hit_blocks` blocks were cached.
pub fn cached_tokens(hit_blocks: usize, block: u32, prompt_tokens: u32) -> u32 {
    let hit = u32::try_from(hit_blocks).unwrap_or(u32::MAX).saturating_mul(block);
    hit.min(prompt_tokens.saturating_sub(1))
}

/// Prefill time of a prompt with `cached` of its tokens in the cache: the uncached ones at the
/// model's full cost, the cached ones at `hit_cost` of it.
pub fn prefill(latency: &LatencyModel, prompt_tokens: u32, cached: u32, hit_cost: f64) -> Duration {
    let cached = cached.min(prompt_tokens);
    latency
        .prefill(prompt_tokens - cached)
        .saturating_add(latency.prefill_per_token.mul_f64(f64::from(cached) * hit_cost))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::model::{chat_prompt_tokens, count_tokens};

    #[test]
    fn tokens_follow_the_simulators_counting_rules() {
        for text in ["Hello, world!", "解释人工智能", "numa node  core", "abcdefghij 12345", ""]
        {
            let mut v = Vec::new();
            push_text_tokens(text, &mut v);
            assert_eq!(v.len() as u32, count_tokens(text), "{text:?}");
        }
        let msgs = [("system", "be brief"), ("user", "what is numa?")];
        assert_eq!(
            chat_tokens(msgs).len() as u32,
            chat_prompt_tokens(msgs.iter().map(|m| m.1)),
            "the template tokens as the counter counts them"
        );
        // Whitespace is free, so only the words decide the tokens.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        push_text_tokens("the node", &mut a);
        push_text_tokens("the   node", &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn block_hashes_chain_so_equal_blocks_after_different_prefixes_differ() {
        let t: Vec<u64> = (0..10).collect();
        let b = block_hashes(&t, 4);
        assert_eq!(b.len(), 2, "the partial last block has no hash");
        let mut u = t.clone();
        u[0] = 99;
        let c = block_hashes(&u, 4);
        assert_ne!(b[0], c[0]);
        assert_ne!(b[1], c[1], "block 1 is the same tokens after another block 0");
        assert_eq!(block_hashes(&t[..8], 4), b);
    }

    #[test]
    fn the_lru_finds_leading_blocks_and_evicts_the_least_recently_used() {
        let mut c = PrefixCache::new(3);
        assert_eq!(c.lookup_insert(&[1, 2]), 0);
        assert_eq!(c.lookup_insert(&[1, 2, 3]), 2);
        // Only leading blocks count: 2 and 3 are cached, but block 0 of this prompt is not.
        assert_eq!(c.lookup_insert(&[9, 2, 3]), 0);
        // Capacity 3: 1 was the least recently used and left when 9 came in.
        assert_eq!(c.len(), 3);
        assert_eq!(c.lookup_insert(&[1]), 0);
        assert_eq!(c.lookup_insert(&[3]), 1);
        let mut off = PrefixCache::new(0);
        off.lookup_insert(&[1]);
        assert_eq!((off.lookup_insert(&[1]), off.is_empty()), (0, true));
    }

    #[test]
    fn cached_tokens_leave_the_last_prompt_token_and_cost_a_fraction() {
        assert_eq!(cached_tokens(2, 16, 100), 32);
        assert_eq!(cached_tokens(2, 16, 32), 31);
        assert_eq!(cached_tokens(0, 16, 0), 0);
        let m = LatencyModel {
            prefill_base: Duration::from_millis(10),
            prefill_per_token: Duration::from_millis(1),
            ..LatencyModel::ZERO
        };
        assert_eq!(prefill(&m, 100, 0, 0.1), Duration::from_millis(110));
        assert_eq!(prefill(&m, 100, 60, 0.1), Duration::from_millis(56));
        assert_eq!(prefill(&m, 100, 60, 1.0), Duration::from_millis(110));
    }
}
