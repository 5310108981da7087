//! Reading call records and the queue log back for people and integrations: paged,
//! filtered lists, the caller's history for a screen pop, and the agent's outcome
//! (disposition code and note) kept beside the record, which itself is never changed.

use serde::Serialize;
use sqlx::{QueryBuilder, Row};

use super::Store;

/// The agent's word on how a call went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Outcome {
    /// One of the configured disposition codes (e.g. `resolved`, `follow_up`).
    pub code: String,
    /// Whether that code counts as resolved (first-contact resolution).
    pub resolved: bool,
    pub note: Option<String>,
    /// Who set it: the agent's extension, or the API user acting for it.
    pub agent: Option<String>,
    pub set_ms: i64,
}

/// A finished call as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CallRecordView {
    /// Increases with every record written; the cursor of paged lists.
    pub id: i64,
    pub call_uuid: String,
    /// The caller's number (user part of From).
    pub caller: String,
    pub dialed: String,
    pub did: Option<String>,
    /// `trunk`, `user` or `unknown`.
    pub source_kind: String,
    pub trunk: Option<String>,
    /// The extension (agent) the call was connected to or rang last.
    pub agent: Option<String>,
    pub queue: Option<String>,
    pub flow: Option<String>,
    pub arrived_ms: i64,
    pub answered_ms: Option<i64>,
    pub bridged_ms: Option<i64>,
    pub ended_ms: i64,
    /// How the call ended: answered, abandoned, busy, declined, no_answer, unavailable,
    /// refused, failed.
    pub disposition: String,
    /// caller, callee or switchboard.
    pub hangup_by: Option<String>,
    pub reason: Option<String>,
    pub final_code: i64,
    /// Post-call survey: satisfaction 1–5 and the caller's "was it resolved".
    pub csat: Option<i64>,
    pub survey_resolved: Option<bool>,
    pub recording: Option<String>,
    pub recording_ms: Option<i64>,
    pub voicemail: Option<String>,
    /// The agent's disposition code and note, if one was set.
    pub outcome: Option<Outcome>,
}

/// Which records to list. Times are Unix epoch milliseconds of arrival.
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub queue: Option<String>,
    pub agent: Option<String>,
    pub caller: Option<String>,
    pub disposition: Option<String>,
    /// The agent's disposition code.
    pub outcome: Option<String>,
    /// Only records with an id below this (the previous page's last id): newest first.
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// What [`Store::prune_before`] deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub calls: u64,
    pub events: u64,
    pub queue_log: u64,
}

/// A queue-log row with its ids, for paged reading.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct QueueLogRow {
    pub id: i64,
    /// The same event's number in the event log.
    pub seq: Option<i64>,
    pub at_ms: i64,
    pub queue: Option<String>,
    pub call_uuid: Option<String>,
    pub agent: Option<String>,
    /// ENTER, OFFER, CONNECT, ABANDON, COMPLETE_AGENT, PAUSE…
    pub event: String,
    pub wait_ms: Option<i64>,
    pub talk_ms: Option<i64>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct QueueLogFilter {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub queue: Option<String>,
    pub agent: Option<String>,
    pub call: Option<String>,
    /// Only rows with an id above this (the previous page's last id): oldest first.
    pub after_id: Option<i64>,
    pub limit: u32,
}

/// The caller's earlier contacts, for the agent's screen.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CallerHistory {
    pub caller: String,
    /// Contacts in the window (default 7 days).
    pub contacts: i64,
    pub window_days: u32,
    /// The most recent first, at most 10.
    pub recent: Vec<CallRecordView>,
}

const RECORD_COLUMNS: &str = "c.id, c.call_uuid, c.from_user, c.dialed, c.did, c.source_kind,
    c.trunk, c.target, c.queue, c.flow, c.arrived_ms, c.answered_ms, c.bridged_ms, c.ended_ms,
    c.disposition, c.hangup_by, c.reason, c.final_code, c.csat, c.resolved, c.recording,
    c.recording_ms, c.voicemail,
    o.code AS o_code, o.resolved AS o_resolved, o.note AS o_note, o.agent AS o_agent,
    o.set_ms AS o_set_ms";

/// The latest outcome of each call joins its record.
const RECORD_FROM: &str = " FROM calls c LEFT JOIN outcomes o ON o.id =
    (SELECT MAX(id) FROM outcomes WHERE call_uuid = c.call_uuid)";

fn record_view<R: Row>(r: &R) -> Result<CallRecordView, sqlx::Error>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let outcome = match r.try_get::<Option<String>, _>("o_code")? {
        Some(code) => Some(Outcome {
            code,
            resolved: r.try_get::<i64, _>("o_resolved")? != 0,
            note: r.try_get("o_note")?,
            agent: r.try_get("o_agent")?,
            set_ms: r.try_get("o_set_ms")?,
        }),
        None => None,
    };
    Ok(CallRecordView {
        id: r.try_get("id")?,
        call_uuid: r.try_get("call_uuid")?,
        caller: r.try_get("from_user")?,
        dialed: r.try_get("dialed")?,
        did: r.try_get("did")?,
        source_kind: r.try_get("source_kind")?,
        trunk: r.try_get("trunk")?,
        agent: r.try_get("target")?,
        queue: r.try_get("queue")?,
        flow: r.try_get("flow")?,
        arrived_ms: r.try_get("arrived_ms")?,
        answered_ms: r.try_get("answered_ms")?,
        bridged_ms: r.try_get("bridged_ms")?,
        ended_ms: r.try_get("ended_ms")?,
        disposition: r.try_get("disposition")?,
        hangup_by: r.try_get("hangup_by")?,
        reason: r.try_get("reason")?,
        final_code: r.try_get("final_code")?,
        csat: r.try_get("csat")?,
        survey_resolved: r.try_get::<Option<i64>, _>("resolved")?.map(|v| v != 0),
        recording: r.try_get("recording")?,
        recording_ms: r.try_get("recording_ms")?,
        voicemail: r.try_get("voicemail")?,
        outcome,
    })
}

impl Store {
    /// Records newest first, filtered, at most `limit`.
    pub async fn records(&self, f: &RecordFilter) -> anyhow::Result<Vec<CallRecordView>> {
        on_db!(self, pool => {
        let mut q = QueryBuilder::new(format!("SELECT {RECORD_COLUMNS}{RECORD_FROM} WHERE 1=1"));
        if let Some(v) = f.from_ms {
            q.push(" AND c.arrived_ms >= ").push_bind(v);
        }
        if let Some(v) = f.to_ms {
            q.push(" AND c.arrived_ms < ").push_bind(v);
        }
        if let Some(v) = &f.queue {
            q.push(" AND c.queue = ").push_bind(super::text(v).into_owned());
        }
        if let Some(v) = &f.agent {
            q.push(" AND c.target = ").push_bind(super::text(v).into_owned());
        }
        if let Some(v) = &f.caller {
            q.push(" AND c.from_user = ").push_bind(super::text(v).into_owned());
        }
        if let Some(v) = &f.disposition {
            q.push(" AND c.disposition = ").push_bind(super::text(v).into_owned());
        }
        if let Some(v) = &f.outcome {
            q.push(" AND o.code = ").push_bind(super::text(v).into_owned());
        }
        if let Some(v) = f.before_id {
            q.push(" AND c.id < ").push_bind(v);
        }
        q.push(" ORDER BY c.id DESC LIMIT ")
            .push_bind(i64::from(f.limit));
        let rows = q.build().fetch_all(pool).await?;
        rows.iter().map(record_view).collect::<Result<_, _>>()
        })
        .map_err(Into::into)
    }

    /// Every record of a call that arrived before `before_ms`, oldest last, a page at a
    /// time into `each` (for an export ahead of [`Store::prune_before`]).
    pub async fn records_before(
        &self,
        before_ms: i64,
        mut each: impl FnMut(&CallRecordView) -> anyhow::Result<()>,
    ) -> anyhow::Result<u64> {
        let mut filter = RecordFilter {
            to_ms: Some(before_ms),
            limit: 1000,
            ..RecordFilter::default()
        };
        let mut n = 0;
        loop {
            let page = self.records(&filter).await?;
            for r in &page {
                each(r)?;
            }
            n += page.len() as u64;
            match page.last() {
                Some(last) if page.len() == filter.limit as usize => {
                    filter.before_id = Some(last.id)
                }
                _ => return Ok(n),
            }
        }
    }

    /// Deletes, in one transaction, the records of calls that arrived before
    /// `before_ms` with their outcomes, and the event log and queue log from
    /// before it. Reports can then only cover what comes after.
    pub async fn prune_before(&self, before_ms: i64) -> anyhow::Result<Pruned> {
        let mut pruned = Pruned::default();
        in_transaction!(self, tx => {
            sqlx::query(
                "DELETE FROM outcomes WHERE call_uuid IN
                   (SELECT call_uuid FROM calls WHERE arrived_ms < $1)",
            )
            .bind(before_ms)
            .execute(&mut *tx)
            .await?;
            pruned.calls = sqlx::query("DELETE FROM calls WHERE arrived_ms < $1")
                .bind(before_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            pruned.events = sqlx::query("DELETE FROM events WHERE at_ms < $1")
                .bind(before_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            pruned.queue_log = sqlx::query("DELETE FROM queue_log WHERE at_ms < $1")
                .bind(before_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        })?;
        Ok(pruned)
    }

    pub async fn record(&self, call_uuid: &str) -> anyhow::Result<Option<CallRecordView>> {
        let sql = format!("SELECT {RECORD_COLUMNS}{RECORD_FROM} WHERE c.call_uuid = $1");
        on_db!(self, pool => {
            let row = sqlx::query(&sql).bind(super::text(call_uuid)).fetch_optional(pool).await?;
            Ok(row.as_ref().map(record_view).transpose()?)
        })
    }

    /// Keeps the agent's outcome of a call; a later one replaces it in views.
    pub async fn set_outcome(&self, call_uuid: &str, o: &Outcome) -> anyhow::Result<()> {
        on_db!(self, pool => sqlx::query(
            "INSERT INTO outcomes (call_uuid, code, resolved, note, agent, set_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(super::text(call_uuid))
        .bind(super::text(&o.code))
        .bind(i64::from(o.resolved))
        .bind(super::opt_text(&o.note))
        .bind(super::opt_text(&o.agent))
        .bind(o.set_ms)
        .execute(pool)
        .await
        .map(drop)?);
        Ok(())
    }

    /// The caller's contacts since `since_ms`: how many, and the latest ten.
    pub async fn caller_history(
        &self,
        caller: &str,
        since_ms: i64,
        window_days: u32,
    ) -> anyhow::Result<CallerHistory> {
        let contacts: i64 = on_db!(self, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM calls WHERE from_user = $1 AND arrived_ms >= $2",
        )
        .bind(super::text(caller))
        .bind(since_ms)
        .fetch_one(pool)
        .await?);
        let recent = self
            .records(&RecordFilter {
                caller: Some(caller.to_string()),
                from_ms: Some(since_ms),
                limit: 10,
                ..Default::default()
            })
            .await?;
        Ok(CallerHistory {
            caller: caller.to_string(),
            contacts,
            window_days,
            recent,
        })
    }

    /// Queue-log rows oldest first, filtered, at most `limit`.
    pub async fn queue_log(&self, f: &QueueLogFilter) -> anyhow::Result<Vec<QueueLogRow>> {
        on_db!(self, pool => {
        let mut q = QueryBuilder::new(
            "SELECT id, seq, at_ms, queue, call_uuid, agent, event, wait_ms, talk_ms, detail
             FROM queue_log WHERE 1=1",
        );
        if let Some(v) = f.from_ms {
            q.push(" AND at_ms >= ").push_bind(v);
        }
        if let Some(v) = f.to_ms {
            q.push(" AND at_ms < ").push_bind(v);
        }
        if let Some(v) = &f.queue {
            q.push(" AND queue = ").push_bind(super::text(v).into_owned());
        }
        if let Some(v) = &f.agent {
            q.push(" AND agent = ").push_bind(super::text(v).into_owned());
        }
        if let Some(v) = &f.call {
            q.push(" AND call_uuid = ").push_bind(super::text(v).into_owned());
        }
        if let Some(v) = f.after_id {
            q.push(" AND id > ").push_bind(v);
        }
        q.push(" ORDER BY id LIMIT ").push_bind(i64::from(f.limit));
        let rows = q.build().fetch_all(pool).await?;
        rows.iter().map(queue_log_row).collect::<Result<_, _>>()
        })
        .map_err(Into::into)
    }
}

fn queue_log_row<R: Row>(r: &R) -> Result<QueueLogRow, sqlx::Error>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(QueueLogRow {
        id: r.try_get("id")?,
        seq: r.try_get("seq")?,
        at_ms: r.try_get("at_ms")?,
        queue: r.try_get("queue")?,
        call_uuid: r.try_get("call_uuid")?,
        agent: r.try_get("agent")?,
        event: r.try_get("event")?,
        wait_ms: r.try_get("wait_ms")?,
        talk_ms: r.try_get("talk_ms")?,
        detail: r.try_get("detail")?,
    })
}
