//! The event log's table: one row per event, keyed by its sequence number.

use sqlx::Row;

use super::{QueueEvent, Store};
use crate::events::Event;

/// Serialises the numbering of the nodes' event batches (an arbitrary constant).
const SEQ_LOCK: i64 = 0x5357_4254_5345_5100;

/// Rows per INSERT: 8 or 9 parameters each, far below either database's limit.
const ROWS_PER_STATEMENT: usize = 512;

pub(super) async fn write(
    store: &Store,
    batch: &mut [(Event, Option<QueueEvent>)],
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let shared = store.postgres().is_some();
    in_transaction!(store, tx => {
        if shared {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(SEQ_LOCK)
                .execute(&mut *tx)
                .await?;
            let last: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events")
                .fetch_one(&mut *tx)
                .await?;
            let mut seq = last.unwrap_or(0) as u64;
            for (e, row) in batch.iter_mut() {
                seq += 1;
                e.seq = seq;
                if let Some(row) = row {
                    row.seq = Some(seq as i64);
                }
            }
        }
        // One statement per table and chunk: a round trip per row would cost the
        // database (and this task) more than the rows themselves.
        for chunk in batch.chunks(ROWS_PER_STATEMENT) {
            let mut events = sqlx::QueryBuilder::new(
                "INSERT INTO events (seq, at_ms, type, call_uuid, queue, agent, data, node) ",
            );
            events.push_values(chunk, |mut b, (e, _)| {
                b.push_bind(e.seq as i64)
                    .push_bind(e.at_ms)
                    .push_bind(super::text(&e.kind))
                    .push_bind(super::opt_text(&e.call))
                    .push_bind(super::opt_text(&e.queue))
                    .push_bind(super::opt_text(&e.agent))
                    .push_bind(e.data.to_string())
                    .push_bind(store.node());
            });
            events.build().execute(&mut *tx).await?;
            let rows: Vec<&QueueEvent> = chunk.iter().filter_map(|(_, r)| r.as_ref()).collect();
            if rows.is_empty() {
                continue;
            }
            let mut queue_log = sqlx::QueryBuilder::new(
                "INSERT INTO queue_log (at_ms, queue, call_uuid, agent, event, wait_ms, talk_ms, \
                 detail, seq) ",
            );
            queue_log.push_values(rows, |mut b, q| {
                b.push_bind(q.at_ms)
                    .push_bind(super::opt_text(&q.queue))
                    .push_bind(super::opt_text(&q.call_uuid))
                    .push_bind(super::opt_text(&q.agent))
                    .push_bind(super::text(&q.event))
                    .push_bind(q.wait_ms)
                    .push_bind(q.talk_ms)
                    .push_bind(super::opt_text(&q.detail))
                    .push_bind(q.seq);
            });
            queue_log.build().execute(&mut *tx).await?;
        }
    })
}

pub(super) async fn since(store: &Store, since: u64, limit: u32) -> anyhow::Result<Vec<Event>> {
    on_db!(store, pool => sqlx::query(
        "SELECT seq, at_ms, type, call_uuid, queue, agent, data FROM events
         WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    // Past the last possible number there is nothing (and no wrap to a negative).
    .bind(i64::try_from(since).unwrap_or(i64::MAX))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?
    .iter()
    .map(event)
    .collect())
}

fn event<R: Row>(r: &R) -> anyhow::Result<Event>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let data: String = r.try_get("data")?;
    Ok(Event {
        seq: r.try_get::<i64, _>("seq")? as u64,
        at_ms: r.try_get("at_ms")?,
        kind: r.try_get("type")?,
        call: r.try_get("call_uuid")?,
        queue: r.try_get("queue")?,
        agent: r.try_get("agent")?,
        data: serde_json::from_str(&data)?,
    })
}

/// Every event of one call, oldest first.
pub(super) async fn of_call(store: &Store, call: &str) -> anyhow::Result<Vec<Event>> {
    on_db!(store, pool => sqlx::query(
        "SELECT seq, at_ms, type, call_uuid, queue, agent, data FROM events
         WHERE call_uuid = $1 ORDER BY seq",
    )
    .bind(super::text(call))
    .fetch_all(pool)
    .await?
    .iter()
    .map(event)
    .collect())
}

pub(super) async fn cursor(store: &Store, name: &str) -> anyhow::Result<Option<u64>> {
    let seq: Option<i64> = on_db!(store, pool => {
        sqlx::query_scalar("SELECT seq FROM webhook_cursors WHERE name = $1")
            .bind(super::text(name))
            .fetch_optional(pool)
            .await?
    });
    Ok(seq.map(|s| s as u64))
}

pub(super) async fn set_cursor(store: &Store, name: &str, seq: u64) -> anyhow::Result<()> {
    on_db!(store, pool => sqlx::query(
        "INSERT INTO webhook_cursors (name, seq) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
    )
    .bind(super::text(name))
    .bind(seq as i64)
    .execute(pool)
    .await
    .map(drop)?);
    Ok(())
}

pub(super) async fn last_seq(store: &Store) -> anyhow::Result<u64> {
    let seq: Option<i64> = on_db!(store, pool => {
        sqlx::query_scalar("SELECT MAX(seq) FROM events")
            .fetch_one(pool)
            .await?
    });
    Ok(seq.unwrap_or(0) as u64)
}

/// Events with `from_ms <= at_ms < to_ms`, in sequence order.
pub(super) async fn between(store: &Store, from_ms: i64, to_ms: i64) -> anyhow::Result<Vec<Event>> {
    on_db!(store, pool => sqlx::query(
        "SELECT seq, at_ms, type, call_uuid, queue, agent, data FROM events
         WHERE at_ms >= $1 AND at_ms < $2 ORDER BY seq",
    )
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(pool)
    .await?
    .iter()
    .map(event)
    .collect())
}

/// Each agent's last `agent.state` before `before_ms` (its state when a range starts),
/// and the last server start or stop before it (which ends every state before it).
pub(super) async fn states_before(store: &Store, before_ms: i64) -> anyhow::Result<Vec<Event>> {
    on_db!(store, pool => sqlx::query(
        "SELECT seq, at_ms, type, call_uuid, queue, agent, data FROM events
         WHERE seq IN (SELECT MAX(seq) FROM events WHERE type = 'agent.state' AND at_ms < $1
                       GROUP BY agent)
            OR seq = (SELECT MAX(seq) FROM events
                      WHERE type IN ('server.started', 'server.stopped') AND at_ms < $1)
         ORDER BY seq",
    )
    .bind(before_ms)
    .fetch_all(pool)
    .await?
    .iter()
    .map(event)
    .collect())
}
