//! `store copy FROM TO` (SPEC §9): from one gateway's SQLite to a shared
//! PostgreSQL (or back), idempotently, printing the counts.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail};

use crate::config::StoreUrl;
use crate::store::StoreOptions;

fn describe(u: &StoreUrl) -> String {
    match u {
        StoreUrl::Sqlite(p) => format!("sqlite:{}", p.display()),
        StoreUrl::Postgres(pg) => pg.redacted(),
    }
}

pub(super) fn copy(from: &str, to: &str) -> anyhow::Result<ExitCode> {
    // Arguments are relative to the working directory, like any command line.
    let parse = |what: &str, s: &str| {
        crate::config::store_url::parse(s, Path::new(".")).map_err(|e| anyhow!("{what}: {e}"))
    };
    let (src, dst) = (parse("FROM", from)?, parse("TO", to)?);
    if src == dst {
        bail!("FROM and TO are the same store");
    }
    if let StoreUrl::Sqlite(p) = &src {
        // Opening would create an empty database: a typo must not copy "nothing".
        if !p.exists() {
            bail!("FROM: {} does not exist", p.display());
        }
    }
    // A bulk copy may run long; each call still has a bound.
    let opts = StoreOptions {
        pool: 2,
        timeout: std::time::Duration::from_secs(30),
    };
    let a = crate::store::open(&src, opts).map_err(|e| anyhow!("FROM: {e}"))?;
    let b = crate::store::open(&dst, opts).map_err(|e| anyhow!("TO: {e}"))?;
    let report = crate::store::copy::copy(a.as_ref(), b.as_ref(), crate::clock::now_secs())?;
    println!("{} -> {}", describe(&src), describe(&dst));
    print!("{report}");
    Ok(ExitCode::SUCCESS)
}
