//! The one worker loop: pull a ticket from the schedule, send that request, pass its record on.
//! Closed loops, open loops, warmup and measured phases all run this same loop; they differ
//! only in the schedule they hand it. It neither aggregates nor writes anything.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::client::{Client, Slot};
use super::conn::ConnStash;
use super::record::RequestRecord;
use super::schedule::Schedule;

/// What the workers of one phase share.
#[derive(Debug)]
pub struct Phase {
    pub level: u32,
    pub warmup: bool,
    pub client: Client,
    pub schedule: Schedule,
    /// Request bodies in send order; request `seq` uses `bodies[seq % len]`.
    pub bodies: Arc<Vec<Bytes>>,
    /// Token count of each body's prompt (`--tokenizer`), same order as `bodies`.
    pub prompt_tokens: Option<Arc<Vec<u32>>>,
    /// Cancels requests in flight (Ctrl-C after the grace period).
    pub abort: CancellationToken,
    /// Open connections handed from phase to phase (warmup to measured, level to level).
    pub conns: Arc<ConnStash>,
    /// How many connections the stash keeps (the sweep's largest concurrency).
    pub keep: usize,
}

/// Runs until the schedule has no more tickets or nobody listens for records.
/// A request takes an open connection from the stash (or opens one) and gives it back when it
/// is done, so the connections open are as many as the requests in flight, never more: an
/// open loop of 10,000 requests at a few per second holds a handful, not 10,000 sockets. Each
/// worker has its own child of the abort token, so workers share no lock on the way of a chunk.
pub async fn worker(phase: Arc<Phase>, tx: mpsc::UnboundedSender<RequestRecord>) {
    let abort = phase.abort.child_token();
    while let Some(ticket) = phase.schedule.next().await {
        let prompt = (ticket.seq % phase.bodies.len() as u64) as usize;
        let slot = Slot {
            level: phase.level,
            seq: ticket.seq,
            warmup: phase.warmup,
            preflight: false,
            prompt: prompt as u32,
            prompt_tokens: phase.prompt_tokens.as_ref().and_then(|t| t.get(prompt).copied()),
            scheduled: ticket.scheduled.into_std(),
        };
        let mut conn = phase.conns.take();
        let record =
            phase.client.execute(&mut conn, phase.bodies[prompt].clone(), slot, &abort).await;
        phase.conns.put(conn, phase.keep);
        if tx.send(record).is_err() {
            break;
        }
    }
}
