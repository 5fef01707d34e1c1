use std::process::ExitCode;

use clap::Parser;

// mimalloc: allocation is a large share of a proxied request's work, and glibc's
// malloc is the slower of the two there; `--no-default-features` builds with the
// system allocator.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match authgate::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.exit_code() == 0 => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // A usage error is one line too (SPEC §1), without clap's usage block.
            let text = e.to_string();
            let what: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let what = what.join(" ");
            let what = what.strip_prefix("error: ").unwrap_or(&what);
            eprintln!("authgate: {what} (see authgate --help)");
            return ExitCode::from(2);
        }
    };
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
