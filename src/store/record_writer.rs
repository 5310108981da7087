//! Call records written off the call path, and never given up on.
//!
//! A call hands its finished record over and goes on ending; one task writes records in
//! the order they came. When the store fails (a full disk, the database locked by
//! another process, a slow network file system) the record stays queued and is retried
//! with back-off until it is written: the fault is logged once per outage, counted, and
//! shown on `/metrics` as records waiting, and the calls themselves never wait. What a
//! record's writing announces (`call.ended`, which says the record can be read) is done
//! after it is written.
//!
//! A crash loses the queue, not the calls: a call without a record and without
//! `call.ended` gets an interrupted record at the next start (`store::interrupted`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::{CallRecord, Store};

/// What is done once a record is in the store.
pub type OnWritten = Box<dyn Fn(&CallRecord) + Send + Sync>;

/// How the record writer is doing, for `/metrics`.
#[derive(Debug, Default)]
pub struct WriterHealth {
    /// Attempts that failed (each retry counts).
    pub failures: AtomicU64,
    /// Records handed over and not yet written.
    pub pending: AtomicU64,
}

enum Msg {
    /// A record, and whether its writing is announced (refused calls are not).
    Record(Box<CallRecord>, bool),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct RecordWriter {
    tx: mpsc::UnboundedSender<Msg>,
    health: Arc<WriterHealth>,
}

const FIRST_RETRY: Duration = Duration::from_millis(50);
/// Records written in one transaction at most.
const BATCH: usize = 64;
const LAST_RETRY: Duration = Duration::from_secs(5);

impl RecordWriter {
    pub fn start(store: Store, on_written: OnWritten) -> RecordWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        let health = Arc::new(WriterHealth::default());
        tokio::spawn(run(store, rx, on_written, Arc::clone(&health)));
        RecordWriter { tx, health }
    }

    /// Hands a finished call's record over; returns at once. Once written, the record
    /// is announced (`OnWritten`).
    pub fn submit(&self, rec: CallRecord) {
        self.send(rec, true);
    }

    /// A record nobody waits for (a refused call): written, not announced.
    pub fn submit_quiet(&self, rec: CallRecord) {
        self.send(rec, false);
    }

    fn send(&self, rec: CallRecord, announce: bool) {
        self.health.pending.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Msg::Record(Box::new(rec), announce)).is_err() {
            self.health.pending.fetch_sub(1, Ordering::Relaxed);
            warn!("the record writer has stopped; a call record is lost");
        }
    }

    /// Waits until every record handed over so far is written (at shutdown), or `limit`.
    pub async fn flush(&self, limit: Duration) -> bool {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).is_err() {
            return false;
        }
        // A writer that died drops the reply: that is no flush.
        matches!(tokio::time::timeout(limit, wait).await, Ok(Ok(())))
    }

    pub fn health(&self) -> Arc<WriterHealth> {
        Arc::clone(&self.health)
    }
}

async fn run(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    on_written: OnWritten,
    health: Arc<WriterHealth>,
) {
    let mut queue: VecDeque<(Box<CallRecord>, bool)> = VecDeque::new();
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    let mut delay = FIRST_RETRY;
    // While the store fails: when it failed first, and when to try again.
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut open = true;
    loop {
        // Wait for work, or for the next attempt while records wait.
        let msg = match retry_at {
            _ if queue.is_empty() => match rx.recv().await {
                Some(m) => Some(m),
                None => return,
            },
            Some(at) if open => tokio::select! {
                m = rx.recv() => {
                    open = m.is_some();
                    m
                }
                _ = tokio::time::sleep_until(at) => None,
            },
            Some(at) => {
                tokio::time::sleep_until(at).await;
                None
            }
            None => None,
        };
        for m in msg
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            match m {
                Msg::Record(rec, announce) => queue.push_back((rec, announce)),
                Msg::Flush(done) => flushes.push(done),
            }
        }
        // New records wait behind the back-off; they do not hurry the next attempt.
        if retry_at.is_some_and(|at| tokio::time::Instant::now() < at) {
            continue;
        }
        retry_at = None;
        while !queue.is_empty() {
            // The records waiting go in one transaction: one sync to disk for many
            // calls keeps up with any call rate the switch admits.
            // While the store fails, one record at a time: the first one written ends
            // the outage, and the batches resume.
            let n = queue
                .len()
                .min(if failing_since.is_some() { 1 } else { BATCH });
            let batch: Vec<&CallRecord> = queue.iter().take(n).map(|(r, _)| &**r).collect();
            match store.write_calls(&batch).await {
                Ok(()) => {
                    health.pending.fetch_sub(n as u64, Ordering::Relaxed);
                    for (rec, announce) in queue.drain(..n) {
                        if announce {
                            on_written(&rec);
                        }
                    }
                    if let Some(since) = failing_since.take() {
                        info!(
                            after_secs = since.elapsed().as_secs(),
                            "the store takes call records again"
                        );
                    }
                    delay = FIRST_RETRY;
                }
                Err(e) => {
                    health.failures.fetch_add(1, Ordering::Relaxed);
                    if failing_since.is_none() {
                        warn!(
                            error = %e,
                            waiting = queue.len(),
                            "could not write a call record; keeping it and retrying"
                        );
                        failing_since = Some(tokio::time::Instant::now());
                    } else {
                        delay = (delay * 2).min(LAST_RETRY);
                    }
                    retry_at = Some(tokio::time::Instant::now() + delay);
                    break;
                }
            }
        }
        if queue.is_empty() {
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn record(uuid: &str) -> CallRecord {
        CallRecord {
            call_uuid: uuid.into(),
            a_call_id: format!("{uuid}@test"),
            arrived_ms: 1,
            ended_ms: 2,
            ..Default::default()
        }
    }

    /// A writer, and the calls whose records it announced, in order.
    fn announcing_writer(store: &Store) -> (RecordWriter, Arc<Mutex<Vec<String>>>) {
        let written = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&written);
        let writer = RecordWriter::start(
            store.clone(),
            Box::new(move |r| seen.lock().unwrap().push(r.call_uuid.clone())),
        );
        (writer, written)
    }

    #[tokio::test]
    async fn records_wait_out_a_locked_database_and_are_written_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let (writer, written) = announcing_writer(&store);
        // Another process holds the database's write lock longer than the busy timeout.
        let db = dir.path().join("switchboard.db");
        let mut locker = std::process::Command::new("sqlite3")
            .arg(&db)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sqlite3 (Debian package sqlite3) locks the database for this test");
        std::io::Write::write_all(
            locker.stdin.as_mut().unwrap(),
            b"BEGIN EXCLUSIVE;\n.print locked\n.system sleep 7\nCOMMIT;\n",
        )
        .unwrap();
        drop(locker.stdin.take());
        let mut out = locker.stdout.take().unwrap();
        let mut buf = [0u8; 6];
        std::io::Read::read_exact(&mut out, &mut buf).unwrap();
        assert_eq!(&buf, b"locked");
        for i in 0..5 {
            writer.submit(record(&format!("call-{i}")));
        }
        // Past the store's 5 s busy timeout: the first attempt has failed.
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(
            written.lock().unwrap().is_empty(),
            "nothing can be written yet"
        );
        assert_eq!(writer.health().pending.load(Ordering::Relaxed), 5);
        assert!(writer.health().failures.load(Ordering::Relaxed) >= 1);
        assert!(
            writer.flush(Duration::from_secs(20)).await,
            "written once unlocked"
        );
        locker.wait().unwrap();
        let order: Vec<String> = (0..5).map(|i| format!("call-{i}")).collect();
        assert_eq!(*written.lock().unwrap(), order);
        assert_eq!(store.count_calls().await.unwrap(), 5);
        assert_eq!(writer.health().pending.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_burst_of_records_is_written_in_batches_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let (writer, written) = announcing_writer(&store);
        let uuids: Vec<String> = (0..300).map(|i| format!("burst-{i:03}")).collect();
        for (i, u) in uuids.iter().enumerate() {
            if i % 3 == 0 {
                writer.submit_quiet(record(u));
            } else {
                writer.submit(record(u));
            }
        }
        assert!(writer.flush(Duration::from_secs(30)).await);
        assert_eq!(store.count_calls().await.unwrap(), 300);
        let announced: Vec<String> = uuids
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(_, u)| u.clone())
            .collect();
        assert_eq!(
            *written.lock().unwrap(),
            announced,
            "announced once each, in order"
        );
        assert_eq!(writer.health().pending.load(Ordering::Relaxed), 0);
        assert_eq!(writer.health().failures.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_record_written_twice_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        store.write_call(&record("same")).await.unwrap();
        store.write_call(&record("same")).await.unwrap();
        let again = record("same");
        store
            .write_calls(&[&again, &record("other")])
            .await
            .unwrap();
        assert_eq!(store.count_calls().await.unwrap(), 2);
    }
}
