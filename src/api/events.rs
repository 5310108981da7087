//! The event log for clients: paged reads, and the live stream over WebSocket or
//! Server-Sent Events. A client that reconnects with `since=SEQ` first gets every stored
//! event after SEQ, then the live ones, with none missed or repeated: the stream
//! subscribes before it reads the store and skips what it already sent.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::extract::Params;
use super::problem::{ApiResult, Problem};
use super::ApiState;
use crate::events::{Event, EventLog};

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Only events after this sequence number (0: from the first).
    pub since: Option<u64>,
    /// Only this queue's events.
    pub queue: Option<String>,
    /// Only this agent's events.
    pub agent: Option<String>,
    /// Only this call's events.
    pub call: Option<String>,
    /// For the paged read: at most this many (default 100, at most 1000).
    pub limit: Option<u32>,
    /// A token, for browsers that cannot send headers with a WebSocket upgrade.
    // Read by the authentication extractor from the raw query; declared for the document.
    #[allow(dead_code)]
    pub access_token: Option<String>,
}

struct Filter {
    queue: Option<String>,
    agent: Option<String>,
    call: Option<String>,
}

impl Filter {
    fn new(q: &StreamQuery, who: &Caller) -> Result<Filter, Problem> {
        let agent = match who.only_agent() {
            Some(me) if q.agent.as_deref().is_some_and(|a| a != me) => {
                return Err(Problem::forbidden("an agent follows only its own events"))
            }
            Some(me) => Some(me.to_string()),
            None => q.agent.clone(),
        };
        Ok(Filter {
            queue: q.queue.clone(),
            agent,
            call: q.call.clone(),
        })
    }

    fn wants(&self, e: &Event) -> bool {
        let is = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        is(&self.queue, &e.queue) && is(&self.agent, &e.agent) && is(&self.call, &e.call)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// The newest sequence number in the log now.
    pub last_seq: u64,
    /// Pass as `since` for the next page; none when this page reached the end.
    pub next: Option<u64>,
}

/// Stored events after `since`, oldest first (filtered).
#[utoipa::path(get, path = "/api/v1/events/log", tag = "events", params(StreamQuery),
    responses((status = 200, body = EventPage, description = "Done"), (status = 400, body = Problem, content_type = "application/problem+json", description = "The request is invalid; the detail says how"),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"), (status = 403, body = Problem, content_type = "application/problem+json", description = "The credentials' role may not do this")))]
pub async fn event_log(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    Params(q): Params<StreamQuery>,
) -> ApiResult<Json<EventPage>> {
    let filter = Filter::new(&q, &who)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let last_seq = st.events.last_seq();
    let mut since = q.since.unwrap_or(0);
    let mut events = Vec::new();
    // Filtering happens after reading, so read on until the page is full or the log ends.
    let mut reached_end = false;
    while events.len() < limit as usize {
        let batch = st.events.since(since, 1000).await?;
        let Some(last) = batch.last().map(|e| e.seq) else {
            reached_end = true;
            break;
        };
        for e in batch {
            since = e.seq;
            if filter.wants(&e) {
                events.push(e);
                if events.len() == limit as usize {
                    break;
                }
            }
        }
        if since < last {
            break;
        }
    }
    let next = (!reached_end && events.len() == limit as usize).then_some(since);
    Ok(Json(EventPage {
        events,
        last_seq,
        next,
    }))
}

/// Feeds `out` with stored events after `since`, then live ones, in order, until the
/// receiver goes away.
async fn follow(log: EventLog, since: u64, filter: Filter, out: mpsc::Sender<Arc<Event>>) {
    let mut live = log.subscribe();
    let mut sent = since;
    // Catch up from the store (and again whenever the live feed outran us).
    'catch_up: loop {
        loop {
            let Ok(batch) = log.since(sent, 500).await else {
                return;
            };
            if batch.is_empty() {
                break;
            }
            for e in batch {
                sent = e.seq;
                if filter.wants(&e) && out.send(Arc::new(e)).await.is_err() {
                    return;
                }
            }
        }
        loop {
            match live.recv().await {
                Ok(e) if e.seq <= sent => {}
                Ok(e) if e.seq == sent + 1 => {
                    sent = e.seq;
                    if filter.wants(&e) && out.send(e).await.is_err() {
                        return;
                    }
                }
                // A gap (cannot happen while subscribed, but cheap to heal) or a lag:
                // the store has everything.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue 'catch_up,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

fn start_follow(
    st: &ApiState,
    q: &StreamQuery,
    who: &Caller,
) -> ApiResult<mpsc::Receiver<Arc<Event>>> {
    let filter = Filter::new(q, who)?;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(follow(st.events.clone(), q.since.unwrap_or(0), filter, tx));
    Ok(rx)
}

fn since_or_now(st: &ApiState, q: &mut StreamQuery) {
    // Without `since`, a client starts from now.
    if q.since.is_none() {
        q.since = Some(st.events.last_seq());
    }
}

/// The live event stream over WebSocket: one JSON event per text message.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(StreamQuery),
    responses((status = 101, description = "Switching to WebSocket"),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"), (status = 403, body = Problem, content_type = "application/problem+json", description = "The credentials' role may not do this")))]
pub async fn websocket(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    Params(mut q): Params<StreamQuery>,
    ws: WebSocketUpgrade,
) -> ApiResult<impl IntoResponse> {
    since_or_now(&st, &mut q);
    let rx = start_follow(&st, &q, &who)?;
    Ok(ws.on_upgrade(move |socket| pump_ws(socket, rx)))
}

async fn pump_ws(mut socket: WebSocket, mut rx: mpsc::Receiver<Arc<Event>>) {
    loop {
        tokio::select! {
            e = rx.recv() => {
                let Some(e) = e else { return };
                let Ok(text) = serde_json::to_string(&*e) else { continue };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// The live event stream as Server-Sent Events (`id:` is the sequence number, so a
/// browser's EventSource resumes by itself with Last-Event-ID).
#[utoipa::path(get, path = "/api/v1/events/stream", tag = "events", params(StreamQuery),
    responses((status = 200, description = "text/event-stream of events", content_type = "text/event-stream"),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"), (status = 403, body = Problem, content_type = "application/problem+json", description = "The credentials' role may not do this")))]
pub async fn sse(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    headers: axum::http::HeaderMap,
    Params(mut q): Params<StreamQuery>,
) -> ApiResult<impl IntoResponse> {
    // A reconnecting EventSource names the last event it saw: that wins over the `since`
    // of the URL it first opened, or it would be sent the same events again.
    if let Some(last) = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    {
        q.since = Some(last);
    }
    since_or_now(&st, &mut q);
    let rx = start_follow(&st, &q, &who)?;
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let e = rx.recv().await?;
        let data = serde_json::to_string(&*e).unwrap_or_default();
        let ev = SseEvent::default()
            .id(e.seq.to_string())
            .event(e.kind.clone())
            .data(data);
        Some((Ok::<_, Infallible>(ev), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
