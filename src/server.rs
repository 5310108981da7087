//! Starting and stopping the whole server: store, switch, signals.

use tokio::sync::watch;
use tracing::{info, warn};

use std::time::Duration;

use crate::call::switch;
use crate::config::{Config, DidTarget};
use crate::ivr::{self, reload, reload::FlowsHandle};
use crate::store::{now_ms, Store};

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs until SIGTERM or Ctrl-C, then drains calls and exits.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    if config
        .listeners
        .iter()
        .any(|l| l.addr.ip().is_unspecified())
        && config.advertise.is_loopback()
    {
        warn!(
            advertise = %config.advertise,
            "listening on all interfaces but advertising a loopback address; set sip.advertise \
             to this host's address so phones on other machines can reach it"
        );
    }
    // Before the first call's relay starts the workers.
    if let Some(n) = config.relay_workers {
        crate::media::relay::set_workers(n);
    }
    let (low, high) = config.rtp_ports;
    let ports = u32::from(high) - u32::from(low) + 1;
    let port_pairs = ports / 2;
    crate::media::kernel::start(
        config.kernel_forwarding,
        &config.kernel_interfaces,
        port_pairs,
    )?;
    let flows = load_flows(&config)?;
    let tls = crate::sip::tls::TlsIdentity::load(&config)?;
    let mut store = Store::for_config(&config).await?;
    info!(store = store.kind(), "call records store open");
    let mut cluster = match &config.cluster {
        Some(c) => {
            store = store.for_node(&c.node);
            let joined = crate::cluster::join(c, &store).await?;
            info!(node = %c.node, "joined the cluster");
            Some(joined)
        }
        None => None,
    };
    repair_recordings(&config.data_dir.join("recordings"))?;
    let events = crate::events::EventLog::start(store.clone()).await?;
    // The last moment a crashed run was alive (its last event, or the last beat of its
    // pid file if later), before this run logs anything.
    let pid_file = config.data_dir.join(PID_FILE);
    let last_beat = std::fs::metadata(&pid_file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64);
    let last_alive = store.last_event_at().await?.max(last_beat);
    let run_started_ms = crate::store::now_ms();
    // Reports close every agent state still open in the log at a start (a crash leaves
    // them open) and at a stop: time the server was down is nobody's working time.
    events.publish(crate::events::NewEvent::new("server.started"));
    // A crash during an outage of the store left the waiting records on disk.
    let journal = config.data_dir.join(crate::store::record_writer::JOURNAL);
    crate::store::record_writer::replay_journal(&store, &journal).await?;
    record_interrupted_calls(
        &store,
        &events,
        Some(&config.data_dir),
        last_alive,
        run_started_ms,
    )
    .await?;
    let acd_cluster = cluster.as_mut().map(|c| crate::call::acd::ClusterParts {
        bus: c.bus.clone(),
        inbox: c
            .acd_inbox
            .take()
            .expect("the ACD takes the cluster inbox once"),
        leading: c.membership.leading.clone(),
        lost: std::mem::replace(
            &mut c.membership.lost,
            tokio::sync::mpsc::unbounded_channel().1,
        ),
        on_lost: {
            let (store, events) = (store.clone(), events.clone());
            Box::new(move |node: String, beat: i64| {
                let (store, events) = (store.clone().for_node(&node), events.clone());
                tokio::spawn(async move {
                    // Their recordings are on the dead node's disk: named as they are.
                    let done =
                        record_interrupted_calls(&store, &events, None, Some(beat), now_ms()).await;
                    if let Err(e) = done {
                        warn!(%node, error = %e, "could not record a dead node's calls");
                    }
                });
            })
        },
    });
    let acd = crate::call::acd::start(&config, events.clone(), acd_cluster)?;
    let sharing = match cluster.as_mut() {
        Some(c) => Some(switch::Sharing {
            registrations: c.registrations.clone(),
            inbox: c
                .bindings_inbox
                .take()
                .expect("the switch takes the bindings once"),
            known: c.registrations.others().await?,
        }),
        None => None,
    };
    let (sw, inbound, commands) = switch::start(
        config.clone(),
        store.clone(),
        flows.clone(),
        acd.clone(),
        events.clone(),
        tls.clone(),
        sharing,
    )
    .await?;
    crate::webhooks::start(
        &config.webhooks,
        store.clone(),
        events.clone(),
        cluster.as_ref().map(|c| c.membership.leading.clone()),
    );
    if let Some(api) = &config.api {
        let state = crate::api::ApiState {
            config: std::sync::Arc::new(config.clone()),
            store: store.clone(),
            live: crate::api::live::LiveCalls::start(&events),
            events: events.clone(),
            acd,
            switch: sw.handle(),
            calls: sw.shared(),
            auth: crate::api::auth::Auth::new(&config),
            metrics: {
                let m = std::sync::Arc::new(crate::api::metrics::Metrics::new(
                    sw.shared().sip_stats.clone(),
                    sw.shared().records.health(),
                    sw.shared().recordings.failures(),
                ));
                m.follow(&events);
                m
            },
        };
        let addr = crate::api::start(state, api.listen).await?;
        info!(%addr, "API listening");
    }
    std::fs::write(&pid_file, std::process::id().to_string())?;
    tokio::spawn(heartbeat(pid_file.clone()));
    tokio::spawn(return_free_memory());
    for (t, a) in sw.local_addrs() {
        info!(transport = %t, addr = %a, "listening");
    }
    // Tests and scripts wait for this exact line.
    eprintln!("switchboard ready");
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(reload_on_sighup(flows, tls));
    let notice = cluster
        .as_ref()
        .map(|c| (Duration::from_secs(c.config.drain_notice_secs), sw.handle()));
    let membership = cluster.map(|c| c.membership);
    let (draining_tx, mut draining_rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        // Behind a balancer: first out of its set (OPTIONS answered 503), still taking
        // what it sends meanwhile, then refusing new calls.
        if let Some((notice, switch)) = notice {
            info!(
                ?notice,
                "draining: telling the balancer before refusing calls"
            );
            switch.refuse_options();
            let _ = draining_tx.send(true);
            tokio::time::sleep(notice).await;
        }
        info!("shutdown requested");
        let _ = stop_tx.send(true);
    });
    if let Some(m) = &membership {
        // The other nodes see it draining, and it hands over the ACD.
        let state = m.state_sender();
        tokio::spawn(async move {
            if draining_rx.changed().await.is_ok() {
                let _ = state.send("draining");
            }
        });
    }
    sw.run(inbound, commands, stop_rx).await;
    if let Some(m) = &membership {
        m.set_state("stopped");
    }
    events.publish(crate::events::NewEvent::new("server.stopped"));
    // Every event of the calls that just ended is in the store before it closes.
    events.flush().await;
    store.close().await;
    let _ = std::fs::remove_file(&pid_file);
    info!("stopped");
    Ok(())
}

/// The running server's process id, in its data directory, for `switchboard reload`.
/// Its modification time is a heartbeat: after a crash, the next start takes it as the
/// moment the calls in progress ended.
pub const PID_FILE: &str = "switchboard.pid";

async fn heartbeat(pid_file: std::path::PathBuf) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        let beat = std::fs::File::options()
            .write(true)
            .open(&pid_file)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        if beat.is_err() {
            return; // removed at the stop
        }
    }
}

/// Every 10 s, hands the memory glibc's malloc holds free back to the system. The server's
/// own allocations go through jemalloc (see `main.rs`), which does this by itself; SQLite's
/// go through glibc, which keeps what a burst freed in its per-thread arenas.
async fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let mut every = tokio::time::interval(Duration::from_secs(10));
        every.tick().await;
        loop {
            every.tick().await;
            // It walks every arena under that arena's lock: off the runtime's threads.
            // SAFETY: malloc_trim has no preconditions.
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
        }
    }
}

/// Loads and checks the IVR flows (and the DIDs that name them). No flow directory and no
/// DID naming a flow means no IVR; an error in either stops the start.
fn load_flows(config: &Config) -> anyhow::Result<Option<FlowsHandle>> {
    let wants_flows = config
        .dids
        .iter()
        .any(|d| matches!(d.target, DidTarget::Flow(_)));
    if !config.ivr_flows.is_dir() {
        if wants_flows {
            anyhow::bail!(
                "{}: DIDs go to IVR flows, but the flow directory {} does not exist",
                config.source.display(),
                config.ivr_flows.display()
            );
        }
        return Ok(None);
    }
    let opts = flow_options(config);
    let flows = reload::start(config.ivr_flows.clone(), opts, Duration::from_secs(1)).map_err(
        |report| {
            let errors: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
            anyhow::anyhow!("the IVR flows have errors:\n{}", errors.join("\n"))
        },
    )?;
    let current = flows.current();
    let unknown = config.unknown_flows(|name| current.get(name).is_some());
    if !unknown.is_empty() {
        anyhow::bail!("{}", crate::config::ConfigErrors(unknown));
    }
    info!(dir = %config.ivr_flows.display(), flows = current.len(), "IVR flows loaded");
    Ok(Some(flows))
}

/// How a configuration's flows are checked: prompt files under its prompt root, and only
/// the queues and skills it defines (when it defines queues).
pub fn flow_options(config: &Config) -> ivr::Options {
    let queues = config.queues.iter().map(|q| q.name.clone()).collect();
    let skills = config
        .users
        .iter()
        .flat_map(|u| u.skills.iter().map(|(s, _)| s.clone()))
        .chain(
            config
                .queues
                .iter()
                .flat_map(|q| q.skills.iter().map(|(s, _)| s.clone())),
        )
        .collect();
    ivr::Options {
        prompt_root: Some(config.ivr_prompts.clone()),
        queues: (!config.queues.is_empty()).then_some(queues),
        skills: (!config.queues.is_empty()).then_some(skills),
    }
}

/// SIGHUP re-reads the IVR flows and the TLS certificate.
async fn reload_on_sighup(
    flows: Option<FlowsHandle>,
    tls: Option<std::sync::Arc<crate::sip::tls::TlsIdentity>>,
) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        warn!("cannot listen for SIGHUP; flows reload only when their files change");
        return;
    };
    while hup.recv().await.is_some() {
        if let Some(tls) = &tls {
            info!("SIGHUP: reloading the TLS certificate");
            tls.reload();
        }
        if let Some(flows) = &flows {
            info!("SIGHUP: reloading the IVR flows");
            flows.reload().await;
        }
    }
}

/// `switchboard reload`: asks the server running on this data directory to re-read its
/// IVR flows (by SIGHUP to the process id it wrote there).
pub fn request_reload(data_dir: &std::path::Path) -> anyhow::Result<u32> {
    let path = data_dir.join(PID_FILE);
    let pid = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (is the server running with this data directory?)",
            path.display()
        )
    })?;
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{}: not a process id", path.display()))?;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()?;
    if !status.success() {
        anyhow::bail!(
            "no Switchboard process {pid} to signal (stale {})",
            path.display()
        );
    }
    Ok(pid)
}

/// Makes sure the recordings directory exists, and makes every recording a crash left
/// unfinished readable again (a finished file is only read, not changed).
/// Gives each call the last run left in progress (a crash: no record, no `call.ended`) its
/// record, marked as interrupted, ended when that run was last heard of.
/// Records the calls a node left in progress (this one at its start, or a dead one), as
/// interrupted. `data_dir`: where their recordings are checked; None (another node's
/// disk) keeps their names unchecked.
async fn record_interrupted_calls(
    store: &Store,
    events: &crate::events::EventLog,
    data_dir: Option<&std::path::Path>,
    last_alive: Option<i64>,
    run_started_ms: i64,
) -> anyhow::Result<()> {
    let unfinished = store.unfinished_calls().await?;
    if unfinished.is_empty() {
        return Ok(());
    }
    let last_run_end = last_alive.unwrap_or(run_started_ms);
    for uuid in &unfinished {
        let log = store.events_of_call(uuid).await?;
        // A call left by an older run (a crash never repaired, a call task that died)
        // ended when that run did, not when the last one did.
        let arrived = log.first().map_or(0, |e| e.seq);
        let ended_ms = store
            .end_of_run_after(arrived, run_started_ms)
            .await?
            .unwrap_or(last_run_end);
        let mut rec = crate::store::interrupted::record(uuid, &log, ended_ms);
        // The recording was repaired with the others; keep it only if it is there.
        if let (Some(name), Some(data_dir)) = (rec.recording.clone(), data_dir) {
            match hound::WavReader::open(data_dir.join(&name)) {
                Ok(r) => {
                    let spec = r.spec();
                    rec.recording_ms =
                        Some(i64::from(r.duration()) * 1000 / i64::from(spec.sample_rate.max(1)));
                }
                Err(e) => {
                    warn!(call = %uuid, file = %name, error = %e, "an interrupted call's recording is missing");
                    rec.recording = None;
                }
            }
        }
        store.write_call(&rec).await?;
        crate::call::publish_interrupted_end(events, &rec);
    }
    warn!(
        calls = unfinished.len(),
        "recorded the calls the last run left in progress as interrupted"
    );
    Ok(())
}

fn repair_recordings(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "wav") {
            continue;
        }
        match crate::media::recorder::repair(&path) {
            Ok(r) if r.fixed => tracing::warn!(
                file = %path.display(),
                seconds = r.duration.as_secs_f64(),
                "repaired a recording left unfinished by a crash"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "a recording cannot be repaired")
            }
        }
    }
    Ok(())
}
