//! The web console, served on the API listener from assets compiled into the binary (no
//! CDN, nothing downloaded at run time). Pages are static HTML with a little JavaScript
//! that talks only to the control-plane API and its event stream: the console has no
//! door of its own. This module only decides who may open which page.

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::api::auth::Caller;
use crate::api::{ApiState, Problem};
use crate::config::ApiRole;

/// Every asset by name; its type comes from its extension.
const ASSETS: &[(&str, &str)] = &[
    ("console.css", include_str!("assets/console.css")),
    ("common.js", include_str!("assets/common.js")),
    ("wallboard.js", include_str!("assets/wallboard.js")),
    ("agent.js", include_str!("assets/agent.js")),
    ("supervisor.js", include_str!("assets/supervisor.js")),
    ("flows.js", include_str!("assets/flows.js")),
    ("reports.js", include_str!("assets/reports.js")),
];

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        _ => "application/octet-stream",
    }
}

const LOGIN: &str = include_str!("assets/login.html");
const WALLBOARD: &str = include_str!("assets/wallboard.html");
const AGENT: &str = include_str!("assets/agent.html");
const SUPERVISOR: &str = include_str!("assets/supervisor.html");
const FLOWS: &str = include_str!("assets/flows.html");
const REPORTS: &str = include_str!("assets/reports.html");

/// Who may see the wallboard: everyone but agents, whose screen is their own.
fn sees_wallboard(role: ApiRole) -> bool {
    role != ApiRole::Agent
}

pub fn routes(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/login", get(|| async { page(LOGIN) }))
        .route("/wallboard", get(wallboard))
        .route("/agent", get(agent))
        .route("/supervisor", get(supervisor))
        .route("/flows", get(flows))
        .route("/reports", get(reports))
        .route("/assets/{name}", get(asset))
        .with_state(state)
}

fn page(html: &'static str) -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            // Our own scripts and styles only; nothing from elsewhere.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self'; \
                 img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
            ),
        ],
        Html(html),
    )
        .into_response()
}

fn to_login(next: &str) -> Response {
    Redirect::to(&format!("/login?next={next}")).into_response()
}

async fn home(who: Result<Caller, Problem>) -> Response {
    match who {
        Ok(w) if w.role == ApiRole::Agent => Redirect::to("/agent").into_response(),
        Ok(w) if w.role >= ApiRole::Supervisor => Redirect::to("/supervisor").into_response(),
        Ok(_) => Redirect::to("/wallboard").into_response(),
        Err(_) => to_login("/"),
    }
}

async fn wallboard(who: Result<Caller, Problem>) -> Response {
    match who {
        Ok(w) if sees_wallboard(w.role) => page(WALLBOARD),
        Ok(_) => forbidden("the wallboard is for supervisors and reporting"),
        Err(_) => to_login("/wallboard"),
    }
}

/// The agent desktop: for whoever logged in with an extension (agents, and supervisors
/// taking calls themselves).
async fn agent(who: Result<Caller, Problem>) -> Response {
    match who {
        Ok(w) if w.extension.is_some() && w.role != ApiRole::Reporting => page(AGENT),
        Ok(_) => forbidden("the agent desktop is for a login with an extension"),
        Err(_) => to_login("/agent"),
    }
}

/// The supervisor console: supervisors and admins.
async fn supervisor(who: Result<Caller, Problem>) -> Response {
    match who {
        Ok(w) if w.role >= ApiRole::Supervisor => page(SUPERVISOR),
        Ok(_) => forbidden("the supervisor console is for supervisors and admins"),
        Err(_) => to_login("/supervisor"),
    }
}

/// The flows view: supervisors and admins (ops).
async fn flows(who: Result<Caller, Problem>) -> Response {
    match who {
        Ok(w) if w.role >= ApiRole::Supervisor => page(FLOWS),
        Ok(_) => forbidden("the flows view is for supervisors and admins"),
        Err(_) => to_login("/flows"),
    }
}

/// Reports: everyone but agents (whose own figures are on their desktop).
async fn reports(who: Result<Caller, Problem>) -> Response {
    match who {
        Ok(w) if sees_wallboard(w.role) => page(REPORTS),
        Ok(_) => forbidden(
            "reports are for supervisors and reporting; your own figures are on your desktop",
        ),
        Err(_) => to_login("/reports"),
    }
}

fn forbidden(why: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Not for this login</title>\
         <link rel=\"stylesheet\" href=\"/assets/console.css\"></head><body><main><h1>Not for this login</h1>\
         <p>{why}.</p><p><a href=\"/login\">Log in as someone else</a></p></main></body></html>"
    );
    (StatusCode::FORBIDDEN, Html(body)).into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _)| *n == name) {
        Some((name, body)) => (
            [
                (header::CONTENT_TYPE, content_type(name)),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
