//! `promtool check metrics` on a `/metrics` text, shared by the tests that check the agent's
//! exposition (`tests/monitor.rs`, `tests/nvml.rs`).

use std::io::Write;
use std::process::{Command, Stdio};

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
