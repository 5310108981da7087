//! The IVR flows as people review them: each flow's nodes and the keys and branches
//! between them, with `switchboard check`'s diagnostics on the nodes they are about,
//! and `simulate` runnable on the flows in force. Read-only: flows change by editing
//! their files (they reload live).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::extract::Body;
use super::problem::{ApiResult, Problem};
use super::ApiState;
use crate::config::ApiRole;
use crate::ivr;

#[derive(Debug, Serialize, ToSchema)]
pub struct FlowEdge {
    /// What takes this way: `next`, `option "1"`, `on_fail`, `case 2`, `open`…
    pub label: String,
    /// The node it goes to.
    pub to: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FlowNode {
    pub name: String,
    /// play, menu, collect, set, branch, schedule, http, queue, transfer, voicemail,
    /// survey, language, goto, hangup.
    pub kind: String,
    pub line: u64,
    pub edges: Vec<FlowEdge>,
    /// `check`'s errors and warnings about this node (`line:column: reason`).
    pub diagnostics: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FlowGraph {
    pub name: String,
    pub entry: String,
    pub nodes: Vec<FlowNode>,
    /// Diagnostics of the flow's file not about one node.
    pub diagnostics: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Flows {
    /// The flows in force, as graphs.
    pub flows: Vec<FlowGraph>,
    /// What `check` says of the flow files now (a file with errors is not loaded; the
    /// flows in force keep serving).
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

fn in_file(d: &ivr::validate::Diagnostic, flow: &str) -> bool {
    d.file.file_stem().and_then(|s| s.to_str()) == Some(flow)
}

/// The IVR flows in force, as graphs, with the flow files' diagnostics.
#[utoipa::path(get, path = "/api/v1/flows", tag = "flows",
    responses((status = 200, body = Flows, description = "Done"),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "The credentials' role may not do this")))]
pub async fn list_flows(State(st): State<Arc<ApiState>>, who: Caller) -> ApiResult<Json<Flows>> {
    who.require(ApiRole::Supervisor)?;
    let config = st.config.clone();
    let (_, report) = tokio::task::spawn_blocking(move || {
        ivr::validate::load_dir(&config.ivr_flows, &crate::server::flow_options(&config))
    })
    .await
    .map_err(Problem::internal)?;
    let Some(handle) = &st.calls.flows else {
        return Ok(Json(Flows {
            flows: Vec::new(),
            errors: report.errors.iter().map(|d| d.to_string()).collect(),
            warnings: report.warnings.iter().map(|d| d.to_string()).collect(),
        }));
    };
    let set = handle.current();
    let all: Vec<&ivr::validate::Diagnostic> =
        report.errors.iter().chain(&report.warnings).collect();
    let mut flows = Vec::new();
    for name in set.names() {
        let flow = set.get(name).expect("listed");
        let mut nodes: Vec<FlowNode> = flow
            .nodes
            .iter()
            .map(|(n, node)| FlowNode {
                name: n.value.clone(),
                kind: node.value.kind().to_string(),
                line: n.line,
                edges: node
                    .value
                    .targets()
                    .into_iter()
                    .map(|(label, t)| FlowEdge {
                        label,
                        to: t.value.clone(),
                    })
                    .collect(),
                diagnostics: Vec::new(),
            })
            .collect();
        nodes.sort_by_key(|n| n.line);
        // A diagnostic is about the node whose definition it falls in.
        let mut loose = Vec::new();
        for d in all.iter().filter(|d| in_file(d, name)) {
            let text = format!("{}:{}: {}", d.line, d.column, d.message);
            match nodes
                .iter_mut()
                .rev()
                .find(|n| n.line > 0 && n.line <= d.line)
            {
                Some(n) => n.diagnostics.push(text),
                None => loose.push(text),
            }
        }
        flows.push(FlowGraph {
            name: name.to_string(),
            entry: flow.entry.value.clone(),
            nodes,
            diagnostics: loose,
        });
    }
    Ok(Json(Flows {
        flows,
        errors: report.errors.iter().map(|d| d.to_string()).collect(),
        warnings: report.warnings.iter().map(|d| d.to_string()).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SimulateRequest {
    /// The caller's keys, one group per question: "1,123456#". An empty group is silence.
    pub keys: String,
    /// The caller's number (default +15550100).
    pub caller: Option<String>,
    /// Queues fail (no agents) instead of connecting one.
    #[serde(default)]
    pub no_agents: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Simulation {
    /// What happened, one line per step (as `switchboard simulate` prints it).
    pub lines: Vec<String>,
}

/// Walks a flow in force with scripted keys, as `switchboard simulate` does: no phone,
/// no network (web lookups answer as failed).
#[utoipa::path(post, path = "/api/v1/flows/{name}/simulate", tag = "flows",
    params(("name" = String, Path, description = "The flow's name")),
    request_body = SimulateRequest,
    responses((status = 200, body = Simulation, description = "Done"),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "The request is invalid; the detail says how"),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "Missing or wrong credentials"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "The credentials' role may not do this"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "No such resource")))]
pub async fn simulate(
    State(st): State<Arc<ApiState>>,
    who: Caller,
    Path(name): Path<String>,
    Body(req): Body<SimulateRequest>,
) -> ApiResult<Json<Simulation>> {
    who.require(ApiRole::Supervisor)?;
    let set = st
        .calls
        .flows
        .as_ref()
        .map(|f| f.current())
        .ok_or_else(|| Problem::not_found("this server has no IVR flows"))?;
    if set.get(&name).is_none() {
        return Err(Problem::not_found(format!(
            "no flow \"{name}\" is in force"
        )));
    }
    let keys = ivr::simulate::Script::parse_keys(&req.keys).map_err(Problem::bad_request)?;
    if keys.len() > 100 || req.keys.len() > 2000 {
        return Err(Problem::bad_request("at most 100 key groups"));
    }
    let script = ivr::simulate::Script {
        keys,
        caller: req.caller.unwrap_or_else(|| "+15550100".to_string()),
        dialed: "100".to_string(),
        at: jiff::Timestamp::now(),
        http: Vec::new(),
        no_agents: req.no_agents,
    };
    let lines = tokio::task::spawn_blocking(move || ivr::simulate::run(set, &name, &script))
        .await
        .map_err(Problem::internal)?
        .map_err(Problem::bad_request)?;
    Ok(Json(Simulation { lines }))
}
