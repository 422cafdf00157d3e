//! One keep-alive HTTP/1.1 connection and what drives it: `Conn` (held by one request while it
//! runs), `ConnStash` (a sweep's idle connections, so connections open = requests in flight),
//! `driven` (polls the connection inside the caller's task), and `Waiter` (one request's
//! deadlines on one timer, and `Stop`, why a wait ended early). It opens no connection
//! (`Client::open` does) and builds no request.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Instant as StdInstant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFuture;

use super::record::ErrorClass;
use super::request::Timeouts;
use crate::rxstamp::{RxClock, StampedTcp};

/// Why a wait ended early.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stop {
    Idle,
    FirstToken,
    Total,
    Cancelled,
}

impl Stop {
    pub(super) fn class(self) -> ErrorClass {
        match self {
            Self::Idle => ErrorClass::IdleTimeout,
            Self::FirstToken => ErrorClass::FirstTokenTimeout,
            Self::Total => ErrorClass::TotalTimeout,
            Self::Cancelled => ErrorClass::Cancelled,
        }
    }
}

/// A request that failed: its class and a one-line detail for the record.
pub(super) type Failure = (ErrorClass, String);
pub(super) type Driver = http1::Connection<TokioIo<StampedTcp>, Full<Bytes>>;

/// One keep-alive HTTP/1.1 connection, owned by one worker and driven inside that worker's
/// own task (`driven`): the bytes of a chunk are read from the socket and handed to the
/// request in the same poll, and no task, lock or timer is shared between workers. Reads
/// carry the kernel's receive time (`rxstamp`), so a chunk's time is when it arrived, not
/// when this busy event loop got to it.
#[derive(Default)]
pub struct Conn {
    pub(super) sender: Option<http1::SendRequest<Full<Bytes>>>,
    pub(super) driver: Option<Pin<Box<Driver>>>,
    pub(super) clock: RxClock,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("open", &self.is_open()).finish()
    }
}

/// The open, idle connections of a sweep: a request takes one (the most recently used) and
/// puts it back when done, so connections open = requests in flight at most, and the measured
/// phase reuses the warmup's connections instead of opening hundreds at once (which is what
/// warmup is for). One uncontended lock per request, none per chunk.
#[derive(Debug, Default)]
pub struct ConnStash {
    idle: std::sync::Mutex<Vec<Conn>>,
}

impl ConnStash {
    /// An open connection if one is kept, else a closed one (opened by the first request).
    pub fn take(&self) -> Conn {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default()
    }

    /// Keeps `conn` for a later worker, unless it is closed or `keep` are kept already.
    pub fn put(&self, conn: Conn, keep: usize) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if conn.is_open() && idle.len() < keep {
            idle.push(conn);
        }
    }
}

impl Conn {
    pub(super) fn is_open(&self) -> bool {
        self.driver.is_some() && self.sender.as_ref().is_some_and(|s| !s.is_closed())
    }

    pub(super) fn close(&mut self) {
        self.sender = None;
        self.driver = None;
    }
}

/// Runs `fut` with the connection's driver polled beside it, in the calling task. The driver
/// is polled before `fut` (it reads the socket and fills the response body) and again after
/// a pending `fut` (it writes a request `fut` just queued). A finished driver (the server
/// closed, or the socket broke) is dropped; `fut` then sees the end through the response body.
pub(super) async fn driven<F: Future>(driver: &mut Option<Pin<Box<Driver>>>, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let poll_driver = |driver: &mut Option<Pin<Box<Driver>>>, cx: &mut Context<'_>| {
        if let Some(d) = driver.as_mut() {
            if let Poll::Ready(r) = d.as_mut().poll(cx) {
                if let Err(e) = r {
                    tracing::debug!("connection ended: {e}");
                }
                *driver = None;
            }
        }
    };
    poll_fn(|cx| {
        poll_driver(driver, cx);
        let out = fut.as_mut().poll(cx);
        if out.is_pending() {
            poll_driver(driver, cx);
        }
        out
    })
    .await
}

/// The deadlines of one request, on one timer. The idle deadline moves with every read, but
/// the timer is not touched per chunk: when it fires, the deadlines are computed again and
/// it is re-armed if none has passed (a chunk every few milliseconds would otherwise cost a
/// timer-wheel insert and removal each).
pub(super) struct Waiter<'p, 't> {
    pub(super) sleep: Pin<&'p mut Sleep>,
    pub(super) cancel: Pin<&'p mut WaitForCancellationFuture<'t>>,
    pub(super) timeouts: Timeouts,
    pub(super) sent: Instant,
    /// The last read (response headers or a body frame).
    pub(super) last: Instant,
}

impl Waiter<'_, '_> {
    /// The earliest deadline and what it stands for; on a tie the wider one is reported
    /// (total > first > idle).
    pub(super) fn deadline(&self, first_seen: bool) -> (Instant, Stop) {
        let mut at = self.last + self.timeouts.read;
        let mut why = Stop::Idle;
        if let Some(f) = self.timeouts.first_token.filter(|_| !first_seen).map(|f| self.sent + f) {
            if f <= at {
                (at, why) = (f, Stop::FirstToken);
            }
        }
        if let Some(t) = self.timeouts.total.map(|t| self.sent + t) {
            if t <= at {
                (at, why) = (t, Stop::Total);
            }
        }
        (at, why)
    }

    /// Notes a read at `t` (pushes the idle deadline).
    pub(super) fn touch(&mut self, t: StdInstant) {
        self.last = Instant::from_std(t);
    }

    /// Awaits `fut` unless a deadline passes or the request is aborted first.
    pub(super) async fn wait<F: Future>(
        &mut self,
        fut: F,
        first_seen: bool,
    ) -> Result<F::Output, Stop> {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            if self.cancel.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(Stop::Cancelled));
            }
            while self.sleep.as_mut().poll(cx).is_ready() {
                let (at, why) = self.deadline(first_seen);
                if at <= Instant::now() {
                    return Poll::Ready(Err(why));
                }
                self.sleep.as_mut().reset(at);
            }
            Poll::Pending
        })
        .await
    }
}

/// The record's error detail for a wait that `stop` ended while doing `what`.
pub(super) fn stop_detail(stop: Stop, what: &str) -> String {
    match stop {
        Stop::Idle => format!("read timeout {what}"),
        Stop::FirstToken => format!("first-token timeout {what}"),
        Stop::Total => format!("total timeout {what}"),
        Stop::Cancelled => format!("cancelled {what}"),
    }
}
