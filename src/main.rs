use std::process::ExitCode;

use clap::Parser;

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
