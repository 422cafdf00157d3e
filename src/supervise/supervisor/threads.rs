//! The supervisor's thread placement reading at each binding check: the engine's threads
//! (`crate::supervise::threads`), set against the previous check's reading
//! (`crate::host::task_stat::summarize`), and the alert when the share of the engine's CPU
//! time outside the binding's CPUs is above `binding.cpu_outside_alert` (logged when it goes
//! up).
//!
//! Not here: which processes are the engine's (`check_binding`), the figures themselves.

use crate::host::task_stat::{self, ThreadPlacement};
use crate::supervise::procs::ProcCheck;
use crate::supervise::supervisor::Supervisor;
use crate::supervise::threads;

impl Supervisor {
    /// The thread placement over the interval since the last check and whether it raises the
    /// alert; `None` when no thread of the engine can be read here. The new reading is kept in
    /// the status record as the start of the next interval.
    pub(super) fn audit_threads(&self, processes: &[ProcCheck]) -> Option<(ThreadPlacement, bool)> {
        let pids: Vec<i32> = processes.iter().map(|p| p.pid).collect();
        let (now, unread) = threads::sample(self.proc.root(), &pids);
        for u in &unread {
            tracing::debug!("thread placement: {u}");
        }
        if now.is_empty() {
            return None;
        }
        let (before, was) = {
            let mut s = self.status.lock().unwrap();
            (s.thread_reading.take(), s.placement.cpu_outside_alert)
        };
        let hz = threads::ticks_per_second();
        let placement = task_stat::summarize(before.as_ref(), &now, hz, self.binding.cpus.as_ref());
        self.status.lock().unwrap().thread_reading = Some(now);
        let limit = self.policy.cpu_outside_alert;
        let alert = placement.outside_share.is_some_and(|s| s > limit);
        if alert && !was {
            tracing::warn!(
                share = placement.outside_share.unwrap_or_default(),
                limit,
                last_cpus_outside = ?placement.last_cpus_outside,
                "engine CPU time outside its bound CPUs: {:.1} % (alert above {:.1} %)",
                placement.outside_share.unwrap_or_default() * 100.0,
                limit * 100.0
            );
        }
        Some((placement, alert))
    }
}
