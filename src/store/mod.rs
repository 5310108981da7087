//! Call records, the queue log and the event log: in SQLite by default, in PostgreSQL
//! when the configuration's `store` names a server (several nodes writing to one
//! database).
//!
//! The SQLite database lives in the data directory as `switchboard.db`, in WAL mode with
//! `synchronous=FULL`; PostgreSQL commits durably by default. Either way a record is
//! durable when [`Store::write_call`] returns, so a crash after a call ends never loses
//! it. Records are written once, complete; nothing here is updated in place.
//!
//! One query text serves both databases: parameters are written `$1`, `$2`…, which
//! PostgreSQL takes and sqlx's SQLite driver reads as positions, and the SQL stays in
//! what both understand. [`on_db!`] compiles each query once per driver.

/// Runs `$body` with `$pool` bound to the store's pool, whichever database that is: the
/// body is compiled once for each driver.
macro_rules! on_db {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` in one transaction `$tx` on the store, whichever database it is: all of
/// it is written or none. A statement that failed inside it (a full disk) can leave the
/// connection in the transaction, holding the write lock for every other writer; such a
/// connection is closed rather than given back to the pool.
macro_rules! in_transaction {
    ($store:expr, $tx:ident => $body:block) => {{
        use sqlx::Connection;
        on_db!($store, pool => {
            let mut conn = pool.acquire().await?;
            let written: anyhow::Result<()> = async {
                let mut $tx = conn.begin().await?;
                $body
                $tx.commit().await?;
                Ok(())
            }
            .await;
            if written.is_err() {
                conn.close_on_drop();
            }
            written
        })
    }};
}

mod events;
pub mod interrupted;
mod migrate;
#[cfg(test)]
pub(crate) mod pg_test;
pub mod record_writer;
pub mod records;

pub use records::{CallRecordView, Outcome, Pruned, RecordFilter};

use std::path::Path;
use std::str::FromStr;

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Disposition {
    Answered,
    /// The caller hung up (or cancelled) before anyone answered.
    Abandoned,
    Busy,
    Declined,
    NoAnswer,
    /// The destination has no registered phone.
    Unavailable,
    /// Admission refused the call (403, unknown number).
    Refused,
    Failed,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Answered => "answered",
            Disposition::Abandoned => "abandoned",
            Disposition::Busy => "busy",
            Disposition::Declined => "declined",
            Disposition::NoAnswer => "no_answer",
            Disposition::Unavailable => "unavailable",
            Disposition::Refused => "refused",
            Disposition::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HangupBy {
    Caller,
    Callee,
    Switchboard,
}

impl HangupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            HangupBy::Caller => "caller",
            HangupBy::Callee => "callee",
            HangupBy::Switchboard => "switchboard",
        }
    }
}

/// Everything a finished call leaves behind. Times are Unix epoch milliseconds.
/// Serialisable for the record writer's journal (see `record_writer`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct CallRecord {
    pub call_uuid: String,
    pub a_call_id: String,
    pub b_call_id: Option<String>,
    pub from_uri: String,
    pub from_user: String,
    pub to_uri: String,
    pub dialed: String,
    /// "trunk", "user" or "unknown".
    #[serde(deserialize_with = "source_kind")]
    pub source_kind: SourceKind,
    pub trunk: Option<String>,
    pub did: Option<String>,
    pub caller_user: Option<String>,
    pub target: Option<String>,
    pub arrived_ms: i64,
    pub ringing_ms: Option<i64>,
    pub answered_ms: Option<i64>,
    pub ended_ms: i64,
    pub hangup_by: Option<HangupBy>,
    pub disposition: Option<Disposition>,
    pub final_code: u16,
    pub reason: Option<String>,
    pub a_rtp_in: u64,
    pub a_rtp_out: u64,
    pub b_rtp_in: u64,
    pub b_rtp_out: u64,
    /// When the two legs were bridged (the callee answered). For a call the IVR answered
    /// first, `answered_ms` is the IVR's answer and this the agent's.
    pub bridged_ms: Option<i64>,
    /// The IVR flow that answered the call, and the steps it took (secure input masked).
    pub flow: Option<String>,
    pub ivr_trace: Option<String>,
    /// The ACD queue the call waited in, if any.
    pub queue: Option<String>,
    /// Post-call survey: satisfaction 1–5, and whether the issue was resolved (FCR).
    pub csat: Option<u8>,
    pub resolved: Option<bool>,
    /// A voicemail left in the IVR: its file under the data directory.
    pub voicemail: Option<String>,
    /// The conversation's recording: its file under the data directory and its length.
    pub recording: Option<String>,
    pub recording_ms: Option<i64>,
    /// RTP each leg sent that never reached us, and its mean interarrival jitter.
    pub a_rtp_lost: u64,
    pub b_rtp_lost: u64,
    pub a_jitter_ms: f64,
    pub b_jitter_ms: f64,
    /// RTP packets (both ways) the kernel forwarded instead of the relay: the call's
    /// media path is "kernel" when this is above zero, else "relay".
    pub kernel_rtp: u64,
}

/// A record's source kind: one of a few names. (An alias, so that serde does not take
/// the field for text borrowed from its input.)
pub type SourceKind = &'static str;

/// A source kind read back from the journal, as the one static name it was.
fn source_kind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let s: String = serde::Deserialize::deserialize(d)?;
    Ok(["trunk", "user", "api", "unknown"]
        .into_iter()
        .find(|k| *k == s)
        .unwrap_or("unknown"))
}

impl CallRecord {
    /// Which path carried the call's media: "kernel" if the kernel forwarded any of it.
    pub fn media_path(&self) -> &'static str {
        if self.kernel_rtp > 0 {
            "kernel"
        } else {
            "relay"
        }
    }
}

/// One row of the queue event log (like Asterisk's queue_log): ENTER, OFFER, CONNECT,
/// ABANDON, COMPLETE_AGENT… with the wait or talk time the event closes.
#[derive(Debug, Clone, Default)]
pub struct QueueEvent {
    pub at_ms: i64,
    pub queue: Option<String>,
    pub call_uuid: Option<String>,
    pub agent: Option<String>,
    pub event: String,
    pub wait_ms: Option<i64>,
    pub talk_ms: Option<i64>,
    pub detail: Option<String>,
    /// The same event's number in the event log.
    pub seq: Option<i64>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The INSERT of one call record (ignored if the call is in the store already).
const INSERT_CALL: &str = "INSERT INTO calls (call_uuid, a_call_id, b_call_id, from_uri,
       from_user, to_uri, dialed, source_kind, trunk, did, caller_user, target, arrived_ms,
       ringing_ms, answered_ms, ended_ms, hangup_by, disposition, final_code, reason, a_rtp_in,
       a_rtp_out, b_rtp_in, b_rtp_out, bridged_ms, flow, ivr_trace, queue, csat, resolved,
       voicemail, recording, recording_ms, a_rtp_lost, b_rtp_lost, a_jitter_ms, b_jitter_ms,
       kernel_rtp, media_path)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
       $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36,
       $37, $38, $39)
     ON CONFLICT (call_uuid) DO NOTHING";

/// Binds a call record to [`INSERT_CALL`] (a macro, so that each driver's arm of
/// [`on_db!`] binds its own concrete types).
macro_rules! bind_call {
    ($q:expr, $r:expr) => {{
        let r: &CallRecord = $r;
        $q.bind(text(&r.call_uuid))
            .bind(text(&r.a_call_id))
            .bind(opt_text(&r.b_call_id))
            .bind(text(&r.from_uri))
            .bind(text(&r.from_user))
            .bind(text(&r.to_uri))
            .bind(text(&r.dialed))
            .bind(r.source_kind)
            .bind(opt_text(&r.trunk))
            .bind(opt_text(&r.did))
            .bind(opt_text(&r.caller_user))
            .bind(opt_text(&r.target))
            .bind(r.arrived_ms)
            .bind(r.ringing_ms)
            .bind(r.answered_ms)
            .bind(r.ended_ms)
            .bind(r.hangup_by.map(HangupBy::as_str))
            .bind(r.disposition.unwrap_or(Disposition::Failed).as_str())
            .bind(i64::from(r.final_code))
            .bind(opt_text(&r.reason))
            .bind(r.a_rtp_in as i64)
            .bind(r.a_rtp_out as i64)
            .bind(r.b_rtp_in as i64)
            .bind(r.b_rtp_out as i64)
            .bind(r.bridged_ms)
            .bind(opt_text(&r.flow))
            .bind(opt_text(&r.ivr_trace))
            .bind(opt_text(&r.queue))
            .bind(r.csat.map(i64::from))
            .bind(r.resolved.map(i64::from))
            .bind(opt_text(&r.voicemail))
            .bind(opt_text(&r.recording))
            .bind(r.recording_ms)
            .bind(r.a_rtp_lost as i64)
            .bind(r.b_rtp_lost as i64)
            .bind(r.a_jitter_ms)
            .bind(r.b_jitter_ms)
            .bind(r.kernel_rtp as i64)
            .bind(r.media_path())
    }};
}

/// Text as the store keeps it: a NUL, which PostgreSQL refuses in text, becomes U+FFFD
/// (on SQLite too, so that both stores hold, and match, the same), rather than a record
/// being refused for a byte in a caller's header.
pub(crate) fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

pub(crate) fn opt_text(s: &Option<String>) -> Option<std::borrow::Cow<'_, str>> {
    s.as_deref().map(text)
}

#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Where a store is: the data directory's SQLite file, or a PostgreSQL database.
#[derive(Debug, Clone)]
pub enum Location {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Location {
    /// The configuration's `store`, else its data directory.
    pub fn of(config: &crate::config::Config) -> Location {
        match &config.store_url {
            Some(url) => Location::Postgres(url.clone()),
            None => Location::Sqlite(config.data_dir.clone()),
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// The node this server is in a cluster ("" alone): the events it logs name it.
    node: std::sync::Arc<str>,
}

impl Store {
    /// The store the configuration names: its PostgreSQL server, else the SQLite database
    /// in its data directory.
    pub async fn for_config(config: &crate::config::Config) -> anyhow::Result<Store> {
        Store::open_at(&Location::of(config)).await
    }

    pub async fn open_at(at: &Location) -> anyhow::Result<Store> {
        match at {
            Location::Sqlite(dir) => Store::open(dir).await,
            Location::Postgres(url) => Store::connect_postgres(url).await,
        }
    }

    /// Connects to a PostgreSQL database (`postgres://user:password@host:port/name`) and
    /// brings its schema up to date.
    pub async fn connect_postgres(url: &str) -> anyhow::Result<Store> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| anyhow::anyhow!("the store's PostgreSQL server: {e}"))?;
        migrate::postgres(&pool).await?;
        Ok(Store {
            pool: Pool::Postgres(pool),
            node: "".into(),
        })
    }

    /// The same store, logging events as `node`'s.
    pub fn for_node(mut self, node: &str) -> Store {
        self.node = node.into();
        self
    }

    /// The node this store logs events for ("" on a single server).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The PostgreSQL pool, for the cluster's own use (notifications, locks).
    pub fn postgres(&self) -> Option<&sqlx::PgPool> {
        match &self.pool {
            Pool::Postgres(p) => Some(p),
            Pool::Sqlite(_) => None,
        }
    }

    /// "sqlite" or "postgres", for logs.
    pub fn kind(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Opens (creating if needed) `DIR/switchboard.db`.
    pub async fn open(data_dir: &Path) -> anyhow::Result<Store> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("switchboard.db");
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        migrate::sqlite(&pool).await?;
        Ok(Store {
            pool: Pool::Sqlite(pool),
            node: "".into(),
        })
    }

    /// Writes one finished call; durable when this returns. Writing it again changes
    /// nothing (a retry after an answer that was lost).
    pub async fn write_call(&self, r: &CallRecord) -> anyhow::Result<()> {
        on_db!(self, pool => bind_call!(sqlx::query(INSERT_CALL), r).execute(pool).await.map(drop)?);
        Ok(())
    }

    /// Writes finished calls in one transaction (one sync to disk for all of them):
    /// all are written or none. Like [`Store::write_call`], writing one again changes
    /// nothing.
    pub async fn write_calls(&self, records: &[&CallRecord]) -> anyhow::Result<()> {
        in_transaction!(self, tx => {
            for r in records {
                bind_call!(sqlx::query(INSERT_CALL), r).execute(&mut *tx).await?;
            }
        })
    }

    pub async fn write_queue_event(&self, e: &QueueEvent) -> anyhow::Result<()> {
        on_db!(self, pool => sqlx::query(
            "INSERT INTO queue_log (at_ms, queue, call_uuid, agent, event, wait_ms, talk_ms, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(e.at_ms)
        .bind(opt_text(&e.queue))
        .bind(opt_text(&e.call_uuid))
        .bind(opt_text(&e.agent))
        .bind(text(&e.event))
        .bind(e.wait_ms)
        .bind(e.talk_ms)
        .bind(opt_text(&e.detail))
        .execute(pool)
        .await
        .map(drop)?);
        Ok(())
    }

    /// Writes events (and the queue-log rows that go with them) in one transaction. On
    /// PostgreSQL, where several nodes may write the one log, the batch is numbered on
    /// from the log's last event inside the transaction, under a lock: the numbers it
    /// was given become those it was written with.
    pub async fn write_events(
        &self,
        batch: &mut [(crate::events::Event, Option<QueueEvent>)],
    ) -> anyhow::Result<()> {
        events::write(self, batch).await
    }

    pub async fn events_since(
        &self,
        since: u64,
        limit: u32,
    ) -> anyhow::Result<Vec<crate::events::Event>> {
        events::since(self, since, limit).await
    }

    /// Events that happened in [from_ms, to_ms), in sequence order.
    pub async fn events_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> anyhow::Result<Vec<crate::events::Event>> {
        events::between(self, from_ms, to_ms).await
    }

    /// What was open when a range starts: each agent's last state before `before_ms`,
    /// and the last server start or stop before it.
    pub async fn agent_states_before(
        &self,
        before_ms: i64,
    ) -> anyhow::Result<Vec<crate::events::Event>> {
        events::states_before(self, before_ms).await
    }

    pub async fn events_of_call(&self, call: &str) -> anyhow::Result<Vec<crate::events::Event>> {
        events::of_call(self, call).await
    }

    /// The last event a webhook endpoint has been given (None: a new endpoint).
    pub async fn webhook_cursor(&self, name: &str) -> anyhow::Result<Option<u64>> {
        events::cursor(self, name).await
    }

    pub async fn set_webhook_cursor(&self, name: &str, seq: u64) -> anyhow::Result<()> {
        events::set_cursor(self, name, seq).await
    }

    pub async fn last_event_seq(&self) -> anyhow::Result<u64> {
        events::last_seq(self).await
    }

    /// When the log's last event happened (for a crashed run: the last moment it was alive).
    pub async fn last_event_at(&self) -> anyhow::Result<Option<i64>> {
        Ok(
            on_db!(self, pool => sqlx::query_scalar("SELECT MAX(at_ms) FROM events WHERE node = $1")
            .bind(&*self.node)
            .fetch_one(pool)
            .await?),
        )
    }

    /// When the run that logged event `after_seq` ended, if a later run started before
    /// `before_ms`: the last event before that later start.
    pub async fn end_of_run_after(
        &self,
        after_seq: u64,
        before_ms: i64,
    ) -> anyhow::Result<Option<i64>> {
        Ok(on_db!(self, pool => sqlx::query_scalar(
            "SELECT MAX(at_ms) FROM events
             WHERE node = $3 AND seq < (SELECT MIN(seq) FROM events
                          WHERE type = 'server.started' AND seq > $1 AND at_ms < $2
                            AND node = $3)",
        )
        .bind(after_seq as i64)
        .bind(before_ms)
        .bind(&*self.node)
        .fetch_one(pool)
        .await?))
    }

    /// Calls that arrived but have neither a record nor a `call.ended` event: the calls in
    /// progress when this node last stopped without ending them.
    pub async fn unfinished_calls(&self) -> anyhow::Result<Vec<String>> {
        Ok(on_db!(self, pool => sqlx::query_scalar(
            "SELECT a.call_uuid FROM events a
             WHERE a.type = 'call.arrived' AND a.call_uuid IS NOT NULL AND a.node = $1
               AND NOT EXISTS (SELECT 1 FROM calls c WHERE c.call_uuid = a.call_uuid)
               AND NOT EXISTS (SELECT 1 FROM events e
                               WHERE e.call_uuid = a.call_uuid AND e.type = 'call.ended')
             ORDER BY a.seq",
        )
        .bind(&*self.node)
        .fetch_all(pool)
        .await?))
    }

    pub async fn count_calls(&self) -> anyhow::Result<i64> {
        Ok(
            on_db!(self, pool => sqlx::query_scalar("SELECT COUNT(*) FROM calls")
            .fetch_one(pool)
            .await?),
        )
    }

    pub async fn close(&self) {
        on_db!(self, pool => pool.close().await);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same check on a new SQLite database and on a new PostgreSQL one.
    async fn on_both<F, Fut>(check: F)
    where
        F: Fn(Store, Reopen) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Store::open(dir.path()).await.unwrap();
        check(sqlite, Reopen::Sqlite(dir.path().to_path_buf())).await;
        let url = pg_test::database().await;
        let postgres = Store::connect_postgres(&url).await.unwrap();
        check(postgres, Reopen::Postgres(url)).await;
    }

    /// How to open the same database again.
    #[derive(Clone)]
    enum Reopen {
        Sqlite(std::path::PathBuf),
        Postgres(String),
    }

    impl Reopen {
        async fn open(&self) -> Store {
            match self {
                Reopen::Sqlite(dir) => Store::open(dir).await.unwrap(),
                Reopen::Postgres(url) => Store::connect_postgres(url).await.unwrap(),
            }
        }
    }

    fn seqs(events: Vec<crate::events::Event>) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    async fn migrations_applied(store: &Store) -> Vec<i64> {
        on_db!(store, pool => sqlx::query_scalar(
            "SELECT version FROM _sqlx_migrations ORDER BY version"
        )
        .fetch_all(pool)
        .await
        .unwrap())
    }

    #[tokio::test]
    async fn an_older_database_gains_the_new_columns_and_is_versioned() {
        let dir = tempfile::tempdir().unwrap();
        {
            let schema = include_str!("migrations/sqlite/0001_schema.sql");
            let old = schema
                .replace(
                    ",\n    bridged_ms INTEGER,\n    flow TEXT,\n    ivr_trace TEXT",
                    "",
                )
                .replace(
                    ",\n    -- The event log's sequence number of the same event.\n    seq INTEGER",
                    "",
                );
            assert!(!old.contains("ivr_trace") && old != schema);
            let opts = SqliteConnectOptions::from_str(&format!(
                "sqlite://{}",
                dir.path().join("switchboard.db").display()
            ))
            .unwrap()
            .create_if_missing(true);
            let pool = SqlitePoolOptions::new().connect_with(opts).await.unwrap();
            sqlx::raw_sql(&old).execute(&pool).await.unwrap();
            pool.close().await;
        }
        let store = Store::open(dir.path()).await.unwrap();
        let rec = CallRecord {
            call_uuid: "u2".into(),
            source_kind: "trunk",
            flow: Some("main".into()),
            ivr_trace: Some("main/welcome (play)".into()),
            ..Default::default()
        };
        store.write_call(&rec).await.unwrap();
        assert_eq!(store.count_calls().await.unwrap(), 1);
        store
            .write_events(&mut [(
                crate::events::Event {
                    seq: 1,
                    at_ms: 1,
                    kind: "queue.entered".into(),
                    call: Some("u2".into()),
                    queue: Some("sales".into()),
                    agent: None,
                    data: serde_json::json!({}),
                },
                Some(QueueEvent {
                    at_ms: 1,
                    queue: Some("sales".into()),
                    call_uuid: Some("u2".into()),
                    event: "ENTER".into(),
                    seq: Some(1),
                    ..Default::default()
                }),
            )])
            .await
            .unwrap();
        assert_eq!(migrations_applied(&store).await, [1, 2]);
    }

    /// Two cluster nodes on one PostgreSQL log: each batch is numbered on from the other
    /// node's last event, and a node's unfinished calls are only its own.
    #[tokio::test]
    async fn nodes_share_one_numbered_log_and_each_finds_only_its_own_unfinished_calls() {
        let url = pg_test::database().await;
        let a = Store::connect_postgres(&url).await.unwrap().for_node("a");
        let b = Store::connect_postgres(&url).await.unwrap().for_node("b");
        let ev = |seq: u64, kind: &str, call: &str| {
            let e = crate::events::Event {
                seq,
                at_ms: 1_000 + seq as i64,
                kind: kind.into(),
                call: Some(call.into()),
                queue: None,
                agent: None,
                data: serde_json::json!({}),
            };
            (e, None)
        };
        // Both nodes number from their own counter (1, 2…); the store renumbers.
        let mut first = [
            ev(1, "call.arrived", "on-a"),
            ev(2, "call.arrived", "done-a"),
        ];
        a.write_events(&mut first).await.unwrap();
        let mut second = [ev(1, "call.arrived", "on-b")];
        b.write_events(&mut second).await.unwrap();
        let mut third = [ev(3, "call.ended", "done-a")];
        a.write_events(&mut third).await.unwrap();
        assert_eq!(second[0].0.seq, 3, "b's event follows a's two");
        assert_eq!(third[0].0.seq, 4);
        assert_eq!(seqs(a.events_since(0, 10).await.unwrap()), [1, 2, 3, 4]);
        assert_eq!(a.unfinished_calls().await.unwrap(), ["on-a"]);
        assert_eq!(b.unfinished_calls().await.unwrap(), ["on-b"]);
        assert_eq!(b.last_event_at().await.unwrap(), Some(1_001));
    }

    #[tokio::test]
    async fn migrations_run_once_and_are_recorded() {
        on_both(|store, reopen| async move {
            assert_eq!(migrations_applied(&store).await, [1, 2]);
            store.close().await;
            let again = reopen.open().await;
            assert_eq!(migrations_applied(&again).await, [1, 2]);
        })
        .await;
    }

    /// Two crashed runs: a call of the first ends when the first run did, one of the
    /// second is left to the caller (no later start); a finished call is not unfinished.
    #[tokio::test]
    async fn unfinished_calls_and_the_end_of_their_run() {
        on_both(|store, _| async move {
            let ev = |seq: u64, at_ms: i64, kind: &str, call: Option<&str>| {
                let e = crate::events::Event {
                    seq,
                    at_ms,
                    kind: kind.into(),
                    call: call.map(str::to_string),
                    queue: None,
                    agent: None,
                    data: serde_json::json!({}),
                };
                (e, None)
            };
            store
                .write_events(&mut [
                    ev(1, 1_000, "server.started", None),
                    ev(2, 1_100, "call.arrived", Some("old")),
                    ev(3, 1_200, "call.arrived", Some("done")),
                    ev(4, 1_300, "call.ended", Some("done")),
                    ev(5, 1_900, "call.answered", Some("old")),
                    ev(6, 5_000, "server.started", None),
                    ev(7, 5_100, "call.arrived", Some("new")),
                    ev(8, 5_500, "agent.state", None),
                ])
                .await
                .unwrap();
            assert_eq!(store.unfinished_calls().await.unwrap(), ["old", "new"]);
            assert_eq!(store.end_of_run_after(2, 9_000).await.unwrap(), Some(1_900));
            assert_eq!(store.end_of_run_after(7, 9_000).await.unwrap(), None);
            // A start at or after `before_ms` is this run's own: it does not count.
            assert_eq!(store.end_of_run_after(2, 5_000).await.unwrap(), None);
            assert_eq!(store.last_event_at().await.unwrap(), Some(5_500));
            assert_eq!(store.last_event_seq().await.unwrap(), 8);
            let of_old = seqs(store.events_of_call("old").await.unwrap());
            assert_eq!(of_old, [2, 5]);
            let page = seqs(store.events_since(2, 3).await.unwrap());
            assert_eq!(page, [3, 4, 5]);
            let window = seqs(store.events_between(1_200, 5_000).await.unwrap());
            assert_eq!(window, [3, 4, 5]);
            assert_eq!(store.webhook_cursor("crm").await.unwrap(), None);
            store.set_webhook_cursor("crm", 4).await.unwrap();
            store.set_webhook_cursor("crm", 7).await.unwrap();
            assert_eq!(store.webhook_cursor("crm").await.unwrap(), Some(7));
        })
        .await;
    }

    /// A NUL from a caller's header is kept as U+FFFD on both databases (PostgreSQL
    /// refuses NUL in text), and found again by the same value.
    #[tokio::test]
    async fn text_with_a_nul_is_kept_and_found() {
        on_both(|store, _| async move {
            let rec = CallRecord {
                call_uuid: "n1".into(),
                from_user: "55\u{0}5".into(),
                reason: Some("bad\u{0}".into()),
                source_kind: "trunk",
                ..Default::default()
            };
            store.write_call(&rec).await.unwrap();
            let history = store.caller_history("55\u{0}5", 0, 7).await.unwrap();
            assert_eq!(history.contacts, 1);
            assert_eq!(history.recent[0].caller, "55\u{FFFD}5");
            assert_eq!(history.recent[0].reason.as_deref(), Some("bad\u{FFFD}"));
        })
        .await;
    }

    /// Retention: what came before the cutoff goes (records, their outcomes, events,
    /// queue log), what came after stays, and the export saw exactly what went.
    #[tokio::test]
    async fn pruning_deletes_what_came_before_the_cutoff_and_nothing_after() {
        on_both(|store, _| async move {
            for (uuid, at) in [("old1", 1_000), ("old2", 2_000), ("new", 3_000)] {
                let rec = CallRecord {
                    call_uuid: uuid.into(),
                    source_kind: "trunk",
                    arrived_ms: at,
                    ended_ms: at + 100,
                    ..Default::default()
                };
                store.write_call(&rec).await.unwrap();
            }
            let ev = |seq: u64, at_ms: i64, call: &str| {
                let e = crate::events::Event {
                    seq,
                    at_ms,
                    kind: "call.arrived".into(),
                    call: Some(call.into()),
                    queue: None,
                    agent: None,
                    data: serde_json::json!({}),
                };
                let row = QueueEvent {
                    at_ms,
                    call_uuid: Some(call.into()),
                    event: "ENTER".into(),
                    ..Default::default()
                };
                (e, Some(row))
            };
            let mut log = [
                ev(1, 1_000, "old1"),
                ev(2, 2_000, "old2"),
                ev(3, 3_000, "new"),
            ];
            store.write_events(&mut log).await.unwrap();
            let mut exported = Vec::new();
            let n = store
                .records_before(2_500, |r| {
                    exported.push(r.call_uuid.clone());
                    Ok(())
                })
                .await
                .unwrap();
            assert_eq!(
                (n, exported.clone()),
                (2, vec!["old2".to_string(), "old1".to_string()])
            );
            let pruned = store.prune_before(2_500).await.unwrap();
            assert_eq!(
                pruned,
                Pruned {
                    calls: 2,
                    events: 2,
                    queue_log: 2
                }
            );
            assert_eq!(store.count_calls().await.unwrap(), 1);
            assert!(store.record("new").await.unwrap().is_some());
            assert_eq!(seqs(store.events_since(0, 10).await.unwrap()), [3]);
            assert_eq!(store.prune_before(2_500).await.unwrap(), Pruned::default());
        })
        .await;
    }

    #[tokio::test]
    async fn record_round_trip_and_survives_reopen() {
        on_both(|store, reopen| async move {
            let rec = CallRecord {
                call_uuid: "u1".into(),
                a_call_id: "a@x".into(),
                from_uri: "sip:555@carrier".into(),
                from_user: "555".into(),
                to_uri: "sip:100@sb".into(),
                dialed: "100".into(),
                source_kind: "trunk",
                trunk: Some("carrier".into()),
                did: Some("100".into()),
                target: Some("2001".into()),
                arrived_ms: 1,
                answered_ms: Some(2),
                ended_ms: 3,
                hangup_by: Some(HangupBy::Caller),
                disposition: Some(Disposition::Answered),
                final_code: 200,
                a_rtp_in: 100,
                csat: Some(4),
                resolved: Some(true),
                a_jitter_ms: 1.5,
                ..Default::default()
            };
            store.write_call(&rec).await.unwrap();
            // Writing the same call again (a retry) leaves one record, alone or in a batch.
            store.write_call(&rec).await.unwrap();
            let other = CallRecord {
                call_uuid: "u3".into(),
                from_user: "555".into(),
                source_kind: "user",
                arrived_ms: 10,
                ended_ms: 11,
                disposition: Some(Disposition::Abandoned),
                ..Default::default()
            };
            store.write_calls(&[&rec, &other]).await.unwrap();
            store.close().await;
            let again = reopen.open().await;
            assert_eq!(again.count_calls().await.unwrap(), 2);
            let view = again.record("u1").await.unwrap().expect("the record");
            assert_eq!(
                (
                    view.disposition.as_str(),
                    view.hangup_by.as_deref(),
                    view.final_code
                ),
                ("answered", Some("caller"), 200)
            );
            assert_eq!((view.csat, view.survey_resolved), (Some(4), Some(true)));
            let history = again.caller_history("555", 0, 7).await.unwrap();
            assert_eq!(history.contacts, 2);
            let newest_first: Vec<&str> = history
                .recent
                .iter()
                .map(|r| r.call_uuid.as_str())
                .collect();
            assert_eq!(newest_first, ["u3", "u1"]);
        })
        .await;
    }
}
