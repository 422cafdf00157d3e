//! Secrets kept out of every output of a sweep: the API key (`--api-key X`, `--api-key=X` or
//! `OPENAI_API_KEY`), the values of secret-looking keys inside `--extra-body` (`Authorization`,
//! `api-key`, `x-api-key`, `*_token`, `password`, ...) and a password in the URL's userinfo.
//! `Secrets::argv` rewrites the command line for `meta.argv`; `Secrets::text` replaces every
//! known secret value in any text (an error detail a server echoed, a URL) by `<redacted>`.
//!
//! Not here: sending the key (the load generator gets it unredacted) and choosing which outputs
//! to scrub (the callers: `cmd::sweep::build`, `verify::sweep`, `verify::rundir`).

use std::fmt;

/// What every redacted value becomes.
pub const REDACTED: &str = "<redacted>";

/// Values shorter than this are replaced only where a whole argument equals them: replacing a
/// two-letter key inside every argument would mangle the command line.
const MIN_SUBSTRING: usize = 6;

/// The secret values of one run. Its `Debug` never shows them.
#[derive(Clone, Default, PartialEq)]
pub struct Secrets {
    /// Longest first, so that a value containing another is replaced whole.
    values: Vec<String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} value(s) {REDACTED})", self.values.len())
    }
}

/// One secret value (the API key) whose `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Whether a JSON key of `--extra-body` names a secret: `Authorization`, `api-key`, `apiKey`,
/// `x-api-key`, `access_token`, `password`, `secret`, `cookie`, ... (not `max_tokens`).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    const PARTS: [&str; 8] = [
        "authorization",
        "api_key",
        "apikey",
        "secret",
        "password",
        "passwd",
        "credential",
        "cookie",
    ];
    PARTS.iter().any(|p| k.contains(p)) || k == "token" || k.ends_with("_token") || k == "bearer"
}

impl Secrets {
    /// The secrets of a run: its API key, the secret-looking values of its `--extra-body` (when
    /// it is JSON) and the password of its URL's userinfo.
    pub fn new(api_key: Option<&str>, extra_body: Option<&str>, url: Option<&str>) -> Self {
        let mut values = Vec::new();
        if let Some(k) = api_key {
            values.push(k.to_string());
        }
        if let Some(v) = extra_body.and_then(|b| serde_json::from_str(b).ok()) {
            collect_secret_values(&v, false, &mut values);
        }
        if let Some(pass) = url.and_then(userinfo_password) {
            values.push(pass.to_string());
        }
        // A bearer token also appears without its scheme (in a server's echo, say).
        let schemes: Vec<String> = values
            .iter()
            .filter_map(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                matches!(scheme.to_ascii_lowercase().as_str(), "bearer" | "basic" | "token")
                    .then(|| rest.trim().to_string())
            })
            .collect();
        values.extend(schemes);
        values.retain(|v| !v.is_empty());
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Self { values }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every secret value (of at least `MIN_SUBSTRING` characters, or the whole
    /// text) replaced by `<redacted>`.
    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in &self.values {
            if out == *v {
                return REDACTED.to_string();
            }
            if v.len() >= MIN_SUBSTRING && out.contains(v.as_str()) {
                out = out.replace(v.as_str(), REDACTED);
            }
        }
        out
    }

    /// The command line with the value of `--api-key` (both forms) and the secret keys of
    /// `--extra-body` (both forms) redacted, then every known secret value anywhere.
    pub fn argv(&self, argv: &[String]) -> Vec<String> {
        let mut out = Vec::with_capacity(argv.len());
        let mut next: Option<&str> = None;
        for arg in argv {
            let redacted = match next.take() {
                Some("--api-key") => REDACTED.to_string(),
                Some(_) => redact_json_text(arg),
                None if arg == "--api-key" || arg == "--extra-body" => {
                    next = Some(if arg == "--api-key" { "--api-key" } else { "--extra-body" });
                    arg.clone()
                }
                None if arg.starts_with("--api-key=") => format!("--api-key={REDACTED}"),
                None => match arg.strip_prefix("--extra-body=") {
                    Some(json) => format!("--extra-body={}", redact_json_text(json)),
                    None => arg.clone(),
                },
            };
            out.push(self.text(&redacted));
        }
        out
    }
}

/// Pushes every string under a secret key of `v` (`inside`: `v` is under one already).
fn collect_secret_values(v: &serde_json::Value, inside: bool, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) if inside => out.push(s.clone()),
        serde_json::Value::Number(n) if inside => out.push(n.to_string()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_secret_values(x, inside, out)),
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                collect_secret_values(x, inside || is_secret_key(k), out);
            }
        }
        _ => {}
    }
}

/// A JSON object's secret keys' values replaced by `<redacted>` (text that is not JSON is
/// returned as it is: `Secrets::text` still replaces the known values in it).
fn redact_json_text(text: &str) -> String {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            serde_json::Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if is_secret_key(k) {
                        *x = serde_json::Value::String(REDACTED.to_string());
                    } else {
                        walk(x);
                    }
                }
            }
            _ => {}
        }
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(mut v) => {
            walk(&mut v);
            v.to_string()
        }
        Err(_) => text.to_string(),
    }
}

/// `pass` of `scheme://user:pass@host/...`.
fn userinfo_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    userinfo.split_once(':').map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn api_key_in_both_forms_and_extra_body_secrets_are_redacted() {
        let body = r#"{"headers": {"Authorization": "Bearer tok-123456"}, "X-Api-Key": "k9k9k9k9", "max_tokens": 5}"#;
        let s = Secrets::new(Some("sk-abcdef"), Some(body), None);
        let argv = args(&[
            "nodeagent",
            "verify",
            "--api-key",
            "sk-abcdef",
            "--extra-body",
            body,
            "--max-tokens",
            "5",
        ]);
        let out = s.argv(&argv).join(" ");
        for secret in ["sk-abcdef", "tok-123456", "k9k9k9k9"] {
            assert!(!out.contains(secret), "{out}");
        }
        assert!(out.contains("--api-key <redacted>") && out.contains("max_tokens"), "{out}");
        let out = s.argv(&args(&["x", "--api-key=sk-abcdef", &format!("--extra-body={body}")]));
        assert_eq!(out[1], "--api-key=<redacted>");
        assert!(out[2].starts_with("--extra-body={") && !out[2].contains("tok-123456"), "{out:?}");
        // A short key: the argument that is the key, not every "ab" of the line.
        let s = Secrets::new(Some("ab"), None, None);
        assert_eq!(
            s.argv(&args(&["--api-key", "ab", "--label", "ab", "tab"])),
            args(&["--api-key", "<redacted>", "--label", "<redacted>", "tab"])
        );
        // The key from the environment: only its value is known.
        let s = Secrets::new(Some("env-secret-1"), None, None);
        assert_eq!(s.text("401: bad key env-secret-1"), "401: bad key <redacted>");
        assert!(!format!("{s:?}").contains("env-secret-1"));
        assert_eq!(format!("{:?}", Some(Secret::new("env-secret-1"))), "Some(<redacted>)");
    }

    #[test]
    fn secret_keys_and_url_passwords() {
        for k in ["Authorization", "api-key", "apiKey", "x-api-key", "access_token", "password"] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in ["max_tokens", "min_tokens", "skip_special_tokens", "temperature", "model"] {
            assert!(!is_secret_key(k), "{k}");
        }
        let s = Secrets::new(None, None, Some("http://me:hunter22@127.0.0.1:8000/v1"));
        assert_eq!(
            s.text("http://me:hunter22@127.0.0.1:8000/v1"),
            "http://me:<redacted>@127.0.0.1:8000/v1"
        );
        assert!(Secrets::new(None, Some("not json"), Some("http://h:1")).is_empty());
    }
}
