//! Starting and stopping the whole server: store, switch, signals.

use tokio::sync::watch;
use tracing::{info, warn};

use crate::call::switch;
use crate::config::Config;
use crate::store::Store;

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
    let store = Store::open(&config.data_dir).await?;
    let (sw, inbound, commands) = switch::start(config.clone(), store.clone()).await?;
    for (t, a) in sw.local_addrs() {
        info!(transport = %t, addr = %a, "listening");
    }
    // Tests and scripts wait for this exact line.
    eprintln!("switchboard ready");
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        info!("shutdown requested");
        let _ = stop_tx.send(true);
    });
    sw.run(inbound, commands, stop_rx).await;
    store.close().await;
    info!("stopped");
    Ok(())
}
