//! The state machine on paused time, with a scripted runtime: backoff, the crash-loop
//! budget, readiness timeouts and the watchdog take no real time. `tests/serve.rs` runs the
//! same rules on real processes. The runtime and the harness are `fake`'s.

use std::sync::Mutex;

use super::fake::{assert_near, harness, FakeRuntime, Harness, Script};
use super::*;

mod ranks;

/// Cancels once the engine has been started `n` times and `after` has passed since.
fn cancel_after_start(h: &Harness, n: usize, after: Duration) {
    let (script, cancel) = (h.script.clone(), h.cancel.clone());
    tokio::spawn(async move {
        while script.starts().len() < n {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(after).await;
        cancel.cancel();
    });
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_backs_off_doubling_up_to_the_cap_then_gives_up() {
    let h = harness(&[Some(0); 10], None, |p| {
        p.backoff_initial = Duration::from_secs(1);
        p.backoff_max = Duration::from_secs(2);
        p.restart_budget = 3;
        p.restart_window = Duration::from_secs(600);
    });
    let outcome = h.supervisor.run().await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Failed(
            "crash loop: 4 failures within 10m, restart budget 3 spent; last: engine \
             exited with code 1"
                .into()
        )
    );
    let gaps = h.script.gaps();
    assert_eq!(gaps.len(), 3, "{gaps:?}");
    for (got, want) in gaps.iter().zip([1.0, 2.0, 2.0]) {
        assert_near(*got, want, "backoff");
    }
    let s = h.status.lock().unwrap();
    assert_eq!((s.state, s.restarts), (State::Failed, 3));
    assert_eq!(s.last_exit.as_deref(), Some("engine exited with code 1"));
    assert_eq!(*h.script.stops.lock().unwrap(), 4, "every failed life is stopped");
}

#[tokio::test(start_paused = true)]
async fn a_stable_run_forgives_earlier_failures_and_resets_the_backoff() {
    // Two quick crashes, ten stable minutes, a crash, then a healthy run until cancelled.
    // Without the forgiveness the third failure would spend the budget of 2.
    let h = harness(&[Some(0), Some(0), Some(600), Some(0), None], None, |p| {
        p.backoff_initial = Duration::from_secs(1);
        p.backoff_max = Duration::from_secs(60);
        p.restart_budget = 2;
        p.restart_window = Duration::from_secs(3600);
        p.stable_after = Duration::from_secs(300);
        p.ready_timeout = Duration::from_secs(3600);
    });
    cancel_after_start(&h, 5, Duration::from_secs(1));
    assert_eq!(h.supervisor.run().await.unwrap(), Outcome::Stopped);
    let gaps = h.script.gaps();
    assert_eq!(gaps.len(), 4, "{gaps:?}");
    for (got, want) in gaps.iter().zip([1.0, 2.0, 601.0, 2.0]) {
        assert_near(*got, want, "backoff");
    }
    assert_eq!(h.status.lock().unwrap().state, State::Stopped);
}

#[tokio::test(start_paused = true)]
async fn an_engine_not_ready_in_time_is_restarted_and_a_zero_budget_gives_up() {
    let h = harness(&[None], None, |p| {
        p.ready_timeout = Duration::from_secs(30);
        p.restart_budget = 0;
    });
    let t0 = Instant::now();
    let outcome = h.supervisor.run().await.unwrap();
    let Outcome::Failed(why) = outcome else { panic!("expected a failure, got {outcome:?}") };
    assert!(why.ends_with("last: engine not ready within 30s"), "{why}");
    assert_near(t0.elapsed().as_secs_f64(), 30.0, "ready timeout");
    let health = h.status.lock().unwrap().health.clone().expect("probed");
    assert_eq!((health.ok, health.last.as_str()), (false, "not listening"));
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_is_fed_at_half_its_interval_until_a_signal_stops_the_engine() {
    let h = harness(&[None], Some(Duration::from_secs(10)), |p| {
        p.ready_timeout = Duration::from_secs(3600);
    });
    cancel_after_start(&h, 1, Duration::from_secs(60));
    assert_eq!(h.supervisor.run().await.unwrap(), Outcome::Stopped);
    let notices = h.notices.lock().unwrap();
    let fed = notices.iter().filter(|n| **n == Notice::Watchdog).count();
    // At 0, 5, ..., 55 s, and maybe 60 s (the tick and the signal are due together).
    assert!((12..=13).contains(&fed), "{fed} watchdog notices");
    assert!(notices.contains(&Notice::ExtendTimeout(Duration::from_secs(3630))));
    assert!(notices.contains(&Notice::Stopping));
    assert!(!notices.contains(&Notice::Ready));
    assert_eq!(*h.script.stops.lock().unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_signal_during_the_backoff_stops_without_another_start() {
    let h = harness(&[Some(0)], None, |p| {
        p.backoff_initial = Duration::from_secs(600);
    });
    cancel_after_start(&h, 1, Duration::from_secs(1));
    let t0 = Instant::now();
    assert_eq!(h.supervisor.run().await.unwrap(), Outcome::Stopped);
    assert!(t0.elapsed() < Duration::from_secs(5), "waited out the backoff");
    assert_eq!(h.script.starts().len(), 1);
    assert_eq!(h.status.lock().unwrap().state, State::Stopped);
}
