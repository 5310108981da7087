//! Prometheus exposition at `/metrics` (OpenMetrics text), for Grafana and alerting.
//!
//! Live gauges are read at scrape time from the same sources the API answers from (the
//! ACD's snapshot, the live calls), so a scrape and `/api/v1/queues` agree. Counters
//! and histograms are derived from the ordered event log by one task that follows it;
//! SIP response counts come from the switch's transmit path. Nothing here is a figure
//! of its own: the KPIs stay in the reports.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast::error::RecvError;

use super::auth::Caller;
use super::problem::{ApiResult, Problem};
use super::ApiState;
use crate::call::acd::agent_state_parts;
use crate::events::{Event, EventLog};
use crate::sip::stats::SipStats;
use crate::store::record_writer::WriterHealth;

type Labels = Vec<(&'static str, String)>;

/// Seconds a caller waits in a queue: the service-level thresholds people set sit on
/// these edges.
const WAIT_BUCKETS: [f64; 11] = [
    1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Seconds from a call's arrival to a person answering it (IVR time included).
const SETUP_BUCKETS: [f64; 10] = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0];

/// The agent states the gauges always list (zero included, so a panel never goes blank).
const AGENT_STATES: [&str; 6] = [
    "ready",
    "ringing",
    "on_call",
    "wrap_up",
    "not_ready",
    "logged_out",
];

pub struct Metrics {
    registry: Registry,
    calls_ended: Family<Labels, Counter>,
    rtp_lost: Family<Labels, Counter>,
    queue_wait: Family<Labels, Histogram>,
    setup: Histogram,
    calls_in_progress: Gauge,
    queue_waiting: Family<Labels, Gauge>,
    queue_longest_wait:
        Family<Labels, prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>>,
    agents: Family<Labels, Gauge>,
    queue_agents: Family<Labels, Gauge>,
    events_last_seq: Gauge,
}

fn wait_histogram() -> Histogram {
    Histogram::new(WAIT_BUCKETS)
}

impl Metrics {
    /// `records` and `recordings_failed` come from the writers of call records and of
    /// recordings: a failing disk or store shows here even while events cannot be
    /// stored.
    pub fn new(
        sip: Arc<SipStats>,
        records: Arc<WriterHealth>,
        recordings_failed: Arc<AtomicU64>,
    ) -> Self {
        let mut registry = Registry::with_prefix("switchboard");
        let calls_ended = Family::<Labels, Counter>::default();
        registry.register(
            "calls_ended",
            "Calls ended since the server started, by how they ended (answered, abandoned, busy, no_answer…)",
            calls_ended.clone(),
        );
        let rtp_lost = Family::<Labels, Counter>::default();
        registry.register(
            "rtp_packets_lost",
            "RTP packets lost on ended calls, by leg (caller, agent)",
            rtp_lost.clone(),
        );
        let queue_wait =
            Family::<Labels, Histogram>::new_with_constructor(wait_histogram as fn() -> Histogram);
        registry.register(
            "queue_wait_seconds",
            "Time callers waited in a queue before it was answered or they gave up, by queue and outcome",
            queue_wait.clone(),
        );
        let setup = Histogram::new(SETUP_BUCKETS);
        registry.register(
            "call_setup_seconds",
            "Time from a call's arrival to a person answering it",
            setup.clone(),
        );
        registry.register_collector(Box::new(SipResponses(sip)));
        registry.register_collector(Box::new(KernelForwarding));
        registry.register_collector(Box::new(WriterFaults {
            records,
            recordings_failed,
        }));
        let calls_in_progress = Gauge::default();
        registry.register(
            "calls_in_progress",
            "Calls in progress now",
            calls_in_progress.clone(),
        );
        let queue_waiting = Family::<Labels, Gauge>::default();
        registry.register(
            "queue_callers",
            "Callers in each queue now (being offered to an agent included)",
            queue_waiting.clone(),
        );
        let queue_longest_wait = Family::default();
        registry.register(
            "queue_longest_wait_seconds",
            "The longest current wait in each queue",
            queue_longest_wait.clone(),
        );
        let agents = Family::<Labels, Gauge>::default();
        registry.register("agents", "Agents in each state now", agents.clone());
        let queue_agents = Family::<Labels, Gauge>::default();
        registry.register(
            "queue_agents",
            "Members of each queue in each state now",
            queue_agents.clone(),
        );
        let events_last_seq = Gauge::default();
        registry.register(
            "events_last_sequence",
            "Sequence number of the newest event in the log",
            events_last_seq.clone(),
        );
        // Known series start at zero, so a panel shows 0 rather than nothing.
        for leg in ["caller", "agent"] {
            let _ = rtp_lost.get_or_create(&vec![("leg", leg.to_string())]);
        }
        Metrics {
            registry,
            calls_ended,
            rtp_lost,
            queue_wait,
            setup,
            calls_in_progress,
            queue_waiting,
            queue_longest_wait,
            agents,
            queue_agents,
            events_last_seq,
        }
    }

    /// Follows the event log from now on, counting what it says.
    pub fn follow(self: &Arc<Self>, events: &EventLog) {
        let me = self.clone();
        let mut rx = events.subscribe();
        tokio::spawn(async move {
            let mut arrived: HashMap<String, i64> = HashMap::new();
            loop {
                match rx.recv().await {
                    Ok(e) => me.count(&e, &mut arrived),
                    // A scrape that misses a few events under overload is better than a
                    // server that waits for its metrics.
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "metrics fell behind the event log")
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    fn count(&self, e: &Event, arrived: &mut HashMap<String, i64>) {
        let str_of = |k: &str| {
            e.data
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("unknown")
                .to_string()
        };
        match e.kind.as_str() {
            "call.arrived" => {
                if let Some(c) = &e.call {
                    arrived.insert(c.clone(), e.at_ms);
                }
            }
            "call.answered" => {
                if let Some(at) = e.call.as_ref().and_then(|c| arrived.remove(c)) {
                    self.setup.observe((e.at_ms - at).max(0) as f64 / 1000.0);
                }
            }
            "call.ended" => {
                if let Some(c) = &e.call {
                    arrived.remove(c);
                }
                self.calls_ended
                    .get_or_create(&vec![("disposition", str_of("disposition"))])
                    .inc();
                for leg in ["caller", "agent"] {
                    let lost = e.data["rtp_lost"][leg].as_u64().unwrap_or(0);
                    if lost > 0 {
                        self.rtp_lost
                            .get_or_create(&vec![("leg", leg.to_string())])
                            .inc_by(lost);
                    }
                }
            }
            "queue.answered" | "queue.callback_answered" | "queue.abandoned" => {
                let outcome = if e.kind == "queue.abandoned" {
                    "abandoned"
                } else {
                    "answered"
                };
                let wait = e.data["wait_ms"].as_i64().unwrap_or(0).max(0) as f64 / 1000.0;
                let queue = e.queue.clone().unwrap_or_default();
                self.queue_wait
                    .get_or_create(&vec![("queue", queue), ("outcome", outcome.to_string())])
                    .observe(wait);
            }
            _ => {}
        }
    }

    /// The exposition text with the live gauges as of now.
    async fn render(&self, st: &ApiState) -> Result<String, Problem> {
        self.calls_in_progress.set(st.live.all().await.len() as i64);
        self.events_last_seq.set(st.events.last_seq() as i64);
        if let Some(view) = match &st.acd {
            Some(acd) => acd.snapshot().await,
            None => None,
        } {
            let mut by_state: HashMap<&str, i64> = AGENT_STATES.iter().map(|s| (*s, 0)).collect();
            for a in &view.snapshot.agents {
                *by_state.entry(agent_state_parts(&a.state).0).or_default() += 1;
            }
            for (state, n) in by_state {
                self.agents
                    .get_or_create(&vec![("state", state.to_string())])
                    .set(n);
            }
            for q in &view.snapshot.queues {
                for outcome in ["answered", "abandoned"] {
                    let _ = self.queue_wait.get_or_create(&vec![
                        ("queue", q.name.clone()),
                        ("outcome", outcome.to_string()),
                    ]);
                }
                let queue = vec![("queue", q.name.clone())];
                self.queue_waiting
                    .get_or_create(&queue)
                    .set(q.callers.len() as i64);
                let longest = q
                    .callers
                    .iter()
                    .map(|c| c.waited.as_secs_f64())
                    .fold(0.0, f64::max);
                self.queue_longest_wait.get_or_create(&queue).set(longest);
                let mut states: HashMap<&str, i64> = AGENT_STATES.iter().map(|s| (*s, 0)).collect();
                for m in &q.members {
                    if let Some(a) = view.snapshot.agents.iter().find(|a| &a.extension == m) {
                        *states.entry(agent_state_parts(&a.state).0).or_default() += 1;
                    }
                }
                for (state, n) in states {
                    self.queue_agents
                        .get_or_create(&vec![
                            ("queue", q.name.clone()),
                            ("state", state.to_string()),
                        ])
                        .set(n);
                }
            }
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).map_err(Problem::internal)?;
        Ok(out)
    }
}

/// The switch's counts of SIP responses, read at each scrape.
#[derive(Debug)]
struct SipResponses(Arc<SipStats>);

impl Collector for SipResponses {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "sip_responses_sent",
            "SIP responses sent, by status code",
            None,
            MetricType::Counter,
        )?;
        for (code, n) in self.0.responses_sent() {
            let labels = [("code", code.to_string())];
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
        let auth = &self.0.auth;
        let read = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        for (name, help, n) in [
            ("sip_auth_failures", "Digest answers refused: wrong user, password or realm, or a forged nonce", read(&auth.failures)),
            ("sip_auth_replays", "Right digest answers refused as replays (a nonce count used before, another request's URI)", read(&auth.replays)),
            ("sip_auth_lockouts", "Lock-outs started for password guessing (a user at an address, an address, or a user)", read(&auth.lockouts)),
            ("sip_auth_refused_locked", "Requests refused unchecked because their user or address was locked out", read(&auth.refused_locked)),
            ("sip_requests_dropped_rate", "Requests dropped unread: over their address's rate (limits.source_requests_per_sec)", read(&self.0.limits.dropped_rate)),
            ("sip_requests_dropped_banned", "Requests dropped unread: from an address ignored as a scanner", read(&self.0.limits.dropped_banned)),
            ("sip_scanner_bans", "Addresses banned as scanners (limits.scan_strikes refusals without authenticating)", read(&self.0.limits.bans)),
            ("calls_refused_setup_rate", "New calls refused with 503: over limits.call_setups_per_sec", read(&self.0.limits.overload_setup_rate)),
            ("calls_refused_max_calls", "New calls refused with 503: at limits.max_calls calls in progress", read(&self.0.limits.overload_max_calls)),
            ("calls_refused_queue_delay", "New calls refused with 503: the INVITE waited longer than limits.max_queue_ms for the switch", read(&self.0.limits.overload_queue_delay)),
            ("calls_refused_cpu", "New calls refused with 503: the server's CPU above limits.max_cpu_percent", read(&self.0.limits.overload_cpu)),
        ] {
            let counter = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(n).encode(counter)?;
        }
        let gauge = encoder.encode_descriptor(
            "sip_auth_locked",
            "Users at addresses, addresses or users locked out now",
            None,
            MetricType::Gauge,
        )?;
        prometheus_client::metrics::gauge::ConstGauge::new(read(&auth.locked_now) as i64)
            .encode(gauge)?;
        let gauge = encoder.encode_descriptor(
            "process_cpu_percent",
            "The server's CPU over the last second, in percent of all the machine's cores",
            None,
            MetricType::Gauge,
        )?;
        prometheus_client::metrics::gauge::ConstGauge::new(read(&self.0.limits.cpu_percent) as i64)
            .encode(gauge)?;
        Ok(())
    }
}

/// Kernel forwarding of plain bridges (`rtp.kernel_forwarding`): whether it is on, the
/// streams it carries now, the calls that used it and the packets it forwarded.
#[derive(Debug)]
struct KernelForwarding;

impl Collector for KernelForwarding {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::gauge::ConstGauge;
        let k = crate::media::kernel::figures();
        let gauge = encoder.encode_descriptor(
            "rtp_kernel_forwarding",
            "1 if plain bridges are forwarded in the kernel, 0 if the relay carries every call",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(k.available)).encode(gauge)?;
        let gauge = encoder.encode_descriptor(
            "rtp_kernel_streams",
            "RTP streams (one per direction of a bridge) forwarded in the kernel now",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(k.active_streams as i64).encode(gauge)?;
        let counter = encoder.encode_descriptor(
            "rtp_kernel_calls",
            "Bridges whose media the kernel carried (from their first second on)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(k.calls).encode(counter)?;
        let counter = encoder.encode_descriptor(
            "rtp_kernel_packets",
            "RTP packets the kernel forwarded, counted when a stream leaves it",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(k.packets).encode(counter)?;
        Ok(())
    }
}

/// The writers of call records and recordings: a store that fails shows as records
/// waiting (an alarm above zero) and failed attempts, a disk that fails as recordings
/// that stopped.
struct WriterFaults {
    records: Arc<WriterHealth>,
    recordings_failed: Arc<AtomicU64>,
}

impl std::fmt::Debug for WriterFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriterFaults")
    }
}

impl Collector for WriterFaults {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let recordings = encoder.encode_descriptor(
            "recordings_failed",
            "Recordings that stopped early (the file could not be made or written, e.g. a full disk); the calls went on",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.recordings_failed.load(Relaxed)).encode(recordings)?;
        let counter = encoder.encode_descriptor(
            "store_record_write_failures",
            "Failed attempts to write a call record (retried until written: a full disk, a locked database)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.records.failures.load(Relaxed)).encode(counter)?;
        let gauge = encoder.encode_descriptor(
            "store_records_pending",
            "Call records of ended calls not yet in the store (above zero: the store is failing)",
            None,
            MetricType::Gauge,
        )?;
        prometheus_client::metrics::gauge::ConstGauge::new(
            self.records.pending.load(Relaxed) as i64
        )
        .encode(gauge)?;
        Ok(())
    }
}

/// `/metrics`, for Prometheus: any API token (a `reporting` one is enough), sent as
/// `Authorization: Bearer` (Prometheus's `authorization.credentials`).
pub async fn scrape(State(st): State<Arc<ApiState>>, _who: Caller) -> ApiResult<Response> {
    let text = st.metrics.render(&st).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
