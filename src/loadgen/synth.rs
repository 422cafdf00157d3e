//! Synthetic prompt text for workloads that give lengths, not text: Mooncake trace rows
//! (`input_length` tokens in 512-token blocks named by `hash_ids`), BurstGPT rows (`Request
//! tokens`) and the shared-prefix generator (`--prefix-len`, `--num-prefixes`). Text is made of
//! short English words, each one token for the simulator's tokenizer (`sim::model::count_tokens`:
//! up to 4 ASCII letters) and usually one for a real BPE vocabulary, so "N tokens" is N words.
//! Every word is a function of a namespace, a block id and its position: equal block ids give
//! identical text, so a shared prefix in the trace is a shared prefix on the wire (what an
//! engine's prefix cache sees). Pure: no I/O, no clock, no randomness beyond these hashes.
//!
//! Not here: reading trace files (`trace`), request bodies (`request`).

/// Words of at most four ASCII letters: one token each for the simulator.
const WORDS: [&str; 64] = [
    "the", "node", "core", "numa", "page", "lock", "heap", "disk", "port", "link", "ring", "task",
    "load", "sync", "read", "data", "byte", "word", "bank", "pool", "zone", "slot", "unit", "cell",
    "path", "tree", "file", "time", "loop", "flag", "mask", "bit", "key", "map", "set", "log",
    "sun", "moon", "star", "rain", "wind", "snow", "lake", "hill", "road", "city", "town", "home",
    "door", "wall", "roof", "room", "book", "cup", "song", "game", "ship", "boat", "car", "bus",
    "tea", "milk", "rice", "fish",
];

/// Tokens per block of a Mooncake trace's `hash_ids` (the trace's published block size).
pub const TRACE_BLOCK_TOKENS: u32 = 512;

/// Namespaces keep the text of trace blocks, unique tails, shared prefixes and unique suffixes
/// apart, so that only what is meant to be shared is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// A trace block named by its hash id.
    TraceBlock,
    /// The part of trace row `i` that no hash id covers (unique to the row).
    TraceTail,
    /// Shared prefix number `k` of the prefix generator.
    Prefix,
    /// The unique suffix of request `i` of the prefix generator (mixed with the seed).
    Suffix,
}

impl Namespace {
    fn salt(self) -> u64 {
        match self {
            Self::TraceBlock => 0x9e37_79b9_7f4a_7c15,
            Self::TraceTail => 0xbf58_476d_1ce4_e5b9,
            Self::Prefix => 0x94d0_49bb_1331_11eb,
            Self::Suffix => 0x2545_f491_4f6c_dd1d,
        }
    }
}

/// SplitMix64's finaliser: a well-mixed 64-bit function of `z`.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Appends the first `words` words of block `id` in `ns` to `out` (space-separated from what
/// is there). The first `n` words of a block are the same whatever `words` is, so a partial
/// last block is a prefix of the full one.
pub fn push_block(out: &mut String, ns: Namespace, id: u64, words: u32) {
    let base = mix(ns.salt() ^ mix(id));
    for j in 0..words {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(WORDS[(mix(base ^ u64::from(j)) % WORDS.len() as u64) as usize]);
    }
}

/// The prompt of a trace row: `input` tokens, block `k` of 512 from `hash_ids[k]`, the rest
/// (beyond the hash ids) unique to `row`.
pub fn trace_prompt(row: u64, input: u32, hash_ids: &[u64]) -> String {
    let mut out = String::with_capacity(input as usize * 5);
    let mut left = input;
    for &id in hash_ids {
        if left == 0 {
            break;
        }
        let n = left.min(TRACE_BLOCK_TOKENS);
        push_block(&mut out, Namespace::TraceBlock, id, n);
        left -= n;
    }
    if left > 0 {
        push_block(&mut out, Namespace::TraceTail, row, left);
    }
    out
}

/// Prompt `i` of the shared-prefix generator: prefix `i % num_prefixes` of `prefix_len` words,
/// then a suffix of `suffix_len` words unique to `(seed, i)`.
pub fn prefixed_prompt(
    i: u64,
    prefix_len: u32,
    num_prefixes: u64,
    suffix_len: u32,
    seed: u64,
) -> String {
    let mut out = String::with_capacity((prefix_len + suffix_len) as usize * 5);
    push_block(&mut out, Namespace::Prefix, i % num_prefixes.max(1), prefix_len);
    push_block(&mut out, Namespace::Suffix, mix(seed) ^ i, suffix_len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<&str> {
        s.split(' ').collect()
    }

    #[test]
    fn every_word_is_one_simulator_token() {
        // The simulator counts a run of up to 4 ASCII letters as one token (tests/workloads.rs
        // checks whole prompts with its counter); every word here is such a run.
        for w in WORDS {
            assert!((1..=4).contains(&w.len()) && w.chars().all(|c| c.is_ascii_lowercase()), "{w}");
        }
        assert_eq!(trace_prompt(3, 1000, &[1, 2]).split(' ').count(), 1000);
    }

    #[test]
    fn equal_hash_ids_give_equal_text_blocks_and_the_rest_differs() {
        // Mooncake's own example: both rows start with block 0, then go their own ways.
        let a = trace_prompt(0, 1100, &[0, 1, 2]);
        let b = trace_prompt(1, 700, &[0, 14]);
        let (a, b) = (words(&a), words(&b));
        assert_eq!((a.len(), b.len()), (1100, 700));
        assert_eq!(a[..512], b[..512]);
        assert_ne!(a[512..700], b[512..700]);
        // A partial block is the start of the full one.
        let short = trace_prompt(9, 600, &[0, 1]);
        assert_eq!(words(&short)[..600], a[..600]);
        // Beyond the hash ids the text is the row's own.
        let c = trace_prompt(5, 600, &[0]);
        let d = trace_prompt(6, 600, &[0]);
        assert_eq!(words(&c)[..512], words(&d)[..512]);
        assert_ne!(words(&c)[512..], words(&d)[512..]);
        // No hash ids: nothing shared.
        assert_ne!(trace_prompt(1, 8, &[]), trace_prompt(2, 8, &[]));
        assert_eq!(trace_prompt(1, 8, &[]), trace_prompt(1, 8, &[]));
    }

    #[test]
    fn prefixed_prompts_share_one_of_k_prefixes_and_nothing_else() {
        let p: Vec<String> = (0..6).map(|i| prefixed_prompt(i, 40, 3, 10, 7)).collect();
        let w: Vec<Vec<&str>> = p.iter().map(|s| words(s)).collect();
        assert!(w.iter().all(|x| x.len() == 50));
        assert_eq!(w[0][..40], w[3][..40]);
        assert_eq!(w[1][..40], w[4][..40]);
        assert_ne!(w[0][..40], w[1][..40]);
        assert_ne!(w[0][40..], w[3][40..]);
        // Another seed changes the suffixes, not the prefixes.
        let q = prefixed_prompt(0, 40, 3, 10, 8);
        assert_eq!(words(&q)[..40], w[0][..40]);
        assert_ne!(words(&q)[40..], w[0][40..]);
        assert_eq!(prefixed_prompt(2, 0, 3, 5, 0).split(' ').count(), 5);
    }
}
