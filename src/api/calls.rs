//! Calls: the live ones (from the event log's fold), what can be done to them, their
//! records once ended, the agent's disposition, and the caller's history.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::extract::{Body, Params};
use super::live::LiveCall;
use super::problem::{ApiResult, Problem};
use super::ApiState;
use crate::call::{ApiCommand, RecordingAction};
use crate::config::{ApiRole, DispositionCode};
use crate::events::NewEvent;
use crate::store::records::{CallerHistory, QueueLogFilter, QueueLogRow};
use crate::store::{now_ms, CallRecordView, Outcome, RecordFilter};

const MAX_PAGE: u32 = 1000;

/// Calls in progress (an agent token sees only its own).
#[utoipa::path(get, path = "/api/v1/calls", tag = "calls",
    responses((status = 200, body = Vec<LiveCall>, description = "Done"), (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials")))]
pub async fn live_calls(State(st): State<Arc<ApiState>>, who: Caller) -> Json<Vec<LiveCall>> {
    let mut calls = st.live.all().await;
    if let Some(me) = who.only_agent() {
        calls.retain(|c| c.agent.as_deref() == Some(me));
    }
    Json(calls)
}

/// A call: live, or its record once it ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallInfo {
    /// Present while the call is in progress.
    pub live: Option<LiveCall>,
    /// Present once it ended.
    pub record: Option<CallRecordView>,
}

async fn find(st: &ApiState, who: &Caller, uuid: &str) -> ApiResult<CallInfo> {
    let live = st.live.get(uuid).await;
    let record = if live.is_none() {
        st.store.record(uuid).await?
    } else {
        None
    };
    let agent = live
        .as_ref()
        .and_then(|l| l.agent.clone())
        .or_else(|| record.as_ref().and_then(|r| r.agent.clone()));
    if live.is_none() && record.is_none() {
        return Err(Problem::not_found(format!(
            "no call {uuid}, live or recorded"
        )));
    }
    if let Some(me) = who.only_agent() {
        if agent.as_deref() != Some(me) {
            // The same answer as for a call that does not exist: an agent learns nothing
            // of other agents' calls.
            return Err(Problem::not_found(format!(
                "no call {uuid}, live or recorded"
            )));
        }
    }
    Ok(CallInfo { live, record })
}

/// One call, live or recorded.
#[utoipa::path(get, path = "/api/v1/calls/{call_uuid}", tag = "calls",
    params(("call_uuid" = String, Path, description = "The call's id")),
    responses((status = 200, body = CallInfo, description = "Done"), (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "No such resource")))]
pub async fn get_call(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    Path(uuid): Path<String>,
) -> ApiResult<Json<CallInfo>> {
    Ok(Json(find(&st, &who, &uuid).await?))
}

/// The call's recording (stereo WAV: caller left, agent right), to play in a browser or
/// download. Recordings are for supervisors and admins.
#[utoipa::path(get, path = "/api/v1/calls/{call_uuid}/recording.wav", tag = "records",
    params(("call_uuid" = String, Path, description = "The call's id")),
    responses((status = 200, description = "The WAV file", content_type = "audio/wav"),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "The credentials' role may not do this"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "No such resource")))]
pub async fn recording_file(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    Path(uuid): Path<String>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    who.require(ApiRole::Supervisor)?;
    let record = st
        .store
        .record(&uuid)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no finished call {uuid}")))?;
    let name = record
        .recording
        .ok_or_else(|| Problem::not_found(format!("call {uuid} was not recorded")))?;
    // Only files the server wrote under its recordings directory.
    let dir = st.config.data_dir.join("recordings");
    let path = st.config.data_dir.join(&name);
    let inside =
        path.parent() == Some(dir.as_path()) && path.extension().is_some_and(|e| e == "wav");
    if !inside {
        return Err(Problem::not_found(format!(
            "call {uuid} has no recording file"
        )));
    }
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|_| Problem::not_found(format!("the recording of call {uuid} is gone")))?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "audio/wav".to_string()),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{uuid}.wav\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// Hang up every leg of a live call.
#[utoipa::path(post, path = "/api/v1/calls/{call_uuid}/hangup", tag = "calls",
    params(("call_uuid" = String, Path, description = "The call's id")),
    responses((status = 409, body = Problem, content_type = "application/problem+json", description = "The call has already ended"), (status = 202, description = "Hanging up"), (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "The credentials' role may not do this"), (status = 404, body = Problem, content_type = "application/problem+json", description = "No such resource")))]
pub async fn hang_up(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    Path(uuid): Path<String>,
) -> ApiResult<axum::http::StatusCode> {
    who.require(ApiRole::Agent)?;
    command(&st, &who, &uuid, ApiCommand::HangUp).await?;
    Ok(axum::http::StatusCode::ACCEPTED)
}

/// Hands a request to a live call the caller may act on; its answer, or 409 with why not.
async fn command(st: &ApiState, who: &Caller, uuid: &str, cmd: ApiCommand) -> ApiResult<String> {
    let call = find(st, who, uuid).await?;
    if call.live.is_none() {
        return Err(Problem::conflict(format!("call {uuid} has already ended")));
    }
    match st.switch.call_command(uuid, cmd, &who.cause()).await {
        Some(Ok(done)) => Ok(done),
        Some(Err(why)) => Err(Problem::conflict(why)),
        None => Err(Problem::conflict(format!(
            "call {uuid} cannot take requests now (it is ending, or is a supervisor's or a feature call)"
        ))),
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordingVerb {
    /// Start recording the conversation (unless its policy is never).
    Start,
    /// Pause (card details are read out): silence is written meanwhile.
    Pause,
    Resume,
    /// Finish the file now; the rest of the call is not recorded.
    Stop,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RecordingRequest {
    pub action: RecordingVerb,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Done {
    /// What the call did: e.g. `recording`, `paused`, `stopped`, `transferred to 2002`.
    pub result: String,
}

/// Start, pause, resume or stop the call's recording (PCI pause by API).
#[utoipa::path(post, path = "/api/v1/calls/{call_uuid}/recording", tag = "calls",
    params(("call_uuid" = String, Path, description = "The call's id")),
    request_body = RecordingRequest,
    responses((status = 400, body = Problem, content_type = "application/problem+json", description = "The request is invalid; the detail says how"), (status = 200, body = Done, description = "Done"), (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "The credentials' role may not do this"), (status = 404, body = Problem, content_type = "application/problem+json", description = "No such resource"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "Not possible now, and why")))]
pub async fn recording(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    Path(uuid): Path<String>,
    Body(req): Body<RecordingRequest>,
) -> ApiResult<Json<Done>> {
    who.require(ApiRole::Agent)?;
    let action = match req.action {
        RecordingVerb::Start => RecordingAction::Start,
        RecordingVerb::Pause => RecordingAction::Pause,
        RecordingVerb::Resume => RecordingAction::Resume,
        RecordingVerb::Stop => RecordingAction::Stop,
    };
    let result = command(&st, &who, &uuid, ApiCommand::Recording(action)).await?;
    Ok(Json(Done { result }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct HoldRequest {
    /// true: the caller hears music on hold; false: back in the conversation.
    pub hold: bool,
}

/// Put the caller on hold (music on hold) or take it off, from the agent's desktop.
#[utoipa::path(post, path = "/api/v1/calls/{call_uuid}/hold", tag = "calls",
    params(("call_uuid" = String, Path, description = "The call's id")),
    request_body = HoldRequest,
    responses((status = 400, body = Problem, content_type = "application/problem+json", description = "The request is invalid; the detail says how"), (status = 200, body = Done, description = "Done"), (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "The credentials' role may not do this"), (status = 404, body = Problem, content_type = "application/problem+json", description = "No such resource"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "Not possible now, and why")))]
pub async fn hold(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    Path(uuid): Path<String>,
    Body(req): Body<HoldRequest>,
) -> ApiResult<Json<Done>> {
    who.require(ApiRole::Agent)?;
    let result = command(&st, &who, &uuid, ApiCommand::Hold(req.hold)).await?;
    Ok(Json(Done { result }))
}

/// Exactly one of `extension` and `queue`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TransferRequest {
    /// The extension the caller goes to; the agent is released.
    pub extension: Option<String>,
    /// The queue the caller goes into (music, then the agent the queue picks).
    pub queue: Option<String>,
}

/// Blind transfer of the caller to another extension or into a queue.
#[utoipa::path(post, path = "/api/v1/calls/{call_uuid}/transfer", tag = "calls",
    params(("call_uuid" = String, Path, description = "The call's id")),
    request_body = TransferRequest,
    responses((status = 400, body = Problem, content_type = "application/problem+json", description = "The request is invalid; the detail says how"), (status = 200, body = Done, description = "Done"), (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "The credentials' role may not do this"), (status = 404, body = Problem, content_type = "application/problem+json", description = "No such resource"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "Not possible now, and why")))]
pub async fn transfer(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    Path(uuid): Path<String>,
    Body(req): Body<TransferRequest>,
) -> ApiResult<Json<Done>> {
    who.require(ApiRole::Agent)?;
    let cmd = match (req.extension, req.queue) {
        (Some(extension), None) => ApiCommand::Transfer { extension },
        (None, Some(queue)) => ApiCommand::TransferToQueue { queue },
        _ => {
            return Err(Problem::bad_request(
                "give exactly one of `extension` and `queue` to transfer to",
            ))
        }
    };
    let result = command(&st, &who, &uuid, cmd).await?;
    Ok(Json(Done { result }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DispositionRequest {
    /// One of the configured codes (GET /api/v1/dispositions).
    pub code: String,
    /// Free text for the record, up to 2000 characters.
    pub note: Option<String>,
}

/// Set the call's outcome (during the call or in wrap-up); a later one replaces it.
#[utoipa::path(post, path = "/api/v1/calls/{call_uuid}/disposition", tag = "calls",
    params(("call_uuid" = String, Path, description = "The call's id")),
    request_body = DispositionRequest,
    responses((status = 200, body = Outcome, description = "Done"), (status = 400, body = Problem, content_type = "application/problem+json", description = "The request is invalid; the detail says how"),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"), (status = 403, body = Problem, content_type = "application/problem+json", description = "The credentials' role may not do this"), (status = 404, body = Problem, content_type = "application/problem+json", description = "No such resource")))]
pub async fn set_disposition(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    Path(uuid): Path<String>,
    Body(req): Body<DispositionRequest>,
) -> ApiResult<Json<Outcome>> {
    who.require(ApiRole::Agent)?;
    let Some(code) = st.config.dispositions.iter().find(|d| d.code == req.code) else {
        let known: Vec<&str> = st
            .config
            .dispositions
            .iter()
            .map(|d| d.code.as_str())
            .collect();
        return Err(Problem::bad_request(format!(
            "disposition \"{}\" is not configured; use one of: {}",
            req.code,
            known.join(", ")
        )));
    };
    if req.note.as_ref().is_some_and(|n| n.chars().count() > 2000) {
        return Err(Problem::bad_request(
            "the note is longer than 2000 characters",
        ));
    }
    let call = find(&st, &who, &uuid).await?;
    let agent = call
        .live
        .as_ref()
        .and_then(|l| l.agent.clone())
        .or_else(|| call.record.as_ref().and_then(|r| r.agent.clone()));
    let outcome = Outcome {
        code: code.code.clone(),
        resolved: code.resolved,
        note: req.note.filter(|n| !n.trim().is_empty()),
        agent: who.extension.clone().or(agent.clone()),
        set_ms: now_ms(),
    };
    st.store.set_outcome(&uuid, &outcome).await?;
    st.events.publish(
        NewEvent::new("call.disposition")
            .call(&uuid)
            .agent(agent.as_deref())
            .data(serde_json::json!({
                "code": outcome.code,
                "resolved": outcome.resolved,
                "note": outcome.note,
                "by": who.cause(),
            })),
    );
    Ok(Json(outcome))
}

/// The disposition codes agents close calls with.
#[utoipa::path(get, path = "/api/v1/dispositions", tag = "calls",
    responses((status = 200, body = Vec<DispositionInfo>, description = "Done"), (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials")))]
pub async fn dispositions(
    State(st): State<Arc<ApiState>>,
    _who: Caller,
) -> Json<Vec<DispositionInfo>> {
    Json(
        st.config
            .dispositions
            .iter()
            .map(DispositionInfo::from)
            .collect(),
    )
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DispositionInfo {
    pub code: String,
    pub resolved: bool,
    pub label: String,
}

impl From<&DispositionCode> for DispositionInfo {
    fn from(d: &DispositionCode) -> Self {
        DispositionInfo {
            code: d.code.clone(),
            resolved: d.resolved,
            label: d.label.clone(),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordQuery {
    /// Arrived at or after (Unix ms).
    pub from: Option<i64>,
    /// Arrived before (Unix ms).
    pub to: Option<i64>,
    pub queue: Option<String>,
    /// The agent's extension.
    pub agent: Option<String>,
    /// The caller's number.
    pub caller: Option<String>,
    /// How the call ended: answered, abandoned, no_answer…
    pub disposition: Option<String>,
    /// The agent's disposition code.
    pub outcome: Option<String>,
    /// The `next` of the previous page.
    pub before: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecordPage {
    /// Newest first.
    pub records: Vec<CallRecordView>,
    /// Pass as `before` for the next (older) page; none when this is the last.
    pub next: Option<i64>,
}

fn limit(l: Option<u32>) -> u32 {
    l.unwrap_or(100).clamp(1, MAX_PAGE)
}

/// Finished calls, newest first, filtered and paged.
#[utoipa::path(get, path = "/api/v1/records", tag = "records", params(RecordQuery),
    responses((status = 200, body = RecordPage, description = "Done"), (status = 400, body = Problem, content_type = "application/problem+json", description = "The request is invalid; the detail says how"),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials")))]
pub async fn records(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    Params(q): Params<RecordQuery>,
) -> ApiResult<Json<RecordPage>> {
    let limit = limit(q.limit);
    let agent = match who.only_agent() {
        Some(me) if q.agent.as_deref().is_some_and(|a| a != me) => {
            return Err(Problem::forbidden(
                "an agent reads only its own calls' records",
            ));
        }
        Some(me) => Some(me.to_string()),
        None => q.agent,
    };
    let filter = RecordFilter {
        from_ms: q.from,
        to_ms: q.to,
        queue: q.queue,
        agent,
        caller: q.caller,
        disposition: q.disposition,
        outcome: q.outcome,
        before_id: q.before,
        limit,
    };
    let records = st.store.records(&filter).await?;
    let next = (records.len() as u32 == limit)
        .then(|| records.last().map(|r| r.id))
        .flatten();
    Ok(Json(RecordPage { records, next }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueLogQuery {
    /// At or after (Unix ms).
    pub from: Option<i64>,
    /// Before (Unix ms).
    pub to: Option<i64>,
    pub queue: Option<String>,
    pub agent: Option<String>,
    /// The call's id.
    pub call: Option<String>,
    /// The `next` of the previous page.
    pub after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueLogPage {
    /// Oldest first.
    pub rows: Vec<QueueLogRow>,
    /// Pass as `after` for the next page; none when this is the last.
    pub next: Option<i64>,
}

/// The queue event log (ENTER, OFFER, CONNECT, ABANDON…), oldest first, paged.
#[utoipa::path(get, path = "/api/v1/queue-log", tag = "records", params(QueueLogQuery),
    responses((status = 200, body = QueueLogPage, description = "Done"), (status = 400, body = Problem, content_type = "application/problem+json", description = "The request is invalid; the detail says how"),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"), (status = 403, body = Problem, content_type = "application/problem+json", description = "The credentials' role may not do this")))]
pub async fn queue_log(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    Params(q): Params<QueueLogQuery>,
) -> ApiResult<Json<QueueLogPage>> {
    if who.only_agent().is_some() {
        return Err(Problem::forbidden(
            "the queue log is for supervisors and reporting; an agent reads its own records",
        ));
    }
    let limit = limit(q.limit);
    let rows = st
        .store
        .queue_log(&QueueLogFilter {
            from_ms: q.from,
            to_ms: q.to,
            queue: q.queue,
            agent: q.agent,
            call: q.call,
            after_id: q.after,
            limit,
        })
        .await?;
    let next = (rows.len() as u32 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(Json(QueueLogPage { rows, next }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// How far back, in days (default 7).
    pub days: Option<u32>,
}

/// The caller's earlier contacts, for the screen pop: how many in the window and the
/// latest ones with their outcome, agent and CSAT.
#[utoipa::path(get, path = "/api/v1/callers/{number}/history", tag = "calls",
    params(("number" = String, Path, description = "The caller's number"), HistoryQuery),
    responses((status = 400, body = Problem, content_type = "application/problem+json", description = "The request is invalid; the detail says how"), (status = 200, body = CallerHistory, description = "Done"), (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials")))]
pub async fn caller_history(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    Path(number): Path<String>,
    Params(q): Params<HistoryQuery>,
) -> ApiResult<Json<CallerHistory>> {
    who.require(ApiRole::Agent)?;
    let days = q.days.unwrap_or(7).clamp(1, 366);
    let since = now_ms() - i64::from(days) * 86_400_000;
    Ok(Json(st.store.caller_history(&number, since, days).await?))
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SuperviseMode {
    /// Hears both; nobody hears the supervisor.
    Listen,
    /// Only the agent hears the supervisor.
    Whisper,
    /// Both hear the supervisor.
    Barge,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SuperviseRequest {
    pub mode: SuperviseMode,
    /// The supervisor whose phone rings; default: the logged-in supervisor's own.
    pub supervisor: Option<String>,
}

/// Join a live call as a supervisor: rings the supervisor's phone and, once answered,
/// joins it in that mode. If that supervisor is already joined, switches its mode.
#[utoipa::path(post, path = "/api/v1/calls/{call_uuid}/supervise", tag = "calls",
    params(("call_uuid" = String, Path, description = "The call's id")),
    request_body = SuperviseRequest,
    responses((status = 202, body = Done, description = "The supervisor's phone rings"),
        (status = 200, body = Done, description = "The joined supervisor's mode changed"),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "The request is invalid; the detail says how"), (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "The credentials' role may not do this"), (status = 404, body = Problem, content_type = "application/problem+json", description = "No such resource"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "Not possible now, and why")))]
pub async fn supervise(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    Path(uuid): Path<String>,
    Body(req): Body<SuperviseRequest>,
) -> ApiResult<(axum::http::StatusCode, Json<Done>)> {
    use crate::media::mixer::Mode;
    who.require(ApiRole::Supervisor)?;
    let mode = match req.mode {
        SuperviseMode::Listen => Mode::Listen,
        SuperviseMode::Whisper => Mode::Whisper,
        SuperviseMode::Barge => Mode::Barge,
    };
    let Some(supervisor) = req.supervisor.or(who.extension.clone()) else {
        return Err(Problem::bad_request(
            "name the supervisor whose phone should ring (`supervisor`: an extension)",
        ));
    };
    match st.config.user(&supervisor).map(|u| u.role) {
        Some(crate::config::Role::Supervisor) => {}
        Some(_) => {
            return Err(Problem::bad_request(format!(
                "{supervisor} is not a supervisor (role: supervisor in the configuration)"
            )))
        }
        None => {
            return Err(Problem::bad_request(format!(
                "{supervisor} is not a configured extension"
            )))
        }
    }
    let call = find(&st, &who, &uuid).await?;
    let live = call
        .live
        .ok_or_else(|| Problem::conflict(format!("call {uuid} has already ended")))?;
    let agent = match (&live.agent, live.phase.as_str()) {
        (Some(agent), "talking") => agent.clone(),
        _ => {
            return Err(Problem::conflict(format!(
                "call {uuid} is not talking to an agent now ({})",
                live.phase
            )))
        }
    };
    if live.supervisors.contains_key(&supervisor) {
        let result = command(&st, &who, &uuid, ApiCommand::SupervisorMode(mode)).await?;
        return Ok((axum::http::StatusCode::OK, Json(Done { result })));
    }
    let join = crate::call::supervisor_call::Join {
        supervisor,
        agent,
        agent_call: uuid,
        mode,
        by: who.cause(),
    };
    let result = crate::call::supervisor_call::start(st.calls.clone(), st.switch.clone(), join)
        .await
        .map_err(Problem::conflict)?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(Done { result })))
}
