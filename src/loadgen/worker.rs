//! The one worker loop: pull a ticket from the schedule, send that request, pass its record on.
//! Closed loops, open loops, warmup and measured phases all run this same loop; they differ
//! only in the schedule they hand it. A multi-turn phase's ticket is a conversation: the loop
//! sends its turns one after the other, a record each. It neither aggregates nor writes
//! anything.

use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Multi-turn: per conversation its first body and its number of turns; ticket `seq` then
    /// runs conversation `seq % len`, turn after turn, each sent when the previous answer has
    /// arrived. `None`: ticket `seq` is one request.
    pub conversations: Option<Arc<Vec<(usize, usize)>>>,
    /// Record numbers of a multi-turn phase (one per turn sent).
    pub turn_seq: AtomicU64,
}

/// Runs until the schedule has no more tickets or nobody listens for records.
/// A request takes an open connection from the stash (or opens one) and gives it back when it
/// is done, so the connections open are as many as the requests in flight, never more: an
/// open loop of 10,000 requests at a few per second holds a handful, not 10,000 sockets. Each
/// worker has its own child of the abort token, so workers share no lock on the way of a chunk.
pub async fn worker(phase: Arc<Phase>, tx: mpsc::UnboundedSender<RequestRecord>) {
    let abort = phase.abort.child_token();
    while let Some(ticket) = phase.schedule.next().await {
        let Some(convs) = &phase.conversations else {
            let prompt = (ticket.seq % phase.bodies.len() as u64) as usize;
            let record = send(&phase, prompt, ticket.seq, ticket.scheduled.into_std(), &abort);
            if tx.send(record.await).is_err() {
                break;
            }
            continue;
        };
        let (first, turns) = convs[(ticket.seq % convs.len() as u64) as usize];
        let mut scheduled = ticket.scheduled.into_std();
        for prompt in first..first + turns {
            let seq = phase.turn_seq.fetch_add(1, Ordering::Relaxed);
            let record = send(&phase, prompt, seq, scheduled, &abort).await;
            // A failed turn ends its conversation: the next turn's history would be wrong.
            let failed = record.error.is_some();
            if tx.send(record).is_err() {
                return;
            }
            if failed || abort.is_cancelled() {
                break;
            }
            // The next turn is due as soon as this answer is in.
            scheduled = std::time::Instant::now();
        }
    }
}

/// Sends body `prompt` as request `seq` of the phase, planned for `scheduled`.
async fn send(
    phase: &Phase,
    prompt: usize,
    seq: u64,
    scheduled: std::time::Instant,
    abort: &CancellationToken,
) -> RequestRecord {
    let slot = Slot {
        level: phase.level,
        seq,
        warmup: phase.warmup,
        preflight: false,
        prompt: prompt as u32,
        prompt_tokens: phase.prompt_tokens.as_ref().and_then(|t| t.get(prompt).copied()),
        scheduled,
    };
    let mut conn = phase.conns.take();
    let record = phase.client.execute(&mut conn, phase.bodies[prompt].clone(), slot, abort).await;
    phase.conns.put(conn, phase.keep);
    record
}
