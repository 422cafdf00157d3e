//! For the tests that read the agent's HTTP endpoints (`tests/monitor.rs`, `tests/nvml.rs`,
//! `tests/mxsml.rs`, `tests/prometheus.rs`): the address a monitor started on port 0 listens
//! on, a plain loopback GET, a poll of `/status` until it shows something, `promtool check
//! metrics` on a `/metrics` text (and a scrape that must hold given series and be clean), and
//! the alert names of a `/status` document.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Reads a `nodeagent monitor ... --listen 127.0.0.1:0` child's stderr up to its line
/// `serving http://ADDR/...`, then drains the rest on a thread so the child never blocks on a
/// full pipe: (ADDR, that thread, which gives all of stderr, the lines before ADDR included,
/// once the child has exited). Panics with the child's exit status when it exits first.
pub fn listening(child: &mut Child) -> (String, JoinHandle<String>) {
    let mut err = BufReader::new(child.stderr.take().expect("stderr piped"));
    let mut early = String::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            let status = child.wait().unwrap();
            panic!("monitor exited before listening: {status}\n{early}");
        }
        early.push_str(&line);
        if let Some(rest) = line.trim().strip_prefix("serving http://") {
            let addr = rest.split('/').next().unwrap().to_string();
            let rest = std::thread::spawn(move || {
                let mut all = early;
                let _ = err.read_to_string(&mut all);
                all
            });
            return (addr, rest);
        }
    }
}

/// Polls `/status` until `pred` holds (up to 20 s); the document that satisfied it.
pub fn wait_status(
    addr: &str,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = http_get(addr, "/status");
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; last /status: {v:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plain HTTP/1.1 GET on loopback: (status, body); `None` when nothing answers (for polls).
pub fn try_http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((code, body))
}

/// [`try_http_get`] where an answer is required.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    try_http_get(addr, path).unwrap_or_else(|| panic!("no answer from http://{addr}{path}"))
}

/// `promtool check metrics`: exit 0 clean, 3 parsed but lint problems, 1 unparsable; with
/// promtool's own words.
pub fn promtool(text: &str) -> (i32, String) {
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed: scripts/setup.sh test");
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    let msg =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), msg)
}

/// `/metrics` of the agent at `addr`, which must hold every line of `want` and pass
/// `promtool check metrics` outright; its text.
pub fn scrape_clean(addr: &str, want: &[&str]) -> String {
    let (code, text) = http_get(addr, "/metrics");
    assert_eq!(code, 200, "{text}");
    for want in want {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
    let (code, msg) = promtool(&text);
    assert_eq!(code, 0, "promtool check metrics: {msg}\n{text}");
    text
}

/// The checks of the alerts in a monitor `/status` document.
pub fn alerts(v: &serde_json::Value) -> Vec<String> {
    v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["check"].as_str().unwrap().to_string())
        .collect()
}
