//! The ordered event log: every state change a person or an integration may want to see
//! (calls arriving, queue steps, offers, answers, holds, transfers, recordings,
//! supervisors, agent states, dispositions, surveys, ends), each with a sequence number
//! and a timestamp from one clock.
//!
//! One task owns the sequence counter. Producers (call tasks, the ACD task, the API)
//! hand it events by message and never wait; it numbers them, writes them to the store
//! in batches (queue-log rows in the same transaction, so reports and the stream agree)
//! and only then publishes them live. So a live client never sees an event the log does
//! not hold, and one that reconnects with `since` reads what it missed from the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::warn;

use crate::store::{now_ms, QueueEvent, Store};

/// One event as the log holds it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Event {
    /// Increases by one from event to event, with no gaps.
    pub seq: u64,
    /// Unix epoch milliseconds; never decreases from one event to the next.
    pub at_ms: i64,
    /// What happened, e.g. `call.arrived`, `queue.entered`, `agent.state`, `call.ended`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The call's id (its record's `call_uuid`).
    pub call: Option<String>,
    pub queue: Option<String>,
    /// The agent's extension.
    pub agent: Option<String>,
    /// The event's own fields.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// An event on its way into the log.
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    pub kind: &'static str,
    pub call: Option<String>,
    pub queue: Option<String>,
    pub agent: Option<String>,
    pub data: serde_json::Value,
    /// When it happened, if the producer's clock says so (the ACD's); else on arrival.
    pub at_ms: Option<i64>,
    /// A queue-log row written with it (the reports read those).
    pub queue_row: Option<QueueEvent>,
}

impl NewEvent {
    pub fn new(kind: &'static str) -> Self {
        NewEvent {
            kind,
            data: serde_json::Value::Object(Default::default()),
            ..Default::default()
        }
    }

    pub fn call(mut self, uuid: &str) -> Self {
        self.call = Some(uuid.to_string());
        self
    }

    pub fn queue(mut self, queue: Option<&str>) -> Self {
        self.queue = queue.map(str::to_string);
        self
    }

    pub fn agent(mut self, agent: Option<&str>) -> Self {
        self.agent = agent.map(str::to_string);
        self
    }

    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }
}

// Events are the traffic; a flush is rare and small. Boxing would cost every event.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Event(NewEvent),
    /// Answered once everything sent before it is in the store.
    Flush(oneshot::Sender<()>),
}

/// The way into the log and out of it, cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    tx: mpsc::UnboundedSender<Msg>,
    live: broadcast::Sender<Arc<Event>>,
    last: Arc<AtomicU64>,
    store: Store,
}

/// How many events one store transaction takes at most.
const BATCH: usize = 512;
/// Live events a slow subscriber may fall behind by before it must re-read the store.
const LIVE_BUFFER: usize = 8192;

impl EventLog {
    /// Starts the writer task, numbering on from the last event the store holds.
    pub async fn start(store: Store) -> anyhow::Result<EventLog> {
        let last_seq = store.last_event_seq().await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let log = EventLog {
            tx,
            live: live.clone(),
            last: Arc::new(AtomicU64::new(last_seq)),
            store: store.clone(),
        };
        tokio::spawn(write_loop(rx, store, live, log.last.clone(), last_seq));
        Ok(log)
    }

    /// Hands an event to the log; never waits.
    pub fn publish(&self, event: NewEvent) {
        let _ = self.tx.send(Msg::Event(event));
    }

    /// Waits until every event published before this call is in the store.
    pub async fn flush(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(reply)).is_ok() {
            let _ = rx.await;
        }
    }

    /// The newest event's sequence number in the store (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }

    /// Events as they are written. Subscribe first, then read the store up to
    /// [`EventLog::last_seq`], then skip what was already read: nothing is missed.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.live.subscribe()
    }

    /// Stored events after `since`, oldest first, at most `limit`.
    pub async fn since(&self, since: u64, limit: u32) -> anyhow::Result<Vec<Event>> {
        self.store.events_since(since, limit).await
    }
}

async fn write_loop(
    mut rx: mpsc::UnboundedReceiver<Msg>,
    store: Store,
    live: broadcast::Sender<Arc<Event>>,
    last: Arc<AtomicU64>,
    mut seq: u64,
) {
    let mut last_at = 0i64;
    let mut batch: Vec<(Event, Option<QueueEvent>)> = Vec::with_capacity(BATCH);
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Event(e) => {
                    seq += 1;
                    // One clock for the whole log: a producer's time is kept unless it
                    // would run backwards.
                    let at_ms = e.at_ms.unwrap_or_else(now_ms).max(last_at);
                    last_at = at_ms;
                    let mut queue_row = e.queue_row;
                    if let Some(row) = &mut queue_row {
                        row.at_ms = at_ms;
                        row.seq = Some(seq as i64);
                    }
                    let event = Event {
                        seq,
                        at_ms,
                        kind: e.kind.to_string(),
                        call: e.call,
                        queue: e.queue,
                        agent: e.agent,
                        data: e.data,
                    };
                    batch.push((event, queue_row));
                }
                Msg::Flush(reply) => flushes.push(reply),
            }
            if batch.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        // A store that fails is retried, never skipped: a gap in the log would be a
        // wallboard that lies. Calls do not wait for this.
        let mut delay = Duration::from_millis(50);
        while !batch.is_empty() {
            match store.write_events(&mut batch).await {
                Ok(()) => break,
                Err(e) => {
                    warn!(error = %e, events = batch.len(), "could not write events; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        // Numbered again by the store when other nodes write the same log.
        if let Some((e, _)) = batch.last() {
            seq = e.seq;
            last.store(e.seq, Ordering::Release);
        }
        for (event, _) in batch.drain(..) {
            let _ = live.send(Arc::new(event));
        }
        for reply in flushes.drain(..) {
            let _ = reply.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_are_numbered_without_gaps_stored_then_published_and_numbering_survives_a_restart(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let log = EventLog::start(store.clone()).await.unwrap();
        let mut live = log.subscribe();
        for i in 0..1000 {
            log.publish(NewEvent::new("test.tick").data(serde_json::json!({ "i": i })));
        }
        log.flush().await;
        assert_eq!(log.last_seq(), 1000);
        let stored = log.since(0, 5000).await.unwrap();
        assert_eq!(stored.len(), 1000);
        for (i, e) in stored.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1);
            assert_eq!(e.data["i"], i);
            if i > 0 {
                assert!(e.at_ms >= stored[i - 1].at_ms);
            }
            let got = live.recv().await.unwrap();
            assert_eq!(*got, *e, "live and stored events differ");
        }
        assert_eq!(log.since(990, 5).await.unwrap()[0].seq, 991);
        drop(log);
        let again = EventLog::start(store).await.unwrap();
        again.publish(NewEvent::new("test.after_restart"));
        again.flush().await;
        assert_eq!(again.last_seq(), 1001);
    }

    #[tokio::test]
    async fn a_producer_clock_running_backwards_does_not_reorder_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let log = EventLog::start(store).await.unwrap();
        for at in [5000, 4000, 6000] {
            let mut e = NewEvent::new("test.time");
            e.at_ms = Some(at);
            log.publish(e);
        }
        log.flush().await;
        let at: Vec<i64> = log
            .since(0, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.at_ms)
            .collect();
        assert_eq!(at, vec![5000, 5000, 6000]);
    }
}
