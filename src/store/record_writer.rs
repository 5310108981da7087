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
//! While the store fails, the waiting records are also appended to a journal file in the
//! data directory (one JSON record per line, synced to disk), so that a crash during an
//! outage loses none of them: the next start writes the journal to the store before
//! anything else ([`replay_journal`]), and the journal is emptied once the queue is.
//! A crash while the store works loses the queue, not the calls: a call without a
//! record and without `call.ended` gets an interrupted record at the next start
//! (`store::interrupted`).

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
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

/// The journal's name in the data directory.
pub const JOURNAL: &str = "records-journal.jsonl";

impl RecordWriter {
    /// `journal`: the file that keeps waiting records while the store fails (none: they
    /// wait in memory only).
    pub fn start(store: Store, on_written: OnWritten, journal: Option<PathBuf>) -> RecordWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        let health = Arc::new(WriterHealth::default());
        let journal = journal.map(Journal::new);
        tokio::spawn(run(store, rx, on_written, Arc::clone(&health), journal));
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

/// The records kept on disk while the store fails.
struct Journal {
    path: PathBuf,
    /// How many of the queue's first records are in the file.
    kept: usize,
}

impl Journal {
    fn new(path: PathBuf) -> Journal {
        Journal { path, kept: 0 }
    }

    /// Appends the queue's records not yet in the file, and syncs it.
    fn keep(&mut self, queue: &VecDeque<(Box<CallRecord>, bool)>) -> std::io::Result<()> {
        if self.kept >= queue.len() {
            return Ok(());
        }
        let mut lines = Vec::new();
        for (rec, _) in queue.iter().skip(self.kept) {
            serde_json::to_writer(&mut lines, &**rec)?;
            lines.push(b'\n');
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(&lines)?;
        file.sync_data()?;
        self.kept = queue.len();
        Ok(())
    }

    /// `n` records left the queue's head for the store.
    fn written(&mut self, n: usize, queue_empty: bool) {
        self.kept = self.kept.saturating_sub(n);
        // Everything it held is in the store now (the records still waiting in it were
        // written in order before the queue emptied).
        if queue_empty {
            if let Err(e) = std::fs::remove_file(&self.path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(file = %self.path.display(), error = %e, "cannot remove the records journal");
                }
            }
            self.kept = 0;
        }
    }
}

/// Writes the records a crashed run left in its journal (a crash during an outage of the
/// store) and removes it; before the start records interrupted calls, so that those
/// calls keep their real records. Returns how many there were.
pub async fn replay_journal(store: &Store, path: &Path) -> anyhow::Result<usize> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        // A line cut short by the crash is the only one that can be; it was not synced,
        // so its call is recorded as interrupted instead.
        match serde_json::from_str::<CallRecord>(line) {
            Ok(r) => records.push(r),
            Err(e) => {
                warn!(file = %path.display(), line = i + 1, error = %e, "skipped a torn journal line")
            }
        }
    }
    for chunk in records.chunks(BATCH) {
        let batch: Vec<&CallRecord> = chunk.iter().collect();
        store.write_calls(&batch).await?;
    }
    std::fs::remove_file(path)?;
    if !records.is_empty() {
        info!(
            records = records.len(),
            "wrote the call records a stopped run had kept in its journal"
        );
    }
    Ok(records.len())
}

async fn run(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    on_written: OnWritten,
    health: Arc<WriterHealth>,
    mut journal: Option<Journal>,
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
        // While the store fails, a new record is on disk as soon as it comes.
        if let (Some(_), Some(j)) = (failing_since, journal.as_mut()) {
            if let Err(e) = j.keep(&queue) {
                warn!(file = %j.path.display(), error = %e, "cannot keep waiting call records on disk");
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
                    if let Some(j) = journal.as_mut() {
                        j.written(n, queue.is_empty());
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
                    if let Some(j) = journal.as_mut() {
                        if let Err(e) = j.keep(&queue) {
                            warn!(file = %j.path.display(), error = %e, "cannot keep waiting call records on disk");
                        }
                    }
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

    /// A writer keeping its journal in `dir`, and the calls whose records it announced,
    /// in order.
    fn announcing_writer(store: &Store, dir: &Path) -> (RecordWriter, Arc<Mutex<Vec<String>>>) {
        let written = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&written);
        let writer = RecordWriter::start(
            store.clone(),
            Box::new(move |r| seen.lock().unwrap().push(r.call_uuid.clone())),
            Some(dir.join(JOURNAL)),
        );
        (writer, written)
    }

    fn journal_uuids(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join(JOURNAL))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<CallRecord>(l).unwrap().call_uuid)
            .collect()
    }

    #[tokio::test]
    async fn a_journal_left_by_a_crash_is_written_first_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let path = dir.path().join(JOURNAL);
        let mut text = String::new();
        for u in ["j1", "j2"] {
            let rec = CallRecord {
                source_kind: "user",
                disposition: Some(crate::store::Disposition::Answered),
                ..record(u)
            };
            text += &serde_json::to_string(&rec).unwrap();
            text.push('\n');
        }
        // The crash cut the last line short.
        text += "{\"call_uuid\":\"j3\",\"a_ca";
        std::fs::write(&path, text).unwrap();
        assert_eq!(replay_journal(&store, &path).await.unwrap(), 2);
        assert!(!path.exists());
        assert_eq!(store.count_calls().await.unwrap(), 2);
        let j1 = store.record("j1").await.unwrap().unwrap();
        assert_eq!(
            (j1.source_kind.as_str(), j1.disposition.as_str()),
            ("user", "answered")
        );
        assert_eq!(
            replay_journal(&store, &path).await.unwrap(),
            0,
            "nothing left"
        );
    }

    #[tokio::test]
    async fn records_wait_out_a_locked_database_and_are_written_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let (writer, written) = announcing_writer(&store, dir.path());
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
        // Kept on disk while the store fails: a crash now would lose none of them.
        let order: Vec<String> = (0..5).map(|i| format!("call-{i}")).collect();
        assert_eq!(journal_uuids(dir.path()), order);
        assert!(
            writer.flush(Duration::from_secs(20)).await,
            "written once unlocked"
        );
        locker.wait().unwrap();
        assert_eq!(*written.lock().unwrap(), order);
        assert!(!dir.path().join(JOURNAL).exists(), "emptied with the queue");
        assert_eq!(store.count_calls().await.unwrap(), 5);
        assert_eq!(writer.health().pending.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_burst_of_records_is_written_in_batches_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let (writer, written) = announcing_writer(&store, dir.path());
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
