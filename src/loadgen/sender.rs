//! The open loop's sender thread. The main thread of `verify` runs every request of a level
//! (reading answers, parsing streams, writing records) on one event loop; a ticket released
//! there at its instant waits behind whatever that loop is busy with, then the worker it woke
//! builds and writes the request. Here one thread of its own (a current-thread runtime with
//! nothing else on it) owns the schedule: it waits for each ticket's instant on the timerfd,
//! takes an idle connection, writes the request on it at once (`Client::start`) and hands the
//! connection with the pending answer to the main thread, where a task reads the answer, runs
//! the rest of a conversation and passes the records on (`worker::run_ticket`). A request
//! that finds no idle connection ready is handed over unsent, and the main thread opens one
//! and sends it (its send lag shows it). The in-flight cap (the level's `--parallel`) is a
//! semaphore: the thread takes a permit before each ticket, the task gives it back when done,
//! so a level never has more requests in flight than the worker loop would have. Under
//! `verify --realtime` the thread runs one priority above the main thread, so that it
//! preempts the main thread's work when a send is due. It decides no instant (`schedule`) and
//! reads no answer itself.

use std::sync::Arc;
use std::time::Instant as StdInstant;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::client::Started;
use super::conn::Conn;
use super::record::RequestRecord;
use super::timer;
use super::worker::{plan, run_ticket, slot, worker, Phase, Planned};

/// A ticket whose first request the sender thread wrote (or could not write: `started` is
/// then `None`), on its way to the main thread.
#[derive(Debug)]
struct Handoff {
    planned: Planned,
    scheduled: StdInstant,
    conn: Conn,
    started: Option<Started>,
    /// One of the level's in-flight places, held until the ticket's last answer is in.
    permit: OwnedSemaphorePermit,
}

/// Runs an open-loop phase with the sender thread, at most `cap` tickets in flight; returns
/// when every ticket is sent and answered (or the schedule is cancelled, or nobody listens
/// for records). Where the thread cannot be started, the phase runs on `cap` workers (with a
/// warning): same requests, the exact wait of the worker loop.
pub async fn paced(phase: Arc<Phase>, cap: usize, tx: mpsc::UnboundedSender<RequestRecord>) {
    let cap = cap.max(1);
    let (hand_tx, mut hand_rx) = mpsc::unbounded_channel::<Handoff>();
    let permits = Arc::new(Semaphore::new(cap));
    let thread =
        tokio::runtime::Builder::new_current_thread().enable_all().build().and_then(|rt| {
            let (phase, permits) = (phase.clone(), permits.clone());
            std::thread::Builder::new()
                .name("nodeagent-send".into())
                .spawn(move || rt.block_on(send_loop(&phase, permits, hand_tx)))
        });
    let thread = match thread {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("open loop: cannot start the sender thread ({e}); sending from workers");
            let workers: Vec<_> =
                (0..cap).map(|_| tokio::spawn(worker(phase.clone(), tx.clone()))).collect();
            for w in workers {
                if let Err(e) = w.await {
                    tracing::error!("load worker ended abnormally: {e}");
                }
            }
            return;
        }
    };
    let mut tasks = JoinSet::new();
    let report = |r: Result<(), tokio::task::JoinError>| {
        if let Err(e) = r {
            tracing::error!("open-loop request task ended abnormally: {e}");
        }
    };
    while !tx.is_closed() {
        tokio::select! {
            biased;
            h = hand_rx.recv() => match h {
                Some(h) => {
                    let (phase, tx) = (phase.clone(), tx.clone());
                    tasks.spawn(async move {
                        let abort = phase.abort.child_token();
                        let first = Some((h.conn, h.started));
                        run_ticket(&phase, h.planned, h.scheduled, first, &tx, &abort).await;
                        drop(h.permit);
                    });
                }
                None => break,
            },
            Some(r) = tasks.join_next(), if !tasks.is_empty() => report(r),
        }
    }
    // The thread stops at its next ticket once nobody takes its handoffs.
    drop(hand_rx);
    while let Some(r) = tasks.join_next().await {
        report(r);
    }
    if let Ok(Err(_)) = tokio::task::spawn_blocking(move || thread.join()).await {
        tracing::error!("the open loop's sender thread ended abnormally");
    }
}

/// The sender thread's loop: a place in flight, the next ticket at its instant, its first
/// request written, handed over; until the schedule ends or the main thread stops listening.
async fn send_loop(phase: &Phase, permits: Arc<Semaphore>, hand: mpsc::UnboundedSender<Handoff>) {
    // Under `--realtime` the thread inherited SCHED_FIFO 1 from the main thread; one above it
    // preempts the main thread's own work when a send is due.
    if let Err(e) = timer::raise_realtime_priority(2) {
        tracing::warn!("open loop: {e}; the sender thread keeps the main thread's priority");
    }
    let cancel = phase.schedule.cancel_token().clone();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            () = cancel.cancelled() => return,
            () = hand.closed() => return,
        };
        let Some(ticket) = phase.schedule.next().await else { return };
        let planned = plan(phase, ticket.seq);
        let scheduled = ticket.scheduled.into_std();
        let mut conn = phase.conns.take();
        let slot = slot(phase, planned.prompt, planned.seq, scheduled);
        let started = phase.client.start(&mut conn, &phase.bodies[planned.prompt], slot);
        if hand.send(Handoff { planned, scheduled, conn, started, permit }).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::loadgen::client::tests::{request_complete, test_slot as slot, ANSWER};
    use crate::loadgen::client::Client;
    use crate::loadgen::conn::ConnStash;
    use crate::loadgen::request::{Endpoint, Timeouts};
    use crate::loadgen::schedule::{Arrival, Mode, Pacing, Schedule};

    /// What the keep-alive test server saw.
    #[derive(Debug, Default)]
    struct Seen {
        connections: AtomicUsize,
        requests: AtomicUsize,
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
    }

    /// A keep-alive HTTP/1.1 server on loopback: each request is announced on `arrived` as
    /// soon as it is read whole, then answered (an SSE stream of one token) after `delay`.
    async fn server(delay: Duration) -> (String, Arc<Seen>, mpsc::UnboundedReceiver<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Seen::default());
        let (arrived, rx) = mpsc::unbounded_channel();
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                s.connections.fetch_add(1, Ordering::SeqCst);
                let (s, arrived) = (s.clone(), arrived.clone());
                tokio::spawn(async move {
                    let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
                    loop {
                        while !request_complete(&got) {
                            match tcp.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        got.clear();
                        s.requests.fetch_add(1, Ordering::SeqCst);
                        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        s.most_in_flight.fetch_max(now, Ordering::SeqCst);
                        let _ = arrived.send(());
                        tokio::time::sleep(delay).await;
                        s.in_flight.fetch_sub(1, Ordering::SeqCst);
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{ANSWER}",
                            ANSWER.len()
                        );
                        if tcp.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, seen, rx)
    }

    fn client(url: &str) -> Client {
        client_at(url, StdInstant::now())
    }

    fn client_at(url: &str, anchor: StdInstant) -> Client {
        let timeouts = Timeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(10),
            first_token: None,
            total: None,
        };
        let endpoint = Endpoint::parse(url, None).unwrap();
        Client::new(endpoint, None, timeouts, true, anchor, "0badc0de".into()).unwrap()
    }

    fn phase(url: &str, schedule: Schedule, conversations: Option<Vec<(usize, usize)>>) -> Phase {
        Phase {
            level: 0,
            warmup: false,
            client: client(url),
            schedule,
            bodies: Arc::new(vec![Bytes::from_static(b"{}"); 3]),
            prompt_tokens: None,
            abort: CancellationToken::new(),
            conns: Arc::new(ConnStash::default()),
            keep: 64,
            conversations: conversations.map(Arc::new),
            turn_seq: AtomicU64::new(0),
        }
    }

    /// Runs `phase` through the sender thread with `cap` in flight; its records.
    async fn run(phase: Phase, cap: usize) -> Vec<RequestRecord> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sending = tokio::spawn(paced(Arc::new(phase), cap, tx));
        let mut records = Vec::new();
        while let Some(r) = rx.recv().await {
            records.push(r);
        }
        sending.await.unwrap();
        records
    }

    /// Waits (a hang guard, not a timing) for the server to announce a request.
    async fn arrival(rx: &mut mpsc::UnboundedReceiver<()>) {
        tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_started_request_is_on_the_wire_before_its_answer_is_read_on_another_thread() {
        let (url, seen, mut arrived) = server(Duration::ZERO).await;
        let t0 = StdInstant::now();
        let client = client_at(&url, t0);
        let abort = CancellationToken::new();
        let body = Bytes::from_static(b"{}");
        let mut conn = Conn::default();
        assert!(client.start(&mut conn, &body, slot(0)).is_none(), "a closed connection");
        let r = client.execute(&mut conn, body.clone(), slot(0), &abort).await;
        assert_eq!(r.error, None, "{r:?}");
        arrival(&mut arrived).await;
        // Written from a thread with no runtime at all; nothing polls it afterwards until the
        // server has read it whole.
        let (c, b, started) = std::thread::spawn(move || {
            let started = client.start(&mut conn, &body, slot(1));
            (client, (conn, body), started)
        })
        .join()
        .unwrap();
        let (client, (mut conn, body)) = (c, b);
        let started = started.expect("an idle open connection takes the request at once");
        let sent = started.sent();
        arrival(&mut arrived).await;
        let r = client.complete(&mut conn, body, slot(1), Some(started), &abort).await;
        assert_eq!((r.error, r.output_tokens, r.seq), (None, 1, 1), "{r:?}");
        assert_eq!(r.sent_s, sent.saturating_duration_since(t0).as_secs_f64());
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1, "the connection was reused");
        assert_eq!(seen.requests.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_open_loop_sends_every_ticket_once_in_order_never_early_within_its_cap() {
        let (url, seen, _arrived) = server(Duration::from_millis(3)).await;
        let mode = Mode::Open { rate: 3000.0, arrival: Arrival::Poisson };
        let schedule = Schedule::new(mode, 300, 5, None, CancellationToken::new()).unwrap();
        let records = run(phase(&url, schedule.with_pacing(Pacing::Sender), None), 4).await;
        let mut seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        seqs.sort();
        assert_eq!(seqs, (0..300).collect::<Vec<_>>());
        assert!(
            records.iter().all(|r| r.error.is_none()),
            "{:?}",
            records.iter().find(|r| r.error.is_some())
        );
        assert!(records.iter().all(|r| r.sent_s >= r.scheduled_s), "a request left early");
        let mut by_seq = records.clone();
        by_seq.sort_by_key(|r| r.seq);
        assert!(by_seq.windows(2).all(|w| w[0].sent_s <= w[1].sent_s), "sent out of order");
        // Answers take 3 ms and 3000/s are planned: the cap of 4 is what limits.
        assert!(seen.most_in_flight.load(Ordering::SeqCst) <= 4);
        assert!(seen.connections.load(Ordering::SeqCst) <= 4);
        assert_eq!(seen.requests.load(Ordering::SeqCst), 300);
    }

    #[tokio::test]
    async fn a_multi_turn_open_loop_sends_every_turn_of_every_conversation() {
        let (url, seen, _arrived) = server(Duration::ZERO).await;
        let mode = Mode::Open { rate: 500.0, arrival: Arrival::Constant };
        let schedule = Schedule::new(mode, 4, 0, None, CancellationToken::new()).unwrap();
        let records = run(phase(&url, schedule, Some(vec![(0, 3)])), 2).await;
        let mut seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        seqs.sort();
        assert_eq!(seqs, (0..12).collect::<Vec<_>>());
        let mut prompts: Vec<u32> = records.iter().map(|r| r.prompt).collect();
        prompts.sort();
        assert_eq!(prompts, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
        assert_eq!(seen.requests.load(Ordering::SeqCst), 12);
    }

    #[tokio::test]
    async fn cancelling_the_schedule_stops_the_sender_thread() {
        let (url, seen, mut arrived) = server(Duration::ZERO).await;
        let cancel = CancellationToken::new();
        let mode = Mode::Open { rate: 1.0, arrival: Arrival::Constant };
        let schedule = Schedule::new(mode, 1000, 0, None, cancel.clone()).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sending = tokio::spawn(paced(Arc::new(phase(&url, schedule, None)), 8, tx));
        // The first ticket is due at once; the second a second later: cancel in between.
        arrival(&mut arrived).await;
        cancel.cancel();
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
        }
        sending.await.unwrap();
        assert_eq!((n, seen.requests.load(Ordering::SeqCst)), (1, 1));
    }
}
