//! Reports over the event log (the figures `switchboard report` prints), staffing by
//! Erlang C, and the routing explanation of a call.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::extract::Params;
use super::problem::{ApiResult, Problem};
use super::ApiState;
use crate::reports::ask::{self, Ask, StaffingAsk, StaffingRow};
use crate::reports::{self, By, Decision, Report};
use crate::store::now_ms;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Format {
    /// json (default) or csv.
    pub format: Option<String>,
}

fn slice(name: &str) -> Result<By, Problem> {
    match name {
        "queues" => Ok(By::Queue),
        "agents" => Ok(By::Agent),
        "dids" => Ok(By::Did),
        "flows" => Ok(By::Flow),
        "total" => Ok(By::Total),
        other => Err(Problem::not_found(format!(
            "no report \"{other}\"; there are queues, agents, dids, flows and total"
        ))),
    }
}

/// Computes a report from the store.
async fn report(st: &ApiState, ask: &Ask, by: By) -> ApiResult<Report> {
    let req = ask
        .request(by, &st.config.reports, now_ms())
        .map_err(Problem::bad_request)?;
    // What the log holds up to now, including what was published a moment ago.
    st.events.flush().await;
    let events = reports::load(&st.store, &req).await?;
    Ok(reports::compute(&events, &req))
}

/// KPIs per queue, agent, DID or IVR flow (docs/metrics.md), optionally per 15 m / 1 h /
/// 1 d interval, computed from the event log for any range. An agent sees only its own
/// row of the agents report.
#[utoipa::path(get, path = "/api/v1/reports/{slice}", tag = "reports",
    params(("slice" = String, Path, description = "queues, agents, dids, flows or total"), Ask, Format),
    responses((status = 200, body = Report, description = "Done (text/csv with format=csv)"),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "The request is invalid; the detail says how"),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "The credentials' role may not do this"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "No such resource")))]
pub async fn get_report(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    Path(name): Path<String>,
    Params(ask): Params<Ask>,
    Params(format): Params<Format>,
) -> ApiResult<Response> {
    let by = slice(&name)?;
    if let (Some(_), false) = (who.only_agent(), by == By::Agent) {
        return Err(Problem::forbidden(
            "an agent reads only its own figures: /api/v1/reports/agents",
        ));
    }
    let mut r = report(&st, &ask, by).await?;
    if let Some(me) = who.only_agent() {
        r.rows.retain(|row| row.key == me);
        r.total = r.rows.first().cloned().unwrap_or(r.total);
    }
    match format.format.as_deref() {
        None | Some("json") => Ok(Json(r).into_response()),
        Some("csv") => Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            reports::table::csv(&r),
        )
            .into_response()),
        Some(other) => Err(Problem::bad_request(format!(
            "format \"{other}\" is unknown; use json or csv"
        ))),
    }
}

/// The wallboard's colour thresholds (`wallboard:` in the configuration).
#[utoipa::path(get, path = "/api/v1/wallboard", tag = "reports",
    responses((status = 200, body = crate::config::WallboardConfig, description = "Done"),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials")))]
pub async fn wallboard(
    State(st): State<Arc<ApiState>>,
    _who: Caller,
) -> Json<crate::config::WallboardConfig> {
    Json(st.config.wallboard.clone())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StaffingPlan {
    pub queue: String,
    pub rows: Vec<StaffingRow>,
}

/// Agents needed per interval by Erlang C: from the arrivals and handle time the log
/// measured in the range (from, to, interval — default 15m), or from given `calls` and
/// `aht_secs`; with shrinkage and an occupancy cap if asked.
#[utoipa::path(get, path = "/api/v1/staffing", tag = "reports",
    params(StaffingAsk, Ask),
    responses((status = 200, body = StaffingPlan, description = "Done"),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "The request is invalid; the detail says how"),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "The credentials' role may not do this")))]
pub async fn staffing(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    Params(s): Params<StaffingAsk>,
    Params(mut a): Params<Ask>,
) -> ApiResult<Json<StaffingPlan>> {
    if who.only_agent().is_some() {
        return Err(Problem::forbidden(
            "staffing is for supervisors and reporting",
        ));
    }
    if !st.config.queues.iter().any(|q| q.name == s.queue) {
        return Err(Problem::bad_request(format!("no queue \"{}\"", s.queue)));
    }
    a.interval.get_or_insert_with(|| "15m".to_string());
    let interval = a
        .interval
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(Problem::bad_request)?;
    let measured = if s.calls.is_some() && s.aht_secs.is_some() {
        None
    } else {
        Some(report(&st, &a, By::Queue).await?)
    };
    let rows = ask::staffing(
        &s,
        a.target.as_deref(),
        measured.as_ref(),
        interval,
        &st.config.reports,
    )
    .map_err(Problem::bad_request)?;
    Ok(Json(StaffingPlan {
        queue: s.queue,
        rows,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Explanation {
    pub call_uuid: String,
    /// The routing decisions, oldest first: candidates, their skills and idle times, the
    /// rule that chose and why the others lost.
    #[schema(value_type = Vec<Object>)]
    pub decisions: Vec<Decision>,
    /// The same in words, one line each.
    pub text: String,
}

/// Why the call went to the agent it went to.
#[utoipa::path(get, path = "/api/v1/calls/{call_uuid}/explain", tag = "reports",
    params(("call_uuid" = String, Path, description = "The call's id")),
    responses((status = 200, body = Explanation, description = "Done"),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "The credentials' role may not do this"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "No such resource")))]
pub async fn explain(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    Path(uuid): Path<String>,
) -> ApiResult<Json<Explanation>> {
    if who.only_agent().is_some() {
        return Err(Problem::forbidden(
            "routing explanations are for supervisors and reporting",
        ));
    }
    st.events.flush().await;
    let events = st.store.events_of_call(&uuid).await?;
    if events.is_empty() {
        return Err(Problem::not_found(format!(
            "no call {uuid} in the event log"
        )));
    }
    Ok(Json(Explanation {
        decisions: reports::explain::decisions(&events),
        text: reports::explain::explain(&uuid, &events),
        call_uuid: uuid,
    }))
}
