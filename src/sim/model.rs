//! The simulator's pure model: token counting, the latency model, output lengths, token texts
//! and fault decisions. No I/O, no clock, no shared state: every function here is a function
//! of its arguments (the seed and the request's arrival index included), which is what makes the
//! simulator deterministic and lets these rules be unit-tested on literal inputs.
//!
//! What it does not do: schedule anything. `job.rs` owns the batch slots, the queue and the
//! timers, and asks this module how long each step takes.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp};
use serde::Serialize;

/// Counts tokens with the simulator's deterministic tokenizer.
///
/// Rules (documented in docs/simulate.md, chosen so that CJK prompts such as the seed's
/// `"解释人工智能"` count roughly as a real tokenizer would): a run of ASCII letters and digits
/// counts one token per started 4 characters; every other character that is not whitespace
/// (punctuation, CJK, emoji) is one token; whitespace is free.
///
/// `"Hello, world!"` -> `Hell|o` `,` `worl|d` `!` = 6 tokens; `"解释人工智能"` = 6 tokens.
pub fn count_tokens(text: &str) -> u32 {
    let mut tokens: u32 = 0;
    let mut run: u32 = 0;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            run += 1;
            continue;
        }
        tokens = tokens.saturating_add(run.div_ceil(4));
        run = 0;
        if !c.is_whitespace() {
            tokens = tokens.saturating_add(1);
        }
    }
    tokens.saturating_add(run.div_ceil(4))
}

/// Tokens a chat template adds around each message (`<|im_start|>role\n` ... `<|im_end|>\n`).
pub const CHAT_TOKENS_PER_MESSAGE: u32 = 4;
/// Tokens the template adds to prompt the assistant's turn (`<|im_start|>assistant\n`).
pub const CHAT_TOKENS_PER_PROMPT: u32 = 3;

/// Prompt tokens of a chat request: each message's content plus the template's overhead.
pub fn chat_prompt_tokens<'a>(contents: impl IntoIterator<Item = &'a str>) -> u32 {
    contents
        .into_iter()
        .map(|c| count_tokens(c).saturating_add(CHAT_TOKENS_PER_MESSAGE))
        .fold(CHAT_TOKENS_PER_PROMPT, u32::saturating_add)
}

/// The latency model. Prefill (time to the first token, once the request holds a batch slot)
/// is `prefill_base + prefill_per_token × prompt_tokens`; each further token takes
/// `decode_base + decode_per_running × running`, where `running` counts the requests holding a
/// batch slot at that step (this one included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LatencyModel {
    pub prefill_base: Duration,
    pub prefill_per_token: Duration,
    pub decode_base: Duration,
    pub decode_per_running: Duration,
}

impl LatencyModel {
    /// A model in which nothing takes time.
    pub const ZERO: LatencyModel = LatencyModel {
        prefill_base: Duration::ZERO,
        prefill_per_token: Duration::ZERO,
        decode_base: Duration::ZERO,
        decode_per_running: Duration::ZERO,
    };

    /// Fixed time to first token and fixed time per further token, with no dependence on
    /// prompt length or load: the model the accuracy benchmarks use.
    pub fn fixed(ttft: Duration, per_token: Duration) -> Self {
        LatencyModel {
            prefill_base: ttft,
            prefill_per_token: Duration::ZERO,
            decode_base: per_token,
            decode_per_running: Duration::ZERO,
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    pub fn prefill(&self, prompt_tokens: u32) -> Duration {
        self.prefill_base.saturating_add(self.prefill_per_token.saturating_mul(prompt_tokens))
    }

    pub fn decode_step(&self, running: u32) -> Duration {
        self.decode_base.saturating_add(self.decode_per_running.saturating_mul(running))
    }
}

impl Default for LatencyModel {
    /// Roughly Qwen2.5-72B at tensor parallel 4 on current accelerators: ~50 ms plus 0.1 ms per
    /// prompt token to the first token, ~30 ms per token alone, growing by 0.1 ms per request
    /// in the batch (so ~55 ms per token at 256 running requests).
    fn default() -> Self {
        LatencyModel {
            prefill_base: Duration::from_millis(50),
            prefill_per_token: Duration::from_micros(100),
            decode_base: Duration::from_millis(30),
            decode_per_running: Duration::from_micros(100),
        }
    }
}

/// How many tokens a request generates when it does not set `max_tokens` (or sets
/// `ignore_eos: false` and "hits EOS" earlier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputLenDist {
    /// Always the mean.
    Fixed,
    /// Uniform on 1 ..= 2×mean−1.
    Uniform,
    /// Exponential with the given mean (rounded, at least 1): a long tail.
    Exponential,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OutputLen {
    pub dist: OutputLenDist,
    pub mean: u32,
}

impl Default for OutputLen {
    /// The seed's measured average output was 272 tokens per request.
    fn default() -> Self {
        OutputLen { dist: OutputLenDist::Uniform, mean: 256 }
    }
}

/// Fault rates, each the probability that one request gets that fault. At most one fault
/// applies per request, so the rates must add up to at most 1.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct FaultRates {
    /// Answer HTTP 500 at once.
    pub http_500: f64,
    /// Cut the connection mid-response (no `[DONE]`, no terminating chunk).
    pub drop: f64,
    /// Pause `stall` before the middle token, then go on normally.
    pub stall: f64,
    /// Send an in-band `data: {"error": ...}` event mid-stream, then `[DONE]`, like vLLM when
    /// the engine fails after the response started.
    pub stream_error: f64,
}

impl FaultRates {
    pub fn is_zero(&self) -> bool {
        self.http_500 == 0.0 && self.drop == 0.0 && self.stall == 0.0 && self.stream_error == 0.0
    }

    pub fn sum(&self) -> f64 {
        self.http_500 + self.drop + self.stall + self.stream_error
    }
}

/// The fault one request gets. `at_token` is the index (0-based) of the content token before
/// which the fault strikes: half-way through the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Fault {
    Http500,
    Drop { at_token: u32 },
    Stall { at_token: u32 },
    StreamError { at_token: u32 },
}

impl Fault {
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Http500 => "http_500",
            Fault::Drop { .. } => "drop",
            Fault::Stall { .. } => "stall",
            Fault::StreamError { .. } => "stream_error",
        }
    }
}

/// What the request asked for, as far as the model cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    pub prompt_tokens: u32,
    pub max_tokens: Option<u32>,
    pub min_tokens: u32,
    pub ignore_eos: bool,
}

/// Why generation stops: the `finish_reason` of the last content chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// Hit `max_tokens` (or the context length).
    Length,
    /// "Sampled EOS": the seeded output length ended first.
    Stop,
}

impl Finish {
    pub fn as_str(&self) -> &'static str {
        match self {
            Finish::Length => "length",
            Finish::Stop => "stop",
        }
    }
}

/// The decided fate of one request: how many tokens, why it stops, which fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub output_tokens: u32,
    pub finish: Finish,
    pub fault: Option<Fault>,
}

/// A request the model refuses, with vLLM's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    #[error(
        "This model's maximum context length is {max_model_len} tokens. However, you requested \
         {total} tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). \
         Please reduce the length of the messages or completion."
    )]
    TooLong { max_model_len: u32, total: u64, prompt_tokens: u32, max_tokens: u32 },
    #[error(
        "This model's maximum context length is {max_model_len} tokens. However, your request \
         has {prompt_tokens} input tokens. Please reduce the length of the input messages."
    )]
    PromptTooLong { max_model_len: u32, prompt_tokens: u32 },
    #[error("max_tokens must be at least 1, got {max_tokens}.")]
    ZeroMaxTokens { max_tokens: u32 },
    #[error("min_tokens must be less than or equal to max_tokens={max_tokens}, got {min_tokens}.")]
    MinAboveMax { min_tokens: u32, max_tokens: u32 },
}

/// SplitMix64: a cheap, well-mixed hash for seeding per-request randomness and for picking
/// token texts by position without keeping any state.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Decides a request's output length, finish reason and fault from the seed and its arrival
/// index (0 for the first request the server saw). Same inputs, same outcome.
pub fn decide(
    seed: u64,
    index: u64,
    ask: &Ask,
    max_model_len: u32,
    output_len: &OutputLen,
    faults: &FaultRates,
) -> Result<Outcome, AskError> {
    if ask.prompt_tokens >= max_model_len {
        return Err(AskError::PromptTooLong { max_model_len, prompt_tokens: ask.prompt_tokens });
    }
    let room = max_model_len - ask.prompt_tokens;
    if let Some(max_tokens) = ask.max_tokens {
        if max_tokens == 0 {
            return Err(AskError::ZeroMaxTokens { max_tokens });
        }
        let total = u64::from(ask.prompt_tokens) + u64::from(max_tokens);
        if total > u64::from(max_model_len) {
            return Err(AskError::TooLong {
                max_model_len,
                total,
                prompt_tokens: ask.prompt_tokens,
                max_tokens,
            });
        }
        if ask.min_tokens > max_tokens {
            return Err(AskError::MinAboveMax { min_tokens: ask.min_tokens, max_tokens });
        }
    }
    let limit = ask.max_tokens.unwrap_or(room);

    let mut rng = rand::rngs::StdRng::seed_from_u64(mix(seed ^ mix(index)));
    // Draw in a fixed order whatever the request asks, so one request's options never shift
    // another draw.
    let sampled = sample_len(&mut rng, output_len);
    let fault_draw: f64 = rng.random();

    let (output_tokens, finish) = if ask.ignore_eos || sampled >= limit {
        (limit, Finish::Length)
    } else {
        let n = sampled.max(ask.min_tokens).min(limit);
        (n, if n == limit { Finish::Length } else { Finish::Stop })
    };

    let at_token = output_tokens / 2;
    let kinds = [
        (faults.http_500, Fault::Http500),
        (faults.drop, Fault::Drop { at_token }),
        (faults.stall, Fault::Stall { at_token }),
        (faults.stream_error, Fault::StreamError { at_token }),
    ];
    let mut edge = 0.0;
    let mut fault = None;
    for (rate, kind) in kinds {
        edge += rate;
        if fault_draw < edge {
            fault = Some(kind);
            break;
        }
    }
    Ok(Outcome { output_tokens, finish, fault })
}

fn sample_len(rng: &mut impl Rng, output_len: &OutputLen) -> u32 {
    let mean = output_len.mean.max(1);
    match output_len.dist {
        OutputLenDist::Fixed => mean,
        OutputLenDist::Uniform => rng.random_range(1..=(2 * mean - 1).max(1)),
        OutputLenDist::Exponential => {
            // `Exp::new` fails only for a negative or NaN rate; 1/mean is neither.
            let exp = Exp::new(1.0 / f64::from(mean)).unwrap_or_else(|_| unreachable!());
            let x: f64 = exp.sample(rng);
            (x.round() as u32).max(1)
        }
    }
}

/// Words of one to four ASCII letters, so that each generated token is exactly one token to
/// `count_tokens` (a client re-counting the text gets the server's `completion_tokens`).
const VOCAB: [&str; 64] = [
    " the", " of", " and", " to", " a", " in", " is", " it", " that", " for", " on", " with",
    " as", " was", " be", " by", " this", " are", " or", " from", " at", " an", " but", " not",
    " have", " one", " all", " can", " more", " has", " its", " new", " data", " node", " core",
    " gpu", " cpu", " numa", " bind", " load", " run", " fast", " slow", " time", " path", " link",
    " bus", " card", " page", " set", " map", " test", " unit", " rate", " peak", " mean", " tail",
    " wait", " busy", " idle", " zone", " host", " port", " task",
];

/// The text of content token `i` of the request with arrival index `index`.
pub fn token_text(seed: u64, index: u64, i: u32) -> &'static str {
    let h = mix(seed ^ mix(index.wrapping_mul(0x1_0000_0001) ^ u64::from(i)));
    VOCAB[(h % VOCAB.len() as u64) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_tokens_follows_the_documented_rules() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens("   \n\t"), 0);
        assert_eq!(count_tokens("Hello, world!"), 6);
        assert_eq!(count_tokens("abcd"), 1);
        assert_eq!(count_tokens("abcde"), 2);
        assert_eq!(count_tokens("解释人工智能"), 6);
        assert_eq!(count_tokens("你是 a"), 3);
        assert_eq!(count_tokens(" the of and"), 3);
    }

    #[test]
    fn chat_prompt_adds_template_tokens() {
        // 2 messages: (6 + 4) + (6 + 4) + 3
        assert_eq!(chat_prompt_tokens(["你是人工智能专家", "解释人工智能"]), 8 + 4 + 6 + 4 + 3);
        assert_eq!(chat_prompt_tokens([]), 3);
    }

    #[test]
    fn every_vocab_word_is_one_token() {
        for w in VOCAB {
            assert_eq!(count_tokens(w), 1, "{w:?}");
        }
    }

    #[test]
    fn latency_model_formulas() {
        let m = LatencyModel {
            prefill_base: Duration::from_millis(50),
            prefill_per_token: Duration::from_micros(100),
            decode_base: Duration::from_millis(30),
            decode_per_running: Duration::from_micros(500),
        };
        assert_eq!(m.prefill(0), Duration::from_millis(50));
        assert_eq!(m.prefill(1000), Duration::from_millis(150));
        assert_eq!(m.decode_step(1), Duration::from_micros(30_500));
        assert_eq!(m.decode_step(10), Duration::from_millis(35));
        let f = LatencyModel::fixed(Duration::from_millis(100), Duration::from_millis(10));
        assert_eq!(f.prefill(5000), Duration::from_millis(100));
        assert_eq!(f.decode_step(300), Duration::from_millis(10));
        assert!(LatencyModel::ZERO.is_zero());
        assert!(!f.is_zero());
    }

    fn ask(prompt: u32, max: Option<u32>) -> Ask {
        Ask { prompt_tokens: prompt, max_tokens: max, min_tokens: 0, ignore_eos: false }
    }

    #[test]
    fn max_tokens_caps_the_output() {
        let fixed = OutputLen { dist: OutputLenDist::Fixed, mean: 100 };
        let none = FaultRates::default();
        let o = decide(1, 0, &ask(10, Some(16)), 1000, &fixed, &none).unwrap();
        assert_eq!((o.output_tokens, o.finish, o.fault), (16, Finish::Length, None));
        let o = decide(1, 0, &ask(10, Some(500)), 1000, &fixed, &none).unwrap();
        assert_eq!((o.output_tokens, o.finish), (100, Finish::Stop));
        let o = decide(1, 0, &Ask { ignore_eos: true, ..ask(10, Some(500)) }, 1000, &fixed, &none)
            .unwrap();
        assert_eq!((o.output_tokens, o.finish), (500, Finish::Length));
        let o = decide(1, 0, &Ask { min_tokens: 300, ..ask(10, Some(500)) }, 1000, &fixed, &none)
            .unwrap();
        assert_eq!((o.output_tokens, o.finish), (300, Finish::Stop));
        // No max_tokens: the context length is the limit.
        let o = decide(1, 0, &ask(950, None), 1000, &fixed, &none).unwrap();
        assert_eq!((o.output_tokens, o.finish), (50, Finish::Length));
    }

    #[test]
    fn context_length_is_enforced_like_vllm() {
        let d = OutputLen::default();
        let none = FaultRates::default();
        let e = decide(1, 0, &ask(900, Some(200)), 1000, &d, &none).unwrap_err();
        assert_eq!(
            e,
            AskError::TooLong {
                max_model_len: 1000,
                total: 1100,
                prompt_tokens: 900,
                max_tokens: 200
            }
        );
        assert!(e.to_string().starts_with("This model's maximum context length is 1000 tokens."));
        assert!(matches!(
            decide(1, 0, &ask(1000, None), 1000, &d, &none),
            Err(AskError::PromptTooLong { .. })
        ));
        assert!(matches!(
            decide(1, 0, &ask(1, Some(0)), 1000, &d, &none),
            Err(AskError::ZeroMaxTokens { .. })
        ));
    }

    #[test]
    fn decisions_depend_only_on_seed_and_index() {
        let d = OutputLen::default();
        let f = FaultRates { http_500: 0.1, drop: 0.1, stall: 0.1, stream_error: 0.1 };
        let a: Vec<_> = (0..200).map(|i| decide(7, i, &ask(10, None), 32768, &d, &f)).collect();
        let b: Vec<_> = (0..200).map(|i| decide(7, i, &ask(10, None), 32768, &d, &f)).collect();
        assert_eq!(a, b);
        let c: Vec<_> = (0..200).map(|i| decide(8, i, &ask(10, None), 32768, &d, &f)).collect();
        assert_ne!(a, c);
        let texts: Vec<_> = (0..50).map(|i| token_text(7, 3, i)).collect();
        assert_eq!(texts, (0..50).map(|i| token_text(7, 3, i)).collect::<Vec<_>>());
        assert_ne!(texts, (0..50).map(|i| token_text(7, 4, i)).collect::<Vec<_>>());
    }

    #[test]
    fn faults_come_at_the_configured_rates() {
        let d = OutputLen { dist: OutputLenDist::Fixed, mean: 20 };
        let f = FaultRates { http_500: 0.05, drop: 0.10, stall: 0.15, stream_error: 0.02 };
        let n = 20_000;
        let mut counts = [0u32; 4];
        for i in 0..n {
            match decide(42, i, &ask(10, None), 32768, &d, &f).unwrap().fault {
                Some(Fault::Http500) => counts[0] += 1,
                Some(Fault::Drop { at_token }) => {
                    assert_eq!(at_token, 10);
                    counts[1] += 1
                }
                Some(Fault::Stall { .. }) => counts[2] += 1,
                Some(Fault::StreamError { .. }) => counts[3] += 1,
                None => {}
            }
        }
        for (count, rate) in counts.iter().zip([0.05, 0.10, 0.15, 0.02]) {
            let got = f64::from(*count) / n as f64;
            assert!((got - rate).abs() < 0.01, "rate {rate}: got {got}");
        }
    }

    proptest::proptest! {
        #[test]
        fn decide_never_breaks_the_context_limit(
            seed: u64,
            index: u64,
            prompt in 0u32..5000,
            max in proptest::option::of(0u32..5000),
            min in 0u32..5000,
            ignore_eos: bool,
            max_model_len in 2u32..6000,
            mean in 1u32..3000,
            dist in proptest::sample::select(vec![
                OutputLenDist::Fixed, OutputLenDist::Uniform, OutputLenDist::Exponential,
            ]),
        ) {
            let a = Ask { prompt_tokens: prompt, max_tokens: max, min_tokens: min, ignore_eos };
            let f = FaultRates { http_500: 0.25, drop: 0.25, stall: 0.25, stream_error: 0.25 };
            if let Ok(o) = decide(seed, index, &a, max_model_len, &OutputLen { dist, mean }, &f) {
                proptest::prop_assert!(o.output_tokens >= 1);
                proptest::prop_assert!(prompt + o.output_tokens <= max_model_len);
                if let Some(m) = max {
                    proptest::prop_assert!(o.output_tokens <= m);
                    proptest::prop_assert!(o.output_tokens >= min.min(m));
                }
                proptest::prop_assert!(o.fault.is_some(), "rates adding up to 1 always pick one");
            }
        }

        #[test]
        fn count_tokens_is_at_most_the_character_count(text: String) {
            proptest::prop_assert!(count_tokens(&text) as usize <= text.chars().count());
        }
    }

    #[test]
    fn output_length_distributions_have_their_means() {
        let none = FaultRates::default();
        for dist in [OutputLenDist::Fixed, OutputLenDist::Uniform, OutputLenDist::Exponential] {
            let d = OutputLen { dist, mean: 200 };
            let n = 5000u64;
            let total: u64 = (0..n)
                .map(|i| {
                    let o = decide(3, i, &ask(10, None), 1_000_000, &d, &none).unwrap();
                    assert!(o.output_tokens >= 1);
                    u64::from(o.output_tokens)
                })
                .sum();
            let mean = total as f64 / n as f64;
            assert!((mean - 200.0).abs() < 10.0, "{dist:?}: mean {mean}");
        }
    }
}
