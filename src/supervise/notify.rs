//! The systemd notification seam. The supervisor says what happened (`Notice`); `SdNotifier`
//! sends it to `$NOTIFY_SOCKET` through the sd-notify crate (a no-op when systemd did not set
//! one), `RecordingNotifier` keeps it for in-process tests. Tests of the binary use a real
//! datagram socket instead.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One message to the service manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `READY=1`: the engine is healthy (sent once per agent run).
    Ready,
    /// `STATUS=...`: a human line shown by `systemctl status`.
    Status(String),
    /// `WATCHDOG=1`.
    Watchdog,
    /// `STOPPING=1`.
    Stopping,
    /// `EXTEND_TIMEOUT_USEC=...`: a long model load must not trip `TimeoutStartSec`.
    ExtendTimeout(Duration),
}

pub trait Notifier: Send + Sync {
    fn notify(&self, notice: Notice);
    /// The watchdog interval systemd asked for (`WATCHDOG_USEC`), if any.
    fn watchdog(&self) -> Option<Duration>;
}

/// Talks to systemd through `$NOTIFY_SOCKET`.
#[derive(Debug, Default)]
pub struct SdNotifier;

impl Notifier for SdNotifier {
    fn notify(&self, notice: Notice) {
        use sd_notify::NotifyState as S;
        let status;
        let state = match &notice {
            Notice::Ready => S::Ready,
            Notice::Status(s) => {
                status = s.clone();
                S::Status(&status)
            }
            Notice::Watchdog => S::Watchdog,
            Notice::Stopping => S::Stopping,
            Notice::ExtendTimeout(d) => {
                S::ExtendTimeoutUsec(d.as_micros().min(u32::MAX as u128) as u32)
            }
        };
        if let Err(e) = sd_notify::notify(false, &[state]) {
            tracing::warn!(error = %e, ?notice, "sd_notify failed");
        }
    }

    fn watchdog(&self) -> Option<Duration> {
        let mut usec = 0;
        sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
    }
}

/// Records every notice, for tests of the state machine.
#[derive(Debug, Clone, Default)]
pub struct RecordingNotifier {
    pub notices: Arc<Mutex<Vec<Notice>>>,
    pub watchdog: Option<Duration>,
}

impl Notifier for RecordingNotifier {
    fn notify(&self, notice: Notice) {
        self.notices.lock().unwrap().push(notice);
    }
    fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }
}
