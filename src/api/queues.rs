//! Queues with their live figures: who waits (from the router) and how today went (from
//! the event log, by the same definitions as `switchboard report`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::agents::view;
use super::auth::Caller;
use super::problem::{ApiResult, Problem};
use super::ApiState;
use crate::acd::QueueSnapshot;
use crate::call::acd::{agent_state_parts, AcdView};
use crate::reports::{self, ask::Ask, By};
use crate::store::now_ms;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WaitingCallerInfo {
    pub call_uuid: Option<String>,
    /// 1 is served next.
    pub position: u32,
    pub waited_ms: u64,
    pub priority: i32,
    /// Skill → minimum level an agent needs to take it now.
    pub skills: BTreeMap<String, u8>,
    /// Agents being rung for it now.
    pub offered_to: Vec<String>,
    /// Off the line, waiting to be called back.
    pub callback: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentCounts {
    pub ready: u32,
    /// Ringing or on a call.
    pub busy: u32,
    pub wrap_up: u32,
    /// Not ready (paused), with any reason.
    pub paused: u32,
    pub logged_out: u32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TodayFigures {
    /// Midnight in the reports' time zone, the figures count from (Unix ms).
    pub since_ms: i64,
    pub offered: u32,
    pub answered: u32,
    pub abandoned: u32,
    /// Service level (0–1) under the configured formula (docs/metrics.md); none before
    /// any call left the queue.
    pub service_level: Option<f64>,
    pub service_level_threshold_secs: u64,
    /// The queue's target share (0–1) within that threshold.
    pub service_level_target: f64,
    /// Average speed of answer.
    pub asa_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueInfo {
    pub name: String,
    /// Callers in the queue now, counting those whose agent is being rung.
    pub waiting: u32,
    pub longest_wait_ms: u64,
    pub agents: AgentCounts,
    pub today: TodayFigures,
}

fn counts(q: &QueueSnapshot, view: &AcdView) -> AgentCounts {
    let mut c = AgentCounts {
        ready: 0,
        busy: 0,
        wrap_up: 0,
        paused: 0,
        logged_out: 0,
    };
    for m in &q.members {
        let Some(a) = view.snapshot.agents.iter().find(|a| &a.extension == m) else {
            continue;
        };
        match agent_state_parts(&a.state).0 {
            "ready" => c.ready += 1,
            "ringing" | "on_call" => c.busy += 1,
            "wrap_up" => c.wrap_up += 1,
            "not_ready" => c.paused += 1,
            _ => c.logged_out += 1,
        }
    }
    c
}

/// Today's figures of every queue, from the event log by the definitions of
/// docs/metrics.md (the configured targets, formula and time zone): the same figures as
/// `/api/v1/reports/queues` from midnight.
pub(super) async fn today(st: &ApiState) -> ApiResult<HashMap<String, TodayFigures>> {
    let req = Ask::default()
        .request(By::Queue, &st.config.reports, now_ms())
        .map_err(Problem::internal)?;
    let events = reports::load(&st.store, &req).await?;
    let report = reports::compute(&events, &req);
    let rules = &req.rules;
    Ok(st
        .config
        .queues
        .iter()
        .map(|q| {
            let row = report.rows.iter().find(|r| r.key == q.name);
            let f = row.map(|r| r.figures.clone()).unwrap_or_default();
            let figures = TodayFigures {
                since_ms: req.from_ms,
                offered: f.offered as u32,
                answered: f.answered as u32,
                abandoned: f.abandoned as u32,
                service_level: f.service_level,
                service_level_threshold_secs: (rules.target_of(&q.name).within_ms / 1000) as u64,
                service_level_target: rules.target_of(&q.name).share,
                asa_ms: f.asa_secs.map(|s| (s * 1000.0).round() as u64),
            };
            (q.name.clone(), figures)
        })
        .collect())
}

fn queue_info(
    q: &QueueSnapshot,
    view: &AcdView,
    today: &HashMap<String, TodayFigures>,
) -> QueueInfo {
    QueueInfo {
        name: q.name.clone(),
        waiting: q.callers.len() as u32,
        longest_wait_ms: q
            .callers
            .iter()
            .map(|c| c.waited.as_millis() as u64)
            .max()
            .unwrap_or(0),
        agents: counts(q, view),
        today: today.get(&q.name).cloned().unwrap_or(TodayFigures {
            since_ms: 0,
            offered: 0,
            answered: 0,
            abandoned: 0,
            service_level: None,
            service_level_threshold_secs: 0,
            service_level_target: 0.0,
            asa_ms: None,
        }),
    }
}

/// Every queue with its live figures.
#[utoipa::path(get, path = "/api/v1/queues", tag = "queues",
    responses((status = 200, body = Vec<QueueInfo>, description = "Done"), (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials")))]
pub async fn list_queues(
    State(st): State<Arc<ApiState>>,
    _who: Caller,
) -> ApiResult<Json<Vec<QueueInfo>>> {
    let view = view(&st).await?;
    let today = today(&st).await?;
    Ok(Json(
        view.snapshot
            .queues
            .iter()
            .map(|q| queue_info(q, &view, &today))
            .collect(),
    ))
}

/// The callers in one queue, in the order they will be served.
#[utoipa::path(get, path = "/api/v1/queues/{name}/callers", tag = "queues",
    params(("name" = String, Path, description = "The queue's name")),
    responses((status = 200, body = Vec<WaitingCallerInfo>, description = "Done"), (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "No such resource")))]
pub async fn queue_callers(
    State(st): State<Arc<ApiState>>,
    _who: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<WaitingCallerInfo>>> {
    let view = view(&st).await?;
    let q = view
        .snapshot
        .queues
        .iter()
        .find(|q| q.name == name)
        .ok_or_else(|| Problem::not_found(format!("queue \"{name}\" is not configured")))?;
    Ok(Json(
        q.callers
            .iter()
            .enumerate()
            .map(|(i, c)| WaitingCallerInfo {
                call_uuid: view.uuids.get(&c.call).cloned(),
                position: i as u32 + 1,
                waited_ms: c.waited.as_millis() as u64,
                priority: c.priority,
                skills: c.skills.iter().cloned().collect(),
                offered_to: c.offered_to.clone(),
                callback: c.callback,
            })
            .collect(),
    ))
}
