//! The control plane: an HTTP API (JSON, problem+json errors, OpenAPI 3.1 generated from
//! these types) and the live event stream, for the web console and integrations.
//!
//! It owns no call or agent state: it asks the ACD task and the switch by message, reads
//! the store, and follows the event log. Whatever it changes goes through the same paths
//! a phone's feature codes take, so the two can never disagree.

mod agents;
pub mod auth;
mod calls;
pub mod client;
mod events;
mod extract;
mod flows;
pub mod live;
pub mod metrics;
mod problem;
mod queues;
mod reports;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::call::acd::AcdHandle;
use crate::call::SwitchHandle;
use crate::config::Config;
use crate::events::EventLog;
use crate::store::Store;

pub use problem::Problem;

/// What every handler reaches.
pub struct ApiState {
    pub config: Arc<Config>,
    pub store: Store,
    pub events: EventLog,
    pub acd: Option<AcdHandle>,
    pub switch: SwitchHandle,
    /// What calls share, for the calls the API places (a supervisor's phone).
    pub calls: Arc<crate::call::Shared>,
    pub live: live::LiveCalls,
    pub auth: auth::Auth,
    /// Prometheus exposition (`/metrics`).
    pub metrics: Arc<metrics::Metrics>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard control plane",
        description = "Agents, queues, calls, records and the live event stream of a \
                       Switchboard contact center. Authenticate with `Authorization: Bearer \
                       TOKEN` (tokens are configured under `api.tokens`) or log in with a SIP \
                       extension and password for a session cookie.",
    ),
    modifiers(&Security),
    security(("bearer" = []), ("session" = [])),
    tags(
        (name = "session", description = "Logging in and out"),
        (name = "agents", description = "Agents and their states"),
        (name = "queues", description = "Queues with live figures"),
        (name = "calls", description = "Live calls and what can be done to them"),
        (name = "records", description = "Finished calls and the queue event log"),
        (name = "events", description = "The ordered event log, live"),
        (name = "reports", description = "KPIs from the event log, staffing, routing explained"),
        (name = "flows", description = "The IVR flows as graphs, their diagnostics, simulation"),
    )
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(auth::SESSION_COOKIE))),
        );
    }
}

/// The routes and the OpenAPI document that describes exactly them.
pub fn router(state: Arc<ApiState>) -> axum::Router {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(agents::login))
        .routes(routes!(agents::logout))
        .routes(routes!(agents::me))
        .routes(routes!(agents::list_agents))
        .routes(routes!(agents::get_agent))
        .routes(routes!(agents::set_state))
        .routes(routes!(agents::end_wrap_up))
        .routes(routes!(agents::set_skills))
        .routes(routes!(agents::set_queues))
        .routes(routes!(agents::pause_reasons))
        .routes(routes!(queues::list_queues))
        .routes(routes!(queues::queue_callers))
        .routes(routes!(calls::live_calls))
        .routes(routes!(calls::get_call))
        .routes(routes!(calls::hang_up))
        .routes(routes!(calls::recording))
        .routes(routes!(calls::transfer))
        .routes(routes!(calls::hold))
        .routes(routes!(calls::recording_file))
        .routes(routes!(calls::supervise))
        .routes(routes!(calls::set_disposition))
        .routes(routes!(calls::dispositions))
        .routes(routes!(calls::records))
        .routes(routes!(calls::queue_log))
        .routes(routes!(calls::caller_history))
        .routes(routes!(events::event_log))
        .routes(routes!(events::websocket))
        .routes(routes!(events::sse))
        .routes(routes!(reports::get_report))
        .routes(routes!(reports::staffing))
        .routes(routes!(reports::explain))
        .routes(routes!(reports::wallboard))
        .routes(routes!(flows::list_flows))
        .routes(routes!(flows::simulate))
        .with_state(state.clone())
        .split_for_parts();
    let doc = Arc::new(doc);
    router
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { Json((*doc).clone()) }
            }),
        )
        .route("/metrics", get(metrics::scrape).with_state(state.clone()))
        .merge(crate::web::routes(state))
        .route(
            "/api/v1/health",
            get(|| async { Json(serde_json::json!({"ok": true})) }),
        )
        .fallback(|| async {
            Problem::not_found("no such resource; the API is described at /api/v1/openapi.json")
        })
}

/// Binds the API's listener and serves it until the process ends.
pub async fn start(state: ApiState, listen: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("api.listen {listen}: {e}"))?;
    let local = listener.local_addr()?;
    let app = router(Arc::new(state)).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the API server stopped");
        }
    });
    Ok(local)
}
