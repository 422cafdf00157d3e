//! The bounds of every duration and count in the config: what `serve` can hold without a zero
//! interval (a tokio interval of zero panics), an instant overflow (`Instant + u64::MAX s`
//! panics) or a setting that silently disables what it names. Checked per file at load time, so
//! a refusal names the file that set the value and the value as written
//! (`file: key: value: why`), and once more on the effective config (CLI overrides included).
//! docs/configuration.md lists the same bounds per key.
//!
//! Not here: the semantic checks that look at several keys (`Config::validate`).

use std::time::Duration;

use super::Config;

/// The longest duration any key accepts: long enough for any real timeout, short enough that
/// no deadline computed from it can overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The most restarts or failed checks a count may name.
pub const MAX_COUNT: u32 = 10_000;

/// One value out of bounds: the key (`supervise.health_interval`), the value as the typed config
/// has it, and why it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub key: &'static str,
    pub value: String,
    pub why: String,
}

/// How a duration key is bounded below.
#[derive(Debug, Clone, Copy)]
enum Min {
    /// At least this long (zero refused).
    AtLeast(Duration),
    /// Zero is allowed and means what the text says; otherwise at least the duration.
    ZeroMeans(&'static str, Duration),
}

#[allow(non_snake_case)]
const fn MS(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[allow(non_snake_case)]
const fn S(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn duration_keys(c: &Config) -> Vec<(&'static str, Option<Duration>, Min)> {
    let s = &c.supervise;
    vec![
        ("supervise.ready_timeout", s.ready_timeout, Min::AtLeast(S(1))),
        ("supervise.health_interval", s.health_interval, Min::AtLeast(MS(10))),
        ("supervise.health_timeout", s.health_timeout, Min::AtLeast(MS(10))),
        ("supervise.stall_timeout", s.stall_timeout, Min::ZeroMeans("the watchdog off", S(1))),
        ("supervise.canary_interval", s.canary_interval, Min::ZeroMeans("the canary off", MS(100))),
        ("supervise.canary_timeout", s.canary_timeout, Min::AtLeast(MS(10))),
        ("supervise.binding_check_interval", s.binding_check_interval, Min::AtLeast(MS(10))),
        ("supervise.stop_grace", s.stop_grace, Min::ZeroMeans("SIGKILL at once", MS(1))),
        ("supervise.backoff_initial", s.backoff_initial, Min::AtLeast(MS(10))),
        ("supervise.backoff_max", s.backoff_max, Min::AtLeast(MS(10))),
        ("supervise.restart_window", s.restart_window, Min::AtLeast(S(1))),
        ("supervise.stable_after", s.stable_after, Min::AtLeast(S(1))),
        ("supervise.drain_timeout", s.drain_timeout, Min::ZeroMeans("no drain", MS(100))),
        (
            "container.stop_timeout_s",
            c.container.stop_timeout_s.map(Duration::from_secs),
            Min::ZeroMeans("SIGKILL at once", S(1)),
        ),
    ]
}

fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Every value of `c` that is out of bounds (keys left unset are not checked: their defaults
/// are in bounds).
pub fn violations(c: &Config) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut bad = |key: &'static str, value: String, why: String| {
        out.push(Violation { key, value, why });
    };
    for (key, value, min) in duration_keys(c) {
        let Some(d) = value else { continue };
        let value = if key.ends_with("_s") { d.as_secs().to_string() } else { show(d) };
        if d > MAX_DURATION {
            bad(key, value, "must be at most 365days".to_string());
            continue;
        }
        match min {
            Min::AtLeast(m) if d < m => {
                let zero = if d.is_zero() { "; zero is not allowed here" } else { "" };
                bad(key, value, format!("must be at least {}{zero}", show(m)));
            }
            Min::ZeroMeans(zero, m) if !d.is_zero() && d < m => {
                bad(key, value, format!("must be 0 ({zero}) or at least {}", show(m)));
            }
            _ => {}
        }
    }
    let s = &c.supervise;
    let counts = [
        ("supervise.health_failures", s.health_failures, 1),
        ("supervise.restart_budget", s.restart_budget, 0),
    ];
    for (key, value, min) in counts {
        let Some(n) = value else { continue };
        if n < min || n > MAX_COUNT {
            bad(key, n.to_string(), format!("must be between {min} and {MAX_COUNT}"));
        }
    }
    if c.engine.port == Some(0) {
        bad("engine.port", "0".into(), "must be between 1 and 65535".into());
    }
    if let Some(tp) = c.launch.tp {
        if tp == 0 || tp > 1024 {
            bad("launch.tp", tp.to_string(), "must be between 1 and 1024".into());
        }
    }
    if let Some(i) = c.launch.instance {
        if i > 1024 {
            bad("launch.instance", i.to_string(), "must be at most 1024".into());
        }
    }
    if let Some(ports) = &c.launch.ports {
        if ports.contains(&0) {
            bad(
                "launch.ports",
                format!("{ports:?}"),
                "every port must be between 1 and 65535".into(),
            );
        }
    }
    out
}

/// The text of `key` (`table.key`) as the file wrote it (`"0s"`, `5`), when it is there.
pub fn written(table: &toml::Table, key: &str) -> Option<String> {
    let (section, name) = key.split_once('.')?;
    let value = table.get(section)?.as_table()?.get(name)?;
    Some(value.to_string())
}

/// The line (1-based) that sets `key` (`section.name`) in `text`: `name = ...` under
/// `[section]`, or `section.name = ...` at the top. Best effort, for the error message.
pub fn line_of(text: &str, key: &str) -> Option<usize> {
    let (section, name) = key.split_once('.')?;
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = header.trim().to_string();
            continue;
        }
        let Some((k, _)) = line.split_once('=') else { continue };
        let k = k.trim();
        if (current == section && k == name) || (current.is_empty() && k == key) {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml_text: &str) -> Vec<Violation> {
        violations(&toml::from_str::<Config>(toml_text).unwrap())
    }

    #[test]
    fn zero_intervals_and_huge_durations_are_refused() {
        let v = check("[supervise]\nhealth_interval = \"0s\"\nbinding_check_interval = \"0s\"\n");
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].why.contains("zero is not allowed"), "{v:?}");
        let huge = "\"18446744073709551615s\"";
        for key in ["ready_timeout", "health_interval", "stop_grace", "restart_window"] {
            let v = check(&format!("[supervise]\n{key} = {huge}\n"));
            assert_eq!(v.len(), 1, "{key}: {v:?}");
            assert!(v[0].why.contains("at most"), "{v:?}");
        }
    }

    #[test]
    fn zero_is_allowed_where_it_has_a_meaning() {
        assert!(check("[supervise]\nstall_timeout = \"0s\"\nstop_grace = \"0s\"\n").is_empty());
        assert!(check("[container]\nstop_timeout_s = 0\n").is_empty());
        let v = check("[supervise]\nstall_timeout = \"10ms\"\n");
        assert!(v[0].why.contains("must be 0 (the watchdog off) or at least 1s"), "{v:?}");
        assert!(check("[supervise]\ncanary_interval = \"0s\"\n").is_empty());
        let v = check("[supervise]\ncanary_interval = \"10ms\"\ncanary_timeout = \"1ms\"\n");
        assert_eq!(
            v.iter().map(|v| v.key).collect::<Vec<_>>(),
            ["supervise.canary_interval", "supervise.canary_timeout"],
            "{v:?}"
        );
        assert!(v[0].why.contains("must be 0 (the canary off) or at least 100ms"), "{v:?}");
        assert!(check("[supervise]\ndrain_timeout = \"0s\"\n").is_empty());
        let v = check("[supervise]\ndrain_timeout = \"5ms\"\n");
        assert!(v[0].why.contains("must be 0 (no drain) or at least 100ms"), "{v:?}");
    }

    #[test]
    fn counts_ports_and_tp_are_bounded() {
        let v = check("[supervise]\nhealth_failures = 0\nrestart_budget = 4000000000\n");
        assert_eq!(
            v.iter().map(|v| v.key).collect::<Vec<_>>(),
            ["supervise.health_failures", "supervise.restart_budget"]
        );
        let v = check("[engine]\nport = 0\n[launch]\ntp = 0\n");
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(check("[supervise]\nrestart_budget = 0\nhealth_failures = 3\n").is_empty());
    }

    #[test]
    fn the_defaults_are_in_bounds() {
        let c = Config::default();
        let p = c.policy();
        let mut full = Config::default();
        full.supervise.ready_timeout = Some(p.ready_timeout);
        full.supervise.health_interval = Some(p.health_interval);
        full.supervise.health_timeout = Some(p.health_timeout);
        full.supervise.stall_timeout = Some(p.stall_timeout);
        full.supervise.canary_interval = Some(p.canary_interval);
        full.supervise.canary_timeout = Some(p.canary_timeout);
        full.supervise.binding_check_interval = Some(p.binding_check_interval);
        full.supervise.stop_grace = Some(p.stop_grace);
        full.supervise.backoff_initial = Some(p.backoff_initial);
        full.supervise.backoff_max = Some(p.backoff_max);
        full.supervise.restart_window = Some(p.restart_window);
        full.supervise.stable_after = Some(p.stable_after);
        full.supervise.drain_timeout = Some(p.drain_timeout);
        full.supervise.health_failures = Some(p.health_failures);
        full.supervise.restart_budget = Some(p.restart_budget);
        assert_eq!(violations(&full), []);
    }

    #[test]
    fn written_gives_the_text_of_the_file() {
        let t: toml::Table = toml::from_str("[supervise]\nhealth_interval = \"0s\"\n").unwrap();
        assert_eq!(written(&t, "supervise.health_interval").as_deref(), Some("\"0s\""));
        assert_eq!(written(&t, "supervise.stop_grace"), None);
        let text = "a = 1\n[engine]\nport = 0\n[supervise]\n# x\nhealth_interval = \"0s\"\n";
        assert_eq!(line_of(text, "supervise.health_interval"), Some(6));
        assert_eq!(line_of(text, "engine.port"), Some(3));
        assert_eq!(line_of("supervise.stop_grace = \"1s\"\n", "supervise.stop_grace"), Some(1));
    }
}
