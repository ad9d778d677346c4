//! The `ipfs-kit-p2p` binary: parse the command line, start tracing, call the
//! library, turn an error into a message and an exit code.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use ipfs_kit_p2p::cli::Cli;
use ipfs_kit_p2p::config::ConfigError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,libp2p_mdns=warn,libp2p_kad=error,rust_ipfs=warn,connexa=warn")
            }),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match ipfs_kit_p2p::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipfs-kit-p2p: {e:#}");
            if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
