//! The one worker loop: pull a ticket from the schedule, send that request, pass its record on.
//! Closed loops, open loops, warmup and measured phases all run this same loop; they differ
//! only in the schedule they hand it. A multi-turn phase's ticket is a conversation: the loop
//! sends its turns one after the other, a record each. What a ticket stands for ([`plan`]) and
//! how its requests are sent ([`run_ticket`]) are shared with the open loop's sender thread
//! (`super::sender`), which writes a ticket's first request itself and hands the rest here. It
//! neither aggregates nor writes anything.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant as StdInstant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::client::{Client, Slot, Started};
use super::conn::{Conn, ConnStash};
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

/// The requests one ticket stands for: the body of the first, how many turns follow each
/// other from it (one unless multi-turn), and the record number of the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub prompt: usize,
    pub turns: usize,
    pub seq: u64,
}

/// What ticket `ticket` of `phase` sends (draws the first record number of a conversation).
pub fn plan(phase: &Phase, ticket: u64) -> Planned {
    match &phase.conversations {
        None => {
            Planned { prompt: (ticket % phase.bodies.len() as u64) as usize, turns: 1, seq: ticket }
        }
        Some(convs) => {
            let (prompt, turns) = convs[(ticket % convs.len() as u64) as usize];
            Planned { prompt, turns, seq: phase.turn_seq.fetch_add(1, Ordering::Relaxed) }
        }
    }
}

/// The record slot of body `prompt` sent as request `seq` of the phase, planned for `scheduled`.
pub fn slot(phase: &Phase, prompt: usize, seq: u64, scheduled: StdInstant) -> Slot {
    Slot {
        level: phase.level,
        seq,
        warmup: phase.warmup,
        preflight: false,
        prompt: prompt as u32,
        prompt_tokens: phase.prompt_tokens.as_ref().and_then(|t| t.get(prompt).copied()),
        scheduled,
    }
}

/// Runs until the schedule has no more tickets or nobody listens for records.
/// A request takes an open connection from the stash (or opens one) and gives it back when it
/// is done, so the connections open are as many as the requests in flight, never more: an
/// open loop of 10,000 requests at a few per second holds a handful, not 10,000 sockets. Each
/// worker has its own child of the abort token, so workers share no lock on the way of a chunk.
pub async fn worker(phase: Arc<Phase>, tx: mpsc::UnboundedSender<RequestRecord>) {
    let abort = phase.abort.child_token();
    while let Some(ticket) = phase.schedule.next().await {
        let planned = plan(&phase, ticket.seq);
        if !run_ticket(&phase, planned, ticket.scheduled.into_std(), None, &tx, &abort).await {
            break;
        }
    }
}

/// Sends the requests of one ticket, turn after turn, and passes each record on; `first` is
/// the first request's connection, and the request itself when the sender thread has already
/// written it. A failed turn ends its conversation (the next turn's history would be wrong).
/// `false` when nobody listens for records any more.
pub async fn run_ticket(
    phase: &Phase,
    planned: Planned,
    mut scheduled: StdInstant,
    mut first: Option<(Conn, Option<Started>)>,
    tx: &mpsc::UnboundedSender<RequestRecord>,
    abort: &CancellationToken,
) -> bool {
    for turn in 0..planned.turns {
        let prompt = planned.prompt + turn;
        let seq = match turn {
            0 => planned.seq,
            _ => phase.turn_seq.fetch_add(1, Ordering::Relaxed),
        };
        let (mut conn, started) = first.take().unwrap_or_else(|| (phase.conns.take(), None));
        let slot = slot(phase, prompt, seq, scheduled);
        let body = phase.bodies[prompt].clone();
        let record = phase.client.complete(&mut conn, body, slot, started, abort).await;
        phase.conns.put(conn, phase.keep);
        let failed = record.error.is_some();
        if tx.send(record).is_err() {
            return false;
        }
        if failed || abort.is_cancelled() {
            break;
        }
        // The next turn is due as soon as this answer is in.
        scheduled = StdInstant::now();
    }
    true
}
