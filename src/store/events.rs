//! The event log's table: one row per event, keyed by its sequence number.

use sqlx::{Row, SqlitePool};

use super::QueueEvent;
use crate::events::Event;

pub(super) async fn write(
    pool: &SqlitePool,
    batch: &[(Event, Option<QueueEvent>)],
) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    let written = write_on(&mut conn, batch).await;
    if written.is_err() {
        // A statement that failed inside the transaction (a full disk) can leave the
        // connection in it, holding the write lock for every other writer; such a
        // connection is closed rather than given back to the pool.
        conn.close_on_drop();
    }
    written
}

async fn write_on(
    conn: &mut sqlx::pool::PoolConnection<sqlx::Sqlite>,
    batch: &[(Event, Option<QueueEvent>)],
) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut tx = conn.begin().await?;
    for (e, row) in batch {
        sqlx::query(
            "INSERT INTO events (seq, at_ms, type, call_uuid, queue, agent, data)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.seq as i64)
        .bind(e.at_ms)
        .bind(&e.kind)
        .bind(&e.call)
        .bind(&e.queue)
        .bind(&e.agent)
        .bind(e.data.to_string())
        .execute(&mut *tx)
        .await?;
        if let Some(q) = row {
            sqlx::query(
                "INSERT INTO queue_log (at_ms, queue, call_uuid, agent, event, wait_ms, talk_ms,
                   detail, seq)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(q.at_ms)
            .bind(&q.queue)
            .bind(&q.call_uuid)
            .bind(&q.agent)
            .bind(&q.event)
            .bind(q.wait_ms)
            .bind(q.talk_ms)
            .bind(&q.detail)
            .bind(q.seq)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn since(pool: &SqlitePool, since: u64, limit: u32) -> anyhow::Result<Vec<Event>> {
    let rows = sqlx::query(
        "SELECT seq, at_ms, type, call_uuid, queue, agent, data FROM events
         WHERE seq > ? ORDER BY seq LIMIT ?",
    )
    // Past the last possible number there is nothing (and no wrap to a negative).
    .bind(i64::try_from(since).unwrap_or(i64::MAX))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(event).collect()
}

fn event(r: &sqlx::sqlite::SqliteRow) -> anyhow::Result<Event> {
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
pub(super) async fn of_call(pool: &SqlitePool, call: &str) -> anyhow::Result<Vec<Event>> {
    let rows = sqlx::query(
        "SELECT seq, at_ms, type, call_uuid, queue, agent, data FROM events
         WHERE call_uuid = ? ORDER BY seq",
    )
    .bind(call)
    .fetch_all(pool)
    .await?;
    rows.iter().map(event).collect()
}

pub(super) async fn cursor(pool: &SqlitePool, name: &str) -> anyhow::Result<Option<u64>> {
    let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM webhook_cursors WHERE name = ?")
        .bind(name)
        .fetch_optional(pool)
        .await?;
    Ok(seq.map(|s| s as u64))
}

pub(super) async fn set_cursor(pool: &SqlitePool, name: &str, seq: u64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO webhook_cursors (name, seq) VALUES (?, ?)
         ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
    )
    .bind(name)
    .bind(seq as i64)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn last_seq(pool: &SqlitePool) -> anyhow::Result<u64> {
    let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events")
        .fetch_one(pool)
        .await?;
    Ok(seq.unwrap_or(0) as u64)
}

/// Events with `from_ms <= at_ms < to_ms`, in sequence order.
pub(super) async fn between(
    pool: &SqlitePool,
    from_ms: i64,
    to_ms: i64,
) -> anyhow::Result<Vec<Event>> {
    let rows = sqlx::query(
        "SELECT seq, at_ms, type, call_uuid, queue, agent, data FROM events
         WHERE at_ms >= ? AND at_ms < ? ORDER BY seq",
    )
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(pool)
    .await?;
    rows.iter().map(event).collect()
}

/// Each agent's last `agent.state` before `before_ms` (its state when a range starts),
/// and the last server start or stop before it (which ends every state before it).
pub(super) async fn states_before(pool: &SqlitePool, before_ms: i64) -> anyhow::Result<Vec<Event>> {
    let rows = sqlx::query(
        "SELECT seq, at_ms, type, call_uuid, queue, agent, data FROM events
         WHERE seq IN (SELECT MAX(seq) FROM events WHERE type = 'agent.state' AND at_ms < ?
                       GROUP BY agent)
            OR seq = (SELECT MAX(seq) FROM events
                      WHERE type IN ('server.started', 'server.stopped') AND at_ms < ?)
         ORDER BY seq",
    )
    .bind(before_ms)
    .bind(before_ms)
    .fetch_all(pool)
    .await?;
    rows.iter().map(event).collect()
}
