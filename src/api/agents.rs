//! Logging in, agents and their states. State changes go to the ACD task as the same
//! requests an agent's feature codes make, with the API caller named as their cause.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{self, Caller, LoginError};
use super::extract::Body;
use super::problem::{ApiResult, Problem};
use super::ApiState;
use crate::acd::{AgentSnapshot, Event};
use crate::call::acd::{agent_state_parts, AcdHandle, AcdView};
use crate::config::ApiRole;
use crate::store::now_ms;

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    /// The SIP extension (with `password`).
    pub extension: Option<String>,
    /// Its SIP password.
    pub password: Option<String>,
    /// Or an API token instead (a wall display, a reporting user).
    pub token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub name: String,
    /// admin, supervisor, agent or reporting.
    pub role: String,
    pub extension: Option<String>,
    /// Send this as `X-CSRF-Token` with every state change made with the session cookie.
    pub csrf_token: Option<String>,
}

/// Log in with a SIP extension and password, or an API token; sets an HttpOnly,
/// SameSite=Strict session cookie and returns the CSRF token to send with state changes.
#[utoipa::path(post, path = "/api/v1/login", tag = "session", security(()),
    request_body = LoginRequest,
    responses((status = 400, body = Problem, content_type = "application/problem+json", description = "The request is invalid; the detail says how"), 
        (status = 200, body = Me, description = "Logged in"),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "Wrong extension or password"),
        (status = 429, body = Problem, content_type = "application/problem+json", description = "Too many failures from this address"),
    ))]
pub async fn login(
    State(st): State<Arc<ApiState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    Body(req): Body<LoginRequest>,
) -> ApiResult<impl IntoResponse> {
    let result = match (&req.token, &req.extension, &req.password) {
        (Some(token), None, None) => st.auth.login_token(peer.ip(), token).await,
        (None, Some(ext), Some(pw)) => st.auth.login(&st.config, peer.ip(), ext, pw).await,
        _ => {
            return Err(Problem::bad_request(
                "give extension and password, or token (and nothing else)",
            ))
        }
    };
    match result {
        Ok((id, csrf, who)) => {
            let cookie = format!(
                "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
                auth::SESSION_COOKIE,
                st.auth.session_secs()
            );
            let mut headers = HeaderMap::new();
            headers.insert(
                header::SET_COOKIE,
                cookie.parse().map_err(Problem::internal)?,
            );
            let me = Me {
                name: who.name,
                role: who.role.as_str().into(),
                extension: who.extension,
                csrf_token: Some(csrf),
            };
            Ok((headers, Json(me)))
        }
        Err(LoginError::Refused) => Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            if req.token.is_some() {
                "wrong token"
            } else {
                "wrong extension or password"
            },
        )),
        Err(LoginError::LockedOut { retry_after }) => Err(Problem::too_many(retry_after)),
    }
}

/// End the browser session.
#[utoipa::path(post, path = "/api/v1/logout", tag = "session",
    responses((status = 204, description = "Logged out"), (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials")))]
pub async fn logout(
    State(st): State<Arc<ApiState>>,
    _who: Caller,
    headers: HeaderMap,
) -> impl IntoResponse {
    let mut parts = axum::http::Request::new(()).into_parts().0;
    parts.headers = headers;
    if let Some(id) = auth::session_cookie(&parts) {
        st.auth.logout(&id);
    }
    let mut out = HeaderMap::new();
    if let Ok(v) = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        auth::SESSION_COOKIE
    )
    .parse()
    {
        out.insert(header::SET_COOKIE, v);
    }
    (StatusCode::NO_CONTENT, out)
}

/// Who the credentials belong to.
#[utoipa::path(get, path = "/api/v1/me", tag = "session",
    responses((status = 200, body = Me, description = "Done"), (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials")))]
pub async fn me(who: Caller) -> Json<Me> {
    Json(Me {
        name: who.name,
        role: who.role.as_str().into(),
        extension: who.extension,
        csrf_token: None,
    })
}

/// An agent as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentInfo {
    pub extension: String,
    pub name: String,
    /// logged_out, ready, ringing, on_call, on_hold (its caller on hold), wrap_up or
    /// not_ready.
    pub state: String,
    /// The not-ready reason.
    pub reason: Option<String>,
    /// The call it is ringing with or talking on.
    pub call_uuid: Option<String>,
    /// When a ringing offer or a wrap-up ends by itself (Unix ms).
    pub until_ms: Option<i64>,
    /// Skill → level 1–10.
    pub skills: BTreeMap<String, u8>,
    pub queues: Vec<String>,
    pub calls_today: u32,
}

pub(super) fn acd(st: &ApiState) -> ApiResult<&AcdHandle> {
    st.acd
        .as_ref()
        .ok_or_else(|| Problem::not_found("no queues are configured, so there are no agents"))
}

pub(super) async fn view(st: &ApiState) -> ApiResult<AcdView> {
    acd(st)?
        .snapshot()
        .await
        .ok_or_else(|| Problem::unavailable("the ACD is not running"))
}

/// The calls on hold now, so an agent on one shows as `on_hold` (the ACD does not know
/// hold; the call does).
async fn held_calls(st: &ApiState) -> std::collections::HashSet<String> {
    st.live
        .all()
        .await
        .into_iter()
        .filter(|c| c.phase == "held")
        .map(|c| c.call_uuid)
        .collect()
}

fn info(
    st: &ApiState,
    a: &AgentSnapshot,
    view: &AcdView,
    now: Instant,
    held: &std::collections::HashSet<String>,
) -> AgentInfo {
    let (state, reason, call, until) = agent_state_parts(&a.state);
    let call_uuid = call.and_then(|c| view.uuids.get(&c).cloned());
    let on_hold = state == "on_call" && call_uuid.as_ref().is_some_and(|u| held.contains(u));
    let state = if on_hold { "on_hold" } else { state };
    let now_ms = now_ms();
    AgentInfo {
        extension: a.extension.clone(),
        name: st
            .config
            .user(&a.extension)
            .map(|u| u.name.clone())
            .unwrap_or_else(|| a.extension.clone()),
        state: state.into(),
        reason: reason.map(str::to_string),
        call_uuid,
        until_ms: until.map(|u| now_ms + u.saturating_duration_since(now).as_millis() as i64),
        skills: a.skills.iter().cloned().collect(),
        queues: a.queues.clone(),
        calls_today: a.calls_today,
    }
}

/// Every agent with its live state (an agent token sees only itself).
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents",
    responses((status = 200, body = Vec<AgentInfo>, description = "Done"), (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials")))]
pub async fn list_agents(
    State(st): State<Arc<ApiState>>,
    who: Caller,
) -> ApiResult<Json<Vec<AgentInfo>>> {
    let view = view(&st).await?;
    let held = held_calls(&st).await;
    let now = Instant::now();
    let only = who.only_agent();
    Ok(Json(
        view.snapshot
            .agents
            .iter()
            .filter(|a| only.is_none_or(|o| o == a.extension))
            .map(|a| info(&st, a, &view, now, &held))
            .collect(),
    ))
}

async fn one_agent(st: &ApiState, extension: &str) -> ApiResult<AgentInfo> {
    let view = view(st).await?;
    let a = view
        .snapshot
        .agents
        .iter()
        .find(|a| a.extension == extension)
        .ok_or_else(|| {
            Problem::not_found(format!(
                "{extension} is not an agent (no queue lists it as a member)"
            ))
        })?;
    Ok(info(st, a, &view, Instant::now(), &held_calls(st).await))
}

/// One agent's live state.
#[utoipa::path(get, path = "/api/v1/agents/{extension}", tag = "agents",
    params(("extension" = String, Path, description = "The agent's extension")),
    responses((status = 200, body = AgentInfo, description = "Done"), (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "The credentials' role may not do this"), (status = 404, body = Problem, content_type = "application/problem+json", description = "No such resource")))]
pub async fn get_agent(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    Path(extension): Path<String>,
) -> ApiResult<Json<AgentInfo>> {
    if who.only_agent().is_some_and(|o| o != extension) {
        return Err(Problem::forbidden("an agent sees only its own state"));
    }
    Ok(Json(one_agent(&st, &extension).await?))
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WantedState {
    /// Logged in and taking calls (logs in first if logged out).
    Ready,
    /// Logged in, taking no calls, with a reason.
    NotReady,
    /// Logged out of every queue.
    LoggedOut,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct StateRequest {
    pub state: WantedState,
    /// For not_ready: one of the configured reasons (GET /api/v1/pause-reasons).
    pub reason: Option<String>,
}

async fn ask(acd: &AcdHandle, event: Event, cause: &str) -> ApiResult<()> {
    match acd.agent_request(event, cause).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(why)) => Err(Problem::conflict(why)),
        Err(_) => Err(Problem::unavailable("the ACD is not running")),
    }
}

/// Make the agent ready, not ready (with a reason) or logged out.
#[utoipa::path(post, path = "/api/v1/agents/{extension}/state", tag = "agents",
    params(("extension" = String, Path, description = "The agent's extension")),
    request_body = StateRequest,
    responses((status = 200, body = AgentInfo, description = "The agent's state after the change"),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "The request is invalid; the detail says how"), (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"), (status = 403, body = Problem, content_type = "application/problem+json", description = "The credentials' role may not do this"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "No such resource"), (status = 409, body = Problem, content_type = "application/problem+json", description = "The ACD refused it")))]
pub async fn set_state(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    Path(extension): Path<String>,
    Body(req): Body<StateRequest>,
) -> ApiResult<Json<AgentInfo>> {
    who.may_act_as(&extension)?;
    let current = one_agent(&st, &extension).await?;
    let acd = acd(&st)?;
    let cause = who.cause();
    let logged_out = current.state == "logged_out";
    let agent = extension.clone();
    match req.state {
        WantedState::Ready => {
            let ev = if logged_out {
                Event::AgentLogin { agent }
            } else {
                Event::AgentReady { agent }
            };
            ask(acd, ev, &cause).await?;
        }
        WantedState::NotReady => {
            let reason = req.reason.unwrap_or_default();
            if !st.config.pause_reasons.contains(&reason) {
                return Err(Problem::bad_request(format!(
                    "not_ready needs a reason, one of: {}",
                    st.config.pause_reasons.join(", ")
                )));
            }
            if logged_out {
                ask(
                    acd,
                    Event::AgentLogin {
                        agent: agent.clone(),
                    },
                    &cause,
                )
                .await?;
            }
            ask(acd, Event::AgentNotReady { agent, reason }, &cause).await?;
        }
        WantedState::LoggedOut => {
            if !logged_out {
                ask(acd, Event::AgentLogout { agent }, &cause).await?;
            }
        }
    }
    Ok(Json(one_agent(&st, &extension).await?))
}

/// End the agent's wrap-up now (after-call work done); it becomes ready.
#[utoipa::path(post, path = "/api/v1/agents/{extension}/end-wrap-up", tag = "agents",
    params(("extension" = String, Path, description = "The agent's extension")),
    responses((status = 200, body = AgentInfo, description = "Done"), (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "The credentials' role may not do this"), (status = 404, body = Problem, content_type = "application/problem+json", description = "No such resource"), (status = 409, body = Problem, content_type = "application/problem+json", description = "Not possible now; the detail says why")))]
pub async fn end_wrap_up(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    Path(extension): Path<String>,
) -> ApiResult<Json<AgentInfo>> {
    who.may_act_as(&extension)?;
    one_agent(&st, &extension).await?;
    let agent = extension.clone();
    ask(acd(&st)?, Event::EndWrapUp { agent }, &who.cause()).await?;
    Ok(Json(one_agent(&st, &extension).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SkillsRequest {
    /// Skill → level 1–10; replaces the agent's skills.
    pub skills: BTreeMap<String, u8>,
}

/// Replace an agent's skills and levels (until the server restarts).
#[utoipa::path(put, path = "/api/v1/agents/{extension}/skills", tag = "agents",
    params(("extension" = String, Path, description = "The agent's extension")),
    request_body = SkillsRequest,
    responses((status = 400, body = Problem, content_type = "application/problem+json", description = "The request is invalid; the detail says how"), (status = 200, body = AgentInfo, description = "Done"), (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "The credentials' role may not do this"), (status = 404, body = Problem, content_type = "application/problem+json", description = "No such resource"), (status = 409, body = Problem, content_type = "application/problem+json", description = "Not possible now; the detail says why")))]
pub async fn set_skills(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    Path(extension): Path<String>,
    Body(req): Body<SkillsRequest>,
) -> ApiResult<Json<AgentInfo>> {
    who.require(ApiRole::Supervisor)?;
    one_agent(&st, &extension).await?;
    let skills = req.skills.into_iter().collect();
    let ev = Event::SkillsChanged {
        agent: extension.clone(),
        skills,
    };
    ask(acd(&st)?, ev, &who.cause()).await?;
    Ok(Json(one_agent(&st, &extension).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct QueuesRequest {
    /// The queues the agent serves from now on (logged into these, out of the others).
    pub queues: Vec<String>,
}

/// Log the agent into exactly these queues (until the server restarts); its state is
/// kept. An agent may do this for itself.
#[utoipa::path(put, path = "/api/v1/agents/{extension}/queues", tag = "agents",
    params(("extension" = String, Path, description = "The agent's extension")),
    request_body = QueuesRequest,
    responses((status = 200, body = AgentInfo, description = "Done"),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "The request is invalid; the detail says how"),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "The credentials' role may not do this"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "No such resource"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "Not possible now; the detail says why")))]
pub async fn set_queues(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    Path(extension): Path<String>,
    Body(req): Body<QueuesRequest>,
) -> ApiResult<Json<AgentInfo>> {
    who.may_act_as(&extension)?;
    one_agent(&st, &extension).await?;
    if let Some(q) = req
        .queues
        .iter()
        .find(|q| !st.config.queues.iter().any(|c| &c.name == *q))
    {
        return Err(Problem::bad_request(format!(
            "queue \"{q}\" is not configured"
        )));
    }
    let ev = Event::QueuesChanged {
        agent: extension.clone(),
        queues: req.queues.clone(),
    };
    ask(acd(&st)?, ev, &who.cause()).await?;
    st.events.publish(
        crate::events::NewEvent::new("agent.queues")
            .agent(Some(&extension))
            .data(serde_json::json!({ "queues": req.queues, "by": who.cause() })),
    );
    Ok(Json(one_agent(&st, &extension).await?))
}

/// The reasons an agent may give for not being ready.
#[utoipa::path(get, path = "/api/v1/pause-reasons", tag = "agents",
    responses((status = 200, body = Vec<String>, description = "Done"), (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials")))]
pub async fn pause_reasons(State(st): State<Arc<ApiState>>, _who: Caller) -> Json<Vec<String>> {
    Json(st.config.pause_reasons.clone())
}
