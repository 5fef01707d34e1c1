use std::process::ExitCode;

use clap::Parser;

/// mimalloc: the hot path allocates per request (headers, bodies); measured in
/// bench/profile.sh as fewer instructions per request than glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = authgate::cli::Cli::parse();
    authgate::install_crypto();
    match authgate::commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One clear line, never a panic trace (SPEC §1).
            let msg = format!("{e:#}");
            for line in msg.lines() {
                eprintln!("authgate: {line}");
            }
            ExitCode::FAILURE
        }
    }
}
