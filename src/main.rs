//! The `switchboard` command: serve, check, simulate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchboard::config::{self, Overrides};
use switchboard::store::{Location, Store};
use switchboard::{ivr, server};

/// jemalloc rather than glibc's malloc, so that the server's memory goes back to where it
/// was once a burst of calls has ended: glibc kept about 5 MiB of a first 300-call wave
/// for good (free, but pinned by the few blocks that outlive the calls), even with
/// `malloc_trim` every 10 s.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read when it starts (`_RJEM_MALLOC_CONF` in the environment still
/// overrides them). No thread caches: a thread that has gone quiet (a relay worker, a
/// runtime worker) would otherwise keep the blocks it cached during the burst, and the
/// pages under them, indefinitely; the media path allocates nothing per packet, so only call
/// set-up pays the difference. One arena: the server's few threads share its pages instead
/// of each keeping its own partly used ones. A background thread hands pages that stayed
/// free for 10 s back to the system even while the server allocates nothing.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
static malloc_conf: Option<&'static std::ffi::c_char> = Some(unsafe {
    // SAFETY: a pointer to the first byte of a 'static, NUL-terminated string.
    &*c"narenas:1,tcache:false,background_thread:true,dirty_decay_ms:10000".as_ptr()
});

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Contact-center telephony server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Configuration file.
        #[arg(long, default_value = "config/switchboard.yaml")]
        config: PathBuf,
        /// Listen for SIP on this address over UDP and TCP, instead of the file's listeners.
        #[arg(long, value_name = "ADDR")]
        sip_listen: Option<std::net::SocketAddr>,
        /// RTP port range LOW-HIGH, instead of the file's.
        #[arg(long, value_name = "LOW-HIGH", value_parser = parse_ports)]
        rtp_ports: Option<(u16, u16)>,
        /// Data directory (call records), instead of the file's.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Serve the API on this address, instead of the file's `api.listen`.
        #[arg(long, value_name = "ADDR")]
        api_listen: Option<std::net::SocketAddr>,
        /// For tests: the IVR's clock starts at this time (e.g. 2026-12-27T03:00:00+00:00),
        /// so business-hours paths can be exercised.
        #[arg(long, value_name = "TIME")]
        clock: Option<jiff::Timestamp>,
    },
    /// Validate the configuration and the IVR flows; prints file:line:column: reason for
    /// each error.
    Check {
        #[arg(long, default_value = "config/switchboard.yaml")]
        config: PathBuf,
        /// Directory of IVR flows (every *.yaml in it).
        #[arg(long, value_name = "DIR")]
        flows: Option<PathBuf>,
        /// Also check that every prompt file exists under this directory.
        #[arg(long, value_name = "DIR")]
        prompts: Option<PathBuf>,
    },
    /// Contact-center KPIs from the event log (docs/metrics.md): per queue, agent, DID or
    /// IVR flow, per interval, for any range, as a table, CSV or JSON.
    Report {
        #[command(flatten)]
        source: ReportSource,
        /// queue, agent, did, flow or total.
        #[arg(long, default_value = "queue")]
        by: switchboard::reports::By,
        #[command(flatten)]
        ask: ReportArgs,
        /// Service-level threshold in seconds for every queue (shorthand for --target with
        /// the configured share).
        #[arg(long, value_name = "SECS")]
        threshold_secs: Option<u64>,
        /// table, csv or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Agents needed per interval by Erlang C, from the arrivals and handle time the log
    /// measured (or from --calls and --aht-secs), with shrinkage if given.
    Staffing {
        #[command(flatten)]
        source: ReportSource,
        #[arg(long)]
        queue: String,
        #[command(flatten)]
        ask: ReportArgs,
        /// Share of paid time agents are unavailable (breaks, training, absence), 0–1.
        #[arg(long)]
        shrinkage: Option<f64>,
        /// Staff so that occupancy stays at or under this share, e.g. 0.85.
        #[arg(long)]
        max_occupancy: Option<f64>,
        /// Calls per interval, instead of the log's.
        #[arg(long)]
        calls: Option<f64>,
        /// Average handle time, instead of the log's.
        #[arg(long)]
        aht_secs: Option<f64>,
        /// table or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Why a call went to the agent it went to: the candidates, their skills and idle
    /// times, the rule that chose and why the others lost.
    Explain {
        /// The call's id (its record's call_uuid).
        call: String,
        #[command(flatten)]
        source: ReportSource,
    },
    /// Retention: deletes the call records of calls that arrived before a date, with
    /// their outcomes, the event log and queue log before it, and their recordings in the
    /// data directory; first writes the records to --export if given.
    Prune {
        /// Calls that arrived before this are deleted: 2026-01-01 (midnight UTC) or
        /// RFC 3339.
        #[arg(long)]
        before: String,
        /// Write the records (one JSON object per line, as the API shows them) to this
        /// file first; nothing is deleted unless it was written whole.
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
        #[command(flatten)]
        source: ReportSource,
    },
    /// The agents and their live states (over the API).
    Agents(ApiArgs),
    /// The calls in progress (over the API).
    Calls(ApiArgs),
    /// The queues with their live figures (over the API).
    Queues(ApiArgs),
    /// Make a new API token: prints the token (give it to the client) and the sha256 line
    /// for `api.tokens` in the configuration (the server keeps only that).
    Token,
    /// Ask the server running on a data directory to reload its IVR flows now (SIGHUP).
    Reload {
        /// The running server's data directory.
        #[arg(long, value_name = "DIR", default_value = "data")]
        data_dir: PathBuf,
    },
    /// Walk an IVR flow with scripted keys, printing each step; no phone, no network.
    Simulate {
        /// The flow file; other flows in its directory are loaded for goto.
        flow: PathBuf,
        /// The caller's keys, one group per question: "1,123456#". An empty group is silence.
        #[arg(long, default_value = "")]
        keys: String,
        /// The caller's number.
        #[arg(long, value_name = "NUMBER", default_value = "+15550100")]
        caller: String,
        /// The number dialled.
        #[arg(long, value_name = "NUMBER", default_value = "100")]
        dialed: String,
        /// When the call happens, with its UTC offset: 2026-12-31T10:00:00+03:00 (default: now).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// YAML list of canned HTTP answers (see docs/ivr.md); without it every request fails.
        #[arg(long, value_name = "FILE")]
        http_fixture: Option<PathBuf>,
        /// Queues fail instead of connecting an agent.
        #[arg(long)]
        no_agents: bool,
    },
}

/// Where reports read from.
#[derive(clap::Args)]
struct ReportSource {
    /// The configuration whose thresholds, queue targets, time zone and data directory
    /// reports use (optional: defaults are 80/20, 5 s short abandons, 7-day FCR, UTC).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The server's data directory (default: the configuration's, else ./data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// The range and rules of a report.
#[derive(clap::Args)]
struct ReportArgs {
    /// Start: 2026-12-03, 2026-12-03T09:00 (on --tz's clock) or RFC 3339; default today.
    #[arg(long)]
    from: Option<String>,
    /// End (exclusive), the same forms; default now.
    #[arg(long)]
    to: Option<String>,
    /// IANA time zone, e.g. Europe/Paris; default the configuration's (UTC).
    #[arg(long)]
    tz: Option<String>,
    /// 15m, 1h or 1d rows.
    #[arg(long)]
    interval: Option<String>,
    /// Service-level target for every queue, e.g. 80/20.
    #[arg(long)]
    target: Option<String>,
    /// Service-level formula: offered, answered, answered_or_abandoned, abandons_met.
    #[arg(long)]
    formula: Option<String>,
    #[arg(long, value_name = "SECS")]
    short_abandon_secs: Option<u64>,
    #[arg(long, value_name = "DAYS")]
    fcr_window_days: Option<u32>,
}

impl ReportArgs {
    fn ask(&self) -> switchboard::reports::ask::Ask {
        switchboard::reports::ask::Ask {
            from: self.from.clone(),
            to: self.to.clone(),
            tz: self.tz.clone(),
            interval: self.interval.clone(),
            target: self.target.clone(),
            formula: self.formula.clone(),
            short_abandon_secs: self.short_abandon_secs,
            fcr_window_days: self.fcr_window_days,
        }
    }
}

impl ReportSource {
    /// The reports' defaults and the store to read.
    fn open(&self) -> Result<(config::ReportsConfig, Vec<String>, Location), String> {
        let (reports, queues, data_dir, url) = match &self.config {
            Some(path) => {
                let c = config::load(path).map_err(|e| e.to_string())?;
                let queues = c.queues.iter().map(|q| q.name.clone()).collect();
                (
                    c.reports.clone(),
                    queues,
                    c.data_dir.clone(),
                    c.store_url.clone(),
                )
            }
            None => (
                config::ReportsConfig::default(),
                Vec::new(),
                PathBuf::from("data"),
                None,
            ),
        };
        // A data directory given here means its SQLite database, whatever the file says.
        if let (Some(url), None) = (url, &self.data_dir) {
            return Ok((reports, queues, Location::Postgres(url)));
        }
        let data_dir = self.data_dir.clone().unwrap_or(data_dir);
        if !data_dir.join("switchboard.db").exists() && !data_dir.is_dir() {
            return Err(format!("{}: no such data directory", data_dir.display()));
        }
        Ok((reports, queues, Location::Sqlite(data_dir)))
    }
}

#[derive(clap::Args)]
struct ApiArgs {
    /// The API's address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// An API token (any role); else $SWITCHBOARD_TOKEN.
    #[arg(long, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
    token: String,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn api_list(what: &str, args: ApiArgs) -> ExitCode {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let path = format!("/api/v1/{what}");
    match rt.block_on(switchboard::api::client::get(&args.api, &args.token, &path)) {
        Ok(list) if args.json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&list).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(list) => {
            println!("{}", switchboard::api::client::table(what, &list));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchboard {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where flows live when `--flows` is not given.
const DEFAULT_FLOWS: &str = "ivr-flows";

/// Checks every flow in the directory; errors go to stderr, warnings to stdout so that a
/// clean check prints nothing on stderr. Returns whether there were no errors.
fn check_flows(dir: Option<PathBuf>, opts: ivr::Options) -> (bool, Vec<String>) {
    let explicit = dir.is_some();
    let dir = dir.unwrap_or_else(|| PathBuf::from(DEFAULT_FLOWS));
    if !explicit && !dir.is_dir() {
        // No flows next to this configuration: nothing to check.
        return (true, Vec::new());
    }
    let (set, report) = ivr::validate::load_dir(&dir, &opts);
    for w in &report.warnings {
        println!(
            "{}:{}:{}: warning: {}",
            w.file.display(),
            w.line,
            w.column,
            w.message
        );
    }
    for e in &report.errors {
        eprintln!("{e}");
    }
    let names = match &set {
        Some(set) => {
            let plural = if set.len() == 1 { "" } else { "s" };
            println!("{}: ok ({} flow{plural})", dir.display(), set.len());
            set.names().map(str::to_string).collect()
        }
        None => Vec::new(),
    };
    (report.is_ok(), names)
}

fn simulate(
    flow: PathBuf,
    keys: String,
    caller: String,
    dialed: String,
    at: Option<String>,
    http_fixture: Option<PathBuf>,
    no_agents: bool,
) -> Result<Vec<String>, String> {
    let keys = ivr::simulate::Script::parse_keys(&keys)?;
    let at = match at {
        Some(t) => t.parse::<jiff::Timestamp>().map_err(|e| {
            format!(
                "--at \"{t}\" is not a time with an offset, e.g. 2026-12-31T10:00:00+03:00 ({e})"
            )
        })?,
        None => jiff::Timestamp::now(),
    };
    let http = match http_fixture {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("{}: cannot read the fixture: {e}", path.display()))?;
            ivr::simulate::parse_fixture(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => Vec::new(),
    };
    let name = flow
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| format!("{} is not a flow file", flow.display()))?
        .to_string();
    let dir = match flow.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (set, report) = ivr::validate::load_dir(&dir, &ivr::Options::default());
    let Some(set) = set else {
        let errors: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
        return Err(errors.join("\n"));
    };
    let script = ivr::simulate::Script {
        keys,
        caller,
        dialed,
        at,
        http,
        no_agents,
    };
    ivr::simulate::run(std::sync::Arc::new(set), &name, &script)
}

fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    config::parse_port_range(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            config,
            flows,
            prompts,
        } => {
            let loaded = match config::load(&config) {
                Ok(c) => {
                    println!(
                        "{}: ok ({} users, {} trunks, {} DIDs)",
                        config.display(),
                        c.users.len(),
                        c.trunks.len(),
                        c.dids.len()
                    );
                    Some(c)
                }
                Err(errs) => {
                    eprintln!("{errs}");
                    None
                }
            };
            // The configuration says where its flows and prompts are, unless overridden;
            // its DIDs are checked against its own flows only.
            let own_flows = flows.is_none();
            let flows = flows.or_else(|| loaded.as_ref().map(|c| c.ivr_flows.clone()));
            let prompts = prompts.or_else(|| {
                loaded
                    .as_ref()
                    .map(|c| c.ivr_prompts.clone())
                    .filter(|p| p.is_dir())
            });
            // A configuration's own flows are held to its queues and skills, as the
            // server does when it loads them.
            let mut opts = match loaded.as_ref().filter(|_| own_flows) {
                Some(c) => server::flow_options(c),
                None => ivr::Options::default(),
            };
            opts.prompt_root = prompts;
            let (flows_ok, names) = check_flows(flows, opts);
            let mut dids_ok = true;
            if let Some(c) = loaded.as_ref().filter(|_| own_flows) {
                for e in c.unknown_flows(|f| names.iter().any(|n| n == f)) {
                    eprintln!("{e}");
                    dids_ok = false;
                }
            }
            if loaded.is_some() && flows_ok && dids_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Report {
            source,
            by,
            ask,
            threshold_secs,
            format,
        } => match run_report(&source, by, &ask, threshold_secs, &format) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("switchboard report: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Staffing {
            source,
            queue,
            ask,
            shrinkage,
            max_occupancy,
            calls,
            aht_secs,
            format,
        } => {
            let s = switchboard::reports::ask::StaffingAsk {
                queue,
                shrinkage,
                max_occupancy,
                calls,
                aht_secs,
            };
            match run_staffing(&source, &s, &ask, &format) {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("switchboard staffing: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Prune {
            before,
            export,
            source,
        } => match prune(&before, export.as_deref(), &source) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("switchboard prune: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Explain { call, source } => {
            let run = || -> Result<String, String> {
                let (_, _, at) = source.open()?;
                let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
                let events = rt
                    .block_on(async {
                        let store = Store::open_at(&at).await?;
                        store.events_of_call(&call).await
                    })
                    .map_err(|e| format!("{e:#}"))?;
                if events.is_empty() {
                    return Err(format!("no call {call} in the event log"));
                }
                Ok(switchboard::reports::explain::explain(&call, &events))
            };
            match run() {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("switchboard explain: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Reload { data_dir } => match server::request_reload(&data_dir) {
            Ok(pid) => {
                println!("asked Switchboard (process {pid}) to reload its flows; its log tells how it went");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("switchboard reload: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Simulate {
            flow,
            keys,
            caller,
            dialed,
            at,
            http_fixture,
            no_agents,
        } => match simulate(flow, keys, caller, dialed, at, http_fixture, no_agents) {
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Agents(args) => api_list("agents", args),
        Command::Calls(args) => api_list("calls", args),
        Command::Queues(args) => api_list("queues", args),
        Command::Token => {
            let (token, hash) = switchboard::api::auth::new_token();
            println!("token:  {token}");
            println!("config: {{ name: NAME, role: admin|supervisor|agent|reporting, sha256: \"{hash}\" }}");
            ExitCode::SUCCESS
        }
        Command::Serve {
            config,
            sip_listen,
            rtp_ports,
            data_dir,
            api_listen,
            clock,
        } => {
            let overrides = Overrides {
                sip_listen,
                api_listen,
                rtp_ports,
                data_dir,
                clock,
            };
            let mut cfg = match config::load(&config) {
                Ok(c) => c,
                Err(errs) => {
                    eprintln!("{errs}");
                    return ExitCode::FAILURE;
                }
            };
            cfg.apply(&overrides);
            server::init_tracing();
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            match rt.block_on(server::serve(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchboard: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Reads the log for a report and renders it.
fn report_of(
    source: &ReportSource,
    by: switchboard::reports::By,
    ask: &switchboard::reports::ask::Ask,
) -> Result<
    (
        switchboard::reports::Report,
        config::ReportsConfig,
        Vec<String>,
    ),
    String,
> {
    let (defaults, queues, at) = source.open()?;
    let req = ask.request(by, &defaults, switchboard::store::now_ms())?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let events = rt
        .block_on(async {
            let store = Store::open_at(&at).await?;
            switchboard::reports::load(&store, &req).await
        })
        .map_err(|e| format!("{e:#}"))?;
    Ok((
        switchboard::reports::compute(&events, &req),
        defaults,
        queues,
    ))
}

fn run_report(
    source: &ReportSource,
    by: switchboard::reports::By,
    args: &ReportArgs,
    threshold_secs: Option<u64>,
    format: &str,
) -> Result<String, String> {
    let mut ask = args.ask();
    if let (Some(secs), None) = (threshold_secs, &ask.target) {
        ask.target = Some(format!("80/{secs}"));
    }
    let (report, _, _) = report_of(source, by, &ask)?;
    match format {
        "table" => Ok(switchboard::reports::table::text(&report)),
        "csv" => Ok(switchboard::reports::table::csv(&report)),
        "json" => Ok(serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"),
        other => Err(format!(
            "--format {other} is unknown; use table, csv or json"
        )),
    }
}

fn run_staffing(
    source: &ReportSource,
    s: &switchboard::reports::ask::StaffingAsk,
    args: &ReportArgs,
    format: &str,
) -> Result<String, String> {
    let mut ask = args.ask();
    ask.interval.get_or_insert_with(|| "15m".to_string());
    let interval = ask.interval.as_deref().map(str::parse).transpose()?;
    let (report, defaults) = if s.calls.is_some() && s.aht_secs.is_some() {
        (None, source.open()?.0)
    } else {
        let (r, d, queues) = report_of(source, switchboard::reports::By::Queue, &ask)?;
        if !queues.is_empty() && !queues.contains(&s.queue) {
            return Err(format!("no queue \"{}\" in the configuration", s.queue));
        }
        (Some(r), d)
    };
    let rows = switchboard::reports::ask::staffing(
        s,
        ask.target.as_deref(),
        report.as_ref(),
        interval,
        &defaults,
    )?;
    if format == "json" {
        return Ok(serde_json::to_string_pretty(&rows).unwrap_or_default() + "\n");
    }
    let mut out = format!(
        "{:<26} {:>7} {:>8} {:>8} {:>6} {:>9} {:>8} {:>8} {:>9}\n",
        "interval", "calls", "aht_s", "erlangs", "agents", "scheduled", "sl", "asa_s", "occupancy"
    );
    for r in rows {
        let o = &r.staffing.outlook;
        out.push_str(&format!(
            "{:<26} {:>7} {:>8.1} {:>8.2} {:>6} {:>9} {:>7.1}% {:>8.1} {:>8.1}%\n",
            r.interval.as_deref().unwrap_or("(given)"),
            r.calls,
            r.aht_secs,
            o.erlangs,
            o.agents,
            r.staffing.scheduled,
            o.service_level * 100.0,
            o.asa_secs,
            o.occupancy * 100.0
        ));
    }
    Ok(out)
}

/// `switchboard prune`: the export (if asked), then the deletion, then the recordings.
fn prune(
    before: &str,
    export: Option<&std::path::Path>,
    source: &ReportSource,
) -> Result<String, String> {
    let before_ms = parse_cutoff(before)?;
    let (_, _, at) = source.open()?;
    // Recordings are files in the data directory, wherever the records are.
    let data_dir = match (&source.data_dir, &source.config) {
        (Some(d), _) => d.clone(),
        (None, Some(c)) => config::load(c).map_err(|e| e.to_string())?.data_dir,
        (None, None) => PathBuf::from("data"),
    };
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let store = Store::open_at(&at).await?;
        let mut recordings = Vec::new();
        let mut out = match export {
            Some(path) => Some(std::io::BufWriter::new(std::fs::File::create(path)?)),
            None => None,
        };
        let exported = store
            .records_before(before_ms, |r| {
                if let Some(rec) = &r.recording {
                    recordings.push(data_dir.join(rec));
                }
                if let Some(out) = out.as_mut() {
                    use std::io::Write;
                    serde_json::to_writer(&mut *out, r)?;
                    out.write_all(b"\n")?;
                }
                Ok(())
            })
            .await?;
        if let Some(out) = out {
            // On disk before anything is deleted.
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
        }
        let pruned = store.prune_before(before_ms).await?;
        let mut removed = 0;
        for path in &recordings {
            if std::fs::remove_file(path).is_ok() {
                removed += 1;
            }
        }
        store.close().await;
        let mut text = format!(
            "deleted {} call records, {} events, {} queue-log rows and {removed} recordings \
             from before {before}",
            pruned.calls, pruned.events, pruned.queue_log
        );
        if let Some(path) = export {
            text += &format!("; {exported} records exported to {}", path.display());
        }
        Ok::<_, anyhow::Error>(text)
    })
    .map_err(|e| format!("{e:#}"))
}

/// `2026-01-01` (midnight UTC) or an RFC 3339 time, as epoch milliseconds.
fn parse_cutoff(s: &str) -> Result<i64, String> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    let date: jiff::civil::Date = s
        .parse()
        .map_err(|_| format!("--before {s}: give a date (2026-01-01) or an RFC 3339 time"))?;
    date.to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp().as_millisecond())
        .map_err(|e| e.to_string())
}
