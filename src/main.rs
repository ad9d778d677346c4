//! The `ipfs-kit-p2p` binary: parse the command line, start tracing, call the
//! library, turn an error into a message and an exit code.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use ipfs_kit_p2p::cli::Cli;
use ipfs_kit_p2p::config::ConfigError;

/// Stderr that drops what it cannot write. A supervised child (the IPFS
/// daemon) whose node died has no reader on its stderr; tracing then reports
/// the failure with `eprintln!`, which panics on a broken pipe, and the
/// panic would take the shutdown with it.
struct LossyStderr;

impl std::io::Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "info,libp2p_mdns=warn,libp2p_kad=error,rust_ipfs=warn,connexa=warn",
                )
            }),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| LossyStderr)
        .init();
    match ipfs_kit_p2p::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "ipfs-kit-p2p: {e:#}");
            if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(2)
            } else if e
                .downcast_ref::<ipfs_kit_p2p::commands::pins::UnderReplicated>()
                .is_some()
            {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
