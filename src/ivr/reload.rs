//! Hot reload of the flow directory: the one task that owns "the flows in force".
//!
//! It re-validates the directory when a flow file changes (checked once a second by
//! modification time and size, so no platform file-watch API is needed), on SIGHUP, or when
//! asked through [`FlowsHandle::reload`]. A set that validates replaces the current one in a
//! `watch` channel; calls already running keep the `Arc<FlowSet>` they started with. A set
//! with errors is refused: each error is logged as `file:line:column: reason` and the
//! previous flows keep serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::validate::{load_dir, Options, Report};
use super::FlowSet;

/// What the files of the directory looked like when last loaded.
type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

fn fingerprint(dir: &Path) -> Fingerprint {
    let mut v: Fingerprint = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                .map(|p| {
                    let meta = std::fs::metadata(&p).ok();
                    let modified = meta.as_ref().and_then(|m| m.modified().ok());
                    let len = meta.map(|m| m.len()).unwrap_or(0);
                    (p, modified, len)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Asks the reload task to re-read the directory now; answers with the validation report.
#[derive(Clone)]
pub struct FlowsHandle {
    flows: watch::Receiver<Arc<FlowSet>>,
    requests: mpsc::Sender<oneshot::Sender<Report>>,
}

impl FlowsHandle {
    /// The flows in force now; a call keeps this `Arc` for its whole life.
    pub fn current(&self) -> Arc<FlowSet> {
        self.flows.borrow().clone()
    }

    /// Re-validates the directory now (SIGHUP, `switchboard reload`).
    pub async fn reload(&self) -> Option<Report> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(tx).await.ok()?;
        rx.await.ok()
    }

    /// Notified whenever a new set is put in force.
    pub fn subscribe(&self) -> watch::Receiver<Arc<FlowSet>> {
        self.flows.clone()
    }
}

/// Loads the directory once (errors are returned, nothing is spawned), then starts the
/// task that keeps it current, polling for changes every `poll`.
pub fn start(dir: PathBuf, opts: Options, poll: Duration) -> Result<FlowsHandle, Report> {
    let (set, report) = load_dir(&dir, &opts);
    let Some(set) = set else {
        return Err(report);
    };
    let (tx, rx) = watch::channel(Arc::new(set));
    let (req_tx, mut req_rx) = mpsc::channel::<oneshot::Sender<Report>>(8);
    let mut seen = fingerprint(&dir);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let reply = tokio::select! {
                _ = tick.tick() => {
                    if fingerprint(&dir) == seen {
                        continue;
                    }
                    None
                }
                req = req_rx.recv() => match req {
                    Some(reply) => Some(reply),
                    None => return,
                },
            };
            let (set, report) = load_dir(&dir, &opts);
            match set {
                Some(set) => {
                    info!(dir = %dir.display(), flows = set.len(), "IVR flows reloaded");
                    for w in &report.warnings {
                        warn!("{w}");
                    }
                    if tx.send(Arc::new(set)).is_err() {
                        return;
                    }
                }
                None => {
                    for e in &report.errors {
                        warn!("{e}");
                    }
                    warn!(
                        dir = %dir.display(),
                        errors = report.errors.len(),
                        "IVR flows not reloaded: the previous flows keep serving"
                    );
                }
            }
            seen = fingerprint(&dir);
            if let Some(reply) = reply {
                let _ = reply.send(report);
            }
        }
    });
    Ok(FlowsHandle {
        flows: rx,
        requests: req_tx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOW: &str = "name: main\nentry: bye\nnodes:\n  bye:\n    hangup:\n";

    #[tokio::test]
    async fn a_good_change_is_taken_a_broken_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("main.yaml");
        std::fs::write(&path, FLOW).unwrap();
        let flows = start(
            dir.path().to_path_buf(),
            Options::default(),
            Duration::from_millis(20),
        )
        .unwrap();
        let first = flows.current();
        assert!(first.get("main").is_some());

        // A second flow appears: picked up without being asked.
        let mut changes = flows.subscribe();
        std::fs::write(dir.path().join("other.yaml"), FLOW.replace("main", "other")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), changes.changed())
            .await
            .expect("reload on change")
            .unwrap();
        assert!(flows.current().get("other").is_some());
        // The set a call started with is untouched.
        assert!(first.get("other").is_none());

        // A broken file is refused with its position; the previous set stays in force.
        std::fs::write(
            &path,
            "name: main\nentry: nowhere\nnodes:\n  bye:\n    hangup:\n",
        )
        .unwrap();
        let report = flows.reload().await.unwrap();
        assert!(!report.is_ok());
        let shown = report.errors[0].to_string();
        assert!(shown.contains("main.yaml:2:"), "{shown}");
        assert!(flows.current().get("other").is_some());
        assert!(flows.current().get("main").is_some());
    }

    #[test]
    fn a_broken_directory_does_not_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("main.yaml"),
            "name: main\nentry: x\nnodes: {}\n",
        )
        .unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let _guard = rt.enter();
        let err = start(
            dir.path().to_path_buf(),
            Options::default(),
            Duration::from_secs(1),
        )
        .err()
        .expect("errors");
        assert!(!err.is_ok());
    }
}
