//! Reading an OpenAI-compatible answer: the incremental server-sent-events parser
//! (`SseParser`) and what the answer's JSON chunks tell (`Measure`: when each content chunk
//! arrived, `usage`, the finish reason, `[DONE]`, errors sent in-band). It gets bytes and the
//! time they arrived; it never touches a socket or a clock, and never panics on what a server
//! sends. Whether the request succeeded as a whole is decided in `client`.
//!
//! A streamed answer looks like:
//! ```text
//! data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}
//!
//! data: {"id":"c1","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":16,"total_tokens":25}}
//!
//! data: [DONE]
//! ```

use std::borrow::Cow;
use std::time::{Duration, Instant as StdInstant};

use serde::Deserialize;

use super::record::ErrorClass;

pub(super) fn snippet(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(200)]);
    s.replace(['\n', '\r'], " ")
}

/// What the body of one request showed so far.
#[derive(Debug, Default)]
pub(super) struct Measure {
    pub(super) first_byte: Option<StdInstant>,
    /// Time spent opening a new connection for this request.
    pub(super) connect: Option<Duration>,
    pub(super) status: Option<u16>,
    pub(super) chunk_s: Vec<StdInstant>,
    pub(super) usage_input: Option<u64>,
    pub(super) usage_output: Option<u64>,
    pub(super) finish_reason: Option<String>,
    pub(super) done: bool,
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<Message<'a>>,
    #[serde(default, borrow)]
    message: Option<Message<'a>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

fn nonempty(s: &Option<Cow<'_, str>>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

impl Measure {
    /// One SSE event's data.
    pub(super) fn on_event(
        &mut self,
        data: &[u8],
        t: StdInstant,
    ) -> Result<(), (ErrorClass, String)> {
        if data == b"[DONE]" {
            self.done = true;
            return Ok(());
        }
        let has_content = self.on_json(data)?;
        if has_content {
            self.chunk_s.push(t);
        }
        Ok(())
    }

    /// A non-streamed answer: one JSON document; the first token "arrives" with it.
    pub(super) fn on_whole(
        &mut self,
        data: &[u8],
        t: StdInstant,
    ) -> Result<(), (ErrorClass, String)> {
        if self.on_json(data)? {
            self.chunk_s.push(t);
        }
        Ok(())
    }

    /// Parses one JSON chunk; true when it carries output text.
    fn on_json(&mut self, data: &[u8]) -> Result<bool, (ErrorClass, String)> {
        let chunk: Chunk<'_> = serde_json::from_slice(data).map_err(|e| {
            (ErrorClass::ParseError, format!("bad JSON in the answer ({e}): {}", snippet(data)))
        })?;
        if let Some(err) = chunk.error {
            return Err((
                ErrorClass::ServerError,
                format!("error in the stream: {}", snippet(err.to_string().as_bytes())),
            ));
        }
        if let Some(u) = chunk.usage {
            self.usage_input = u.prompt_tokens.or(self.usage_input);
            self.usage_output = u.completion_tokens.or(self.usage_output);
        }
        let mut content = false;
        for c in &chunk.choices {
            for msg in [&c.delta, &c.message].into_iter().flatten() {
                content |= nonempty(&msg.content) || nonempty(&msg.reasoning_content);
            }
            content |= nonempty(&c.text);
            if let Some(f) = &c.finish_reason {
                self.finish_reason = Some(f.to_string());
            }
        }
        Ok(content)
    }
}

/// Incremental server-sent-events parser: feed it body frames as they come; it calls back
/// with the data of each complete event (several `data:` lines joined by `\n`). Comments,
/// `event:`, `id:` and `retry:` lines are skipped; CRLF and LF both end lines.
#[derive(Debug, Default)]
pub struct SseParser {
    partial: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
}

impl SseParser {
    pub fn feed<E>(
        &mut self,
        mut bytes: &[u8],
        mut on_event: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if !self.partial.is_empty() {
            match memchr::memchr(b'\n', bytes) {
                None => {
                    self.partial.extend_from_slice(bytes);
                    return Ok(());
                }
                Some(i) => {
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(&bytes[..i]);
                    self.line(&line, &mut on_event)?;
                    line.clear();
                    self.partial = line;
                    bytes = &bytes[i + 1..];
                }
            }
        }
        while let Some(i) = memchr::memchr(b'\n', bytes) {
            self.line(&bytes[..i], &mut on_event)?;
            bytes = &bytes[i + 1..];
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    /// The body ended: a last line without newline and a last event without blank line count.
    pub fn finish<E>(&mut self, mut on_event: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, &mut on_event)?;
        }
        self.line(b"", &mut on_event)
    }

    fn line<E>(
        &mut self,
        line: &[u8],
        on_event: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_data {
                self.has_data = false;
                let r = on_event(&self.data);
                self.data.clear();
                return r;
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &b""[..]),
        };
        if field == b"data" {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(frames: &[&[u8]]) -> Vec<String> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for f in frames {
            p.feed::<()>(f, |e| {
                out.push(String::from_utf8(e.to_vec()).unwrap());
                Ok(())
            })
            .unwrap();
        }
        p.finish::<()>(|e| {
            out.push(String::from_utf8(e.to_vec()).unwrap());
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn sse_events_split_across_frames_are_joined() {
        let got = events(&[b"data: {\"a\"", b":1}\n", b"\ndata: [DO", b"NE]\n\n"]);
        assert_eq!(got, vec!["{\"a\":1}", "[DONE]"]);
    }

    #[test]
    fn sse_handles_crlf_comments_multiline_and_a_missing_final_blank_line() {
        let got =
            events(&[b": ping\r\n\r\nevent: x\r\nid: 3\r\ndata: a\r\ndata:b\r\n\r\ndata: last"]);
        assert_eq!(got, vec!["a\nb", "last"]);
    }

    proptest::proptest! {
        #[test]
        fn sse_result_does_not_depend_on_frame_boundaries(cuts in proptest::collection::vec(0usize..120, 0..8)) {
            let text: &[u8] = b"data: one\n\n: c\ndata: two\r\n\r\ndata: th\ndata: ree\n\ndata: [DONE]\n\n";
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % text.len()).collect();
            cuts.sort_unstable();
            let mut frames = Vec::new();
            let mut prev = 0;
            for c in cuts { frames.push(&text[prev..c]); prev = c; }
            frames.push(&text[prev..]);
            proptest::prop_assert_eq!(events(&frames), vec!["one", "two", "th\nree", "[DONE]"]);
        }

        #[test]
        fn measure_never_panics_on_garbage(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut m = Measure::default();
            let _ = m.on_event(&data, StdInstant::now());
        }
    }

    #[test]
    fn chunks_usage_and_finish_reason_are_read() {
        let mut m = Measure::default();
        let t = StdInstant::now();
        m.on_event(br#"{"choices":[{"delta":{"role":"assistant"}}]}"#, t).unwrap();
        m.on_event(br#"{"choices":[{"delta":{"content":"Hi \"x\""}}]}"#, t).unwrap();
        m.on_event(br#"{"choices":[{"text":"yo","finish_reason":"length"}]}"#, t).unwrap();
        m.on_event(br#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":16}}"#, t)
            .unwrap();
        m.on_event(b"[DONE]", t).unwrap();
        assert_eq!(m.chunk_s.len(), 2);
        assert_eq!((m.usage_input, m.usage_output), (Some(9), Some(16)));
        assert_eq!(m.finish_reason.as_deref(), Some("length"));
        assert!(m.done);
    }

    #[test]
    fn errors_in_the_stream_are_classified() {
        let mut m = Measure::default();
        let t = StdInstant::now();
        let e = m.on_event(b"{not json", t).unwrap_err();
        assert_eq!(e.0, ErrorClass::ParseError);
        let e = m.on_event(br#"{"error":{"message":"boom","code":500}}"#, t).unwrap_err();
        assert_eq!(e.0, ErrorClass::ServerError);
        assert!(e.1.contains("boom"));
    }
}
