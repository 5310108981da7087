//! The `switchboard` command: serve, check.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchboard::config::{self, Overrides};
use switchboard::server;

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
    },
    /// Validate a configuration file; prints file:line:column: reason for each error.
    Check {
        #[arg(long, default_value = "config/switchboard.yaml")]
        config: PathBuf,
    },
}

fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    config::parse_port_range(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} users, {} trunks, {} DIDs)",
                    config.display(),
                    c.users.len(),
                    c.trunks.len(),
                    c.dids.len()
                );
                ExitCode::SUCCESS
            }
            Err(errs) => {
                eprintln!("{errs}");
                ExitCode::FAILURE
            }
        },
        Command::Serve {
            config,
            sip_listen,
            rtp_ports,
            data_dir,
        } => {
            let overrides = Overrides {
                sip_listen,
                rtp_ports,
                data_dir,
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
