//! The IVR: the flow language, its validator, a sans-IO interpreter and a simulator.
//!
//! Layout, in the order a reader needs it:
//! - [`model`]: the YAML flow language as types (and the JSON Schema made from them);
//! - [`validate`]: loading a directory of flows and every check `switchboard check` makes;
//! - [`interpreter`]: one call's walk through a flow, as events in and actions out;
//! - [`simulate`]: drives the interpreter with scripted keys and canned HTTP answers;
//! - [`template`], [`schedule`], [`say`]: the small languages inside a flow.
//!
//! Nothing here opens a socket, plays audio, reads the clock or spawns a task: the call
//! layer (`src/call`) owns those and feeds the interpreter. That keeps every flow testable
//! in microseconds and lets `switchboard simulate` run with no phone and no network.

pub mod interpreter;
pub mod model;
pub mod reload;
pub mod say;
pub mod schedule;
pub mod simulate;
pub mod template;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use interpreter::{Action, Event, Interpreter, Outcome};
pub use model::Flow;
pub use validate::{Diagnostic, Options, Report};

/// A validated set of flows, by name.
///
/// Calls hold an `Arc<FlowSet>` for their whole life, so replacing the set (hot reload)
/// never changes the flow under a call in progress.
#[derive(Debug, Clone, Default)]
pub struct FlowSet {
    flows: BTreeMap<String, Arc<Flow>>,
}

impl FlowSet {
    pub fn get(&self, name: &str) -> Option<&Arc<Flow>> {
        self.flows.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.flows.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Builds a set without validating it; for tests and for callers that validated the
    /// flows themselves. Use [`validate::load_dir`] for files.
    pub fn from_flows(flows: impl IntoIterator<Item = Flow>) -> Self {
        FlowSet {
            flows: flows
                .into_iter()
                .map(|f| (f.name.value.clone(), Arc::new(f)))
                .collect(),
        }
    }
}
