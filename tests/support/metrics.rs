//! For the tests that read the agent's HTTP endpoints (`tests/monitor.rs`, `tests/nvml.rs`,
//! `tests/prometheus.rs`): a plain loopback GET, `promtool check metrics` on a `/metrics` text,
//! and the alert names of a `/status` document.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

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

/// The checks of the alerts in a monitor `/status` document.
pub fn alerts(v: &serde_json::Value) -> Vec<String> {
    v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["check"].as_str().unwrap().to_string())
        .collect()
}
